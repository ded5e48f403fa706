"""Issue 15: the one shared row-block pass (privacy.row_block_pass) against a frozen copy of the
code it replaced.

FROZEN below is today's (commit b1f88e3) stable_clip, _edge_count_and_bilinear, check_simple_graph,
public_support, measure and synthesize, copied verbatim from privacy.py (only _row_progress is
silenced). The tests check, for the same insecure noise seed and at block sizes the frozen code
uses, that the new pass gives the same bits: clipped edges, degrees, triangles, edge count,
bilinear moments, supports, noisy release, synthetic graph and dmpmh.sanitize. They also check
that the clip is identical across block sizes and BLAS thread counts (ties included), that the
vectorised top-D selection equals a per-row reference, that measure reads each row block once,
and that the audit's deliberately broken clipper still reaches measure.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import privacy as P  # noqa: E402

FROZEN = r'''
def _rows_per_block(n: int, *, bytes_per_entry: int = 8, budget: int = 256 << 20) -> int:
    """Row-block size so one (block x n) working array stays within ``budget`` bytes."""
    return int(max(16, min(4096, budget // max(1, n * bytes_per_entry))))


PROGRESS_MIN_ROWS = 50_000  # below this the O(N^2) passes take seconds and stay quiet


def stable_clip(graph, order: np.ndarray, *, max_degree: int, block: int | None = None) -> np.ndarray:
    """Edges of the stably clipped graph, as an (m, 2) int64 array with u < v.

    Each node u ranks its incident edges by a public total order: decreasing
    public similarity <order_u, order_v>, ties broken by increasing neighbour
    index. Edge (u, v) is kept iff it is among the first ``max_degree`` = D edges
    of u's list AND of v's list. ``graph`` exposes ``n`` and ``rows(a, b)`` (a bool
    block of adjacency rows), so the N x N matrix is never needed at once.

    Lemma 1 (stability). Let G' = G + e, e = (a, b). Then clip(G) and clip(G')
    differ in at most 3 edges, and every clipped degree is at most D.
    Proof. Node w's top-D list L_w depends only on w's own incident edges and
    the public order. Nodes other than a and b have the same incident edges in
    G and G', so their lists are equal. At a, inserting e into a ranked list and
    truncating to D either leaves L_a unchanged (e ranks below position D), or
    adds e and, if L_a was full, drops exactly one edge (a, x) (the former D-th).
    The same holds at b, with a dropped (b, y). An edge f other than e, (a, x)
    and (b, y) has the same membership in both endpoints' lists in G and G', so
    its kept/not-kept status is unchanged. Hence the symmetric difference is a
    subset of {e, (a, x), (b, y)}: at most 3 edges. Removal is the same argument
    with G and G' swapped. Degree: a kept edge at w is in L_w and |L_w| <= D. []
    """
    if not (isinstance(max_degree, (int, np.integer)) and max_degree >= 1):
        raise ValueError(f"max_degree (D)={max_degree} must be an integer >= 1")
    n = graph.n
    D = int(max_degree)
    block = block or _rows_per_block(n)
    top = np.full((n, D), -1, dtype=np.int64)
    for s in range(0, n, block):
        adj = graph.rows(s, min(n, s + block))
        b = adj.shape[0]
        sim = (order[s:s + b].astype(np.float64) @ order.T.astype(np.float64))
        sim[~adj] = -np.inf
        deg = adj.sum(1)
        for r in range(b):
            d = int(deg[r])
            if d == 0:
                continue
            if d <= D:
                top[s + r, :d] = np.flatnonzero(adj[r])
                continue
            nb = np.flatnonzero(adj[r])
            key = sim[r, nb]
            # exact D-th largest value, then ties at the threshold by neighbour index
            kth = np.partition(key, d - D)[d - D]
            above = nb[key > kth]
            tied = nb[key == kth]  # nb is sorted, so tied is sorted by index
            top[s + r] = np.concatenate([above, tied[:D - len(above)]])
        _row_progress("clip", s + b, n, b)
    u = np.repeat(np.arange(n), D)
    v = top.ravel()
    ok = v >= 0
    u, v = u[ok], v[ok]
    a, b = np.minimum(u, v), np.maximum(u, v)
    key = a * n + b
    uniq, counts = np.unique(key, return_counts=True)
    kept = uniq[counts == 2]  # listed by both endpoints
    return np.stack([kept // n, kept % n], 1)


def _edge_count_and_bilinear(graph, z: np.ndarray, block: int | None = None) -> tuple[float, np.ndarray]:
    n = graph.n
    block = block or _rows_per_block(n)
    m = 0.0
    zz = z.astype(np.float64)
    acc = np.zeros((z.shape[1], z.shape[1]))
    for s in range(0, n, block):
        rows = graph.rows(s, min(n, s + block))
        m += float(rows.sum())
        acc += zz[s:s + len(rows)].T @ (rows.astype(np.float32) @ z).astype(np.float64)
        _row_progress("edge count and bilinear moments", s + len(rows), n, len(rows))
    return m / 2.0, acc


def check_simple_graph(graph, block: int | None = None) -> None:
    """Refuse a graph that is not simple and undirected: 0/1 entries, no self-loops, symmetric.

    Every sensitivity above assumes such a graph (one edge = one symmetric pair of 0/1 entries).
    One pass over the rows. Symmetry is checked exactly on two random integer vectors r:
    A r == A^T r (int64, no rounding); an asymmetric A passes with probability <= 2^-40.
    The errors name no statistic of the graph (no counts, no rows)."""
    n = graph.n
    block = block or _rows_per_block(n)
    rng = np.random.default_rng()  # a check, not a release: the answer is the same for every draw on valid input
    r = rng.integers(0, 1 << 20, size=(n, 2), dtype=np.int64)
    ar = np.zeros((n, 2), dtype=np.int64)
    atr = np.zeros((n, 2), dtype=np.int64)
    for s in range(0, n, block):
        rows = np.asarray(graph.rows(s, min(n, s + block)))
        if rows.ndim != 2 or rows.shape != (min(n, s + block) - s, n):
            raise ValueError(f"graph.rows({s}, {min(n, s + block)}) has shape {rows.shape}; expected "
                             f"({min(n, s + block) - s}, {n}): the private graph must be an N x N adjacency")
        if rows.dtype != np.bool_:
            if not np.isin(rows, (0, 1)).all():
                raise ValueError("the private graph must be a 0/1 adjacency (a simple graph); it has entries "
                                 "other than 0 and 1 (weights or multi-edges are not supported)")
            rows = rows.astype(bool)
        b = rows.shape[0]
        if rows[np.arange(b), s + np.arange(b)].any():
            raise ValueError("the private graph has self-loops (an item linked to itself); the sensitivities "
                             "assume a simple graph, so the diagonal must be 0")
        ri = rows.astype(np.int64)
        ar[s:s + b] = ri @ r
        atr += ri.T @ r[s:s + b]
    if not np.array_equal(ar, atr):
        raise ValueError("the private graph is not symmetric (some edge (u, v) lacks (v, u)); edge-level "
                         "privacy here is for undirected graphs, so the adjacency must be symmetric")


def public_support(z: np.ndarray, *, k: int, block: int | None = None) -> np.ndarray:
    """Candidate pairs: each node's k most similar nodes by public projection,
    symmetrised (union), as an (m, 2) array with u < v. Public: no graph input."""
    n = len(z)
    k = min(k, n - 1)
    block = block or _rows_per_block(n, bytes_per_entry=24)  # sim, -sim (float32) and argpartition (int64)
    rows, cols = [], []
    for s in range(0, n, block):
        sim = z[s:s + block] @ z.T
        sim[np.arange(len(sim)), np.arange(s, s + len(sim))] = -np.inf
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        rows.append(np.repeat(np.arange(s, s + len(sim)), k))
        cols.append(idx.ravel())
        _row_progress("public support", s + len(sim), n, len(sim))
    u, v = np.concatenate(rows), np.concatenate(cols)
    key = np.unique(np.minimum(u, v) * n + np.maximum(u, v))
    return np.stack([key // n, key % n], 1)


def measure(graph, z: np.ndarray, *, epsilon: float, delta: float, max_degree: int | None,
            shares: dict[str, float], source: NoiseSource, clip: bool = True,
            noise: str = "gaussian") -> Release:
    """Release the statistics of ``graph`` with calibrated Gaussian noise.

    ``noise="gaussian"``: continuous Gaussian noise on every statistic, composed
    as mu-GDP (module docstring). ``noise="discrete"``: the integer statistics
    (degrees, triangles, edges) get exact discrete Gaussian noise
    (``sample_discrete_gaussian``, CKS 2020 Algorithm 3), the real-valued
    bilinear moments stay continuous; each is rho_i = Delta_i^2/(2 sigma_i^2)-zCDP
    (CKS 2020 Theorem 14 for the discrete ones, Bun & Steinke 2016 Prop. 1.6 for
    the continuous one), zCDP composes additively (Bun & Steinke Lemma 2.3), and
    the total rho is converted with ``zcdp_to_epsilon`` (CKS 2020 Cor. 13).
    Calibration finds the largest rho with zcdp_to_epsilon(rho, delta) <= epsilon
    by root finding, and gives statistic i the share w_i of rho.

    ``clip=False`` is the naive-synthesis baseline: motif statistics of the
    unclipped graph with the true worst-case sensitivity (naive_triangle_sensitivity).
    ``epsilon = inf`` releases exact values: a NOT PRIVATE reference, marked as such.
    No un-noised value leaves this function.
    """
    if noise not in ("gaussian", "discrete"):
        raise ValueError(f"noise={noise!r}: choose 'gaussian' or 'discrete'")
    unknown = set(shares) - set(STATISTICS)
    if unknown:
        raise ValueError(f"unknown statistics in shares: {sorted(unknown)}; known: {STATISTICS}")
    bad = {k: v for k, v in shares.items() if not (v >= 0 and math.isfinite(v))}
    if bad:
        raise ValueError(f"budget shares must be finite and >= 0, got {bad}")
    names = [k for k in STATISTICS if shares.get(k, 0) > 0]
    if not names:
        raise ValueError("shares selects no statistic")
    z = np.asarray(z, dtype=np.float64)
    if not np.isfinite(z).all():
        raise ValueError("public projection z contains NaN or inf; rows must be finite with norm <= 1 "
                         "(the clip order and the bilinear moments need them)")
    norms = np.linalg.norm(z, axis=1)
    if (norms > 1 + 1e-6).any():
        raise ValueError(f"public projection rows must have norm <= 1 (max {norms.max():.6f}); "
                         "the bilinear sensitivity bound would not hold")
    # rows within rounding of 1 are scaled back to norm 1 (up to one float64 ulp)
    z = z / np.maximum(1.0, norms)[:, None]
    nonprivate = epsilon == math.inf
    if not nonprivate and not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon={epsilon} must be > 0")
    if not 0 < delta < 1:
        raise ValueError(f"delta={delta} must be in (0, 1)")
    n = graph.n
    check_simple_graph(graph)
    if clip:
        if max_degree is None:
            raise ValueError("max_degree (D) is required when clipping")
        _check_D(max_degree)
    sens = {"degrees": degree_sensitivity(max_degree=max_degree) if clip else unclipped_degree_sensitivity(),
            "triangles": triangle_sensitivity(max_degree=max_degree) if clip else naive_triangle_sensitivity(n_nodes=n),
            "edges": edge_count_sensitivity(),
            "bilinear": bilinear_sensitivity()}
    # a statistic with sensitivity 0 does not depend on the graph (triangles at D = 1:
    # the clipped graph is a matching); it carries no information and is not released
    names = [k for k in names if sens[k] > 0]
    w = np.array([shares[k] for k in names], dtype=float)
    w = w / w.sum()
    if nonprivate:
        sigmas, mu = np.zeros(len(names)), math.inf
    elif noise == "gaussian":
        sigmas = calibrate_sigmas(epsilon=epsilon, delta=delta, sensitivities=[sens[k] for k in names], shares=w)
        mu = compose_mu(sensitivities=[sens[k] for k in names], sigmas=sigmas)
    else:
        rho = calibrate_rho(epsilon=epsilon, delta=delta)
        sigmas = np.array([sens[k] / math.sqrt(2 * wk * rho) for k, wk in zip(names, w)])
        mu = math.sqrt(2 * rho)  # reported as sqrt(2 rho); the guarantee is rho-zCDP

    values: dict[str, np.ndarray] = {}
    if "degrees" in names or "triangles" in names:
        if clip:
            motif_edges = stable_clip(graph, z, max_degree=max_degree)
            deg = degrees_of(motif_edges, n)
            tri = triangles_of(motif_edges, n) if "triangles" in names else None
            del motif_edges
        else:
            deg, tri = unclipped_motifs(graph, triangles="triangles" in names)
        values.update({k: v for k, v in (("degrees", deg), ("triangles", tri)) if k in names})
        del deg, tri
    if "edges" in names or "bilinear" in names:
        m, bil = _edge_count_and_bilinear(graph, z)
        values["edges"] = np.array([m])
        values["bilinear"] = bil
    out = {}
    for k, sigma, share in zip(names, sigmas, w):
        exact = values.pop(k)
        if noise == "discrete" and k != "bilinear" and sigma > 0:
            noisy = exact + sample_discrete_gaussian(exact.shape, sigma=float(sigma), rng=source)
        else:
            noisy = exact + sigma * source.normal(exact.shape)
        del exact
        out[k] = Measurement(name=k, noisy=noisy, sensitivity=sens[k], sigma=float(sigma), share=float(share),
                             norm="Frobenius" if k == "bilinear" else "L2",
                             clipped=clip and k in ("degrees", "triangles"))
    return Release(measurements=out, epsilon=epsilon, delta=delta, mu=mu,
                   max_degree=max_degree if clip else None, n_nodes=n, noise=noise, secure=source.secure)


def synthesize(release: Release, z: np.ndarray, *, support_k: int, nmd_iters: int = 200,
               prior: float = 1e-3, noise_ridge: float = 0.4, fit_rank: int | None = None,
               verbose: bool = True) -> SyntheticGraph:
    """Post-process a Release into a SyntheticGraph (semantic fit, then NMD)."""
    w, c, rank_report = fit_semantic(release, z, noise_ridge=noise_ridge, rank=fit_rank)
    has_motif = any(k in release.measurements for k in ("degrees", "triangles"))
    support = public_support(z, k=support_k) if has_motif else np.zeros((0, 2), dtype=np.int64)
    report: dict = dict(rank_report)
    if has_motif:
        zw = z @ w  # once, O(N r^2); then O(r) per support pair, in chunks of O(chunk * r) memory
        q0 = np.concatenate([(zw[support[s:s + 65536, 0]] * z[support[s:s + 65536, 1]]).sum(1)
                             for s in range(0, len(support), 65536)])
        q0 = np.clip(c + q0, 1e-3, 1 - 1e-3)
        if release.max_degree is not None:
            # the clipped graph keeps at most D of each node's edges: start from that scale
            q0 = np.minimum(q0, release.max_degree / max(support_k, 1))
        q, nmd_report = noisy_mirror_descent(release, support, q0, n_nodes=len(z), max_iter=nmd_iters,
                                             prior=prior, verbose=verbose)
        report.update(nmd_report)
    else:
        q = np.zeros(0)
    if "bilinear" in release.measurements and release["bilinear"].sigma > 0:
        report["bilinear_sigma"] = release["bilinear"].sigma
    return SyntheticGraph(z=z, w=w, c=c, support=support, q=q, report=report)


SPARSE_DENSITY = 0.1  # below this released density a graph counts as sparse (our choice)


PRIOR_AGREEMENT = 0.6  # the public prior is trained on when the private graph agrees with it this well (our choice)
'''


def _frozen() -> dict:
    """The frozen functions, in a namespace that holds everything else of privacy (so the frozen
    measure calls the frozen stable_clip and the current sensitivities, which did not change)."""
    ns = dict(vars(P))
    ns["_row_progress"] = lambda *a, **k: None
    exec(compile(FROZEN, "frozen_privacy_b1f88e3", "exec"), ns)
    return ns


F = _frozen()


class DenseGraph:
    def __init__(self, adj):
        self.adj = np.asarray(adj)
        self.n = len(self.adj)
        self.calls = []

    def rows(self, a, b):
        self.calls.append((a, b))
        return self.adj[a:b]


def sym(upper) -> np.ndarray:
    a = np.triu(np.asarray(upper, dtype=bool), 1)
    return a | a.T


def graph_of(kind: str, n: int, rng) -> np.ndarray:
    if kind == "er":
        return sym(rng.random((n, n)) < 0.3)
    if kind == "dense":
        return sym(rng.random((n, n)) < 0.85)
    if kind == "star":
        a = np.zeros((n, n), dtype=bool)
        a[0, 1:] = True
        return sym(a | (rng.random((n, n)) < 0.05))
    if kind == "clique":
        return ~np.eye(n, dtype=bool)
    if kind == "label":  # the benchmark's kind: share a label
        lab = rng.random((n, 6)) < 0.25
        a = (lab.astype(np.int64) @ lab.T.astype(np.int64)) > 0
        np.fill_diagonal(a, False)
        return a
    raise AssertionError(kind)


def z_of(mode: str, n: int, r: int, rng, dtype=np.float64) -> np.ndarray:
    if mode == "random":
        z = rng.normal(size=(n, r))
    elif mode == "ties":  # entries on a 1/4 grid: every dot product is exact, many exact ties
        z = rng.integers(-1, 2, size=(n, r)) / 4.0
        z[: n // 4] = z[0]  # a quarter of the rows identical
    elif mode == "identical":
        z = np.ones((n, r))
    else:
        raise AssertionError(mode)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    if mode != "ties":
        z = z / np.maximum(norms, 1e-12)
    else:
        z = z / max(1.0, float(norms.max()))  # one common power-of-two-free scale keeps ties exact
    return z.astype(dtype)


KINDS = ("er", "dense", "star", "clique", "label")
ZMODES = ("random", "ties", "identical")


def _blocks(n):
    """Block sizes the frozen code uses (its defaults for this n: one block) and explicit ones."""
    return (None, 1, 7, n // 3 + 1)


# ---------------------------------------------------------------------------
# Bit-identical to the frozen code
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("zmode", ZMODES)
def test_clip_bit_identical_to_frozen(kind, zmode):
    rng = np.random.default_rng(hash((kind, zmode)) % 2**32)
    n = 61
    adj = graph_of(kind, n, rng)
    z = z_of(zmode, n, 5, rng)
    for D in (1, 3, 8, 70):
        for block in _blocks(n):
            want = F["stable_clip"](DenseGraph(adj), z, max_degree=D, block=block)
            got = P.stable_clip(DenseGraph(adj), z, max_degree=D, block=block)
            assert got.dtype == want.dtype and np.array_equal(got, want), (D, block)


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("zmode", ZMODES)
def test_public_support_bit_identical_to_frozen(dtype, zmode):
    rng = np.random.default_rng(7)
    n = 150
    z = z_of(zmode, n, 6, rng, dtype)
    for k in (1, 5, 20, 149, 400):
        want = F["public_support"](z, k=k)
        for block in (None, 1, 13, 64):
            got = P.public_support(z, k=k, block=block)
            assert np.array_equal(got, want), (k, block)


@pytest.mark.parametrize("kind", KINDS)
def test_moments_and_check_bit_identical_to_frozen(kind):
    rng = np.random.default_rng(3)
    n = 90
    adj = graph_of(kind, n, rng)
    z = z_of("random", n, 7, rng)
    for block in _blocks(n):
        m0, b0 = F["_edge_count_and_bilinear"](DenseGraph(adj), z, block=block)
        got = P.row_block_pass(DenseGraph(adj), z, moments=True, block=block)
        assert got.edges == m0 and np.array_equal(got.bilinear, b0), block
        m1, b1 = P._edge_count_and_bilinear(DenseGraph(adj), z, block=block)
        assert m1 == m0 and np.array_equal(b1, b0)


SHARES = ({"degrees": 0.1, "triangles": 0.1, "edges": 0.05, "bilinear": 0.75},
          {"degrees": 1.0}, {"bilinear": 1.0}, {"triangles": 0.5, "edges": 0.5})


@pytest.mark.parametrize("shares", SHARES)
@pytest.mark.parametrize("noise", ("gaussian", "discrete"))
@pytest.mark.parametrize("clip", (True, False))
def test_measure_bit_identical_to_frozen(shares, noise, clip):
    rng = np.random.default_rng(11)
    n = 80
    adj = graph_of("label", n, rng)
    z = z_of("ties", n, 6, rng, np.float32)
    kw = dict(epsilon=1.0, delta=1e-6, max_degree=6, shares=shares, clip=clip, noise=noise)
    want = F["measure"](DenseGraph(adj), z, source=P.NoiseSource(insecure_seed=5, quiet=True), **kw)
    got = P.measure(DenseGraph(adj), z, source=P.NoiseSource(insecure_seed=5, quiet=True), support_ks=(8, 20), **kw)
    assert list(got.measurements) == list(want.measurements)
    for k, m in want.measurements.items():
        g = got.measurements[k]
        assert np.array_equal(g.noisy, m.noisy), k
        assert (g.sigma, g.sensitivity, g.share, g.clipped) == (m.sigma, m.sensitivity, m.share, m.clipped)
    assert (got.mu, got.max_degree) == (want.mu, want.max_degree)
    for k in (8, 20):
        assert np.array_equal(got.support_for(k), F["public_support"](z, k=k))


def test_exact_release_bit_identical_to_frozen():
    rng = np.random.default_rng(12)
    adj = graph_of("er", 70, rng)
    z = z_of("random", 70, 8, rng)
    kw = dict(epsilon=math.inf, delta=1e-6, max_degree=4, shares=SHARES[0])
    want = F["measure"](DenseGraph(adj), z, source=P.NoiseSource(insecure_seed=1, quiet=True), **kw)
    got = P.measure(DenseGraph(adj), z, source=P.NoiseSource(insecure_seed=1, quiet=True), **kw)
    for k in want.measurements:
        assert np.array_equal(got[k].noisy, want[k].noisy), k


def test_synthesize_bit_identical_to_frozen():
    rng = np.random.default_rng(13)
    n = 120
    adj = graph_of("label", n, rng)
    z = z_of("random", n, 8, rng, np.float32)
    kw = dict(epsilon=2.0, delta=1e-6, max_degree=8, shares=SHARES[0])
    r0 = F["measure"](DenseGraph(adj), z, source=P.NoiseSource(insecure_seed=2, quiet=True), **kw)
    r1 = P.measure(DenseGraph(adj), z, source=P.NoiseSource(insecure_seed=2, quiet=True), support_ks=(16,), **kw)
    s0 = F["synthesize"](r0, z, support_k=16, nmd_iters=40, verbose=False)
    s1 = P.synthesize(r1, z, support_k=16, nmd_iters=40, verbose=False)
    for a in ("w", "c", "support", "q"):
        assert np.array_equal(getattr(s1, a), getattr(s0, a)), a


def _sanitize_case():
    import dmpmh
    import data
    ds = data.make_synthetic(400, seed=0)
    train = np.arange(300)
    store = data.LabelStore(ds.labels, train, allow_train_in_evaluation=False)
    graph = data.build_private_graph(store, train, kind="label")
    z = data.public_projection(ds, train, dim=16)
    cfg = dmpmh.Config(dataset="synthetic", epsilon=1.0, nmd_iters=30)
    return dmpmh, graph, z, cfg


def test_sanitize_bit_identical_to_frozen_pipeline():
    dmpmh, graph, z, cfg = _sanitize_case()
    shares = {"degrees": cfg.share_degrees, "triangles": cfg.share_triangles,
              "edges": cfg.share_edges, "bilinear": cfg.share_bilinear}
    r0 = F["measure"](graph, z, epsilon=cfg.epsilon, delta=cfg.delta, max_degree=cfg.max_degree, shares=shares,
                      source=P.NoiseSource(insecure_seed=4, quiet=True), noise=cfg.noise)
    s0 = F["synthesize"](r0, z, support_k=cfg.support_k, nmd_iters=cfg.nmd_iters, prior=cfg.nmd_prior,
                         noise_ridge=cfg.noise_ridge, fit_rank=cfg.fit_rank, verbose=False)
    knn0 = F["public_support"](z, k=cfg.knn_k)
    r1, s1 = dmpmh.sanitize(graph, z, cfg, P.NoiseSource(insecure_seed=4, quiet=True))
    for k in r0.measurements:
        assert np.array_equal(r1[k].noisy, r0[k].noisy), k
    for a in ("w", "c", "support", "q"):
        assert np.array_equal(getattr(s1, a), getattr(s0, a)), a
    assert np.array_equal(r1.support_for(cfg.knn_k, z), knn0)


def test_sanitize_reads_each_row_block_once_and_computes_no_other_support(monkeypatch):
    dmpmh, graph, z, cfg = _sanitize_case()
    calls = []
    orig = graph.rows
    monkeypatch.setattr(graph, "rows", lambda a, b: calls.append((a, b)) or orig(a, b), raising=False)

    def no_support(*a, **k):
        raise AssertionError("public_support called outside measure's pass")
    monkeypatch.setattr(P, "public_support", no_support)
    release, synth = dmpmh.sanitize(graph, z, cfg, P.NoiseSource(insecure_seed=4, quiet=True))
    block = P._rows_per_block(graph.n)
    assert calls == [(s, min(graph.n, s + block)) for s in range(0, graph.n, block)]
    assert release.support_for(cfg.knn_k, z) is release.supports[cfg.knn_k]
    assert synth.support is release.supports[cfg.support_k]


def test_measure_clips_once(monkeypatch):
    rng = np.random.default_rng(14)
    adj = graph_of("dense", 50, rng)
    z = z_of("random", 50, 4, rng)
    seen = []
    orig = P._clip_block_lists
    monkeypatch.setattr(P, "_clip_block_lists", lambda a, s, D, **kw: seen.append(len(a)) or orig(a, s, D, **kw))
    monkeypatch.setattr(P, "stable_clip", lambda *a, **k: pytest.fail("measure called stable_clip again"))
    P.measure(DenseGraph(adj), z, epsilon=1.0, delta=1e-6, max_degree=3, shares=SHARES[0],
              source=P.NoiseSource(insecure_seed=0, quiet=True))
    assert sum(seen) == 50  # every row selected exactly once


# ---------------------------------------------------------------------------
# Clip order: block size, thread count, ties, vectorised selection
# ---------------------------------------------------------------------------


def slow_lists(adj, sim, D):
    keep = np.zeros_like(adj, dtype=bool)
    for u in range(len(adj)):
        nb = sorted(np.flatnonzero(adj[u]), key=lambda v: (-sim[u, v], v))
        keep[u, nb[:D]] = True
    return keep


@pytest.mark.parametrize("seed", range(4))
def test_vectorised_top_d_matches_per_row_sort_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 57
    adj = sym(rng.random((n, n)) < 0.6)
    adj[0] = False
    adj[:, 0] = False
    sim = rng.integers(-3, 4, size=(n, n)).astype(np.float64)  # heavy exact ties
    for D in (1, 2, 5, 30, 60):
        got = P._clip_block_keep(adj, sim.copy(), D)
        assert np.array_equal(got, slow_lists(adj, sim, D)), D
        assert (got.sum(1) <= D).all() and not (got & ~adj).any()


@pytest.mark.parametrize("seed", range(4))
def test_list_selection_matches_per_row_sort_with_ties(seed):
    """_clip_block_lists (argpartition fast path + fallback) lists exactly the per-row reference's
    edges, on heavy exact ties, sparse rows (degree <= D) and every D, in float64 and float32 keys."""
    rng = np.random.default_rng(seed)
    n = 57
    adj = sym(rng.random((n, n)) < 0.6)
    adj[0] = False
    adj[:, 0] = False
    adj[1, 2:] = adj[2:, 1] = False  # a row of degree <= D for small D
    adj[1, 5] = adj[5, 1] = True
    sim = rng.integers(-3, 4, size=(n, n)).astype(np.float64)  # heavy exact ties
    sim[n // 2:] += rng.normal(size=(n - n // 2, n)) * 1e-3      # and rows without ties (fast path)
    for D in (1, 2, 5, 30, 60):
        want = slow_lists(adj, sim, D)
        for dt in (np.float64, np.float32):
            neg = -(sim.astype(dt))
            r, c = P._clip_block_lists(adj, neg, D)
            got = np.zeros_like(adj)
            got[r, c] = True
            assert len(r) == got.sum()  # no edge listed twice
            # float32 keys may merge keys that differ by < 1e-3 * 2^-24: the reference sorts the same keys
            ref = want if dt == np.float64 else slow_lists(adj, sim.astype(dt).astype(np.float64), D)
            assert np.array_equal(got, ref), (D, dt)


def near_tie_z(n: int, r: int, rng) -> np.ndarray:
    """Public rows whose inner products with row 0 differ only beyond float32 precision: row 0 is a
    random unit vector x, rows 1.. are x plus perturbations of relative size 1e-11 (distinct exact
    keys, equal float32 keys), so the float32 pass must resolve them in exact arithmetic."""
    x = rng.normal(size=r)
    x /= np.linalg.norm(x)
    z = np.tile(x, (n, 1)) + rng.normal(size=(n, r)) * 1e-11
    z[0] = x
    return z


def test_float32_keys_resolve_near_ties_exactly_and_tiny_z_falls_back_to_float64():
    rng = np.random.default_rng(72)
    n, r = 120, 16
    adj = sym(rng.random((n, n)) < 0.7)
    z = near_tie_z(n, r, rng)
    assert P.key_dtype_for(z) == np.float32
    want = exact_lists(adj, z, 5)
    for block in (1, 17, None):
        assert np.array_equal(P.stable_clip(DenseGraph(adj), z, max_degree=5, block=block), want), block
    tiny = z * 2.0 ** -60  # products would underflow float32: the pass must use float64 keys
    assert P.key_dtype_for(tiny) == np.float64 and P.key_dtype_for(z * 2.0 ** 60) == np.float64
    assert np.array_equal(P.stable_clip(DenseGraph(adj), tiny, max_degree=5), exact_lists(adj, tiny, 5))
    assert P.key_dtype_for(np.zeros((3, 4))) == np.float32


@pytest.mark.parametrize("zmode", ZMODES)
def test_clip_identical_across_block_sizes_with_ties(zmode):
    rng = np.random.default_rng(21)
    n = 203
    adj = graph_of("dense", n, rng)
    z = z_of(zmode, n, 8, rng)
    ref = P.stable_clip(DenseGraph(adj), z, max_degree=9, block=1)
    for block in (2, 16, 64, 100, 203, 4096, None):
        assert np.array_equal(P.stable_clip(DenseGraph(adj), z, max_degree=9, block=block), ref), block
    full = P.row_block_pass(DenseGraph(adj), z, max_degree=9, support_ks=(5,), moments=True, block=33)
    assert np.array_equal(full.clipped, ref)


def tie_z(n: int, r: int, rng) -> np.ndarray:
    """Public rows with exact ties that float64 BLAS breaks by rounding: rows 0..n/3 are
    permutations of one vector x, rows n/3..n/3+20 the constant vector (so their inner product with
    every permutation is exactly the same real number, rounded differently by position), a block of
    exact duplicates, and random rows."""
    x = rng.normal(size=r)
    x /= np.linalg.norm(x)
    z = rng.normal(size=(n, r))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    k = n // 3
    z[:k] = np.stack([rng.permutation(x) for _ in range(k)])
    z[k:k + 20] = 1 / math.sqrt(r)
    z[k + 20:k + 120] = z[k + 20]
    return z


def exact_lists(adj, z, D):
    """Reference: per node, sort incident edges by (exact rational -<z_u, z_v>, v), keep D."""
    from fractions import Fraction
    fz = [[Fraction(float(a)) for a in row] for row in z]
    keep = np.zeros_like(adj, dtype=bool)
    for u in range(len(adj)):
        nb = np.flatnonzero(adj[u])
        key = {int(v): sum(a * b for a, b in zip(fz[u], fz[v])) for v in nb}
        nb = sorted(key, key=lambda v: (-key[v], v))
        keep[u, nb[:D]] = True
    both = keep & keep.T
    return np.argwhere(np.triu(both, 1))


def test_clip_is_the_exact_order_where_blas_rounding_breaks_ties():
    rng = np.random.default_rng(71)
    n, r = 240, 64
    adj = sym(rng.random((n, n)) < 0.5)
    z = tie_z(n, r, rng)
    want = exact_lists(adj, z, 7)
    for block in (1, 5, 64, None):
        got = P.stable_clip(DenseGraph(adj), z, max_degree=7, block=block)
        assert np.array_equal(got, want), block


_THREAD_SCRIPT = r"""
import hashlib, math, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[1] + "/tests")
import privacy as P
from test_shared_pass import tie_z
class G:
    def __init__(self, a): self.a, self.n = a, len(a)
    def rows(self, s, e): return self.a[s:e]
