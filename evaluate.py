"""Evaluation for DMP-MH: Hamming ranking, mAP and curves, attacks, audit, figures.

Everything here is numpy + scipy + pillow; no torch. Inputs are plain arrays:

    codes   (n, bits) with values in {0, 1} (any numeric or bool dtype),
            bits a positive multiple of 8;
    labels  (n, C)    with values in {0, 1}; a query and a database item are
            relevant to each other when they share at least one label.

Sources and the exact results used (formulas are written out where used):

- Hamming ranking and mAP@all / mAP@k with ties in Hamming distance broken by
  database index: the protocol of the cross-modal hashing field, e.g. DCMH
  (Jiang & Li, CVPR 2017, arXiv 1602.02255) and its public evaluation code.
- Tie-aware (expected) average precision: McSherry & Najork, "Computing
  information retrieval performance measures efficiently in the presence of
  tied scores", ECIR 2008, LNCS 4956, pp. 414-421. The closed form for one
  bucket of tied items is derived in `tie_aware_map`'s docstring; it is ours,
  checked against enumeration of all tie orders in the tests.
- ROC AUC as the Mann-Whitney U statistic with average ranks for ties
  (Hanley & McNeil, Radiology 1982): AUC = (S_pos - n_pos (n_pos + 1) / 2) /
  (n_pos n_neg), S_pos the sum of the positives' ranks.
- Exact one-sided Clopper-Pearson bounds (Clopper & Pearson, Biometrika 1934)
  through Beta quantiles.
- Empirical epsilon from an audit: the hypothesis-testing characterisation of
  (eps, delta)-DP (Kairouz, Oh & Viswanath, ICML 2015, arXiv 1311.0776,
  Section 2, "operational interpretation"; after Wasserman & Zhou 2010) as used
  for auditing by Jagielski, Ullman & Oprea (NeurIPS 2020,
  arXiv 2006.07709) and Nasr et al. (IEEE S&P 2021, arXiv 2101.04535).

Conventions a caller must know (each is repeated where it applies):

- A query with no relevant item in the database (or in the top k for AP@k)
  has AP 0 and is counted in the mean.
- Precision@k uses the index-tie-broken Hamming ranking; 1 <= k <= n_db.
- Hamming-radius precision: an empty retrieved set has precision 0 and is
  counted (``empty_precision='zero'``, the default), or is left out of the
  mean (``empty_precision='exclude'``). Recall of a query with no relevant
  item is 0 and counted.
- Work is split into blocks of queries and run on a small thread pool
  (numpy releases the GIL in the heavy kernels). Results do not depend on the
  number of workers. ``workers=1`` runs serially.
"""

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import special, stats

# Rows of a query block are chosen so that one block holds about this many
# (query, database item) pairs: a few tens of MB of temporaries per worker.
_BLOCK_PAIRS = 1 << 20
_MAX_WORKERS = 8

DEFAULT_KS = (1, 5, 10, 20, 50, 100, 200, 500, 1000)


# ---------------------------------------------------------------------------
# Input checks and bit packing
# ---------------------------------------------------------------------------

