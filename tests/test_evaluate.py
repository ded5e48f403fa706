"""Tests for evaluate.py against independent brute-force references.

The references here are plain Python loops over items, pairs or permutations,
written without the packing, sorting or closed forms that evaluate.py uses.
"""

import itertools
import json
import math
import os

import numpy as np
import pytest
from PIL import Image
from scipy import stats

import evaluate as ev


# ---------------------------------------------------------------------------
# Brute-force references
# ---------------------------------------------------------------------------

def bf_dist(a, b):
    return sum(int(x) != int(y) for x, y in zip(a, b))


def bf_rel(a, b):
    return any(int(x) and int(y) for x, y in zip(a, b))


def bf_ranked_relevance(q, d, ql, dl):
    """Relevance flags in (distance, index) order, plus the distances."""
    dist = [bf_dist(q, row) for row in d]
    order = sorted(range(len(d)), key=lambda j: (dist[j], j))
    return [bf_rel(ql, dl[j]) for j in order], dist


def bf_ap(rel, k=None):
    k = len(rel) if k is None else k
    hits, total = 0, 0.0
    for r, flag in enumerate(rel[:k], start=1):
        if flag:
            hits += 1
            total += hits / r
    return total / hits if hits else 0.0


def bf_map(qc, dc, ql, dl, k=None):
    aps = [bf_ap(bf_ranked_relevance(qc[i], dc, ql[i], dl)[0], k) for i in range(len(qc))]
    return sum(aps) / len(aps)


def bf_tie_aware_ap(q, d, ql, dl):
    """Average AP over every order of items inside each group of equal distance."""
    dist = [bf_dist(q, row) for row in d]
    groups = [[j for j in range(len(d)) if dist[j] == v] for v in sorted(set(dist))]
    total, count = 0.0, 0
    for perms in itertools.product(*[itertools.permutations(g) for g in groups]):
        order = [j for group in perms for j in group]
        total += bf_ap([bf_rel(ql, dl[j]) for j in order])
        count += 1
    return total / count


def random_case(rng, nq, ndb, bits, n_labels, *, distinct_codes=None, p_label=0.3):
    """Random codes and labels. distinct_codes draws codes from a small pool (many ties)."""
    if distinct_codes:
        pool = rng.integers(0, 2, (distinct_codes, bits), dtype=np.uint8)
        qc = pool[rng.integers(0, distinct_codes, nq)]
        dc = pool[rng.integers(0, distinct_codes, ndb)]
    else:
        qc = rng.integers(0, 2, (nq, bits), dtype=np.uint8)
        dc = rng.integers(0, 2, (ndb, bits), dtype=np.uint8)
    ql = (rng.random((nq, n_labels)) < p_label).astype(np.uint8)
    dl = (rng.random((ndb, n_labels)) < p_label).astype(np.uint8)
    return qc, dc, ql, dl


# ---------------------------------------------------------------------------
# Hamming distances and mAP
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [8, 16, 24, 40, 64, 72, 256])
def test_hamming_distances_match_bruteforce(bits):
    rng = np.random.default_rng(bits)
    qc, dc, _, _ = random_case(rng, 6, 17, bits, 2)
    got = ev.hamming_distances(qc.astype(bool), dc)
    want = np.array([[bf_dist(a, b) for b in dc] for a in qc])
    assert got.dtype == (np.uint8 if bits < 256 else np.uint16)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bits,distinct,n_labels", [
    (8, 6, 3),       # ties everywhere
    (8, None, 5),
    (16, None, 1),
    (32, 12, 70),    # labels span two packed words
    (64, None, 4),
    (256, None, 3),  # uint16 distances
])
def test_map_matches_bruteforce(bits, distinct, n_labels):
    rng = np.random.default_rng(1000 + bits)
    for trial in range(3):
        qc, dc, ql, dl = random_case(rng, 7, 60 + 13 * trial, bits, n_labels,
                                     distinct_codes=distinct)
        for k in (None, 1, 5, 17, dc.shape[0]):
            want = bf_map(qc, dc, ql, dl, k)
            assert ev.map_at_k(qc, dc, ql, dl, k=k) == pytest.approx(want, abs=1e-9)
            assert ev._reference_map(qc, dc, ql, dl, k=k) == pytest.approx(want, abs=1e-9)