rng = np.random.default_rng(5)
n, r = 900, 64
a = np.triu(rng.random((n, n)) < 0.5, 1); a = a | a.T
z = tie_z(n, r, rng)
out = [hashlib.sha256(P.stable_clip(G(a), z, max_degree=12, block=b).tobytes()).hexdigest()
       for b in (1, 37, 256, None)]
print(" ".join(out))
"""


@pytest.mark.parametrize("zmode", ZMODES)
def test_pass_worker_threads_give_the_same_bits(zmode):
    """row_block_pass on 1 and 3 worker threads (small blocks, so blocks finish out of order): the same
    clip, supports, edge count and bilinear moments, bit for bit (parts are combined in block order)."""
    rng = np.random.default_rng(81)
    n = 230
    adj = graph_of("dense", n, rng)
    z = z_of(zmode, n, 8, rng)
    zs = z.astype(np.float32)
    kw = dict(max_degree=5, support_ks=(3, 20), support_z=zs, moments=True, block=16, support_block=11)
    one = P.row_block_pass(DenseGraph(adj), z, threads=1, **kw)
    many = P.row_block_pass(DenseGraph(adj), z, threads=3, **kw)
    assert np.array_equal(one.clipped, many.clipped)
    assert one.edges == many.edges and one.bilinear.tobytes() == many.bilinear.tobytes()
    for k in (3, 20):
        assert np.array_equal(one.supports[k], many.supports[k])
    assert np.array_equal(one.clipped, P.stable_clip(DenseGraph(adj), z, max_degree=5))
    with pytest.raises(ValueError, match="not symmetric"):  # the check still sees every block
        bad = adj.copy()
        bad[200, 3] = not bad[3, 200]
        P.row_block_pass(DenseGraph(bad), z, threads=3, **kw)


@pytest.mark.parametrize("zmode", ZMODES)
def test_clip_from_the_support_keys_is_the_same_clip(zmode):
    """With float32 z and graph blocks made of whole support blocks, the clip reads its keys from the
    support products (no second product); clip, supports and moments are those of the unshared pass."""
    rng = np.random.default_rng(82)
    n = 230
    adj = graph_of("dense", n, rng)
    z = z_of(zmode, n, 8, rng).astype(np.float32)
    shared = P.row_block_pass(DenseGraph(adj), z, max_degree=5, support_ks=(3, 20), moments=True,
                              block=22, support_block=11, threads=2)
    apart = P.row_block_pass(DenseGraph(adj), z, max_degree=5, support_ks=(3, 20), moments=True,
                             block=22, support_block=7, threads=1)  # 22 % 7 != 0: separate keys
    assert np.array_equal(shared.clipped, apart.clipped)
    assert np.array_equal(shared.clipped, P.stable_clip(DenseGraph(adj), z, max_degree=5))
    assert shared.bilinear.tobytes() == apart.bilinear.tobytes()
    for k in (3, 20):
        assert np.array_equal(shared.supports[k], P.public_support(z, k=k))
    rows_per_call = []
    orig = P._clip_block_lists
    P._clip_block_lists = lambda a, s, D, **kw: rows_per_call.append(len(a)) or orig(a, s, D, **kw)
    try:
        # default block: rounded to whole support blocks, so the clip runs on each support block's rows
        P.row_block_pass(DenseGraph(adj), z, max_degree=5, support_ks=(3,), support_block=11)
        assert max(rows_per_call) <= 11 and sum(rows_per_call) == n, rows_per_call
        rows_per_call.clear()  # no supports asked: the clip computes its own keys, one block of all rows
        P.row_block_pass(DenseGraph(adj), z, max_degree=5)
        assert rows_per_call == [n], rows_per_call
    finally:
        P._clip_block_lists = orig


def test_clip_identical_across_block_sizes_and_thread_counts():
    """The clip at 1 and 2 BLAS threads and four block sizes, on rows whose exact ties float64
    BLAS breaks by rounding: one answer."""
    runs = []
    for threads in ("1", "2"):
        env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        out = subprocess.run([sys.executable, "-c", _THREAD_SCRIPT, str(ROOT)], env=env, capture_output=True,
                             text=True, timeout=300, check=True).stdout.split()
        assert len(set(out[:4])) == 1, f"block sizes disagree at {threads} threads"
        runs.append(out)
    assert runs[0][0] == runs[1][0]  # clip
    # not asserted: the supports (public, no privacy role) are argpartition of BLAS-rounded float32
    # similarities, as before this change; on exact ties they may differ between thread counts


# ---------------------------------------------------------------------------
# Release.support_for, checks, audit hook, progress
# ---------------------------------------------------------------------------


def test_support_for_recomputes_for_another_z_and_needs_z_when_missing():
    rng = np.random.default_rng(31)
    adj = graph_of("er", 40, rng)
    z = z_of("random", 40, 4, rng, np.float32)
    rel = P.measure(DenseGraph(adj), z, epsilon=1.0, delta=1e-6, max_degree=3, shares=SHARES[0],
                    source=P.NoiseSource(insecure_seed=0, quiet=True), support_ks=(5,))
    assert rel.support_for(5, z) is rel.supports[5]
    z2 = z[::-1].copy()
    assert np.array_equal(rel.support_for(5, z2), F["public_support"](z2, k=5))
    assert np.array_equal(rel.support_for(7, z), F["public_support"](z, k=7))
    with pytest.raises(ValueError, match="k=7"):
        rel.support_for(7)
    assert "support" not in repr(rel)


@pytest.mark.parametrize("bad, msg", [("asym", "not symmetric"), ("loop", "self-loops"), ("weights", "0/1"),
                                      ("shape", "shape")])
def test_measure_pass_still_refuses_non_simple_graphs(bad, msg):
    rng = np.random.default_rng(41)
    a = graph_of("er", 30, rng).astype(np.int64)
    if bad == "asym":
        a[0, 1], a[1, 0] = 1, 0
    elif bad == "loop":
        a[3, 3] = 1
    elif bad == "weights":
        a[0, 1] = a[1, 0] = 2
    else:
        a = a[:, :29]
    z = z_of("random", 30, 4, rng)
    g = DenseGraph(a)
    g.n = 30
    with pytest.raises(ValueError, match=msg):
        P.measure(g, z, epsilon=1.0, delta=1e-6, max_degree=3, shares=SHARES[0],
                  source=P.NoiseSource(insecure_seed=0, quiet=True))
    with pytest.raises(ValueError, match=msg):
        F["check_simple_graph"](g)
    with pytest.raises(ValueError, match=msg):
        P.check_simple_graph(g)


def test_audit_broken_clipper_reaches_measure():
    import dmpmh
    rng = np.random.default_rng(51)
    adj = graph_of("dense", 40, rng)
    z = z_of("random", 40, 4, rng)
    kw = dict(epsilon=math.inf, delta=1e-6, max_degree=2, shares={"degrees": 1.0},
              source=P.NoiseSource(insecure_seed=0, quiet=True))
    clipped = P.measure(DenseGraph(adj), z, **kw)["degrees"].noisy
    with dmpmh._ClippingDisabled():
        broken = P.measure(DenseGraph(adj), z, **kw)["degrees"].noisy
    assert clipped.max() <= 2 and np.array_equal(broken, adj.sum(1).astype(float))
    assert np.array_equal(P.measure(DenseGraph(adj), z, **kw)["degrees"].noisy, clipped)  # restored


def test_pass_progress_has_counters_and_eta_only(monkeypatch, capsys):
    import re
    rng = np.random.default_rng(61)
    adj = graph_of("label", 60, rng)
    z = z_of("random", 60, 4, rng)
    monkeypatch.setattr(P, "PROGRESS_MIN_ROWS", 10)
    P.measure(DenseGraph(adj), z, epsilon=1.0, delta=1e-6, max_degree=3, shares=SHARES[0],
              source=P.NoiseSource(insecure_seed=0, quiet=True), support_ks=(5,))
    P.row_block_pass(DenseGraph(adj), z, max_degree=3, support_ks=(5,), moments=True, block=6)
    lines = capsys.readouterr().out.splitlines()
    assert lines and lines[-1].startswith("    row-block pass: 60/60 rows")
    for line in lines:
        assert re.fullmatch(r"    [a-z ,-]+: \d+/60 rows, \d+s elapsed, ETA \d+s", line), line


def test_row_block_pass_refuses_bad_arguments():
    z = np.eye(5)
    with pytest.raises(ValueError, match="max_degree"):
        P.row_block_pass(DenseGraph(np.zeros((5, 5), bool)), z, max_degree=0)
    with pytest.raises(ValueError, match="support k"):
        P.row_block_pass(None, z, support_ks=(0,), check=False)
    with pytest.raises(ValueError, match="graph is required"):
        P.row_block_pass(None, z, moments=True)
    with pytest.raises(ValueError, match="rows"):
        P.row_block_pass(DenseGraph(np.zeros((5, 5), bool)), np.eye(4))


def test_clip_exact_order_with_zero_rows():
    """Items with no public features (zero rows, e.g. untagged items): every key of theirs is
    exactly 0, so their lists are by index; other rows' ties with them are exact too."""
    rng = np.random.default_rng(81)
    n = 150
    adj = sym(rng.random((n, n)) < 0.6)
    z = rng.normal(size=(n, 16))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    z[::3] = 0.0
    want = exact_lists(adj, z, 5)
    for block in (1, 8, None):
        assert np.array_equal(P.stable_clip(DenseGraph(adj), z, max_degree=5, block=block), want)


