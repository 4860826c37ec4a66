"""The fake's injectable faults, which the real backends cannot be made to show on purpose."""

from __future__ import annotations

import numpy as np
import pytest

from controller.errors import MilvusRejected, MilvusUnavailable
from controller.schema import Schema
from controller.sources.base import VectorBatch
from tests.support.fake_milvus import FakeMilvus

DIM = 4


def rows(start: int, n: int, value: float = 1.0) -> VectorBatch:
    ids = np.arange(start, start + n, dtype=np.int64)
    return VectorBatch(ids, np.full((n, DIM), value, np.float32), {}, "test", 0)


def collection(fake: FakeMilvus, name: str, value: float) -> None:
    fake.create_collection(name, Schema(DIM), {})
    fake.insert(name, rows(0, 5, value))
    fake.row_count(name)
    fake.ensure_index(name, "FLAT", "L2", {})
    fake.load(name)


def test_a_lost_flip_moves_describe_alias_but_not_reads_until_a_later_flip() -> None:
    fake = FakeMilvus()
    collection(fake, "blue", 1.0)
    collection(fake, "green", 2.0)
    fake.point_alias("live", "blue")
    fake.state.lose_flips(1)

    fake.point_alias("live", "green")  # lost
    other = fake.fresh()  # a new client sees the same
    assert other.alias_target("live") == "green"
    assert other.vectors_by_id("live", [0])[0][0] == 1.0, "reads still reach blue"

    fake.point_alias("live", "green")  # re-issued: takes effect
    assert other.vectors_by_id("live", [0])[0][0] == 2.0


def test_a_failed_insert_keeps_the_rows_before_it() -> None:
    fake = FakeMilvus()
    fake.create_collection("c", Schema(DIM), {})
    fake.state.fail_insert_after(7, MilvusRejected("disk quota exceeded"))
    fake.insert("c", rows(0, 5))
    with pytest.raises(MilvusRejected, match="quota"):
        fake.insert("c", rows(5, 5))
    assert fake.row_count("c") == 7
    fake.insert("c", rows(10, 5))  # one failure only
    assert fake.row_count("c") == 12


def test_unavailable_for_the_next_calls_of_one_operation() -> None:
    fake = FakeMilvus()
    fake.state.unavailable("list_collections", calls=2)
    for _ in range(2):
        with pytest.raises(MilvusUnavailable):
            fake.list_collections()
    assert fake.list_collections() == []
    with pytest.raises(ValueError, match="not a MilvusPort operation"):
        fake.state.unavailable("list_colections")


def test_calls_are_reported_under_the_gateways_operation_names() -> None:
    calls: list[tuple[str, str | None]] = []
    fake = FakeMilvus(observer=lambda op, seconds, error: calls.append((op, error)))
    collection(fake, "c", 1.0)
    fake.search_ids("c", np.ones((1, DIM), np.float32), 2, {})
    with pytest.raises(MilvusRejected):
        fake.search_ids("missing", np.ones((1, DIM)), 1, {})
    assert ("search", None) in calls and ("search", "not_found") in calls


def test_an_action_runs_once_right_before_the_next_call_of_an_operation() -> None:
    fake = FakeMilvus()
    collection(fake, "blue", 1.0)
    collection(fake, "green", 2.0)
    fake.point_alias("live", "blue")
    other = fake.fresh()  # another writer
    fake.state.before("row_count", lambda: other.point_alias("live", "green"))
    assert fake.alias_target("live") == "blue"  # other operations do not run it
    fake.row_count("blue")
    assert fake.alias_target("live") == "green"
    fake.point_alias("live", "blue")
    fake.row_count("blue")  # once only
    assert fake.alias_target("live") == "blue"
    with pytest.raises(ValueError, match="not a MilvusPort operation"):
        fake.state.before("no_such_call", lambda: None)