def test_map_hand_computed_with_index_ties_and_empty_query():
    # Database distances to query 0: items 0 and 2 tie at distance 0, item 1 at 8.
    qc = np.zeros((2, 8), dtype=np.uint8)
    dc = np.array([[0] * 8, [1] * 8, [0] * 8], dtype=np.uint8)
    ql = np.array([[1, 0], [0, 0]])           # query 1 has no label: nothing relevant
    dl = np.array([[0, 1], [1, 0], [1, 0]])   # relevant to query 0: items 1, 2
    # Ranking for query 0: item 0 (no), item 2 (yes, P=1/2), item 1 (yes, P=2/3).
    ap0 = (1 / 2 + 2 / 3) / 2
    assert ev.map_at_k(qc, dc, ql, dl) == pytest.approx(ap0 / 2, abs=1e-12)
    # AP@2: only item 2 is relevant in the top 2, R_2 = 1, P@2 = 1/2.
    assert ev.map_at_k(qc, dc, ql, dl, k=2) == pytest.approx(0.5 / 2, abs=1e-12)
    # AP@1: nothing relevant in the top 1 -> 0 for both queries.
    assert ev.map_at_k(qc, dc, ql, dl, k=1) == 0.0
    # Swapping the tied items 0 and 2 puts the relevant one first: P = 1, then 2/3.
    swapped = ev.map_at_k(qc, dc[[2, 1, 0]], ql, dl[[2, 1, 0]])
    assert swapped == pytest.approx((1 + 2 / 3) / 2 / 2, abs=1e-12)


def test_blocks_and_threads_do_not_change_results(monkeypatch):
    rng = np.random.default_rng(7)
    qc, dc, ql, dl = random_case(rng, 23, 90, 16, 4, distinct_codes=20)
    serial = ev.retrieval_report(qc, dc, ql, dl, ks=(1, 10, 50), workers=1)
    monkeypatch.setattr(ev, "_BLOCK_PAIRS", 200)  # two queries per block, 12 blocks
    threaded = ev.retrieval_report(qc, dc, ql, dl, ks=(1, 10, 50), workers=3)
    assert threaded == serial
    assert serial["map"] == pytest.approx(bf_map(qc, dc, ql, dl), abs=1e-9)


# ---------------------------------------------------------------------------
# Tie-aware mAP
# ---------------------------------------------------------------------------

def test_tie_aware_matches_enumeration_of_all_tie_orders():
    rng = np.random.default_rng(11)
    checked = 0
    for trial in range(12):
        ndb = int(rng.integers(2, 8))
        qc, dc, ql, dl = random_case(rng, 3, ndb, 8, 2, distinct_codes=3, p_label=0.5)
        want = np.mean([bf_tie_aware_ap(qc[i], dc, ql[i], dl) for i in range(3)])
        got = ev.tie_aware_map(qc, dc, ql, dl)
        assert got == pytest.approx(want, abs=1e-9)
        dist = ev.hamming_distances(qc, dc)
        checked += any(len(set(row)) < len(row) for row in dist.tolist())
    assert checked >= 6  # most cases really had tied items