# ---------------------------------------------------------------------------
# The prefilter (third pass): candidates below a sampled threshold, whole-row path for the rest
# ---------------------------------------------------------------------------


def wide_rows(rng, rows: int, n: int):
    """Rows wide enough for a real sampled threshold (n >= 16 * PREFILTER_STEP), with heavy exact ties
    (integer keys on half the rows) and every density from degree <= D to almost complete."""
    assert n >= P.PREFILTER_SAMPLE * P.PREFILTER_STEP
    dens = np.linspace(0.002, 0.95, rows)
    adj = rng.random((rows, n)) < dens[:, None]
    neg = rng.normal(size=(rows, n))
    neg[::2] = np.round(neg[::2] * 4)  # ~30 distinct values: ties everywhere, at the threshold too
    return adj, neg


@pytest.mark.parametrize("dtype", (np.float64, np.float32))
@pytest.mark.parametrize("need", (1, 5, 33, 300))
def test_prefilter_candidates_are_the_smallest_allowed_entries_of_each_row(dtype, need):
    """The prefilter is used on rows of >= 8,192 entries (``_prefilter_pays``); called directly here. Independent reference: a full sort of each row's allowed values. The candidates must be a prefix
    of it, strictly below every allowed entry left out, and lie on allowed columns only."""
    rng = np.random.default_rng(need)
    adj, neg = wide_rows(rng, 24, 3000)
    neg = neg.astype(dtype)
    for allowed in (adj, None):
        r, c, counts = P._prefilter(neg, allowed, need)
        assert np.array_equal(np.bincount(r, minlength=len(neg)), counts)
        if allowed is not None and need >= 33:  # both kinds of row: enough candidates, too few (sparse)
            assert (counts >= need).any() and (counts < need).any()
        for i in range(len(neg)):
            cols = c[r == i]
            ok = np.ones(neg.shape[1], bool) if allowed is None else allowed[i]
            assert ok[cols].all() and (np.diff(cols) > 0).all()
            vals = np.sort(neg[i, ok])
            got = np.sort(neg[i, cols])
            assert np.array_equal(got, vals[:len(cols)]), i
            if len(cols) < len(vals) and len(cols):
                assert vals[len(cols)] > got[-1], i  # nothing left out ties a candidate


