"""Fingerprints and drift values on hand-made arrays (controller.cutover, controller.monitoring)."""

from __future__ import annotations

import numpy as np
import pytest

from controller import monitoring
from controller.cutover import Fingerprint, Seen, fingerprint, judge
from controller.spec import DriftThresholds


def _unit(rng: np.random.Generator, n: int, d: int = 8) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def pair() -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    rng = np.random.default_rng(0)
    old = dict(enumerate(_unit(rng, 20)))
    new = dict(old)
    for i in (3, 7):  # two rows re-embedded
        new[i] = _unit(rng, 1)[0]
    new[25] = _unit(rng, 1)[0]  # one added row
    return new, old


def test_fingerprint_keeps_only_probes_that_differ(pair) -> None:  # type: ignore[no-untyped-def]
    new, old = pair
    answers_new = np.array([[1, 2, 3], [4, 5, 6]])
    answers_old = np.array([[1, 2, 3], [4, 5, 9]])
    fp = fingerprint("b", "a", [*range(20), 25], new, old, [10, 11], answers_new, answers_old)
    assert fp.ids == (3, 7, 25) and fp.old_heads[2] is None
    assert fp.query_ids == (11,) and fp.new_answers == ((4, 5, 6),)
    assert fp.distinguishable
    assert Fingerprint.from_json(fp.to_json()) == fp


def test_judge_tells_new_from_old_and_a_rollback_swaps_roles(pair) -> None:  # type: ignore[no-untyped-def]
    new, old = pair
    fp = fingerprint("b", "a", [*range(20), 25], new, old, [], np.empty((0, 3)), np.empty((0, 3)))
    through_alias_new = {i: new[i] for i in fp.ids}
    through_alias_old = {i: old[i] for i in fp.ids if i in old}
    empty = np.empty((0, 3))
    assert judge(fp, through_alias_new, empty) == Seen.NEW
    assert judge(fp, through_alias_old, empty) == Seen.OLD
    back = fp.between("a", "b")
    assert back is not None and judge(back, through_alias_old, empty) == Seen.NEW
    assert fp.between("a", "c") is None


def test_search_probes_vote_by_overlap() -> None:
    fp = Fingerprint(
        "b", "a", query_ids=(1,), query_from="b", new_answers=((1, 2, 3),), old_answers=((7, 8, 9),)
    )
    assert judge(fp, {}, np.array([[1, 2, 8]])) == Seen.NEW
    assert judge(fp, {}, np.array([[7, 8, 3]])) == Seen.OLD
    assert judge(fp, {}, np.array([[1, 8, 0]])) == Seen.UNCLEAR


def test_identical_collections_cannot_be_told_apart() -> None:
    rng = np.random.default_rng(1)
    same = dict(enumerate(_unit(rng, 10)))
    answers = np.array([[1, 2, 3]])
    fp = fingerprint("b", "a", list(range(10)), same, same, [0], answers, answers)
    assert not fp.distinguishable


def test_drift_values_see_in_place_writes_and_moved_distributions() -> None:
    rng = np.random.default_rng(2)
    base = _unit(rng, 400, 16)
    ids = np.arange(400)
    answers = np.tile(np.arange(10), (5, 1))
    ref = monitoring.reference(ids, base, base[:5], answers, row_count=400)
    same = monitoring.measure(ref, dict(zip(ids.tolist(), base, strict=True)), base, answers, 400)
    assert same["same_id_cosine"] == pytest.approx(1.0)
    assert same["canary_overlap"] == 1.0 and same["row_count_change"] == 0.0
    assert same["mmd"] < 0.01

    rewritten = _unit(rng, 400, 16) + 2.0  # another model, shifted distribution
    drifted = monitoring.measure(
        ref, dict(zip(ids.tolist(), rewritten, strict=True)), rewritten, np.full((5, 10), 999), 440
    )
    assert drifted["same_id_cosine"] < 0.9 < same["same_id_cosine"]
    assert drifted["mmd"] > 10 * max(same["mmd"], 1e-3)
    assert drifted["centroid_distance"] > same["centroid_distance"]
    assert drifted["canary_overlap"] == 0.0 and drifted["row_count_change"] == pytest.approx(0.1)

    limits = DriftThresholds(min_same_id_cosine=0.9, max_row_count_change=0.05)
    assert monitoring.breaches(same, limits) == []
    found = monitoring.breaches(drifted, limits)
    assert len(found) == 2 and found[0].startswith("same_id_cosine")
    assert monitoring.thresholds(limits) == {"same_id_cosine": 0.9, "row_count_change": 0.05}


def test_reference_survives_a_round_trip_through_arrays() -> None:
    rng = np.random.default_rng(3)
    v = _unit(rng, 50)
    ref = monitoring.reference(np.arange(50), v, v[:3], np.zeros((3, 4), np.int64), 50)
    back = monitoring.Reference.from_arrays(ref.arrays())
    assert back.row_count == 50 and back.bandwidth == pytest.approx(ref.bandwidth)
    assert np.array_equal(back.vectors, ref.vectors)


def test_an_empty_live_collection_has_a_reference_and_measures_without_error() -> None:
    empty = np.empty((0, 8), np.float32)
    ref = monitoring.reference(np.empty(0, np.int64), empty, empty, np.empty((0, 10)), 0)
    values = monitoring.measure(ref, {}, empty, np.empty((0, 10)), row_count=5)
    assert values == {"row_count_change": 5.0}