def test_tie_aware_equals_map_without_ties_and_differs_with_them():
    # Distances 0..8 to the zero query are all different: one order only.
    dc = np.tril(np.ones((9, 8), dtype=np.uint8), k=-1)
    qc = np.zeros((1, 8), dtype=np.uint8)
    dl = np.array([[1], [0], [1], [1], [0], [0], [1], [0], [1]])
    ql = np.array([[1]])
    assert ev.tie_aware_map(qc, dc, ql, dl) == pytest.approx(ev.map_at_k(qc, dc, ql, dl), abs=1e-12)
    # All items tied: index order puts the relevant ones last, the expectation does not.
    tied = np.zeros((4, 8), dtype=np.uint8)
    dl2 = np.array([[0], [0], [1], [1]])
    assert ev.map_at_k(qc, tied, ql, dl2) == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert ev.tie_aware_map(qc, tied, ql, dl2) > ev.map_at_k(qc, tied, ql, dl2)


def test_tie_aware_closed_form_matches_slot_sum_on_large_buckets():
    # Check the harmonic-number form against sum_j (r/n)(R + 1 + (j-1)c)/(N + j).
    rng = np.random.default_rng(3)
    n_b = rng.integers(0, 5000, (4, 9))
    r_b = np.minimum(n_b, rng.integers(0, 3000, (4, 9)))
    got = ev._tie_aware_ap(n_b, r_b)
    for q in range(4):
        big_n = big_r = 0
        total = 0.0
        for n, r in zip(n_b[q], r_b[q]):
            if r:
                c = (r - 1) / (n - 1) if n > 1 else 0.0
                j = np.arange(1, n + 1)
                total += np.sum((r / n) * (big_r + 1 + (j - 1) * c) / (big_n + j))
            big_n += n
            big_r += r
        assert got[q] == pytest.approx(total / big_r, rel=1e-10)


# ---------------------------------------------------------------------------
# Curves and report
# ---------------------------------------------------------------------------

def test_precision_at_k_matches_bruteforce():
    rng = np.random.default_rng(5)
    qc, dc, ql, dl = random_case(rng, 9, 70, 8, 3, distinct_codes=10)
    ks = [1, 2, 7, 30, 70]
    got = ev.precision_at_k_curve(qc, dc, ql, dl, ks)
    for idx, k in enumerate(ks):
        want = np.mean([sum(bf_ranked_relevance(qc[i], dc, ql[i], dl)[0][:k]) / k
                        for i in range(len(qc))])
        assert got[idx] == pytest.approx(want, abs=1e-12)


def bf_radius_curves(qc, dc, ql, dl, empty):
    bits = qc.shape[1]
    precisions, recalls = [], []
    for r in range(bits + 1):
        ps, rs = [], []
        for i in range(len(qc)):
            dist = [bf_dist(qc[i], row) for row in dc]
            rel = [bf_rel(ql[i], row) for row in dl]
            inside = [j for j in range(len(dc)) if dist[j] <= r]
            hits = sum(rel[j] for j in inside)
            if inside:
                ps.append(hits / len(inside))
            elif empty == "zero":
                ps.append(0.0)
            rs.append(hits / sum(rel) if sum(rel) else 0.0)
        precisions.append(np.mean(ps) if ps else np.nan)
        recalls.append(np.mean(rs))
    return np.array(precisions), np.array(recalls)


@pytest.mark.parametrize("empty", ["zero", "exclude"])
def test_pr_curve_by_radius_matches_bruteforce(empty):
    rng = np.random.default_rng(9)
    qc, dc, ql, dl = random_case(rng, 8, 25, 16, 3)
    prec, rec = ev.pr_curve_by_radius(qc, dc, ql, dl, empty_precision=empty)
    want_p, want_r = bf_radius_curves(qc, dc, ql, dl, empty)
    assert np.isnan(prec[0]) == np.isnan(want_p[0])
    np.testing.assert_allclose(prec, want_p, atol=1e-12)
    np.testing.assert_allclose(rec, want_r, atol=1e-12)
    assert rec[-1] == pytest.approx(np.mean([any(bf_rel(a, b) for b in dl) for a in ql]))
    p2 = ev.precision_within_radius(qc, dc, ql, dl, radius=2, empty_precision=empty)
    assert p2 == pytest.approx(want_p[2], abs=1e-12) or (np.isnan(p2) and np.isnan(want_p[2]))