def _as_binary_matrix(x, name):
    """Return x as a 2-D uint8 array of 0/1, or raise ValueError naming it."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {a.shape}")
    if a.dtype == bool:
        return a.view(np.uint8)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{name} must be numeric or bool, got dtype {a.dtype}")
    bad = (a != 0) & (a != 1)
    if bad.any():
        value = a[bad].flat[0]
        raise ValueError(
            f"{name} must hold only 0 and 1, found {value!r}"
            " (for sign codes in {-1, +1} pass (codes > 0))")
    return a.astype(np.uint8)


def _check_codes(query_codes, db_codes):
    q = _as_binary_matrix(query_codes, "query_codes")
    d = _as_binary_matrix(db_codes, "db_codes")
    bits = q.shape[1]
    if bits == 0 or bits % 8:
        raise ValueError(f"bits must be a positive multiple of 8, got bits={bits}")
    if d.shape[1] != bits:
        raise ValueError(f"query_codes have {bits} bits but db_codes have {d.shape[1]}")
    if q.shape[0] == 0 or d.shape[0] == 0:
        raise ValueError(f"need at least one query and one database item, got "
                         f"n_query={q.shape[0]}, n_db={d.shape[0]}")
    return q, d


def _check_inputs(query_codes, db_codes, query_labels, db_labels):
    q, d = _check_codes(query_codes, db_codes)
    ql = _as_binary_matrix(query_labels, "query_labels")
    dl = _as_binary_matrix(db_labels, "db_labels")
    if ql.shape[0] != q.shape[0]:
        raise ValueError(f"query_labels have {ql.shape[0]} rows but query_codes have {q.shape[0]}")
    if dl.shape[0] != d.shape[0]:
        raise ValueError(f"db_labels have {dl.shape[0]} rows but db_codes have {d.shape[0]}")
    if ql.shape[1] != dl.shape[1]:
        raise ValueError(f"query_labels have {ql.shape[1]} classes but db_labels have {dl.shape[1]}")
    return q, d, ql, dl


def _pack_words(bits01):
    """Pack a (n, d) 0/1 uint8 matrix into (n, w) unsigned words.

    The word is the smallest of 8/16/32/64 bits that holds a row, else 64 bits;
    padding bits are zero, so XOR/AND of two packed rows is exact.
    """
    packed = np.packbits(bits01, axis=1)  # (n, ceil(d / 8)) uint8
    nbytes = packed.shape[1]
    width = 8 if nbytes > 8 else 1 << (nbytes - 1).bit_length()
    pad = (-nbytes) % width
    if pad:
        packed = np.pad(packed, ((0, 0), (0, pad)))
    dtype = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[width]
    return np.ascontiguousarray(packed).view(dtype)


def _distance_dtype(bits):
    return np.uint8 if bits < 256 else np.uint16 if bits < 65536 else np.uint32


def _hamming_block(qw, dw, bits):
    """Hamming distances between packed rows qw (b, w) and dw (n, w)."""
    out = np.empty((qw.shape[0], dw.shape[0]), dtype=_distance_dtype(bits))
    for j in range(qw.shape[1]):
        x = np.bitwise_xor(qw[:, j, None], dw[None, :, j])
        if j == 0:
            np.bitwise_count(x, out=out, casting="unsafe")
        else:
            out += np.bitwise_count(x)
    return out


def _relevance_block(qlw, dlw):
    """(b, n) bool: query row and database row share at least one label."""
    acc = np.bitwise_and(qlw[:, 0, None], dlw[None, :, 0])
    for j in range(1, qlw.shape[1]):
        acc |= np.bitwise_and(qlw[:, j, None], dlw[None, :, j])
    return acc != 0


def _n_workers(workers):
    if workers is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:
            cpus = os.cpu_count() or 1
        return max(1, min(_MAX_WORKERS, cpus))
    if int(workers) != workers or workers < 1:
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
    return int(workers)


def _run_blocks(fn, n_query, n_db, workers):
    """Apply fn(start, stop) to query blocks and return the list of results in order."""
    rows = max(1, _BLOCK_PAIRS // n_db)
    blocks = [(s, min(s + rows, n_query)) for s in range(0, n_query, rows)]
    workers = min(_n_workers(workers), len(blocks))
    if workers == 1:
        return [fn(s, e) for s, e in blocks]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda se: fn(*se), blocks))


def _check_k(k, n_db, name="k"):
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= n_db:
        raise ValueError(f"{name} must be an integer in [1, n_db={n_db}], got {k!r}")
    return int(k)


# ---------------------------------------------------------------------------
# Hamming distances
# ---------------------------------------------------------------------------

def hamming_distances(query_codes, db_codes):
    """Hamming distances, shape (n_query, n_db): uint8 when bits < 256, else uint16 (uint32 past 65535).

    Rows are packed into machine words (np.packbits) and compared with XOR and
    popcount (np.bitwise_count), one block of queries at a time so temporaries
    stay bounded; the returned matrix itself is n_query * n_db entries.
    """
    q, d = _check_codes(query_codes, db_codes)
    bits = q.shape[1]
    qw, dw = _pack_words(q), _pack_words(d)
    out = np.empty((q.shape[0], d.shape[0]), dtype=_distance_dtype(bits))
    rows = max(1, _BLOCK_PAIRS // d.shape[0])
    for s in range(0, q.shape[0], rows):
        out[s:s + rows] = _hamming_block(qw[s:s + rows], dw, bits)
    return out


# ---------------------------------------------------------------------------
# One pass over all (query, database) pairs
# ---------------------------------------------------------------------------

def _per_query(query_codes, db_codes, query_labels, db_labels, *,
               ap_ks=(), p_ks=(), buckets=False, workers=None):
    """Per-query statistics from one blocked pass.

    ap_ks: cut-offs for AP (None means all); p_ks: cut-offs for precision@k;
    buckets: also return n_b / r_b, the number of all / relevant database
    items at each Hamming distance b = 0..bits.

    Returns a dict: 'ap' -> {k: (nq,) float}, 'p' -> (nq, len(p_ks)) float,
    'n_b', 'r_b' -> (nq, bits + 1) int64 when buckets is true.
    """
    q, d, ql, dl = _check_inputs(query_codes, db_codes, query_labels, db_labels)
    nq, n_db, bits = q.shape[0], d.shape[0], q.shape[1]
    ap_ks = [None if k is None else _check_k(k, n_db) for k in ap_ks]
    p_ks = np.array([_check_k(k, n_db, "ks entry") for k in p_ks], dtype=np.int64)
    need_rank = bool(ap_ks) or p_ks.size > 0
    qw, dw, qlw, dlw = _pack_words(q), _pack_words(d), _pack_words(ql), _pack_words(dl)
    nbins = bits + 1

    def block(s, e):
        dist = _hamming_block(qw[s:e], dw, bits)
        rel = _relevance_block(qlw[s:e], dlw)
        out = {}
        if buckets:
            # One bincount per row over key = distance + nbins * relevant.
            key_type = np.uint16 if 2 * nbins <= 1 << 16 else np.uint32
            key = dist.astype(key_type) + key_type(nbins) * rel
            counts = np.stack([np.bincount(row, minlength=2 * nbins) for row in key])
            out["r_b"] = counts[:, nbins:]
            out["n_b"] = counts[:, :nbins] + counts[:, nbins:]
        if need_rank:
            # Stable sort on small integer keys: ties keep database index order.
            order = np.argsort(dist, axis=1, kind="stable")
            ap = {k: np.zeros(e - s) for k in ap_ks}
            p = np.zeros((e - s, p_ks.size))
            for i in range(e - s):
                pos = np.flatnonzero(rel[i][order[i]])  # 0-based ranks of relevant items
                # precision at the rank of the m-th relevant item = m / (pos_m + 1)
                prec = np.arange(1, pos.size + 1) / (pos + 1.0)
                for k in ap_ks:
                    m = pos.size if k is None else int(np.searchsorted(pos, k))
                    ap[k][i] = prec[:m].sum() / m if m else 0.0
                if p_ks.size:
                    p[i] = np.searchsorted(pos, p_ks) / p_ks
            out["ap"], out["p"] = ap, p
        return out

    parts = _run_blocks(block, nq, n_db, workers)
    result = {}
    if buckets:
        result["n_b"] = np.concatenate([x["n_b"] for x in parts]).astype(np.int64)
        result["r_b"] = np.concatenate([x["r_b"] for x in parts]).astype(np.int64)
    if need_rank:
        result["ap"] = {k: np.concatenate([x["ap"][k] for x in parts]) for k in ap_ks}
        result["p"] = np.concatenate([x["p"] for x in parts])
    return result


# ---------------------------------------------------------------------------
# mAP
# ---------------------------------------------------------------------------

def map_at_k(query_codes, db_codes, query_labels, db_labels, *, k=None, workers=None):
    """Mean average precision under Hamming ranking, ties broken by database index.

    The ranking of query q sorts the database by (Hamming distance, index), a
    stable sort. With rel_r = 1 when the item at rank r shares a label with q,
    P@r the precision of the top r and R_k = sum_{r <= k} rel_r,

        AP@k(q) = (1 / R_k) * sum_{r <= k} rel_r * P@r,   AP@k(q) = 0 if R_k = 0,
        mAP@k   = mean over ALL queries of AP@k(q).

    k=None means k = n_db (mAP@all). Queries with R_k = 0 count as 0 in the
    mean, as in the DCMH evaluation code (the field's convention). The
    normaliser is the number of relevant items retrieved in the top k, not the
    number in the whole database.

    Cost: one distance pass and one stable counting sort per query, O(n_db).
    """
    stats_ = _per_query(query_codes, db_codes, query_labels, db_labels,
                        ap_ks=[k], workers=workers)
    return float(stats_["ap"][k].mean())


def _tie_aware_ap(n_b, r_b):
    """Expected AP per query from bucket counts (see tie_aware_map). Shapes (nq, B)."""
    n_b = n_b.astype(np.float64)
    r_b = r_b.astype(np.float64)
    n_before = np.cumsum(n_b, axis=1) - n_b
    r_before = np.cumsum(r_b, axis=1) - r_b
    # c = (r - 1) / (n - 1): chance that another given slot holds a relevant item.
    c = np.divide(r_b - 1, n_b - 1, out=np.zeros_like(n_b), where=n_b > 1)
    # H(N + n) - H(N) = digamma(N + n + 1) - digamma(N + 1)
    dh = special.digamma(n_before + n_b + 1) - special.digamma(n_before + 1)
    frac = np.divide(r_b, n_b, out=np.zeros_like(n_b), where=n_b > 0)
    contrib = frac * (r_before + 1 - c * (n_before + 1)) * dh + r_b * c
    contrib = np.where(r_b > 0, contrib, 0.0)
    total = r_b.sum(axis=1)
    return np.divide(contrib.sum(axis=1), total, out=np.zeros_like(total), where=total > 0)


def tie_aware_map(query_codes, db_codes, query_labels, db_labels, *, workers=None):
    """mAP@all averaged over all orders of items tied in Hamming distance.

    For each query, every order inside a bucket of equal Hamming distance is
    equally likely (McSherry & Najork, ECIR 2008). The expected AP is exact:

    Take a bucket with n items, r of them relevant, after N items of which R
    are relevant. Its relevant items add sum_j E[rel_j * prec_j] to R_total*AP,
    over the bucket's slots j = 1..n at ranks N + j. A slot holds a relevant
    item with probability r/n; given that, the other j - 1 slots before it hold
    a hypergeometric number of relevant items with mean (j - 1) c,
    c = (r - 1)/(n - 1) (c = 0 when n = 1). Hence

        E_bucket = sum_{j=1..n} (r/n) * (R + 1 + (j - 1) c) / (N + j)
                 = (r/n) * (R + 1 - c (N + 1)) * (H(N + n) - H(N)) + r c,

    using sum_j 1/(N + j) = H(N + n) - H(N) and
    sum_j (j - 1)/(N + j) = n - (N + 1) (H(N + n) - H(N)), with H the harmonic
    numbers, H(m) = digamma(m + 1) + Euler's gamma. Then

        AP_tie(q) = (1 / R_total) * sum_buckets E_bucket,  0 if R_total = 0,

    and the result is the mean over all queries. Cost per query after the
    distance pass: one bincount and O(bits) arithmetic.
    """
    stats_ = _per_query(query_codes, db_codes, query_labels, db_labels,
                        buckets=True, workers=workers)
    return float(_tie_aware_ap(stats_["n_b"], stats_["r_b"]).mean())


def chance_map(query_labels, db_labels):
    """Mean over queries of the fraction of the database relevant to the query.

    This is the expected precision of a random retrieval, which is the limit
    of the mAP of random codes as the database grows (the expected AP of a
    uniformly random ranking is R/n plus a term that vanishes as O(log n / n)
    for a fixed relevant fraction). Use it as the "mAP_random" in retention
    above chance.
    """
    ql = _as_binary_matrix(query_labels, "query_labels")
    dl = _as_binary_matrix(db_labels, "db_labels")
    if ql.shape[1] != dl.shape[1]:
        raise ValueError(f"query_labels have {ql.shape[1]} classes but db_labels have {dl.shape[1]}")
    if ql.shape[0] == 0 or dl.shape[0] == 0:
        raise ValueError(f"need at least one query and one database item, got "
                         f"n_query={ql.shape[0]}, n_db={dl.shape[0]}")
    qlw, dlw = _pack_words(ql), _pack_words(dl)
    rows = max(1, _BLOCK_PAIRS // dl.shape[0])
    frac = [_relevance_block(qlw[s:s + rows], dlw).mean(axis=1)
            for s in range(0, ql.shape[0], rows)]
    return float(np.concatenate(frac).mean())


# ---------------------------------------------------------------------------
# Curves
# ---------------------------------------------------------------------------

def precision_at_k_curve(query_codes, db_codes, query_labels, db_labels, ks, *, workers=None):
    """Mean precision of the top k, for each k in ks, under the index-tie-broken ranking.

    P@k(q) = (number of relevant items among the first k) / k, 1 <= k <= n_db.
    Returns a float array with one entry per k.
    """
    ks = list(ks)
    if not ks:
        raise ValueError("ks must not be empty")
    stats_ = _per_query(query_codes, db_codes, query_labels, db_labels,
                        p_ks=ks, workers=workers)
    return stats_["p"].mean(axis=0)


def _check_empty(empty_precision):
    if empty_precision not in ("zero", "exclude"):
        raise ValueError(f"empty_precision must be 'zero' or 'exclude', got {empty_precision!r}")


def _radius_curves(n_b, r_b, empty_precision):
    """Precision and recall of the sets within radius 0..bits, averaged over queries."""
    retrieved = np.cumsum(n_b, axis=1).astype(np.float64)
    hits = np.cumsum(r_b, axis=1).astype(np.float64)
    total = hits[:, -1:]
    prec = np.divide(hits, retrieved, out=np.zeros_like(hits), where=retrieved > 0)
    recall = np.divide(hits, total, out=np.zeros_like(hits), where=total > 0)
    if empty_precision == "zero":
        mean_prec = prec.mean(axis=0)
    else:
        nonempty = (retrieved > 0).sum(axis=0)
        mean_prec = np.divide(prec.sum(axis=0), nonempty,
                              out=np.full(prec.shape[1], np.nan), where=nonempty > 0)
    return mean_prec, recall.mean(axis=0)


def pr_curve_by_radius(query_codes, db_codes, query_labels, db_labels, *,
                       empty_precision="zero", workers=None):
    """Precision and recall of the Hamming ball of radius r, r = 0..bits.

    For query q, S_r = {database items at Hamming distance <= r}:
    precision_r(q) = |relevant in S_r| / |S_r|, recall_r(q) = |relevant in S_r| / R(q).
    Both are averaged over queries. Empty S_r: precision 0 and counted
    (empty_precision='zero', default) or left out of the mean ('exclude'; NaN
    if every query's set is empty). R(q) = 0: recall 0 and counted.
    Returns (precision, recall), each a float array of length bits + 1.
    """
    _check_empty(empty_precision)
    stats_ = _per_query(query_codes, db_codes, query_labels, db_labels,
                        buckets=True, workers=workers)
    return _radius_curves(stats_["n_b"], stats_["r_b"], empty_precision)


def precision_within_radius(query_codes, db_codes, query_labels, db_labels, *,
                            radius=2, empty_precision="zero", workers=None):
    """Mean precision of the Hamming ball of the given radius (conventions of pr_curve_by_radius)."""
    bits = np.shape(query_codes)[-1]
    if isinstance(radius, bool) or int(radius) != radius or not 0 <= radius <= bits:
        raise ValueError(f"radius must be an integer in [0, bits={bits}], got {radius!r}")
    prec, _ = pr_curve_by_radius(query_codes, db_codes, query_labels, db_labels,
                                 empty_precision=empty_precision, workers=workers)
    return float(prec[int(radius)])


def retrieval_report(query_codes, db_codes, query_labels, db_labels, *,
                     ks=DEFAULT_KS, radius=2, empty_precision="zero", workers=None):
    """All retrieval metrics from a single pass, as JSON-serialisable Python values.

    Keys: 'map' (mAP@all, index ties), 'map_tie_aware', 'ks' (the entries of ks
    that are <= n_db), 'p_at_k' (one per kept k), 'pr_precision' and
    'pr_recall' (radius 0..bits), 'p_r2' (precision within `radius`, 2 by
    default), 'chance_map', 'n_query', 'n_db', 'bits'. Conventions are those of
    map_at_k, tie_aware_map, precision_at_k_curve and pr_curve_by_radius.
    """
    _check_empty(empty_precision)
    q, d = _check_codes(query_codes, db_codes)
    n_db, bits = d.shape[0], q.shape[1]
    if isinstance(radius, bool) or int(radius) != radius or not 0 <= radius <= bits:
        raise ValueError(f"radius must be an integer in [0, bits={bits}], got {radius!r}")
    kept = [int(k) for k in ks if k <= n_db]
    stats_ = _per_query(q, d, query_labels, db_labels, ap_ks=[None], p_ks=kept,
                        buckets=True, workers=workers)
    prec, recall = _radius_curves(stats_["n_b"], stats_["r_b"], empty_precision)
    rel_frac = stats_["r_b"].sum(axis=1) / n_db
    return {
        "map": float(stats_["ap"][None].mean()),
        "map_tie_aware": float(_tie_aware_ap(stats_["n_b"], stats_["r_b"]).mean()),
        "ks": kept,
        "p_at_k": [float(x) for x in stats_["p"].mean(axis=0)],
        "pr_precision": [float(x) for x in prec],
        "pr_recall": [float(x) for x in recall],
        "p_r2": float(prec[int(radius)]),
        "chance_map": float(rel_frac.mean()),
        "n_query": int(q.shape[0]),
        "n_db": int(n_db),
        "bits": int(bits),
    }


# ---------------------------------------------------------------------------
# Naive reference and benchmark
# ---------------------------------------------------------------------------

def _reference_map(query_codes, db_codes, query_labels, db_labels, k=None):
    """Per-query loop, written independently of the fast path, for checks.

    Distances by counting unequal bits, relevance by a label dot product, a
    stable argsort, then AP@k with the convention of map_at_k. Returns the mean.
    """
    q, d, ql, dl = _check_inputs(query_codes, db_codes, query_labels, db_labels)
    k = d.shape[0] if k is None else _check_k(k, d.shape[0])
    dl64 = dl.astype(np.int64)
    aps = []
    for i in range(q.shape[0]):
        dist = (q[i] != d).sum(axis=1)
        rel = (dl64 @ ql[i].astype(np.int64)) > 0
        top = rel[np.argsort(dist, kind="stable")][:k]
        hits = np.cumsum(top)
        ranks = np.arange(1, k + 1)
        n_rel = hits[-1]
        aps.append(float((hits / ranks)[top].sum() / n_rel) if n_rel else 0.0)
    return float(np.mean(aps))


def benchmark_map(*, n_query=2100, n_db=184000, bits=64, n_labels=10, seed=0,
                  reference_queries=50, workers=None):
    """Time map_at_k(k=None) + tie_aware_map against the naive per-query reference.

    Random codes, and labels with skewed frequencies (label j is on with
    probability 0.35 / (j + 1) ** 0.7; an item with none gets one at random),
    NUS-WIDE TC-10 sized by default. The reference runs on the first
    `reference_queries` queries and its time per query is extrapolated to
    n_query. Raises RuntimeError if the fast mAP disagrees with the reference
    on that subset by more than 1e-9. Prints nothing; returns a dict.
    """
    rng = np.random.default_rng(seed)
    n = n_query + n_db
    codes = (rng.random((n, bits)) < 0.5).astype(np.uint8)
    freq = 0.35 / np.arange(1, n_labels + 1) ** 0.7
    labels = (rng.random((n, n_labels)) < freq).astype(np.uint8)
    empty = np.flatnonzero(labels.sum(axis=1) == 0)
    labels[empty, rng.integers(0, n_labels, empty.size)] = 1
    qc, dc, ql, dl = codes[:n_query], codes[n_query:], labels[:n_query], labels[n_query:]

    t0 = time.perf_counter()
    fast_map = map_at_k(qc, dc, ql, dl, workers=workers)
    t1 = time.perf_counter()
    fast_tie = tie_aware_map(qc, dc, ql, dl, workers=workers)
    t2 = time.perf_counter()

    m = min(reference_queries, n_query)
    t3 = time.perf_counter()
    ref = _reference_map(qc[:m], dc, ql[:m], dl)
    t4 = time.perf_counter()
    fast_sub = map_at_k(qc[:m], dc, ql[:m], dl, workers=workers)
    diff = abs(fast_sub - ref)
    if diff > 1e-9:
        raise RuntimeError(f"fast mAP {fast_sub!r} disagrees with reference {ref!r} (diff {diff:.3g})")

    ref_per_query = (t4 - t3) / m
    fast_total = t2 - t0
    return {
        "n_query": n_query, "n_db": n_db, "bits": bits, "n_labels": n_labels,
        "workers": _n_workers(workers),
        "map": fast_map, "map_tie_aware": fast_tie,
        "seconds_map": t1 - t0, "seconds_tie_aware": t2 - t1, "seconds_fast_total": fast_total,
        "reference_queries": m, "seconds_reference_per_query": ref_per_query,
        "seconds_reference_extrapolated": ref_per_query * n_query,
        "speedup_vs_reference_map": ref_per_query * n_query / (t1 - t0),
        "reference_abs_diff": diff,
    }


# ---------------------------------------------------------------------------
# Link-reconstruction attack
# ---------------------------------------------------------------------------

def roc_auc(scores, labels):
    """Exact ROC AUC: probability a positive outscores a negative, ties counting 1/2.

    Mann-Whitney form with average ranks (ranks 1..n of all scores, ties
    sharing their mean rank, S_pos the positives' rank sum):
        AUC = (S_pos - n_pos (n_pos + 1) / 2) / (n_pos * n_neg).
    labels are 0/1 (or bool); both classes must be present; scores finite.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores have {s.size} entries but labels have {y.size}")
    if not np.isfinite(s).all():
        raise ValueError(f"scores must be finite, found {s[~np.isfinite(s)][0]!r}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0/1, found {y[~np.isin(y, (0, 1))][0]!r}")
    y = y.astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"need both classes, got n_pos={n_pos}, n_neg={n_neg}")
    ranks = stats.rankdata(s, method="average")
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _check_pairs(pairs, n, name):
    p = np.asarray(pairs)
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] == 0:
        raise ValueError(f"{name} must have shape (m, 2) with m >= 1, got {p.shape}")
    if not np.issubdtype(p.dtype, np.integer):
        raise ValueError(f"{name} must hold integer indices, got dtype {p.dtype}")
    if p.min() < 0 or p.max() >= n:
        bad = p[(p < 0) | (p >= n)][0]
        raise ValueError(f"{name} holds index {bad} outside [0, {n})")
    return p.astype(np.int64)


def pair_scores(x, pairs, *, kind="auto"):
    """Similarity of each pair (i, j): -Hamming distance for codes, cosine otherwise.

    kind='auto' picks 'codes' for bool or integer arrays with only 0/1
    values, and 'cosine' for anything else (float features, even 0/1 ones).
    Cosine with a zero vector is 0.
    """
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"codes_or_features must be 2-D, got shape {a.shape}")
    if kind not in ("auto", "codes", "cosine"):
        raise ValueError(f"kind must be 'auto', 'codes' or 'cosine', got {kind!r}")
    p = _check_pairs(pairs, a.shape[0], "pairs")
    if kind == "auto":
        binary_int = (a.dtype == bool or np.issubdtype(a.dtype, np.integer))
        kind = "codes" if binary_int and np.isin(a, (0, 1)).all() else "cosine"
    if kind == "codes":
        w = _pack_words(_as_binary_matrix(a, "codes"))
        dist = np.zeros(p.shape[0], dtype=np.int64)
        for j in range(w.shape[1]):
            dist += np.bitwise_count(w[p[:, 0], j] ^ w[p[:, 1], j])
        return -dist.astype(np.float64)
    f = a.astype(np.float64)
    norms = np.linalg.norm(f, axis=1)
    f = f / np.where(norms > 0, norms, 1.0)[:, None]
    out = np.empty(p.shape[0])
    step = max(1, (1 << 22) // max(1, f.shape[1]))
    for s in range(0, p.shape[0], step):
        i, j = p[s:s + step, 0], p[s:s + step, 1]
        out[s:s + step] = np.einsum("ij,ij->i", f[i], f[j])
    return out


def link_attack_auc(codes_or_features, pos_pairs, neg_pairs, *, kind="auto"):
    """AUC of telling true edges (pos_pairs) from non-edges (neg_pairs) by pair similarity.

    A pair (i, j) is scored by pair_scores (negative Hamming distance for 0/1
    codes, cosine similarity for real features; see kind there) and the AUC is
    roc_auc over positives and negatives. 0.5 means the attack learns nothing.
    """
    pos = pair_scores(codes_or_features, pos_pairs, kind=kind)
    neg = pair_scores(codes_or_features, neg_pairs, kind=kind)
    labels = np.concatenate([np.ones(pos.size, dtype=np.uint8), np.zeros(neg.size, dtype=np.uint8)])
    return roc_auc(np.concatenate([pos, neg]), labels)


# ---------------------------------------------------------------------------
# Privacy audit statistics
# ---------------------------------------------------------------------------

def _check_count(k, n, alpha):
    for name, v in (("k", k), ("n", n)):
        if isinstance(v, bool) or int(v) != v:
            raise ValueError(f"{name} must be an integer, got {v!r}")
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need n >= 1 and 0 <= k <= n, got k={k!r}, n={n!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return int(k), int(n)


def clopper_pearson_upper(k, n, *, alpha=0.05):
    """One-sided (1 - alpha) upper bound on a binomial rate from k successes in n trials.

    p_hi = Beta quantile at 1 - alpha with parameters (k + 1, n - k), and 1
    when k = n. For k = 0 this is 1 - alpha ** (1 / n).
    """
    k, n = _check_count(k, n, alpha)
    if k == n:
        return 1.0
    return float(stats.beta.ppf(1.0 - alpha, k + 1, n - k))


def clopper_pearson_lower(k, n, *, alpha=0.05):
    """One-sided (1 - alpha) lower bound: Beta quantile at alpha with (k, n - k + 1); 0 when k = 0."""
    k, n = _check_count(k, n, alpha)
    if k == 0:
        return 0.0
    return float(stats.beta.ppf(alpha, k, n - k + 1))


def empirical_epsilon_lower_bound(fp, fn, n_neg, n_pos, *, delta, alpha=0.05):
    """Lower confidence bound on epsilon from a distinguishing experiment.

    Setting: n_neg trials where the canary (edge) is absent, of which the
    attack wrongly says "present" fp times; n_pos trials with the canary, of
    which it wrongly says "absent" fn times.

    Kairouz, Oh & Viswanath (arXiv 1311.0776, Section 2, the operational
    interpretation of DP): a mechanism is (eps, delta)-DP iff every test
    between neighbours has
        FPR + e^eps * FNR >= 1 - delta   and   e^eps * FPR + FNR >= 1 - delta.
    So eps >= log((1 - delta - FPR) / FNR) and eps >= log((1 - delta - FNR) / FPR).
    Both are decreasing in FPR and FNR, so plugging in one-sided Clopper-Pearson
    upper bounds FPR_hi, FNR_hi, each at level alpha / 2 (Bonferroni: both hold
    together with probability >= 1 - alpha), gives

        eps_lb = max(0, log((1 - delta - FPR_hi) / FNR_hi), log((1 - delta - FNR_hi) / FPR_hi)),

    a (1 - alpha)-confidence lower bound on the epsilon of any (eps, delta)
    guarantee the mechanism can satisfy (Jagielski et al. 2020, arXiv
    2006.07709; Nasr et al. 2021, arXiv 2101.04535). A term with a
    non-positive numerator is dropped. The bound is finite since FPR_hi,
    FNR_hi > 0 for finite trials.
    """
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1), got {delta!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    fpr_hi = clopper_pearson_upper(fp, n_neg, alpha=alpha / 2)
    fnr_hi = clopper_pearson_upper(fn, n_pos, alpha=alpha / 2)
    best = 0.0
    for num, den in ((1 - delta - fpr_hi, fnr_hi), (1 - delta - fnr_hi, fpr_hi)):
        if num > 0:
            best = max(best, math.log(num / den))
    return best


def empirical_gdp_mu_lower_bound(fp, fn, n_neg, n_pos, *, alpha=0.05):
    """Lower confidence bound on mu from a distinguishing experiment, for a mu-GDP claim.

    Setting as in ``empirical_epsilon_lower_bound``. A mechanism is mu-GDP iff every test between
    neighbours has type II error beta >= Phi(Phi^-1(1 - a) - mu) at type I error a (Dong, Roth & Su,
    arXiv 1905.02383, Definition 2.1 with the trade-off function G_mu of eq. (2.3)). Solving for mu:

        mu >= Phi^-1(1 - FPR) + Phi^-1(1 - FNR),

    which is symmetric in FPR and FNR (so the reversed test gives the same bound) and decreases in
    both. One-sided Clopper-Pearson upper bounds FPR_hi, FNR_hi at level alpha / 2 each
    (Bonferroni) give a (1 - alpha)-confidence lower bound

        mu_lb = max(0, Phi^-1(1 - FPR_hi) + Phi^-1(1 - FNR_hi)).

    Why test mu and not only epsilon: the sanitizer is accounted as mu-GDP (privacy.py, module
    docstring) and converted to (epsilon, delta) afterwards, so mu is the claim it makes. The
    mu-GDP trade-off curve is the whole family of (epsilon, delta(epsilon)) guarantees; tested near
    FPR = FNR = 1/2, where most trials are informative, it detects a small sigma understatement
    with far fewer trials than one (epsilon, delta) point at a tiny delta (Nasr et al., arXiv
    2302.07956, audit DP-SGD in the same mu-GDP terms).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    fpr_hi = clopper_pearson_upper(fp, n_neg, alpha=alpha / 2)
    fnr_hi = clopper_pearson_upper(fn, n_pos, alpha=alpha / 2)
    if fpr_hi >= 1.0 or fnr_hi >= 1.0:
        return 0.0
    return max(0.0, float(stats.norm.isf(fpr_hi) + stats.norm.isf(fnr_hi)))


# ---------------------------------------------------------------------------
# Figures (pillow only)
# ---------------------------------------------------------------------------

PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
_GRID = (225, 225, 225)
_INK = (0, 0, 0)


def _nice_ticks(lo, hi, target=6):
    """Round tick values (1, 2, 5 times a power of ten) covering [lo, hi]."""
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / target
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step + 1e-9) * step
    stop = math.ceil(hi / step - 1e-9) * step
    count = int(round((stop - start) / step))
    return [start + i * step for i in range(count + 1)]


def _log_ticks(lo, hi):
    """Powers of ten covering [lo, hi] (lo > 0); adds 2 and 5 multiples on short ranges."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if b == a:
        b += 1
    mults = (1,) if b - a > 2 else (1, 2, 5)
    ticks = [m * 10.0 ** e for e in range(a, b + 1) for m in mults]
    return [t for t in ticks if 10.0 ** a <= t <= 10.0 ** b]


def _fmt(v):
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.0e}"
    return f"{v:.6g}"


def _text_size(draw, text, font):
    box = draw.textbbox((0, 0), text, font=font)
    return box[2] - box[0], box[3] - box[1]


def _save_png(img, path):
    tmp = os.fspath(path) + ".tmp"
    img.save(tmp, format="PNG")
    os.replace(tmp, path)


def line_plot(path, series, *, title="", xlabel="", ylabel="", xlog=False,
              size=(720, 480), ylim=None, hlines=None, xticks=None, yerr=None):
    """Draw named (xs, ys) series as lines with markers and save a PNG atomically.

    series: dict name -> (xs, ys). Non-finite points are skipped (the line
    breaks there); with xlog=True, x <= 0 is skipped too. Axes, numeric tick
    labels, grid, legend and up to 10 distinct colours (then they repeat).
    ylim=(lo, hi) fixes the y range. hlines: dict name -> y, drawn as dashed
    horizontal reference lines (e.g. the public-only model, chance) with a dashed
    legend entry. xticks: the x tick values (e.g. the epsilons that were run); the
    x range is then theirs, padded by 5%, instead of round numbers around the data.
    yerr: dict name -> per-point half-widths (e.g. std over seeds), drawn as error
    bars; non-finite ones are skipped. Written to path + '.tmp', then os.replace.
    """
    hlines = {k: float(v) for k, v in (hlines or {}).items() if v is not None and math.isfinite(float(v))}
    if not series:
        raise ValueError("series must name at least one (xs, ys) pair")
    clean = {}
    for name, (xs, ys) in series.items():
        x = np.asarray(xs, dtype=np.float64).ravel()
        y = np.asarray(ys, dtype=np.float64).ravel()
        if x.shape != y.shape:
            raise ValueError(f"series {name!r}: {x.size} xs but {y.size} ys")
        ok = np.isfinite(x) & np.isfinite(y) & ((x > 0) if xlog else True)
        clean[name] = (x, y, ok)
    all_x = np.concatenate([x[ok] for x, _, ok in clean.values()])
    all_y = np.concatenate([y[ok] for _, y, ok in clean.values()] + [np.array(list(hlines.values()))])
    if all_x.size == 0:
        raise ValueError("no finite points to plot")

    try:
        font = ImageFont.load_default(size=13)
    except (TypeError, ImportError):  # old pillow or no FreeType: the bitmap font
        font = ImageFont.load_default()
    width, height = size
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 78, width - 20, 40, height - 58

    fx = math.log10 if xlog else float
    fixed_x = xticks is not None
    if fixed_x:
        xticks = sorted(float(t) for t in xticks if math.isfinite(t) and (t > 0 or not xlog))
        if not xticks:
            raise ValueError("xticks must hold at least one finite value (> 0 on a log axis)")
    elif xlog:
        xticks = _log_ticks(all_x.min(), all_x.max())
    else:
        xticks = _nice_ticks(all_x.min(), all_x.max())
    if ylim:
        yticks = _nice_ticks(*ylim)
    else:
        pad = 0.04 * (all_y.max() - all_y.min())  # keep markers off the frame
        yticks = _nice_ticks(all_y.min() - pad, all_y.max() + pad)
    x0, x1 = fx(xticks[0]), fx(xticks[-1])
    if fixed_x:  # keep the first and last markers off the frame
        span = (x1 - x0) or 1.0
        x0, x1 = x0 - 0.05 * span, x1 + 0.05 * span
    y0, y1 = (ylim if ylim else (yticks[0], yticks[-1]))

    def px(v):
        return left + (fx(v) - x0) / (x1 - x0) * (right - left)

    def py(v):
        return bottom - (v - y0) / (y1 - y0) * (bottom - top)

    for t in xticks:
        x = px(t)
        draw.line([(x, top), (x, bottom)], fill=_GRID)
        draw.line([(x, bottom), (x, bottom + 5)], fill=_INK)
        label = _fmt(t)
        w, _ = _text_size(draw, label, font)
        draw.text((x - w / 2, bottom + 8), label, fill=_INK, font=font)
    for t in yticks:
        if not y0 - 1e-12 <= t <= y1 + 1e-12:
            continue
        y = py(t)
        draw.line([(left, y), (right, y)], fill=_GRID)
        draw.line([(left - 5, y), (left, y)], fill=_INK)
        label = _fmt(t)
        w, h = _text_size(draw, label, font)
        draw.text((left - 8 - w, y - h / 2 - 1), label, fill=_INK, font=font)
    draw.rectangle([left, top, right, bottom], outline=_INK)

    for idx, (name, (x, y, ok)) in enumerate(clean.items()):
        colour = PALETTE[idx % len(PALETTE)]
        run = []
        for xi, yi, good in zip(x, y, ok):
            if good:
                run.append((px(xi), py(yi)))
            elif run:
                if len(run) > 1:
                    draw.line(run, fill=colour, width=2)
                run = []
        if len(run) > 1:
            draw.line(run, fill=colour, width=2)
        err = np.asarray((yerr or {}).get(name, np.full(x.shape, np.nan)), dtype=np.float64).ravel()
        if err.shape != x.shape:
            raise ValueError(f"yerr {name!r}: {err.size} values for {x.size} points")
        for xi, yi, good, ei in zip(x, y, ok, err):
            if good:
                cx, cy = px(xi), py(yi)
                draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
                if math.isfinite(ei) and ei > 0:
                    lo, hi = py(yi - ei), py(yi + ei)
                    draw.line([(cx, lo), (cx, hi)], fill=colour, width=1)
                    draw.line([(cx - 4, lo), (cx + 4, lo)], fill=colour, width=1)
                    draw.line([(cx - 4, hi), (cx + 4, hi)], fill=colour, width=1)

    def dashed(y, colour):
        x = float(left)
        while x < right:
            draw.line([(x, y), (min(x + 8, right), y)], fill=colour, width=2)
            x += 14

    n_series = len(clean)
    for idx, (name, yv) in enumerate(hlines.items()):
        dashed(py(yv), PALETTE[(n_series + idx) % len(PALETTE)])

    # Legend inside the axes, in the corner that covers the fewest points.
    names = list(clean) + list(hlines)
    line_h = max(_text_size(draw, n, font)[1] for n in names) + 6
    box_w = max(_text_size(draw, n, font)[0] for n in names) + 40
    box_h = line_h * len(names) + 6
    points = [(px(xi), py(yi)) for x, y, ok in clean.values() for xi, yi in zip(x[ok], y[ok])]
    corners = [(right - box_w - 8, top + 8), (left + 8, top + 8),
               (right - box_w - 8, bottom - box_h - 8), (left + 8, bottom - box_h - 8)]
    lx, ly = min(corners, key=lambda c: sum(c[0] - 6 <= a <= c[0] + box_w + 6 and
                                            c[1] - 6 <= b <= c[1] + box_h + 6 for a, b in points))
    draw.rectangle([lx, ly, lx + box_w, ly + box_h], fill="white", outline=_INK)
    for idx, name in enumerate(names):
        colour = PALETTE[idx % len(PALETTE)]
        yy = ly + 6 + idx * line_h + line_h / 2 - 3
        if idx < n_series:
            draw.line([(lx + 6, yy), (lx + 26, yy)], fill=colour, width=3)
        else:
            draw.line([(lx + 6, yy), (lx + 12, yy)], fill=colour, width=3)
            draw.line([(lx + 18, yy), (lx + 26, yy)], fill=colour, width=3)
        draw.text((lx + 32, yy - line_h / 2 + 2), name, fill=_INK, font=font)

    if title:
        w, _ = _text_size(draw, title, font)
        draw.text(((left + right - w) / 2, 12), title, fill=_INK, font=font)
    if xlabel:
        w, _ = _text_size(draw, xlabel, font)
        draw.text(((left + right - w) / 2, bottom + 30), xlabel, fill=_INK, font=font)
    if ylabel:
        w, h = _text_size(draw, ylabel, font)
        label_img = Image.new("RGB", (w + 4, h + 6), "white")
        ImageDraw.Draw(label_img).text((2, 1), ylabel, fill=_INK, font=font)
        label_img = label_img.rotate(90, expand=True)
        img.paste(label_img, (8, int((top + bottom - label_img.height) / 2)))

    _save_png(img, path)