@pytest.fixture
def prefilter_always(monkeypatch):
    """The prefilter on rows of any width (by default only rows of >= 8,192 entries use it)."""
    monkeypatch.setattr(P, "_prefilter_pays", lambda n, need: True)


def test_frozen_bit_identity_with_the_prefilter_on_every_row(prefilter_always):
    """The frozen-copy tests again, with the prefilter forced onto their narrow rows (samples of one
    to three columns, thresholds at +inf): the same clip, supports and release, bit for bit."""
    for kind in KINDS:
        for zmode in ZMODES:
            test_clip_bit_identical_to_frozen(kind, zmode)
    for dtype in (np.float32, np.float64):
        for zmode in ZMODES:
            test_public_support_bit_identical_to_frozen(dtype, zmode)
    for zmode in ZMODES:
        test_clip_identical_across_block_sizes_with_ties(zmode)
    test_measure_bit_identical_to_frozen(SHARES[0], "gaussian", True)
    test_sanitize_bit_identical_to_frozen_pipeline()


def test_prefilter_sends_rows_with_too_few_candidates_to_the_whole_row_path(prefilter_always):
    """A row whose sampled columns hold its smallest keys has fewer than D + 1 candidates (the 16th
    smallest sampled key has only 15 allowed keys below it): it must take the whole-row path and
    still get the per-row reference's list; the rows beside it take the candidate path."""
    rng = np.random.default_rng(5)
    n, D = 4000, 20
    adj, neg = wide_rows(rng, 12, n)
    adj[3] = True
    step = max(P.PREFILTER_STEP, (D + 1) // 4)
    neg[3] = rng.random(n) + 1.0
    neg[3, ::step] = -rng.random(len(neg[3, ::step]))  # the sampled columns are the 3rd row's smallest
    _, _, counts = P._prefilter(neg, adj, D + 1)
    assert counts[3] < D + 1 and (counts >= D + 1).sum() >= 6
    want = slow_lists(adj, -neg, D)
    for dt in (np.float64, np.float32):
        r, c = P._clip_block_lists(adj, neg.astype(dt), D)
        got = np.zeros_like(adj)
        got[r, c] = True
        assert len(r) == got.sum()
        ref = want if dt == np.float64 else slow_lists(adj, -neg.astype(dt).astype(np.float64), D)
        assert np.array_equal(got, ref), dt


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("force", (True, False))
def test_list_selection_on_wide_rows_matches_per_row_sort(seed, force, monkeypatch):
    """_clip_block_lists on rows wide enough for the sampled threshold, ties at the D-th key included,
    against the per-row sort; and the exact order (float32 keys, tie band) against exact arithmetic."""
    if force:
        monkeypatch.setattr(P, "_prefilter_pays", lambda n, need: True)
    rng = np.random.default_rng(30 + seed)
    n = 2200
    adj, neg = wide_rows(rng, 10, n)
    for D in (1, 4, 32, 150):
        r, c = P._clip_block_lists(adj, neg.copy(), D)
        got = np.zeros_like(adj)
        got[r, c] = True
        assert len(r) == got.sum() and np.array_equal(got, slow_lists(adj, -neg, D)), D
    # the exact order: near-ties beyond float32 precision on a whole graph, clip against exact rationals
    z = near_tie_z(n, 8, rng)
    z[n // 2:] = rng.normal(size=(n - n // 2, 8))
    full = sym(rng.random((n, n)) < 0.5)
    got = P.stable_clip(DenseGraph(full), z, max_degree=6)
    sub = np.unique(np.concatenate([np.arange(12), np.arange(n - 5, n)]))
    want = exact_lists_rows(full, z, 6, sub)
    for u in sub:
        listed = {int(v) for a, b in got for v, w in ((b, a), (a, b)) if w == u}
        assert listed <= want[u], u  # every kept edge at u is in u's exact top-6 list


def exact_lists_rows(adj, z, D, rows):
    """u -> the set of u's top-D neighbours by exact rational key (ties by index), for a few rows."""
    from fractions import Fraction
    fz = [[Fraction(float(a)) for a in row] for row in z]
    out = {}
    for u in rows:
        nb = np.flatnonzero(adj[u])
        key = {int(v): sum(a * b for a, b in zip(fz[u], fz[v])) for v in nb}
        out[int(u)] = set(sorted(key, key=lambda v: (-key[v], v))[:D])
    return out


@pytest.mark.parametrize("need", (1, 2, 33, 120))
@pytest.mark.parametrize("force", (True, False))
def test_smallest_per_row_matches_a_full_sort(need, force, monkeypatch):
    if force:
        monkeypatch.setattr(P, "_prefilter_pays", lambda n, need: True)
    rng = np.random.default_rng(need)
    _, neg = wide_rows(rng, 16, 2500)
    for dt in (np.float64, np.float32):
        x = neg.astype(dt)
        x[:, 7] = np.inf  # a diagonal-like +inf never selected
        v, idx = P._smallest_per_row(x, need)
        assert v.dtype == x.dtype
        assert np.array_equal(v, np.sort(x, axis=1)[:, :need])
        assert np.array_equal(np.take_along_axis(x, idx, axis=1), v)
        assert all(len(set(row)) == need for row in idx.tolist())
