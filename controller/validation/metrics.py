"""Retrieval-quality metrics as pure numpy functions.

Conventions: ``retrieved`` is an (nq, k) int64 array of result ids in rank order,
padded with -1 where fewer than k results came back; ``relevant`` is a list of nq
int64 arrays of relevant ids. Queries without relevant ids are skipped (their
recall is undefined), and an all-empty set yields NaN, which no gate passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def recall_per_query(retrieved: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Per query |top-k ∩ relevant| / min(k, |relevant|); NaN where nothing is relevant.

    Dividing by min(k, |relevant|) keeps a perfect engine at 1.0 when a query has
    more relevant ids than k (the convention of BEIR's recall@k "capped").
    """
    return np.array(
        [
            len(np.intersect1d(row[:k][row[:k] >= 0], rel)) / min(k, len(rel))
            if len(rel)
            else np.nan
            for row, rel in zip(retrieved, relevant, strict=True)
        ],
        dtype=np.float64,
    )


def ndcg_per_query(
    retrieved: np.ndarray,
    relevant: Sequence[np.ndarray],
    k: int,
    grades: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Per query nDCG@k, DCG = Σ gain_i / log2(i + 1) with i from 1 (trec_eval's
    ndcg_cut). Gains are the relevance grades (``grades[q][j]`` for ``relevant[q][j]``;
    1 for every relevant id when ``grades`` is None); the ideal DCG orders the grades
    best first. NaN where nothing is relevant."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    out = np.full(len(relevant), np.nan)
    for q, (row, rel) in enumerate(zip(retrieved, relevant, strict=True)):
        gain = np.ones(len(rel)) if grades is None else np.asarray(grades[q], dtype=np.float64)
        positive = gain > 0
        rel, gain = np.asarray(rel)[positive], gain[positive]
        if not len(rel):
            continue
        by_id = dict(zip(rel.tolist(), gain.tolist(), strict=True))
        gains = np.array([by_id.get(int(i), 0.0) for i in row[:k]])
        ideal = np.sort(gain)[::-1][:k]
        out[q] = (gains * discounts[: len(gains)]).sum() / (ideal * discounts[: len(ideal)]).sum()
    return out


def mrr_per_query(retrieved: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Per query 1 / rank of the first relevant id within the top k (0 when none);
    NaN where nothing is relevant."""
    return np.array(
        [
            (1.0 / (hits[0] + 1) if len(hits := np.flatnonzero(np.isin(row[:k], rel))) else 0.0)
            if len(rel)
            else np.nan
            for row, rel in zip(retrieved, relevant, strict=True)
        ],
        dtype=np.float64,
    )


def _mean(per_query: np.ndarray) -> float:
    """Mean over the queries that have relevant ids; NaN when none has."""
    defined = per_query[~np.isnan(per_query)]
    return float(defined.mean()) if defined.size else float("nan")


def recall_at_k(retrieved: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> float:
    """Mean of :func:`recall_per_query`."""
    return _mean(recall_per_query(retrieved, relevant, k))


def ndcg_at_k(
    retrieved: np.ndarray,
    relevant: Sequence[np.ndarray],
    k: int,
    grades: Sequence[np.ndarray] | None = None,
) -> float:
    """Mean of :func:`ndcg_per_query` (binary relevance unless ``grades`` are given)."""
    return _mean(ndcg_per_query(retrieved, relevant, k, grades))


def mrr_at_k(retrieved: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> float:
    """Mean of :func:`mrr_per_query`."""
    return _mean(mrr_per_query(retrieved, relevant, k))


@dataclass(frozen=True)
class PairedDifference:
    """Candidate minus live, per query, summarised with a bootstrap interval."""

    mean: float  # mean per-query difference (candidate - live)
    low: float  # lower end of the confidence interval
    high: float  # upper end
    queries: int  # pairs measured (queries scored on both sides)
    wins: int  # queries where the candidate scored higher
    losses: int  # ... lower
    confidence: float


def paired_bootstrap(
    candidate: np.ndarray,
    live: np.ndarray,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Percentile bootstrap of the mean per-query difference, resampling queries.

    Pairing (the same resampled queries on both sides) removes the variance between
    queries, which dominates in IR evaluation (Sakai 2006; Smucker et al. 2007).
    Pairs where either side is NaN (no relevant ids) are left out.
    """
    a, b = np.asarray(candidate, dtype=np.float64), np.asarray(live, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two 1-D arrays of the same length, got {a.shape} and {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    diff = a[keep] - b[keep]
    wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
    if not diff.size:
        nan = float("nan")
        return PairedDifference(nan, nan, nan, 0, 0, 0, confidence)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 4_000_000 // diff.size)  # bounded memory: ~32 MB of indices at a time
    for start in range(0, resamples, chunk):
        n = min(chunk, resamples - start)
        picks = rng.integers(0, diff.size, size=(n, diff.size))
        means[start : start + n] = diff[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return PairedDifference(
        float(diff.mean()), float(low), float(high), int(diff.size), wins, losses, confidence
    )


# --- Agreement between two result lists -------------------------------------------------


def _valid_ids(row: np.ndarray) -> np.ndarray:
    """The non-padding ids of one result row (padding is any negative id, i.e. -1)."""
    return row[row >= 0]


def topk_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Mean over queries of |top-k(a) ∩ top-k(b)| / k.

    ``a`` and ``b`` are (nq, ≥k) id arrays in rank order, padded with -1; padding never
    matches, and the denominator is k even when a row is short, so missing results
    count as misses. Empty input (nq = 0) yields NaN, which no gate passes.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must be 2-D with the same number of rows: {a.shape}, {b.shape}")
    scores = [
        len(np.intersect1d(_valid_ids(ra[:k]), _valid_ids(rb[:k]))) / k
        for ra, rb in zip(a, b, strict=True)
    ]
    return float(np.mean(scores)) if scores else float("nan")


def ann_recall(ann: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Recall of an ANN index against exact search: mean |ann_k ∩ exact_k| / |exact_k|.

    -1 padding never matches. The denominator is the number of ids exact search found
    (k, unless the collection holds fewer rows than k): an index that returns every row
    of a 5-row collection for k = 10 has recall 1, not 0.5. A query for which exact
    search found nothing is left out; no query at all yields NaN, which no gate passes.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    scores = [
        len(np.intersect1d(_valid_ids(ra[:k]), truth)) / len(truth)
        for ra, rb in zip(np.asarray(ann), np.asarray(exact), strict=True)
        if len(truth := _valid_ids(rb[:k]))
    ]
    return float(np.mean(scores)) if scores else float("nan")


def rank_biased_overlap(a: Sequence[int], b: Sequence[int], p: float = 0.9) -> float:
    """Extrapolated rank-biased overlap RBO_ext (Webber, Moffat & Zobel 2010, eq. 32).

    With X_d = |a[:d] ∩ b[:d]| the overlap of the depth-d prefixes, for two lists of
    the same length k::

        RBO_ext = (X_k / k) · p^k + (1 - p) / p · Σ_{d=1..k} (X_d / d) · p^d

    Lists of different lengths use eq. 32 in full (l = longer length, s = shorter;
    for d > s, X_d counts the whole short list against the long prefix)::

        RBO_ext = (1 - p) / p · (Σ_{d=1..l} (X_d / d) · p^d
                                 + Σ_{d=s+1..l} X_s · (d - s) / (s · d) · p^d)
                  + ((X_l - X_s) / l + X_s / s) · p^l

    which reduces to the first formula when s = l. Identical lists give 1.0, disjoint
    lists 0.0, and the value is symmetric in (a, b). ``p`` in (0, 1) is the persistence:
    smaller p weights the top ranks more. Items must be unique within each list
    (ValueError otherwise). One empty list against a non-empty one gives 0.0; two empty
    lists give NaN (nothing to compare).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    la, lb = [int(x) for x in a], [int(x) for x in b]
    if len(set(la)) != len(la) or len(set(lb)) != len(lb):
        raise ValueError("rank_biased_overlap needs lists without repeated items")
    short, long_ = (la, lb) if len(la) <= len(lb) else (lb, la)
    s, l = len(short), len(long_)  # noqa: E741 - the paper's names
    if l == 0:
        return float("nan")
    if s == 0:
        return 0.0
    seen_short: set[int] = set()
    seen_long: set[int] = set()
    overlap = 0  # X_d
    total = 0.0  # Σ_{d=1..l} (X_d / d) · p^d
    tail = 0.0  # Σ_{d=s+1..l} X_s · (d - s) / (s · d) · p^d
    x_s = 0
    for d in range(1, l + 1):
        item_long = long_[d - 1]
        if d <= s:
            item_short = short[d - 1]
            if item_short == item_long:
                overlap += 1
            else:
                overlap += (item_short in seen_long) + (item_long in seen_short)
            seen_short.add(item_short)
            seen_long.add(item_long)
            if d == s:
                x_s = overlap
        else:
            overlap += item_long in seen_short
            tail += x_s * (d - s) / (s * d) * p**d
        total += overlap / d * p**d
    value = (1.0 - p) / p * (total + tail) + ((overlap - x_s) / l + x_s / s) * p**l
    # Rounding can leave identical lists a hair above 1.
    return float(min(max(value, 0.0), 1.0))


def _truncate_at_padding(row: np.ndarray) -> list[int]:
    """The row up to (not including) its first -1."""
    pad = np.flatnonzero(row < 0)
    return [int(x) for x in (row[: pad[0]] if len(pad) else row)]


def mean_rbo(a: np.ndarray, b: np.ndarray, p: float = 0.9) -> float:
    """Mean over rows of :func:`rank_biased_overlap` (RBO_ext) of a[i] and b[i].

    Each row is truncated at its first -1 (padding), so rows of different effective
    length use the uneven-list form of eq. 32. Rows where both sides are empty are
    skipped; if every row is skipped (or nq = 0) the result is NaN.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must be 2-D with the same number of rows: {a.shape}, {b.shape}")
    scores = [
        rank_biased_overlap(_truncate_at_padding(ra), _truncate_at_padding(rb), p)
        for ra, rb in zip(a, b, strict=True)
    ]
    kept = [s for s in scores if not np.isnan(s)]
    return float(np.mean(kept)) if kept else float("nan")


# --- Embedding drift between two models --------------------------------------------------


def cosine_same_ids(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity cos_i = a_i · b_i / (‖a_i‖ ‖b_i‖) of two (n, d) arrays.

    The caller aligns rows by id (row i of both arrays is the same entity). Computed in
    float64 and clipped to [-1, 1] against rounding; a row where either vector has zero
    norm gives NaN. Returns a float64 array of shape (n,).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"a and b must be 2-D arrays of the same shape: {a.shape}, {b.shape}")
    dots = np.einsum("ij,ij->i", a, b)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    out = np.full(a.shape[0], np.nan)
    ok = norms > 0
    out[ok] = np.clip(dots[ok] / norms[ok], -1.0, 1.0)
    return out


def cosine_summary(cos: np.ndarray, below: float = 0.9) -> dict[str, float]:
    """Summary of per-id cosines: mean, p5, min, share_below, n and nan_count.

    NaN values (zero-norm rows) are excluded from every statistic and counted in
    ``nan_count``; ``n`` is the number of values kept. p5 is the 5th percentile with
    numpy's default linear interpolation; ``share_below`` is the fraction of kept values
    strictly less than ``below``. With no values kept, mean/p5/min/share_below are NaN.
    """
    values = np.asarray(cos, dtype=np.float64).ravel()
    nan = np.isnan(values)
    kept = values[~nan]
    if len(kept) == 0:
        mean = p5 = low = share = float("nan")
    else:
        mean = float(kept.mean())
        p5 = float(np.percentile(kept, 5))
        low = float(kept.min())
        share = float(np.mean(kept < below))
    return {
        "mean": mean,
        "p5": p5,
        "min": low,
        "share_below": share,
        "n": float(len(kept)),
        "nan_count": float(nan.sum()),
    }


def _sample(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D (n, d) array, got shape {arr.shape}")
    return arr


def centroid_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance ‖mean(a) − mean(b)‖₂ between the means of two (n, d) samples."""
    ma = _sample(a, "a").mean(axis=0)
    mb = _sample(b, "b").mean(axis=0)
    if ma.shape != mb.shape:
        raise ValueError(f"dimension mismatch: {ma.shape[0]} vs {mb.shape[0]}")
    return float(np.linalg.norm(ma - mb))


def cosine_centroid_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine distance 1 − cos(mean(a), mean(b)) between the means of two samples.

    In [0, 2]; NaN when either mean is the zero vector.
    """
    ma = _sample(a, "a").mean(axis=0)
    mb = _sample(b, "b").mean(axis=0)
    if ma.shape != mb.shape:
        raise ValueError(f"dimension mismatch: {ma.shape[0]} vs {mb.shape[0]}")
    cos = cosine_same_ids(ma[None, :], mb[None, :])[0]
    return float(1.0 - cos)


def _pairwise_sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """‖x_i − y_j‖² via ‖x_i‖² + ‖y_j‖² − 2 x_i·y_j, clipped at 0 against rounding."""
    xx = np.einsum("ij,ij->i", x, x)
    yy = np.einsum("ij,ij->i", y, y)
    out: np.ndarray = np.maximum(xx[:, None] + yy[None, :] - 2.0 * (x @ y.T), 0.0)
    return out


def mmd_rbf(x: np.ndarray, y: np.ndarray, bandwidth: float | None = None) -> tuple[float, float]:
    """Unbiased squared MMD with an RBF kernel (Gretton et al. 2012, eq. 3).

    With k(u, v) = exp(−‖u − v‖² / (2σ²)), x of m rows and y of n rows::

        MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n−1)) Σ_{i≠j} k(y_i, y_j)
                 − 2/(mn) Σ_{i,j} k(x_i, y_j)

    The U-statistic is unbiased, so it can come out slightly negative when the two
    distributions are the same; the returned value is clamped at 0 (the true MMD² is
    never negative, and a negative number reads as a bug). When ``bandwidth`` is None,
    σ is the median heuristic: the median of the euclidean distances between distinct
    points of the pooled sample (diagonal excluded), see :func:`median_bandwidth`.
    Returns (mmd2, σ).

    Cost: O((n+m)²·d) time and O((n+m)²) memory (the full pooled kernel matrix), so
    callers must pass bounded samples. Needs m, n ≥ 2; raises ValueError if a given
    ``bandwidth`` is not a positive finite number.
    """
    xs = _sample(x, "x")
    ys = _sample(y, "y")
    m, n = xs.shape[0], ys.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"mmd_rbf needs at least 2 points per sample, got {m} and {n}")
    if xs.shape[1] != ys.shape[1]:
        raise ValueError(f"dimension mismatch: {xs.shape[1]} vs {ys.shape[1]}")
    z = np.vstack([xs, ys])
    sq = _pairwise_sq_dists(z, z)
    np.fill_diagonal(sq, 0.0)
    sigma = median_bandwidth(sq) if bandwidth is None else float(bandwidth)
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"RBF bandwidth must be a positive finite number, got {sigma}")
    kern = np.exp(-sq / (2.0 * sigma * sigma))
    kxx, kyy, kxy = kern[:m, :m], kern[m:, m:], kern[:m, m:]
    term_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    term_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    term_xy = 2.0 * kxy.sum() / (m * n)
    return max(float(term_x + term_y - term_xy), 0.0), sigma


def median_bandwidth(sq: np.ndarray) -> float:
    """σ for an RBF kernel: the median distance between distinct points.

    ``sq`` is the pooled squared-distance matrix. Degenerate samples (all-zero or
    identical vectors, or mostly coinciding points) have a median of 0, which is no
    bandwidth: the median of the positive distances is used then, and 1.0 when every
    point coincides (any σ gives MMD² = 0 for two such samples).
    """
    distances = np.sqrt(sq[np.triu_indices(sq.shape[0], k=1)])
    sigma = float(np.median(distances)) if distances.size else 0.0
    if sigma > 0 and np.isfinite(sigma):
        return sigma
    positive = distances[np.isfinite(distances) & (distances > 0)]
    return float(np.median(positive)) if positive.size else 1.0


# --- Exact search (ground truth for ANN recall) ------------------------------------------

_METRICS = ("COSINE", "IP", "L2")


def _check_search_args(
    corpus: np.ndarray, queries: np.ndarray, k: int, metric: str, ids: np.ndarray | None
) -> tuple[str, np.ndarray]:
    metric = metric.upper()
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    if k < 0:
        raise ValueError(f"k must be non-negative, got {k}")
    if corpus.ndim != 2 or queries.ndim != 2 or corpus.shape[1] != queries.shape[1]:
        raise ValueError(
            f"corpus (N, d) and queries (nq, d) must be 2-D with the same d: "
            f"{corpus.shape}, {queries.shape}"
        )
    if ids is not None and np.asarray(ids).shape != (corpus.shape[0],):
        raise ValueError(f"ids must have shape ({corpus.shape[0]},), got {np.asarray(ids).shape}")
    return metric, np.asarray(queries, dtype=np.float64)


def _sort_keys(q: np.ndarray, rows: np.ndarray, metric: str) -> np.ndarray:
    """(nq, len(rows)) keys where smaller is better: −score for COSINE/IP, ‖q−c‖² for L2.

    COSINE divides the raw dot products by the norm products (rather than normalising
    first) so that integer-valued data gives bit-identical keys whatever the block
    shape. NaN keys (zero vectors under COSINE, NaN inputs) become +inf: they rank last.
    """
    c = np.asarray(rows, dtype=np.float64)
    if metric == "L2":
        keys = _pairwise_sq_dists(q, c)
    else:
        keys = -(q @ c.T)
        if metric == "COSINE":
            norms = np.linalg.norm(q, axis=1)[:, None] * np.linalg.norm(c, axis=1)[None, :]
            with np.errstate(divide="ignore", invalid="ignore"):
                keys /= norms
    keys[np.isnan(keys)] = np.inf
    return keys


def _finish(rows: np.ndarray, k: int, ids: np.ndarray | None) -> np.ndarray:
    """Pad (nq, ≤k) corpus rows to k with -1 and map them through ``ids``."""
    nq, got = rows.shape
    out = np.full((nq, k), -1, dtype=np.int64)
    if ids is None:
        out[:, :got] = rows
    else:
        out[:, :got] = np.asarray(ids, dtype=np.int64)[rows]
    return out


def _keep_best(keys: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest keys of each row, ties to the leftmost column, column order kept.

    Selection is O(width) per row (introselect), not a sort. Because the kept entries
    stay in column order, callers that lay candidates out in ascending corpus-row order
    break ties by the lower corpus row, exactly like a stable sort.
    """
    nq, width = keys.shape
    if width <= k:
        return keys, rows
    kth = np.partition(keys, k - 1, axis=1)[:, k - 1 : k]  # the k-th smallest key per row
    better = keys < kth
    tied = keys == kth
    room = k - better.sum(axis=1, keepdims=True)  # how many tied entries still fit
    take = better | (tied & (np.cumsum(tied, axis=1) <= room))
    cols = np.nonzero(take)[1].reshape(nq, k)  # row-major: ascending columns per row
    return np.take_along_axis(keys, cols, axis=1), np.take_along_axis(rows, cols, axis=1)


def exact_topk(
    corpus: np.ndarray,
    queries: np.ndarray,
    k: int,
    metric: str,
    block: int = 8192,
    ids: np.ndarray | None = None,
) -> np.ndarray:
    """Exact (brute-force) top-k ids per query, best first, shape (nq, k), int64.

    Scores: COSINE = q·c / (‖q‖‖c‖) and IP = q·c (larger is better);
    L2 = ‖q − c‖² squared euclidean via ‖q‖² + ‖c‖² − 2q·c clipped at 0 (smaller is
    better). The corpus is scanned in blocks of ``block`` rows; each block's (nq, block)
    keys are concatenated with the running (nq, k) best and cut back to k by selection
    (np.partition), so memory is O(nq·(k + block) + block·d), never O(nq·N), and the
    corpus may be a memmap. Ties go to the lower corpus row, so the result equals
    :func:`exact_topk_naive`'s. Returns the corpus row index, or ``ids[row]`` when
    ``ids`` (shape (N,)) is given; rows are padded with -1 when k > N. Zero vectors under
    COSINE (and NaN inputs) rank last. Computed in float64.
    """
    metric, _ = _check_search_args(corpus, queries, k, metric, ids)
    if block < 1:
        raise ValueError(f"block must be positive, got {block}")
    top = StreamingTopK(queries, k, metric)
    for start in range(0, corpus.shape[0], block):
        stop = min(start + block, corpus.shape[0])
        top.add(corpus[start:stop], np.arange(start, stop, dtype=np.int64))
    return _finish(top.rows(), k, ids)


class StreamingTopK:
    """Exact top-k over a corpus that arrives in batches, e.g. a source read once.

    ``add(vectors, ids)`` merges one batch into the running best k per query;
    ``rows()`` gives the ids so far, best first, shape (nq, ≤k); ``result()`` pads
    them to k with -1. Feed ids in ascending order for ties to go to the lower id.
    """

    def __init__(self, queries: np.ndarray, k: int, metric: str) -> None:
        self.q = np.asarray(queries, dtype=np.float64)
        self.k = k
        self.metric = metric.upper()
        self._keys = np.empty((len(self.q), 0), dtype=np.float64)
        self._ids = np.empty((len(self.q), 0), dtype=np.int64)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        if self.k == 0 or len(vectors) == 0:
            return
        keys = _sort_keys(self.q, vectors, self.metric)
        batch_ids = np.broadcast_to(np.asarray(ids, dtype=np.int64), keys.shape)
        self._keys, self._ids = _keep_best(
            np.concatenate([self._keys, keys], axis=1),
            np.concatenate([self._ids, batch_ids], axis=1),
            self.k,
        )

    def rows(self) -> np.ndarray:
        # Stable: equal keys keep ascending order from the merge.
        order = np.argsort(self._keys, axis=1, kind="stable")
        return np.take_along_axis(self._ids, order, axis=1)

    def result(self) -> np.ndarray:
        return _finish(self.rows(), self.k, None)


def exact_topk_naive(
    corpus: np.ndarray,
    queries: np.ndarray,
    k: int,
    metric: str,
    ids: np.ndarray | None = None,
) -> np.ndarray:
    """Reference for :func:`exact_topk`: the full (nq, N) score matrix and a stable sort.

    Same scores, tie rule (lower corpus row first), padding and ``ids`` mapping, but
    O(nq·N) memory and O(nq·N·log N) time: for tests and benchmarks only.
    """
    metric, q = _check_search_args(corpus, queries, k, metric, ids)
    keys = _sort_keys(q, corpus, metric)
    rows = np.argsort(keys, axis=1, kind="stable")[:, :k].astype(np.int64)
    return _finish(rows, k, ids)


# --- Latency -------------------------------------------------------------------------------


def latency_percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 (numpy percentile, linear interpolation), mean and max, in ms.

    An empty sample gives NaN for every key (which no gate passes).
    """
    values = np.asarray(samples_ms, dtype=np.float64).ravel()
    keys = ("p50", "p95", "p99", "mean", "max")
    if len(values) == 0:
        return dict.fromkeys(keys, float("nan"))
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(values.mean()),
        "max": float(values.max()),
    }
