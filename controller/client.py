"""For applications: query a release's alias the way that survives cutovers.

The controller never imports this module. It packages the client guidance of
docs/client-guidance.md:

* query through the alias with ``MilvusClient`` (no ORM ``Collection`` object, which
  caches the schema of the collection the alias pointed to when it was created);
* retry once, after a short pause, on the transient errors measured during flips on
  Milvus 2.3.5 (``TRANSIENT_MARKERS``);
* read the live version from the live collection's ``embrel.version`` property.

    from controller.client import AliasSearcher
    products = AliasSearcher("http://milvus:19530", "products", token=...)
    hits = products.search([query_vector], limit=10, output_fields=["id"])
    products.live_version()  # "2026-11-25"
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from pymilvus import MilvusClient, MilvusException

# Substrings of the errors seen on searches within ~10 ms of an alias flip on Milvus
# 2.3.5 (benchmarks/flip_proof.py); each went away on a retry.
TRANSIENT_MARKERS = (
    "failed to get delegator",
    "can not find client of node",
    "channel not available",
    "collection not loaded",
    "not found in current target",
    "can't find collection name",  # the alias, for an instant after alter_alias
)


def is_transient(exc: BaseException) -> bool:
    """True for the errors a flip can cause, which one retry clears."""
    text = str(getattr(exc, "message", "") or exc).lower()
    return any(marker in text for marker in TRANSIENT_MARKERS)


class AliasSearcher:
    """Searches through an alias, retrying the transient errors of a cutover once."""

    def __init__(
        self,
        uri: str,
        alias: str,
        token: str = "",
        retries: int = 1,
        pause: float = 0.05,
        client: MilvusClient | None = None,
    ) -> None:
        self.alias, self.retries, self.pause = alias, retries, pause
        self.client = client or MilvusClient(uri=uri, token=token)
        self.retried = 0  # how many searches needed a retry (for your metrics)
        self.retried_errors: Counter[str] = Counter()  # what they failed with, first line

    def search(self, data: list[Any], limit: int = 10, **kwargs: Any) -> Any:
        for attempt in range(self.retries + 1):
            try:
                return self.client.search(self.alias, data=data, limit=limit, **kwargs)
            except MilvusException as exc:
                if attempt == self.retries or not is_transient(exc):
                    raise
                self.retried += 1
                self.retried_errors[str(getattr(exc, "message", exc)).splitlines()[0][:120]] += 1
                time.sleep(self.pause)
        raise AssertionError("unreachable")

    def live_collection(self) -> str:
        return str(self.client.describe_alias(self.alias)["collection_name"])

    def live_version(self) -> str | None:
        """The ``spec.version`` embrel recorded on the collection the alias points to."""
        props = self.client.describe_collection(self.live_collection()).get("properties") or {}
        version = props.get("embrel.version")
        return str(version) if version else None

    def close(self) -> None:
        self.client.close()