def test_retrieval_report_is_json_and_consistent():
    rng = np.random.default_rng(21)
    qc, dc, ql, dl = random_case(rng, 10, 120, 16, 4, distinct_codes=30)
    rep = ev.retrieval_report(qc, dc, ql, dl, ks=(1, 5, 100, 1000))
    json.dumps(rep)
    assert rep["ks"] == [1, 5, 100]  # 1000 > n_db is dropped
    assert rep["map"] == pytest.approx(bf_map(qc, dc, ql, dl), abs=1e-9)
    assert rep["map_tie_aware"] == pytest.approx(ev.tie_aware_map(qc, dc, ql, dl), abs=1e-12)
    np.testing.assert_allclose(rep["p_at_k"], ev.precision_at_k_curve(qc, dc, ql, dl, [1, 5, 100]))
    prec, rec = ev.pr_curve_by_radius(qc, dc, ql, dl)
    np.testing.assert_allclose(rep["pr_precision"], prec)
    np.testing.assert_allclose(rep["pr_recall"], rec)
    assert rep["p_r2"] == pytest.approx(prec[2])
    assert len(rep["pr_precision"]) == 17
    assert rep["chance_map"] == pytest.approx(ev.chance_map(ql, dl))


def test_chance_map_is_mean_relevant_fraction_and_random_codes_approach_it():
    rng = np.random.default_rng(4)
    ql = (rng.random((40, 5)) < 0.3).astype(np.uint8)
    dl = (rng.random((4000, 5)) < 0.3).astype(np.uint8)
    want = np.mean([(dl @ row > 0).mean() for row in ql])
    chance = ev.chance_map(ql, dl)
    assert chance == pytest.approx(want, abs=1e-12)
    qc = rng.integers(0, 2, (40, 32), dtype=np.uint8)
    dc = rng.integers(0, 2, (4000, 32), dtype=np.uint8)
    assert abs(ev.map_at_k(qc, dc, ql, dl) - chance) < 0.02


# ---------------------------------------------------------------------------
# Attack
# ---------------------------------------------------------------------------

