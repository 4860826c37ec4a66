"""controller.client: what application teams run against an alias embrel manages (Milvus Lite)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymilvus import MilvusClient, MilvusException

from controller.client import AliasSearcher, is_transient


class FirstSearchFails:
    """A real client whose first search raises what a flip raised on 2.3.5."""

    def __init__(self, client: MilvusClient, message: str) -> None:
        self.client, self.message, self.calls = client, message, 0

    def search(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise MilvusException(code=65535, message=self.message)
        return self.client.search(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@pytest.fixture
def client(tmp_path: Path) -> Any:
    c = MilvusClient(uri=str(tmp_path / "milvus.db"))
    c.create_collection(
        "products__v7", dimension=4, properties={"embrel.version": "v7", "embrel.owner": "embrel"}
    )
    c.insert("products__v7", [{"id": i, "vector": np.eye(4)[i % 4].tolist()} for i in range(8)])
    c.create_alias("products__v7", "products")
    yield c
    c.close()


def test_searches_through_the_alias_and_reads_the_live_version(client: Any) -> None:
    searcher = AliasSearcher("", "products", client=client)
    hits = searcher.search([[1.0, 0, 0, 0]], limit=2, output_fields=["id"])
    assert {h["id"] for h in hits[0]} <= {0, 4}
    assert searcher.live_collection() == "products__v7"
    assert searcher.live_version() == "v7"


def test_a_transient_flip_error_is_retried_once_and_others_are_not(client: Any) -> None:
    flaky = FirstSearchFails(
        client, "failed to get delegator 3 for channel: can not find client of node -1"
    )
    searcher = AliasSearcher("", "products", client=flaky, pause=0)  # type: ignore[arg-type]
    assert searcher.search([[1.0, 0, 0, 0]], limit=1)[0]
    assert searcher.retried == 1 and flaky.calls == 2

    wrong = FirstSearchFails(client, "vector dimension mismatch")
    with pytest.raises(MilvusException, match="dimension"):
        AliasSearcher("", "products", client=wrong).search([[1.0, 0, 0, 0]])  # type: ignore[arg-type]
    assert wrong.calls == 1
    assert is_transient(MilvusException(code=65535, message="can not find client of node -1"))
    assert not is_transient(ValueError("collection products not found"))
