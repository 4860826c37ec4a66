"""Per-batch data checks and the duplicate-id tracker."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from controller.errors import SourceError
from controller.sources import VectorBatch
from controller.validation import sanity
from controller.validation.sanity import DuplicateIdTracker, check_batch


def make_batch(
    vectors: npt.ArrayLike,
    ids: npt.ArrayLike | None = None,
    origin: str = "data/part-0.parquet",
    first_row: int = 0,
) -> VectorBatch:
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    n = array.shape[0]
    id_array = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    return VectorBatch(id_array, array, {}, origin, first_row)


def rng_vectors(n: int, d: int) -> npt.NDArray[np.float32]:
    return np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)


# --- check_batch ------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["L2", "IP", "COSINE"])
def test_good_batch_passes_every_metric(metric: str) -> None:
    batch = make_batch(rng_vectors(100, 8))
    check_batch(batch, 8, metric)  # raises on failure


def test_extreme_but_finite_values_pass() -> None:
    # Row sums of float32 max would overflow float32; the check must not call it inf.
    big = np.finfo(np.float32).max
    check_batch(make_batch(np.full((2, 384), big)), 384, "L2")  # raises on failure


def test_dimension_mismatch_quotes_both_sizes() -> None:
    with pytest.raises(SourceError) as info:
        check_batch(make_batch(rng_vectors(2, 128)), 384, "L2")
    message = str(info.value)
    assert message.startswith("data/part-0.parquet: ")
    assert "data has 128-dim vectors, the spec says collection.dimension: 384" in message


@pytest.mark.parametrize(("bad", "shown"), [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_non_finite_value_reports_first_row_and_id(bad: float, shown: str) -> None:
    vectors = rng_vectors(6, 4)
    vectors[3, 2] = bad
    vectors[5, 0] = bad
    batch = make_batch(vectors, ids=[10, 11, 12, 13, 14, 15], first_row=100)
    with pytest.raises(SourceError) as info:
        check_batch(batch, 4, "L2")
    message = str(info.value)
    assert "data/part-0.parquet, row 103 (id 13)" in message
    assert f"vector holds {shown} at position 2 (1 more such row in this batch)" in message


def test_inf_minus_inf_in_one_row_is_caught() -> None:
    vectors = np.ones((1, 3), dtype=np.float32)
    vectors[0, :2] = [np.inf, -np.inf]
    with pytest.raises(SourceError, match=r"row 0 .*holds inf at position 0"):
        check_batch(make_batch(vectors), 3, "IP")


@pytest.mark.parametrize("metric", ["COSINE", "cosine"])
def test_zero_vector_is_refused_for_cosine(metric: str) -> None:
    vectors = rng_vectors(4, 3)
    vectors[1] = 0.0
    batch = make_batch(vectors, ids=[5, 6, 7, 8], origin="v.npy", first_row=40)
    with pytest.raises(SourceError) as info:
        check_batch(batch, 3, metric)
    message = str(info.value)
    assert "v.npy, row 41 (id 6): vector is all zeros" in message
    assert "COSINE similarity is undefined" in message


def test_zero_and_negative_zero_vectors_are_fine_for_l2_and_ip() -> None:
    vectors = np.zeros((2, 3), dtype=np.float32)
    vectors[1] = -0.0
    for metric in ("L2", "IP"):
        check_batch(make_batch(vectors), 3, metric)  # raises on failure
    with pytest.raises(SourceError, match=r"row 0 .*all zeros \(1 more"):
        check_batch(make_batch(vectors), 3, "COSINE")


def test_tiny_nonzero_vector_passes_cosine() -> None:
    vectors = np.full((1, 3), np.finfo(np.float32).smallest_subnormal)
    check_batch(make_batch(vectors), 3, "COSINE")  # raises on failure


# --- DuplicateIdTracker -----------------------------------------------------------


def test_unique_ids_across_batches_pass() -> None:
    tracker = DuplicateIdTracker()
    tracker.add(make_batch(np.ones((3, 2)), ids=[3, 1, 2]))
    tracker.add(make_batch(np.ones((2, 2)), ids=[-5, 2**62], origin="b.parquet"))
    tracker.check()  # raises on failure
    assert len(tracker) == 5


def test_empty_tracker_passes() -> None:
    tracker = DuplicateIdTracker()
    tracker.check()  # raises on failure
    assert len(tracker) == 0


def test_duplicates_across_batches_name_id_count_and_files() -> None:
    tracker = DuplicateIdTracker()
    tracker.add(make_batch(np.ones((3, 2)), ids=[7, 8, 9], origin="a.parquet"))
    tracker.add(make_batch(np.ones((3, 2)), ids=[9, 7, 1], origin="b.parquet"))
    tracker.add(make_batch(np.ones((1, 2)), ids=[7], origin="c.parquet"))
    with pytest.raises(SourceError) as info:
        tracker.check()
    message = str(info.value)
    assert "duplicate ids in a.parquet, b.parquet, c.parquet" in message
    assert "id 7 appears 3 times, and 3 rows in all reuse an id seen before" in message


def test_duplicates_within_one_batch_are_found() -> None:
    tracker = DuplicateIdTracker()
    tracker.add(make_batch(np.ones((4, 2)), ids=[4, 2, 4, 3]))
    with pytest.raises(SourceError, match="id 4 appears 2 times, and 1 row in all"):
        tracker.check()


def test_many_files_are_summarised() -> None:
    tracker = DuplicateIdTracker()
    for i in range(5):
        tracker.add(make_batch(np.ones((1, 2)), ids=[1], origin=f"f{i}.npy"))
    with pytest.raises(SourceError, match=r"in f0\.npy, f1\.npy, f2\.npy and 2 more files"):
        tracker.check()


def test_check_can_repeat_and_more_batches_can_follow() -> None:
    tracker = DuplicateIdTracker()
    tracker.add(make_batch(np.ones((2, 2)), ids=[1, 2]))
    tracker.check()
    tracker.add(make_batch(np.ones((1, 2)), ids=[2]))
    with pytest.raises(SourceError, match="id 2 appears 2 times"):
        tracker.check()


def test_tracker_copies_ids_instead_of_keeping_the_batch() -> None:
    batch = make_batch(np.ones((2, 2)), ids=[1, 2])
    tracker = DuplicateIdTracker()
    tracker.add(batch)
    batch.ids[:] = 9  # the reader may reuse or free the batch after add()
    tracker.check()  # raises on failure


def test_one_million_ids_check_fast() -> None:
    ids = np.random.default_rng(1).permutation(1_000_000).astype(np.int64)
    vectors = np.ones((1000, 1), dtype=np.float32)
    tracker = DuplicateIdTracker()
    start = time.perf_counter()
    for chunk in np.split(ids, 1000):
        tracker.add(VectorBatch(chunk, vectors, {}, "big.parquet", 0))
    tracker.check()
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"1M ids took {elapsed:.2f}s"
    tracker.add(make_batch(np.ones((1, 1)), ids=[999_999]))
    with pytest.raises(SourceError, match="id 999999 appears 2 times"):
        tracker.check()


def test_sanity_imports_only_numpy_errors_and_source_base() -> None:
    """No I/O and nothing heavy at run time: numpy, the errors, the batch type and
    stdlib modules that do no I/O; the spec's FieldSpec only for type checking."""
    tree = ast.parse(Path(sanity.__file__).read_text())
    type_only = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    ]
    hidden = {id(n) for block in type_only for n in ast.walk(block)}

    def modules(nodes: list[ast.AST]) -> set[str]:
        names = {a.name for n in nodes if isinstance(n, ast.Import) for a in n.names}
        return names | {n.module for n in nodes if isinstance(n, ast.ImportFrom) and n.module}

    imported = modules([n for n in ast.walk(tree) if id(n) not in hidden])
    allowed = {
        "__future__",
        "numpy",
        "numpy.typing",
        "controller.errors",
        "controller.sources.base",
    }
    allowed |= {"json", "math", "typing", "collections.abc"}  # stdlib, no I/O
    assert imported <= allowed, imported - allowed
    assert modules([n for block in type_only for n in ast.walk(block)]) <= {"controller.spec"}