def bf_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_roc_auc_matches_pair_counting_with_ties():
    rng = np.random.default_rng(2)
    for _ in range(20):
        n = int(rng.integers(2, 60))
        scores = rng.integers(0, 6, n).astype(float)  # many ties
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]
        assert ev.roc_auc(scores, labels) == pytest.approx(bf_auc(scores, labels), abs=1e-12)
    assert ev.roc_auc([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0
    assert ev.roc_auc([1, 1, 1], [1, 0, 1]) == 0.5
    with pytest.raises(ValueError, match="n_pos=0"):
        ev.roc_auc([1, 2], [0, 0])


def test_link_attack_auc_codes_and_cosine():
    rng = np.random.default_rng(8)
    codes = rng.integers(0, 2, (30, 16), dtype=np.uint8)
    pos = rng.integers(0, 30, (25, 2))
    neg = rng.integers(0, 30, (40, 2))
    scores = [-bf_dist(codes[i], codes[j]) for i, j in np.vstack([pos, neg])]
    labels = [1] * 25 + [0] * 40
    assert ev.link_attack_auc(codes, pos, neg) == pytest.approx(bf_auc(scores, labels), abs=1e-12)

    feats = rng.normal(size=(30, 5))
    feats[3] = 0.0  # zero vector: cosine 0
    pos[0] = (3, 4)

    def cos(i, j):
        a, b = feats[i], feats[j]
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        return float(a @ b / (na * nb)) if na and nb else 0.0

    scores = [cos(i, j) for i, j in np.vstack([pos, neg])]
    got = ev.link_attack_auc(feats, pos, neg)
    assert got == pytest.approx(bf_auc(scores, labels), abs=1e-12)
    # 0/1 floats are features, not codes, under kind='auto'; kind='codes' overrides.
    as_float = codes.astype(np.float32)
    assert ev.pair_scores(as_float, pos[:3]) == pytest.approx(
        [cos_ for cos_ in ev.pair_scores(as_float, pos[:3], kind="cosine")])
    assert ev.pair_scores(as_float, pos[:3], kind="codes") == pytest.approx(
        [-bf_dist(codes[i], codes[j]) for i, j in pos[:3]])
    # Identical codes for linked pairs give a perfect attack.
    twins = np.repeat(rng.integers(0, 2, (10, 16), dtype=np.uint8), 2, axis=0)
    linked = np.array([(2 * i, 2 * i + 1) for i in range(10)])
    unlinked = np.array([(2 * i, (2 * i + 3) % 20) for i in range(10)])
    unlinked = unlinked[[bf_dist(twins[i], twins[j]) > 0 for i, j in unlinked]]
    assert ev.link_attack_auc(twins, linked, unlinked) == 1.0
    with pytest.raises(ValueError, match="index 30"):
        ev.link_attack_auc(codes, [[0, 30]], neg)


# ---------------------------------------------------------------------------
# Audit statistics
# ---------------------------------------------------------------------------

def test_clopper_pearson_closed_forms_and_binomial_inversion():
    for n in (1, 7, 100, 5000):
        for alpha in (0.05, 0.01):
            assert ev.clopper_pearson_upper(0, n, alpha=alpha) == pytest.approx(1 - alpha ** (1 / n), rel=1e-10)
            assert ev.clopper_pearson_lower(n, n, alpha=alpha) == pytest.approx(alpha ** (1 / n), rel=1e-10)
    assert ev.clopper_pearson_upper(5, 5) == 1.0
    assert ev.clopper_pearson_lower(0, 5) == 0.0
    # The exact bounds invert the binomial tail: P(X <= k | p_hi) = alpha, P(X >= k | p_lo) = alpha.
    for k, n in ((3, 20), (17, 40), (1, 1000)):
        hi = ev.clopper_pearson_upper(k, n, alpha=0.05)
        lo = ev.clopper_pearson_lower(k, n, alpha=0.05)
        assert stats.binom.cdf(k, n, hi) == pytest.approx(0.05, rel=1e-8)
        assert stats.binom.sf(k - 1, n, lo) == pytest.approx(0.05, rel=1e-8)
        assert lo < k / n < hi
    with pytest.raises(ValueError, match="k=6"):
        ev.clopper_pearson_upper(6, 5)


def test_empirical_epsilon_lower_bound():
    # Hand value: fp = fn = 0 out of 100 each, alpha = 0.05 split in two, delta = 0:
    # FPR_hi = FNR_hi = 1 - 0.025 ** (1/100) = 0.0362167 (series of exp),
    # eps = log(0.9637833 / 0.0362167) = log(26.6113) = 3.2813.
    u = 1 - 0.025 ** (1 / 100)
    assert u == pytest.approx(0.0362167, abs=1e-7)
    eps = ev.empirical_epsilon_lower_bound(0, 0, 100, 100, delta=0.0, alpha=0.05)
    assert eps == pytest.approx(math.log((1 - u) / u), rel=1e-10)
    assert eps == pytest.approx(3.2813, abs=1e-4)
    # Perfect attacks: finite bound that grows with the number of trials.
    bounds = [ev.empirical_epsilon_lower_bound(0, 0, n, n, delta=1e-5) for n in (10, 100, 1000, 10000)]
    assert all(math.isfinite(b) for b in bounds)
    assert all(a < b for a, b in zip(bounds, bounds[1:]))
    # A coin-flip attack proves nothing.
    assert ev.empirical_epsilon_lower_bound(500, 500, 1000, 1000, delta=1e-5) == 0.0
    # Asymmetric errors use the better of the two inequalities; larger delta, smaller bound.
    a = ev.empirical_epsilon_lower_bound(0, 300, 1000, 1000, delta=0.0)
    fpr_hi = 1 - 0.025 ** (1 / 1000)
    fnr_hi = ev.clopper_pearson_upper(300, 1000, alpha=0.025)
    assert a == pytest.approx(math.log((1 - fnr_hi) / fpr_hi), rel=1e-10)
    assert ev.empirical_epsilon_lower_bound(0, 300, 1000, 1000, delta=0.1) < a
    with pytest.raises(ValueError, match="delta"):
        ev.empirical_epsilon_lower_bound(0, 0, 10, 10, delta=1.5)


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("xlog", [False, True])
def test_line_plot_renders_all_series(tmp_path, xlog):
    path = tmp_path / "fig.png"
    xs = [1, 10, 100, 1000]
    series = {"DMP-MH": (xs, [0.9, 0.8, 0.7, 0.6]),
              "DP-SGD": (xs, [0.6, 0.55, 0.5, 0.45]),
              "random": (xs, [0.3, float("nan"), 0.3, 0.3])}
    ev.line_plot(path, series, title="P@k", xlabel="k", ylabel="precision", xlog=xlog,
                 size=(640, 400))
    assert not os.path.exists(str(path) + ".tmp")
    img = Image.open(path)
    img.load()
    assert img.format == "PNG" and img.size == (640, 400)
    pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)
    assert (pixels != 255).any(axis=1).mean() > 0.01  # not blank
    for idx in range(3):
        colour = np.array(ev.PALETTE[idx])
        assert (pixels == colour).all(axis=1).sum() > 30, f"series {idx} colour missing"
    assert (pixels == 0).all(axis=1).sum() > 500  # axes, ticks and text in black


def test_nice_ticks_cover_range():
    for lo, hi in ((0.0, 1.0), (0.43, 0.91), (-3.0, 250.0), (5.0, 5.0)):
        t = ev._nice_ticks(lo, hi)
        assert t[0] <= lo and t[-1] >= hi and 2 <= len(t) <= 13
        steps = np.diff(t)
        np.testing.assert_allclose(steps, steps[0])


# ---------------------------------------------------------------------------
# Validation and benchmark
# ---------------------------------------------------------------------------

def test_bad_inputs_raise_value_errors_naming_the_value():
    rng = np.random.default_rng(0)
    qc, dc, ql, dl = random_case(rng, 3, 10, 16, 2)
    with pytest.raises(ValueError, match="bits=12"):
        ev.hamming_distances(qc[:, :12], dc[:, :12])
    with pytest.raises(ValueError, match="16 bits but db_codes have 8"):
        ev.map_at_k(qc, dc[:, :8], ql, dl)
    with pytest.raises(ValueError, match="-1"):
        ev.map_at_k(qc * 2 - 1, dc, ql, dl)
    with pytest.raises(ValueError, match="9 rows"):
        ev.map_at_k(qc, dc, ql, dl[:9])
    with pytest.raises(ValueError, match="db_labels have 3"):
        ev.map_at_k(qc, dc, ql, np.ones((10, 3)))
    with pytest.raises(ValueError, match="11"):
        ev.map_at_k(qc, dc, ql, dl, k=11)
    with pytest.raises(ValueError, match="radius"):
        ev.precision_within_radius(qc, dc, ql, dl, radius=17)
    with pytest.raises(ValueError, match="'sometimes'"):
        ev.pr_curve_by_radius(qc, dc, ql, dl, empty_precision="sometimes")


def test_benchmark_small_agrees_with_reference():
    res = ev.benchmark_map(n_query=40, n_db=3000, bits=32, reference_queries=10)
    json.dumps(res)
    assert res["reference_abs_diff"] <= 1e-9
    assert res["seconds_fast_total"] > 0 and res["seconds_reference_per_query"] > 0
    assert 0 < res["map_tie_aware"] < 1 and 0 < res["map"] < 1
