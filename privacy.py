"""Privacy core of dmpmh: clipping, sensitivities, mechanisms, accounting, synthesis.

An auditor checks the privacy claim of DMP-MH (arXiv 2605.15460) by reading this
file alone. It imports no torch and never sees features other than public
projections.

Neighbouring relation (edge-level DP): two graphs G, G' on the same node set
(the training items) are neighbours iff their edge sets differ in exactly one
edge, added or removed. Node identities, public features and the split are
public.

What is released, and how (everything else is post-processing):
  1. ``degrees``    clipped degrees, L2 sensitivity 2                 (Lemma 1, Claim 2)
  2. ``triangles``  per-node triangle counts of the clipped graph,
                    L2 sensitivity sqrt(2)*sqrt(2(D-1)^2 + (D-1)),
                    attained                                          (Lemma 1, Claim 3)
  3. ``edges``      edge count of the unclipped graph, sensitivity 1   (Claim 4)
  4. ``bilinear``   Z^T S Z of the unclipped adjacency S over public
                    unit-norm rows Z, Frobenius sensitivity 2         (Claim 5)
each with independent Gaussian noise. The composition is accounted exactly as
mu-GDP (Dong, Roth & Su 2019, arXiv 1905.02383, Corollary 3.3: mu^2 = sum_i
(Delta_i/sigma_i)^2) and converted to (epsilon, delta) with the analytic Gaussian
formula (Balle & Wang 2018, arXiv 1805.06530, Theorem 8; Dong, Roth & Su,
Corollary 2.13).

Sources:
  * Dong, Roth, Su, "Gaussian Differential Privacy", arXiv 1905.02383.
  * Balle, Wang, "Improving the Gaussian Mechanism for Differential Privacy:
    Analytical Calibration and Optimal Denoising", arXiv 1805.06530.
  * Canonne, Kamath, Steinke, "The Discrete Gaussian for Differential Privacy",
    arXiv 2004.00010 (the exact integer sampler, ``--noise discrete``).
  * Mironov, "On Significance of the Least Significant Bits for Differential
    Privacy", CCS 2012 (why floating-point noise is a concern for integers).
  * Beck & Teboulle 2003, "Mirror descent and nonlinear projected subgradient
    methods" (the mirror step; our loop is handwritten).

Choices that are ours, not the paper's (its abstract gives no detail): the
statistic set above and its default budget shares, the public clip order
(cosine similarity of public projections, ties by neighbour index), the NMD
support (public top-K neighbours), the two-layer synthetic graph (dense
semantic layer + sparse motif layer), the noise-aware ridge of the semantic
fit, and how the graph becomes targets (soft scores or calibrated 0/1). The
distill step adapts to the graph from the release alone (post-processing, no
budget): ``fit_semantic`` keeps the eigen-directions of the noisy moments
that clear the noise edge (none: no usable signal), and ``training_choices``
decides the fallback to the public prior, the public prior graph beside the
synthetic one, the targets and pair balance. The block motif statistics (Claims B1-B5) are proven
and tested but not released by default.

Baselines accounted here too: edge randomized response (Claim 6), and for DP-SGD
the mechanism itself (``EdgeDPSGD``: Poisson sampling of pairs, per-edge clipping,
noise, with its proof), the Poisson-subsampled Gaussian RDP accountant and a
PLD accountant (``pld_dpsgd_epsilon``) beside it (end of file).
"""
from __future__ import annotations

import collections
import math
import numbers
import os
import random
import re
import secrets
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
from scipy import optimize, sparse, special
from scipy.optimize import brentq
from scipy.special import expit, logit, ndtr

# ---------------------------------------------------------------------------
# Noise sources
# ---------------------------------------------------------------------------


class NoiseSource:
    """Randomness for DP noise.

    Default: the operating system's CSPRNG (``os.urandom`` / ``secrets``).
    ``insecure_seed`` makes the noise reproducible for debugging and tests; it
    voids the guarantee against anyone who can guess the seed, so it prints a
    warning every time it is built.
    """

    def __init__(self, *, insecure_seed: int | None = None, quiet: bool = False):
        self.insecure_seed = insecure_seed
        if insecure_seed is None:
            self._py = secrets.SystemRandom()
            self._np = None
        else:
            if not quiet:
                print(f"WARNING: --insecure-seed {insecure_seed}: DP noise is reproducible and NOT secure. "
                      "Use only for debugging and tests.", file=sys.stderr)
            self._py = random.Random(insecure_seed)
            self._np = np.random.default_rng(insecure_seed)

    @property
    def secure(self) -> bool:
        return self.insecure_seed is None

    def uniform(self, size: int) -> np.ndarray:
        """Uniform on (0, 1) with 53 random bits each."""
        if self._np is not None:
            return 1.0 - self._np.random(size)  # (0, 1]
        words = np.frombuffer(os.urandom(8 * size), dtype=np.uint64)
        return ((words >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0 ** -53

    def normal(self, shape) -> np.ndarray:
        """Standard normal samples (Box-Muller on secure uniforms)."""
        n = int(np.prod(shape))
        if n == 0:
            return np.zeros(shape)
        if self._np is not None:
            return self._np.standard_normal(n).reshape(shape)
        u1, u2 = self.uniform(n), self.uniform(n)
        return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)).reshape(shape)

    def randbelow(self, n: int) -> int:
        return self._py.randrange(n)


# ---------------------------------------------------------------------------
# Accounting: mu-GDP, analytic conversion, calibration
# ---------------------------------------------------------------------------


def gdp_delta(*, mu: float, epsilon: float) -> float:
    """delta(epsilon) of a mu-GDP mechanism.

    Dong, Roth & Su (arXiv 1905.02383), Corollary 2.13; equivalently Balle & Wang
    (arXiv 1805.06530), Theorem 8, with mu = Delta/sigma:

        delta(eps) = Phi(-eps/mu + mu/2) - e^eps * Phi(-eps/mu - mu/2).
    """
    if not mu > 0:
        raise ValueError(f"mu={mu} must be > 0")
    if not epsilon >= 0:  # also rejects nan
        raise ValueError(f"epsilon={epsilon} must be >= 0")
    if math.isinf(epsilon):
        return 0.0
    a = -epsilon / mu
    # e^eps * Phi(x) computed as exp(eps + log Phi(x)) to avoid overflow.
    from scipy.special import log_ndtr
    return float(ndtr(a + mu / 2) - np.exp(epsilon + log_ndtr(a - mu / 2)))


def gdp_epsilon(*, mu: float, delta: float) -> float:
    """Smallest epsilon with gdp_delta(mu, epsilon) <= delta (root of a decreasing function)."""
    if not 0 < delta < 1:
        raise ValueError(f"delta={delta} must be in (0, 1)")
    if gdp_delta(mu=mu, epsilon=0.0) <= delta:
        return 0.0
    hi = 1.0
    while gdp_delta(mu=mu, epsilon=hi) > delta:
        hi *= 2
        if hi > 1e6:
            raise ValueError(f"mu={mu} is too large for delta={delta}")
    return float(brentq(lambda e: gdp_delta(mu=mu, epsilon=e) - delta, 0.0, hi, xtol=1e-14, rtol=1e-13))


def gdp_mu(*, epsilon: float, delta: float) -> float:
    """The largest mu such that mu-GDP implies (epsilon, delta)-DP.

    delta(eps; mu) of Corollary 2.13 increases in mu, so the root is unique.
    Known value: gdp_mu(epsilon=1, delta=1e-5) = 0.26805 (DESIGN.md: 0.2681).
    """
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon={epsilon} must be a positive finite number (use the non-private "
                         "method for epsilon = infinity)")
    if not 0 < delta < 1:
        raise ValueError(f"delta={delta} must be in (0, 1)")
    lo, hi = 1e-8, 1.0
    if gdp_delta(mu=lo, epsilon=epsilon) > delta:
        raise ValueError(f"epsilon={epsilon}, delta={delta} is too small to calibrate")
    while gdp_delta(mu=hi, epsilon=epsilon) < delta:
        hi *= 2
        if hi > 1e4:
            raise ValueError(f"epsilon={epsilon} is too large to calibrate with delta={delta}")
    mu = float(brentq(lambda m: gdp_delta(mu=m, epsilon=epsilon) - delta, lo, hi, xtol=1e-15, rtol=1e-14))
    while gdp_delta(mu=mu, epsilon=epsilon) > delta:  # step to the safe side of the root
        mu = math.nextafter(mu, 0.0) * (1 - 1e-15)
    return mu


def compose_mu(*, sensitivities, sigmas) -> float:
    """mu of the composition of Gaussian mechanisms.

    Each release of a statistic with L2 sensitivity Delta_i under N(0, sigma_i^2 I)
    is (Delta_i/sigma_i)-GDP (Dong, Roth & Su, Theorem 2.7), and their
    composition is mu-GDP with mu = sqrt(sum_i (Delta_i/sigma_i)^2) (Corollary 3.3).
    """
    s = np.asarray(sensitivities, dtype=float)
    g = np.asarray(sigmas, dtype=float)
    if (g <= 0).any() or (s < 0).any():
        raise ValueError(f"sigmas={g.tolist()} must be > 0 and sensitivities={s.tolist()} >= 0")
    return float(np.sqrt(np.sum((s / g) ** 2)))


def calibrate_sigmas(*, epsilon: float, delta: float, sensitivities, shares) -> np.ndarray:
    """sigma_i so the composition is exactly (epsilon, delta)-DP.

    Root finding gives mu = gdp_mu(epsilon, delta); share w_i of mu^2 goes to
    statistic i: (Delta_i/sigma_i)^2 = w_i mu^2, so sigma_i = Delta_i/(sqrt(w_i) mu)
    and sum_i (Delta_i/sigma_i)^2 = mu^2 exactly.
    """
    w = np.asarray(shares, dtype=float)
    s = np.asarray(sensitivities, dtype=float)
    if w.shape != s.shape or (w <= 0).any() or abs(w.sum() - 1) > 1e-9:
        raise ValueError(f"shares={w.tolist()} must be positive, one per statistic, and sum to 1")
    mu = gdp_mu(epsilon=epsilon, delta=delta)
    return s / (np.sqrt(w) * mu)


# ---------------------------------------------------------------------------
# Stable degree clipping (the core lemma)
# ---------------------------------------------------------------------------


def _rows_per_block(n: int, *, bytes_per_entry: int = 8, budget: int = 256 << 20) -> int:
    """Row-block size so one (block x n) working array stays within ``budget`` bytes."""
    return int(max(16, min(4096, budget // max(1, n * bytes_per_entry))))


def _pass_threads(n: int) -> int:
    """Worker threads of ``row_block_pass``: 1 below 8,000 rows (the pass takes seconds), else the
    CPUs this process may use, at most 4 (each worker holds its own O(block * N) working arrays, about
    0.5 GiB). A public function of N and the machine; the pass's output does not depend on it."""
    if n < 8000:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


PROGRESS_MIN_ROWS = 50_000  # below this the O(N^2) passes take seconds and stay quiet


def _row_progress(label: str, done: int, n: int, step: int, t0: float | None = None) -> None:
    """Progress line for a long row-block pass: prints only row counters (public: N and the block
    schedule) and, given the pass's start time ``t0``, the elapsed seconds and an ETA extrapolated
    from them, about every 10% of the rows, and only when N >= PROGRESS_MIN_ROWS. No value of the
    private graph is printed (the wall time is not a release; whoever runs the pass sees it anyway)."""
    if n >= PROGRESS_MIN_ROWS and (done == n or done // max(1, n // 10) != (done - step) // max(1, n // 10)):
        tail = ""
        if t0 is not None:
            el = time.perf_counter() - t0
            tail = f", {el:.0f}s elapsed, ETA {el / max(done, 1) * (n - done):.0f}s"
        print(f"    {label}: {done:,}/{n:,} rows{tail}", flush=True)


class _SimpleGraphCheck:
    """The checks of ``check_simple_graph``, fed one row block at a time (so that a pass that reads
    the rows anyway checks them on the way): 0/1 entries, no self-loops, shape, and symmetry
    A r == A^T r on two random integer vectors r (exact: products in float64 BLAS are exact
    because every partial sum is an integer below N * 2^20 < 2^53). The errors name no statistic
    of the graph (no counts, no rows)."""

    def __init__(self, n: int):
        self.n = n
        rng = np.random.default_rng()  # a check, not a release: same answer for every draw on valid input
        self.r = rng.integers(0, 1 << 20, size=(n, 2), dtype=np.int64).astype(np.float64)
        self.ar = np.zeros((n, 2))
        self.atr = np.zeros((n, 2))

    def rows(self, rows, s: int, e: int) -> np.ndarray:
        """Validate rows s..e; returns them as bool."""
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape != (e - s, self.n):
            raise ValueError(f"graph.rows({s}, {e}) has shape {rows.shape}; expected "
                             f"({e - s}, {self.n}): the private graph must be an N x N adjacency")
        if rows.dtype != np.bool_:
            if not np.isin(rows, (0, 1)).all():
                raise ValueError("the private graph must be a 0/1 adjacency (a simple graph); it has entries "
                                 "other than 0 and 1 (weights or multi-edges are not supported)")
            rows = rows.astype(bool)
        b = rows.shape[0]
        if rows[np.arange(b), s + np.arange(b)].any():
            raise ValueError("the private graph has self-loops (an item linked to itself); the sensitivities "
                             "assume a simple graph, so the diagonal must be 0")
        return rows

    def block_products(self, a64: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
        """(A_I r, A_I^T r_I) of the rows s..s+len(a64); reads only ``r`` (safe from several threads)."""
        return a64 @ self.r, a64.T @ self.r[s:s + len(a64)]

    def add(self, part: tuple[np.ndarray, np.ndarray], s: int) -> None:
        """Accumulate a block's products (exact: integer partial sums, so any block order)."""
        ar, atr = part
        self.ar[s:s + len(ar)] = ar
        self.atr += atr

    def finish(self) -> None:
        if self.n >= 1 << 33:
            raise ValueError(f"N={self.n} too large for the exact symmetry check")
        if not np.array_equal(self.ar, self.atr):
            raise ValueError("the private graph is not symmetric (some edge (u, v) lacks (v, u)); edge-level "
                             "privacy here is for undirected graphs, so the adjacency must be symmetric")


class _ExactOrder:
    """What makes the clip order exact: the public order is the EXACT inner product <z_u, z_v> of
    the float64 rows (ties by neighbour index), not whatever a BLAS kernel rounds it to. A
    computed key is within ``tol_u`` = 2 gamma_r ||z_u|| max_v ||z_v|| of the exact one, gamma_r
    = r u / (1 - r u), u = 2^-53 (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed.,
    eq. (3.5): |fl(x^T y) - x^T y| <= gamma_r |x|^T |y|, for ANY summation order, with or
    without FMA; the factor 2 is slack for the norms' own rounding). So a key farther than
    2 tol from the D-th computed key is on the right side of the exact threshold, and only keys
    within 2 tol of it are resolved exactly (``resolve``): equal rows of z (the same public
    vector) have equal exact keys, and the rest are compared in exact integer arithmetic. The clip is
    then a function of the graph and z alone: the same for every block size, BLAS kernel and
    thread count. Where no key is that close, the result is the computed order's, bit for bit."""

    def __init__(self, z64: np.ndarray, key_dtype=np.float64):
        r = max(1, z64.shape[1])
        norms = np.sqrt((z64 * z64).sum(1))
        nmax = norms.max() if len(norms) else 0.0
        if np.dtype(key_dtype) == np.float64:
            u = 2.0 ** -53
            gamma = r * u / (1 - r * u)
            self.tol = 2 * gamma * norms * nmax + 1e-300
        else:  # float32 keys from z rounded to float32 (``key_dtype_for`` guarantees no over/underflow)
            # rounding z: |z32 - z| <= u |z| elementwise, so the inputs add (2u + u^2) |z_u|^T |z_v|; the
            # float32 products and sums add gamma_r (1 + u)^2 |z_u|^T |z_v|; both are below
            # gamma_{r+2} |z_u|^T |z_v| <= gamma_{r+2} ||z_u|| ||z_v|| (Higham, eq. (3.5) and Lemma 3.1);
            # the factor 2 is slack for the norms' own rounding, the last term for any subnormal sum
            u = 2.0 ** -24
            gamma = (r + 2) * u / (1 - (r + 2) * u)
            self.tol = 2 * gamma * norms * nmax + r * 2.0 ** -149 + 1e-300
        self.key_dtype = np.dtype(key_dtype)
        self.z = z64
        self.zero = norms == 0  # a zero row: every key exactly 0 (BLAS computes 0 * x + ... exactly)
        self._emin = None       # exact integer images, built on first need (ties are rare in continuous data)
        self._ints: dict[int, list] = {}

    def _row(self, u: int) -> list:
        """z_u as exact integers: z = M * 2^(e - 53) with integer M, scaled to the smallest exponent."""
        if self._emin is None:
            m, e = np.frexp(self.z)
            nz = m != 0
            self._emin = int((e[nz] - 53).min()) if nz.any() else 0
        if u not in self._ints:
            m, e = np.frexp(self.z[u])
            self._ints[u] = [int(a * 2.0 ** 53) << int(b - 53 - self._emin) if a else 0 for a, b in zip(m, e)]
        return self._ints[u]

    def key(self, u: int, v: int) -> int:
        """<z_u, z_v> exactly, times the constant 2^(-2 emin) (so keys of one u compare exactly)."""
        return sum(a * b for a, b in zip(self._row(u), self._row(v)))

    def resolve(self, u: int, cand: np.ndarray, need: int) -> np.ndarray:
        """The first ``need`` of the candidates ``cand`` (sorted) at node u by (exact key desc, index)."""
        zc = self.z[cand]
        if self.zero[u] or (zc == zc[0]).all():  # all keys exactly equal: index order
            return cand[:need]
        rows, first, inv = np.unique(zc, axis=0, return_index=True, return_inverse=True)
        keys = [self.key(u, int(cand[f])) for f in first]  # one exact key per distinct public row
        ranked = sorted(range(len(cand)), key=lambda i: (-keys[inv.ravel()[i]], int(cand[i])))
        return cand[np.array(ranked[:need], dtype=np.int64)]


def key_dtype_for(z64: np.ndarray):
    """float32 for the clip keys when that is safe, else float64. Safe: r < 2^20 and every nonzero |z|
    in [2^-50, 2^50], so no float32 product or sum of r products overflows or leaves the normal range
    (products >= 2^-100 > 2^-126) and ``_ExactOrder``'s float32 rounding bound holds. The choice reads
    public z only, and the clip is the exact order either way: float32 only widens the band of keys
    that are resolved in exact arithmetic, and halves the cost of the pass's largest product."""
    a = np.abs(z64[z64 != 0])
    if z64.shape[1] < (1 << 20) and (a.size == 0 or (a.min() >= 2.0 ** -50 and a.max() <= 2.0 ** 50)):
        return np.float32
    return np.float64


_PENALTY = np.array([np.inf, 0.0])  # indexed by an adjacency entry: non-edge -> +inf, edge -> 0
_PENALTIES = {np.dtype(np.float64): _PENALTY, np.dtype(np.float32): _PENALTY.astype(np.float32)}


def _clip_block_keep(adj: np.ndarray, sim: np.ndarray, D: int, exact: _ExactOrder | None = None,
                     rows: np.ndarray | None = None) -> np.ndarray:
    """Each row's top-D list under the public total order, vectorised over the rows: a bool mask
    (rows x n), True at the D incident edges that rank first by decreasing key, ties broken by
    increasing neighbour index (all incident edges where the degree is <= D). ``sim`` holds the
    computed keys and is overwritten. Without ``exact``: the order of the computed keys (per row,
    the exact D-th largest computed key k, every edge with key > k, then the edges with key == k
    in index order until D are listed). With ``exact`` (``_ExactOrder``; ``rows`` = the node ids
    of the rows): the order of the exact inner products, resolved as that class says.
    Each row's list is a function of that row alone, so it does not depend on the block size."""
    keep = adj.copy()
    big = np.flatnonzero(adj.sum(1) > D)
    if len(big) == 0:
        return keep
    s = _penalised(adj, np.negative(sim, out=sim), big)
    keep[big] = _top_d_of_penalised(s, D, exact, None if exact is None else rows[big])
    return keep


def _penalised(adj: np.ndarray, neg: np.ndarray, big: np.ndarray) -> np.ndarray:
    """The negated keys of rows ``big`` with non-neighbours at +inf (adding 0, exact, or +inf, gathered
    from the bool rows: several times faster than a boolean-mask assignment). In place, no copy, when
    every row is in ``big`` (dense graphs). Negated, the D-th largest key is the D-th smallest: a
    selection near the front of the row (faster than near its end)."""
    pen = _PENALTIES[neg.dtype]
    if len(big) == len(adj):
        neg += pen[adj.view(np.uint8)]
        return neg
    s = neg[big]
    s += pen[adj[big].view(np.uint8)]
    return s


def _top_d_of_penalised(s: np.ndarray, D: int, exact: _ExactOrder | None, nodes: np.ndarray | None) -> np.ndarray:
    """Mask of each row's top-D list from penalised negated keys ``s`` (rows of degree > D; ``nodes``:
    their node ids, needed with ``exact``). Without ``exact``: the exact D-th smallest value t, every
    key < t, then keys == t in index order until D. With ``exact``: keys within 2 tol of t are resolved
    in exact arithmetic (``_ExactOrder``)."""
    kth = np.partition(s, D - 1, axis=1)[:, D - 1][:, None]  # minus the D-th largest key of each row
    if exact is None:
        above = s < kth
        tied = s == kth
    else:
        margin = 2 * exact.tol[nodes][:, None]
        above = s < kth - margin                      # surely above the exact threshold
        tied = (s <= kth + margin) & ~above          # within rounding of it: resolved exactly
    need = D - above.sum(1)
    multi = np.flatnonzero(tied.sum(1) > need)  # rows where the threshold's candidates exceed the places left
    if len(multi) and exact is not None:
        for i in multi:  # candidates for the last places, within rounding: resolved in exact arithmetic
            chosen = exact.resolve(int(nodes[i]), np.flatnonzero(tied[i]), int(need[i]))
            tied[i] = False
            tied[i, chosen] = True
        multi = multi[:0]
    if len(multi):
        tied[multi] &= np.cumsum(tied[multi], axis=1, dtype=np.int64) <= need[multi, None]
    return above | tied


PREFILTER_SAMPLE = 16  # the prefilter's threshold: the 16th smallest key of a strided sample of the row
PREFILTER_STEP = 64    # ... of every 64th column at least (one float32 per cache line would be 16)


def _prefilter(neg: np.ndarray, adj: np.ndarray | None, need: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates for each row's ``need`` smallest entries of ``neg`` (restricted to ``adj``'s True
    columns when given), without a selection over the whole row: t = the PREFILTER_SAMPLE-th smallest
    (allowed) entry of every s-th column (s = max(PREFILTER_STEP, need // 4)), and the candidates are
    the allowed entries < t: one comparison and one 1-D flatnonzero over the row instead of an
    argpartition (5x cheaper at N = 181,365). Returns (row, column, count per row), rows local,
    columns in increasing order per row.

    Exactness (what the callers rely on): every allowed entry outside the candidates is >= t, and
    every candidate is < t. So where a row has count >= need, its ``need`` smallest allowed entries
    (and their values, and whether the need-th ties the next one, when count >= need + 1) are those
    of its candidates: the candidates are a prefix of the row's sorted allowed entries. Rows with
    fewer candidates must take the whole-row path. The threshold only decides which path a row
    takes, never what a row's list is; it reads the row's own keys and edges, like the selection.
    Size: about 16 s candidates per row (the number of allowed entries below the sample's 16th
    smallest is about 16 s whatever the density; 1,024 for D = 32), and fewer than ``need`` in a
    negligible share of the rows when 16 s >= 4 need (a Gamma(16) below a quarter of its mean: ~1e-4).
    A row with fewer than 16 allowed sampled entries has t = +inf: every allowed entry is a candidate."""
    step = max(PREFILTER_STEP, need // 4)
    samp = neg[:, ::step]
    if adj is not None:
        samp = np.where(adj[:, ::step], samp, neg.dtype.type(np.inf))
    j = min(PREFILTER_SAMPLE, samp.shape[1]) - 1
    t = np.partition(samp, j, axis=1)[:, j][:, None]  # +inf where the sample has too few allowed entries
    mask = neg < t
    if adj is not None:
        mask &= adj
    f = np.flatnonzero(mask)  # 1-D: ~10x faster than a 2-D np.nonzero
    r, c = np.divmod(f, neg.shape[1])
    return r, c, np.bincount(r, minlength=len(neg))


def _prefilter_pays(n: int, need: int) -> bool:
    """Whether rows of n entries are wide enough for the prefilter: its ~16 s candidates (s its column
    step) at most 1/8 of the row. Narrower rows (n < 8,192 at D = 32) take the whole-row path directly;
    the lists are the same either way (tests run both)."""
    return n >= 8 * PREFILTER_SAMPLE * max(PREFILTER_STEP, need // 4)


def _smallest_of_candidates(neg: np.ndarray, r: np.ndarray, c: np.ndarray, counts: np.ndarray,
                            rows: np.ndarray, need: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``need`` + 1 smallest candidates (``_prefilter``'s r, c, counts) of each of ``rows`` (local,
    increasing, each with counts >= need + 1), sorted by value: (values in neg's dtype, columns), each of
    shape (len(rows), need + 1). Equal values come in no particular column order: the callers use the
    first ``need`` as a set, and only where the (need+1)-th is strictly larger."""
    starts = np.cumsum(counts) - counts
    sel = np.zeros(len(counts), dtype=bool)
    sel[rows] = True
    take = np.flatnonzero(sel[r])
    rr, cc = r[take], c[take]
    vals = np.full((len(rows), int(counts[rows].max())), np.inf, dtype=neg.dtype)
    cols = np.zeros(vals.shape, dtype=np.int64)
    at = (np.searchsorted(rows, rr), take - starts[rr])
    vals[at] = neg[rr, cc]
    cols[at] = cc
    idx = np.argpartition(vals, need, axis=1)[:, :need + 1]
    v = np.take_along_axis(vals, idx, axis=1)
    o = np.argsort(v, axis=1)
    return np.take_along_axis(v, o, axis=1), np.take_along_axis(np.take_along_axis(cols, idx, axis=1), o, axis=1)


def _smallest_per_row(neg: np.ndarray, need: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``need`` smallest values of ``neg``, sorted (values in neg's dtype, columns), as one
    argpartition per row would give them, up to the column order of equal values; from the prefilter's
    candidates where a row has ``need`` of them (``_prefilter``: then they are that row's smallest)."""
    def whole_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ix = np.argpartition(x, need - 1, axis=1)[:, :need]
        vx = np.take_along_axis(x, ix, axis=1)
        o = np.argsort(vx, axis=1, kind="stable")
        return np.take_along_axis(vx, o, axis=1), np.take_along_axis(ix, o, axis=1)

    if not _prefilter_pays(neg.shape[1], need):
        return whole_rows(neg)
    r, c, counts = _prefilter(neg, None, need)
    cand = np.flatnonzero(counts >= need)
    rest = np.flatnonzero(counts < need)
    v = np.empty((len(neg), need), dtype=neg.dtype)
    idx = np.empty((len(neg), need), dtype=np.int64)
    if len(cand):
        v[cand], idx[cand] = _smallest_of_candidates(neg, r, c, counts, cand, need - 1)
    if len(rest):
        v[rest], idx[rest] = whole_rows(neg[rest])
    return v, idx


def _clip_block_lists(adj: np.ndarray, neg: np.ndarray, D: int, exact: _ExactOrder | None = None,
                      rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The same top-D lists as ``_clip_block_keep``, as (row, column) index arrays (rows local to the
    block), from the NEGATED keys ``neg`` (may be overwritten). First the prefilter (``_prefilter``):
    a row with at least D + 1 candidates whose (D+1)-th smallest is farther than the tie band from its
    D-th (see below) lists its D smallest candidates, which are its D smallest keys among its edges.
    Every other row takes the whole-row path (``_clip_block_lists_rows``). Rows of degree <= D have
    fewer than D + 1 candidates, so they take the whole-row path too."""
    if not _prefilter_pays(neg.shape[1], D + 1):
        return _clip_block_lists_rows(adj, neg, D, exact=exact, rows=rows)
    r, c, counts = _prefilter(neg, adj, D + 1)
    cand = np.flatnonzero(counts >= D + 1)
    rest = np.flatnonzero(counts < D + 1)
    rf = cf = np.zeros(0, dtype=np.int64)
    if len(cand):
        vals, cols = _smallest_of_candidates(neg, r, c, counts, cand, D)
        kth, nxt = vals[:, D - 1], vals[:, D]
        fast = nxt > kth if exact is None else nxt > kth + 2 * exact.tol[rows[cand]]
        rf = np.repeat(cand[fast], D)
        cf = cols[fast, :D].ravel()
        rest = np.sort(np.concatenate([rest, cand[~fast]]))
    if len(rest) == 0:
        return rf, cf
    if len(rest) == len(neg):  # no copy when every row takes the whole-row path (sparse graphs)
        return _clip_block_lists_rows(adj, neg, D, exact=exact, rows=rows)
    r2, c2 = _clip_block_lists_rows(adj[rest], neg[rest], D, exact=exact, rows=None if rows is None else rows[rest])
    return np.concatenate([rf, rest[r2]]), np.concatenate([cf, c2])


def _clip_block_lists_rows(adj: np.ndarray, neg: np.ndarray, D: int, exact: _ExactOrder | None = None,
                           rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The same top-D lists as ``_clip_block_keep``, as (row, column) index arrays (rows local to the
    block), from the NEGATED keys ``neg`` (overwritten): the whole-row path. Fast path: one argpartition per row gives the
    D + 1 smallest negated keys; where the (D+1)-th is farther than the tie band from the D-th (strictly
    greater without ``exact``, beyond 2 tol with it), no key outside the first D can enter the list,
    and the first D are exactly the D listed edges (every key within the band is then among them, so
    ``_clip_block_keep`` would list the same set). Every other row (ties or keys within rounding of the
    D-th, degree <= D handled apart) takes ``_clip_block_keep``'s selection (``_top_d_of_penalised``).
    No N-wide mask is built for the fast rows, which is what makes this faster. The pass uses this
    one; ``_clip_block_keep`` gives the same lists as a mask."""
    deg = adj.sum(1)
    big = deg > D
    r_small, c_small = np.nonzero(adj[~big]) if (~big).any() else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    r_small = np.flatnonzero(~big)[r_small]
    bigi = np.flatnonzero(big)
    if len(bigi) == 0:
        return r_small, c_small
    sb = _penalised(adj, neg, bigi)
    idx = np.argpartition(sb, D, axis=1)[:, :D + 1]
    vals = np.take_along_axis(sb, idx, axis=1)
    o = np.argsort(vals, axis=1, kind="stable")
    vals = np.take_along_axis(vals, o, axis=1).astype(np.float64)
    idx = np.take_along_axis(idx, o, axis=1)
    kth, nxt = vals[:, D - 1], vals[:, D]
    if exact is None:
        fast = nxt > kth
    else:
        fast = nxt > kth + 2 * exact.tol[rows[bigi]]
    rf = np.repeat(bigi[fast], D)
    cf = idx[fast, :D].ravel()
    slow = np.flatnonzero(~fast)
    if len(slow):
        rs_ = bigi[slow]
        r2, c2 = np.nonzero(_top_d_of_penalised(sb[slow], D, exact, None if exact is None else rows[rs_]))
        rf, cf = np.concatenate([rf, rs_[r2]]), np.concatenate([cf, c2])
    return np.concatenate([r_small, rf]), np.concatenate([c_small, cf])


@dataclass
class RowBlockPass:
    """What ``row_block_pass`` returns. ``clipped``: the stably clipped edges (m, 2), u < v, sorted
    (None when not asked); ``supports``: k -> public top-k support (``public_support``);
    ``edges`` and ``bilinear``: edge count and Z^T A Z of the unclipped graph (None when not asked).
    Private values: only measure() may read ``clipped``, ``edges`` and ``bilinear``."""
    clipped: np.ndarray | None
    supports: dict
    edges: float | None
    bilinear: np.ndarray | None


def row_block_pass(graph, z: np.ndarray, *, max_degree: int | None = None, support_ks=(),
                   support_z: np.ndarray | None = None, moments: bool = False, check: bool = True,
                   block: int | None = None, support_block: int | None = None,
                   label: str = "row-block pass", threads: int | None = None) -> RowBlockPass:
    """ONE pass over row blocks of the private adjacency and of the public similarities.

    Each block of rows I is read once (``graph.rows``) and its public similarities z_I z^T
    computed once; from them, at the same time:
      * the simple-graph checks (``check``; as ``check_simple_graph``);
      * the edge count and the bilinear moments Z^T A Z (``moments``; as ``_edge_count_and_bilinear``,
        the same products accumulated over the same blocks, hence the same bits);
      * each node's top-D list of the stable clip (``max_degree``; the public order and tie-break
        of ``stable_clip``), selected for the whole block at once (``_clip_block_lists``);
      * each node's top-k public neighbours for every k in ``support_ks`` (as ``public_support``,
        bit for bit: one np.partition gives every k's threshold; rows whose k-th value is tied
        take argpartition's pick, as public_support always did).
    ``graph`` may be None when only supports are asked. The clip keys are computed in float64
    from float64 z, their order made exact by ``_ExactOrder``; the support keys in the dtype of
    ``support_z`` (default z), as before, on public_support's own row grid (``support_block``).
    Memory O(block * N): the default block keeps one float64 (block x N) array near 256 MiB, the
    selections run over sub-blocks of ~8 MiB per working array, the supports' products over
    ``support_block`` rows (~256 MiB for their working arrays together), plus the N * D clip
    keys and the N * k support pairs.
    Time O(N^2 (r + L)) for the products (L: the label width of an implicit label graph) plus
    O(N^2) for the selections, vectorised over sub-blocks of rows: a threshold from a strided
    sample of each row keeps ~1,000 candidates, selected exactly (``_prefilter``; rows with too few
    take a whole-row argpartition); the only Python loop over rows is the exact resolution of a row
    whose D-th key is within rounding of another.
    Threads: row blocks run on ``threads`` workers (default ``_pass_threads(N)``); each returns
    its parts and they are combined in block order, so the output is the same bits for every thread
    count (tested). Each worker holds its own working arrays.
    """
    n = len(z) if graph is None else graph.n
    D = None if max_degree is None else int(max_degree)
    if D is not None and not (isinstance(max_degree, (int, np.integer)) and D >= 1):
        raise ValueError(f"max_degree (D)={max_degree} must be an integer >= 1")
    ks = sorted({int(k) for k in support_ks})
    if any(k < 1 for k in ks):
        raise ValueError(f"support k must be >= 1, got {ks}")
    need_graph = check or moments or D is not None
    if need_graph and graph is None:
        raise ValueError("row_block_pass: a graph is required for the checks, the moments or the clip")
    z64 = np.asarray(z).astype(np.float64, copy=False)
    zs = np.asarray(z if support_z is None else support_z)
    if len(zs) != n or len(z64) != n:
        raise ValueError(f"public projection has {len(z64)} rows (support: {len(zs)}), the graph {n} nodes")
    block_given = block
    block = block or _rows_per_block(n)
    # rows per selection sub-block: small temporaries (~8 MiB each) that the allocator reuses; one
    # (block x N) temporary per step would cost a fresh page-faulted allocation every time
    sub = _rows_per_block(n, bytes_per_entry=8, budget=8 << 20)
    # the supports' rows go on public_support's own default grid, so that their products are the
    # same gemm calls as public_support's (same bits); they need no graph rows, so any grid will do
    support_block = support_block or _rows_per_block(n, bytes_per_entry=24)
    chk = _SimpleGraphCheck(n) if (graph is not None and check) else None
    kdt = key_dtype_for(z64) if D is not None else np.float64
    exact = _ExactOrder(z64, kdt) if D is not None else None
    zk = z64.astype(kdt, copy=False) if D is not None else None
    # Shared keys: where the clip keys would be the support keys bit for bit (float32 z, no separate
    # support_z), the clip reads them from the support products instead of a second N^2 r product. Any
    # computed keys will do for the clip (its order is exact within the rounding band, whatever the
    # summation order), so only the grids must line up: graph blocks made of whole support blocks.
    share = (D is not None and bool(ks) and n > 1 and zk.dtype == zs.dtype and np.array_equal(zk, zs))
    if share and block_given is None:
        block = max(support_block, block // support_block * support_block)
    share = share and block % support_block == 0
    m = 0.0
    acc = np.zeros((z64.shape[1], z64.shape[1])) if moments else None
    listed = []  # keys a * n + b (a < b) of every (u, v) in u's top-D list
    sup_rows = {k: [] for k in ks}
    sup_cols = {k: [] for k in ks}
    kks = sorted({min(k, n - 1) for k in ks})
    local = threading.local()  # each worker's working arrays, reused by every block it takes

    def buffer(name: str, rows: int, dtype) -> np.ndarray:
        buf = getattr(local, name, None)
        if buf is None:  # allocated once per worker: no fresh page-faulted array per block
            buf = np.empty((rows, n), dtype=dtype)
            setattr(local, name, buf)
        return buf

    def one_block(s: int, e: int) -> dict:
        """Everything the pass takes from rows s..e (and from the support blocks that start there).
        Returns parts that the caller combines in block order; shares no mutable state."""
        out = {"listed": [], "sup": {k: [] for k in ks}}
        adj = None
        if need_graph:
            adj = graph.rows(s, e)
            if chk is not None:
                adj = chk.rows(adj, s, e)
            else:
                adj = np.asarray(adj, dtype=bool)
            if chk is not None or moments:
                a64 = buffer("a64", block, np.float64)[:e - s]
                np.copyto(a64, adj)
                if chk is not None:
                    out["check"] = chk.block_products(a64, s)
                if moments:
                    out["m"] = float(np.count_nonzero(adj))  # the same integer as adj.sum(), 10x faster
                    out["acc"] = z64[s:e].T @ (a64 @ z64).astype(np.float64)
        # the support rows on their own grid (multiples of support_block): the blocks that start here
        for a in range(-(-s // support_block) * support_block if ks and n > 1 else e, e, support_block):
            b = min(n, a + support_block)
            # one product for every k; as public_support's -sim, bit for bit (negating an input of a
            # product negates every rounded partial sum exactly)
            neg_all = np.matmul(np.negative(zs[a:b]), zs.T,
                                out=buffer("sup", support_block, np.result_type(zs.dtype))[:b - a])
            neg_all[np.arange(b - a), np.arange(a, b)] = np.inf
            km = kks[-1]
            for c0 in range(0, b - a, sub):
                neg = neg_all[c0:c0 + sub]
                # every k's set from one selection: argpartition at index km puts the km + 1 smallest
                # first; sorted, they give each k's threshold t = v[k-1] and whether it is tied: the
                # k-th value is tied iff v[k] == v[k-1] (km <= n - 1, so index km exists; the diagonal's
                # +inf never ties a finite t)
                # (the prefilter's candidates give them where a row has km + 1 of them: ``_prefilter``)
                v, idx = _smallest_per_row(neg, km + 1)
                for k in ks:
                    kk = min(k, n - 1)
                    # where the k-th value is not tied, the top-k set is unique: what argpartition
                    # returns too. Where it is tied, argpartition's own pick at kth = k - 1
                    # (public_support's), so the support is public_support's bit for bit
                    tie = np.flatnonzero(v[:, kk] == v[:, kk - 1])
                    ok = np.ones(len(neg), dtype=bool)
                    ok[tie] = False
                    rws = [np.repeat(np.flatnonzero(ok) + (a + c0), kk)]
                    cols = [idx[ok, :kk].ravel()]
                    if len(tie):
                        tidx = np.argpartition(neg[tie], kk - 1, axis=1)[:, :kk]
                        rws.append(np.repeat(tie + (a + c0), kk))
                        cols.append(tidx.ravel())
                    out["sup"][k].append((np.concatenate(rws), np.concatenate(cols)))
                if share:  # the same rows' clip lists from the same keys (penalised in place, after use)
                    r, c = _clip_block_lists(adj[a - s + c0:a - s + c0 + len(neg)], neg, D, exact=exact,
                                             rows=np.arange(a + c0, a + c0 + len(neg)))
                    u = r + (a + c0)
                    out["listed"].append(np.minimum(u, c) * n + np.maximum(u, c))
        if D is not None and not share:
            # the negated keys, exactly -(z_I z^T): rounding is symmetric
            nsim = np.matmul(np.negative(zk[s:e]), zk.T, out=buffer("keys", block, zk.dtype)[:e - s])
            for a in range(0, e - s, sub):
                b = min(e - s, a + sub)
                r, c = _clip_block_lists(adj[a:b], nsim[a:b], D, exact=exact, rows=np.arange(s + a, s + b))
                u = r + (s + a)
                out["listed"].append(np.minimum(u, c) * n + np.maximum(u, c))
        return out

    # Blocks run on ``threads`` workers (numpy and BLAS release the GIL); their parts are combined here
    # in block order, so every sum is the sequential pass's, in the same order: the same bits for any
    # thread count. At most threads + 1 blocks are in flight (memory O(threads * block * N)).
    starts = list(range(0, n, block))
    workers = max(1, min(int(threads or _pass_threads(n)), len(starts)))
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = collections.deque()
        nxt = 0
        for s in starts:
            while nxt < len(starts) and len(pending) <= workers:
                pending.append(pool.submit(one_block, starts[nxt], min(n, starts[nxt] + block)))
                nxt += 1
            part = pending.popleft().result()
            e = min(n, s + block)
            if "check" in part:
                chk.add(part["check"], s)
            if moments:
                m += part["m"]
                acc += part["acc"]
            listed.extend(part["listed"])
            for k in ks:
                for rws, cols in part["sup"][k]:
                    sup_rows[k].append(rws)
                    sup_cols[k].append(cols)
            _row_progress(label, e, n, e - s, t0)
    if chk is not None:
        chk.finish()
    clipped = None
    if D is not None:
        keys = np.concatenate(listed) if listed else np.zeros(0, dtype=np.int64)
        uniq, counts = np.unique(keys, return_counts=True)
        kept = uniq[counts == 2]  # listed by both endpoints
        clipped = np.stack([kept // n, kept % n], 1)
    supports = {}
    for k in ks:
        if not sup_rows[k]:
            supports[k] = np.zeros((0, 2), dtype=np.int64)
            continue
        u, v = np.concatenate(sup_rows[k]), np.concatenate(sup_cols[k])
        key = np.unique(np.minimum(u, v) * n + np.maximum(u, v))
        supports[k] = np.stack([key // n, key % n], 1)
    return RowBlockPass(clipped=clipped, supports=supports, edges=m / 2.0 if moments else None, bilinear=acc)


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

    The lists are selected by ``row_block_pass`` (vectorised over each row block); this function
    runs that pass for the clip alone (no graph checks, no moments, no supports).
    """
    if not (isinstance(max_degree, (int, np.integer)) and max_degree >= 1):
        raise ValueError(f"max_degree (D)={max_degree} must be an integer >= 1")
    return row_block_pass(graph, order, max_degree=max_degree, check=False, block=block, label="clip").clipped


# ---------------------------------------------------------------------------
# Sensitivities (each with its proof)
# ---------------------------------------------------------------------------


def degree_sensitivity(*, max_degree: int) -> float:
    """Claim 2: L2 sensitivity of the clipped degree vector is at most 2.

    Proof. By Lemma 1 the clipped graphs differ in a subset of {e, (a,x), (b,y)},
    with e = (a,b) present in at most one of them. If e is kept in G' and both
    displacements happen, the degree changes are a: +1-1, b: +1-1, x: -1, y: -1,
    so the L2 change is sqrt(2), or 2 when x = y (-2 at x). If e is kept without
    displacement: +1 at a and b, sqrt(2). With one displacement: (0, +1, -1) at
    (a, b, x), sqrt(2). If e is not kept, at most (a,x) and (b,y) are removed;
    a displacement at a happens only if e enters L_a, so the changes are at most
    -1 at a, x (and b, y): if both happen, e is in both lists and kept, a
    contradiction, so at most sqrt(2). The maximum over cases is 2 (x = y). []
    D does not enter; the argument is kept keyword-only for uniformity.
    """
    _check_D(max_degree)
    return 2.0


def triangle_sensitivity(*, max_degree: int) -> float:
    """Claim 3: L2 sensitivity of per-node triangle counts of the clipped graph.

        Delta_tri(D) = sqrt(2) * s(D) = sqrt(4 (D-1)^2 + 2 (D-1)),
        s(D) = sqrt(2 (D-1)^2 + (D-1)).

    The bound is attained for every D >= 2 (the two books at the end), so it is
    the exact worst case. It replaces the earlier sqrt(5) s(D), which bounded the
    two removals separately, and the triangle-inequality bound 3 s(D) (DESIGN.md).

    Notation: n = D - 1, t(H) the per-node triangle counts of a graph H,
    delta = t(H') - t(H). If D = 1 no graph of maximum degree 1 has a triangle,
    so delta = 0 = Delta_tri(1); let D >= 2. Let G' = G + e, e = (a, b),
    H = clip(G), H' = clip(G'); by Lemma 1 both have maximum degree <= D, and
    (a, b) is not an edge of H (H is a subgraph of G).

    Step 0 (one deletion; Lemma 1 cases). Deleting an edge (u, v) from a graph
    of maximum degree <= D destroys the c = |N(u) & N(v)| <= D - 1 triangles
    through it: delta is -c at u and v, -1 at each common neighbour, 0 elsewhere,
    so ||delta||^2 = 2c^2 + c <= s(D)^2.
    (iii) e enters neither top-D list: H' = H, delta = 0.
    (ii) e enters exactly one list, say L_a: e is not kept and H' = H - R with R
        a subset of {(a, x)}: one deletion, ||delta|| <= s(D) <= Delta_tri(D).
    (i) e enters both lists: e is kept and H' = (H - R) + e, with R a subset of
        {(a, x), (b, y)} of edges of H (x = y is possible). Steps 1-2.

    Step 1 (the coordinates of delta in case (i)). Let U = N_H(a) - {x} if (a, x)
    is in R, else U = N_H(a); V likewise at b with y. Then N_H'(a) = U + {b}, so
    |U| <= D - 1 = n, and |V| <= n; a, b are in neither U nor V (no loops,
    (a, b) not in H), x is not in U, y not in V. A triangle of H' that is not in
    H contains e; a triangle of H that is not in H' contains an edge of R:
        gained: {a, b, w} for w in C = N_H'(a) & N_H'(b) = U & V,   c = |C|;
        lost:   {a, x, w} for w in A = N_H(a) & N_H(x), a subset of U, alpha = |A|,
                {b, y, w} for w in B = N_H(b) & N_H(y), a subset of V, beta = |B|
    (A = {} if (a, x) is not in R, B = {} if (b, y) is not in R). No triangle is
    lost twice: one containing (a, x) and (b, y) would be {a, b, x}, which needs
    (a, b) in H. Counting the changed triangles at each node (x is in no gained
    triangle as x is not in U, a superset of C; a lost {b, y, w} contains x iff
    w = x; likewise for y):
        delta_a = c - alpha,            delta_b = c - beta,
        x != y:  delta_x = -alpha - [x in B],   delta_y = -beta - [y in A],
        x = y:   delta_x = -(alpha + beta),
        other w: delta_w = [w in C] - [w in A] - [w in B]
    (the x and y entries exist only for removed edges). As A & B is a subset of
    U & V = C, every other delta_w is in {-1, 0, 1}, and it is nonzero only for
    w in (U | V) - {x, y}: at most 2n nodes. And 0 <= c, alpha, beta <= n.

    Step 2 (the bound in case (i)).
    x != y, or at most one removal: |c - alpha| <= n and |c - beta| <= n. If x is
        in B then x ~ b and x ~ y in H, so N_H(x) contains a, b and A | {y}, with
        a, b not in A | {y}: D >= 2 + alpha, i.e. alpha + [x in B] <= n; likewise
        beta + [y in A] <= n. Hence
            ||delta||^2 <= n^2 + n^2 + n^2 + n^2 + 2n = 4n^2 + 2n = 2 s(D)^2.
    x = y, both removed: N_H(x) contains a, b and A | B, so alpha, beta <= n - 1
        and |A | B| <= n - 1; with A & B a subset of C,
        s = alpha + beta = |A | B| + |A & B| <= S = min(2(n - 1), n - 1 + c).
        Using alpha^2 <= (n - 1) alpha and beta^2 <= (n - 1) beta,
            f = (c - alpha)^2 + (c - beta)^2 + s^2 = 2c^2 - 2cs + alpha^2 + beta^2 + s^2
              <= 2c^2 + s (s + n - 1 - 2c),
        convex in s, so at most its value at s = 0 (2c^2 <= 2n^2) or at s = S:
          c >= n - 1: S = 2(n - 1), value 2c^2 + 2(n - 1)(3(n - 1) - 2c), convex in
            c, 4(n - 1)^2 at c = n - 1 and 4n^2 - 8n + 6 at c = n, both <= 4n^2;
          c <= n - 1: S = n - 1 + c, value c^2 + (n - 1) c + 2(n - 1)^2 <= 4(n - 1)^2.
        So f <= 4n^2 and ||delta||^2 <= f + 2n <= 4n^2 + 2n.
    Hence ||delta|| <= sqrt(4n^2 + 2n) = sqrt(2) s(D) in every case. Removing an
    edge is the same with G and G' swapped.

    Attained (every D >= 2): two disjoint "books", a ~ x with n pages A each
    adjacent to a and x, and b ~ y with n pages B each adjacent to b and y
    (maximum degree D, so clip(G) = G). Under a public order in which x is last
    in a's list and y last in b's (e.g. all similarities tied and x, y the
    largest indices), adding e = (a, b) keeps e and drops (a, x) and (b, y): all
    2n triangles are lost and none is gained, delta = -n at a, b, x, y and -1 at
    the 2n pages, ||delta||^2 = 4n^2 + 2n. (tests/test_motif_stats.py) []
    """
    _check_D(max_degree)
    D = int(max_degree)
    return math.sqrt(2.0) * math.sqrt(2 * (D - 1) ** 2 + (D - 1))


def naive_triangle_sensitivity(*, n_nodes: int) -> float:
    """Worst-case L2 sensitivity of per-node triangle counts WITHOUT clipping.

    The argument of Claim 3 with one toggle and c <= N - 2 common neighbours:
    sqrt(2 (N-2)^2 + (N-2)); it is attained by two hubs adjacent to all other
    nodes. This grows linearly with N: "Hubness Explosion".
    """
    if n_nodes < 2:
        raise ValueError(f"n_nodes={n_nodes} must be >= 2")
    c = n_nodes - 2
    return math.sqrt(2 * c * c + c)


def edge_count_sensitivity() -> float:
    """Claim 4: one edge added or removed changes the edge count by exactly 1. []"""
    return 1.0


def bilinear_sensitivity() -> float:
    """Claim 5: Frobenius sensitivity of M = Z^T S Z (unclipped S) is at most 2.

    Proof. Toggling edge (i, j) changes S in entries (i,j) and (j,i) by +-1, so
    Delta M = +-(z_i z_j^T + z_j z_i^T), and
        ||Delta M||_F^2 = 2 ||z_i||^2 ||z_j||^2 + 2 (z_i . z_j)^2 <= 4
    for rows with ||z_i|| <= 1 (Cauchy-Schwarz). No degree enters, so no clipping
    is needed. The rows must be public (here: a PCA of public features) and are
    checked to have norm <= 1 before release. []
    """
    return 2.0


def _check_D(D) -> None:
    if not (isinstance(D, (int, np.integer)) and D >= 1):
        raise ValueError(f"max_degree (D)={D} must be an integer >= 1")


# ---------------------------------------------------------------------------
# Graph statistics (private values; only called inside measure())
# ---------------------------------------------------------------------------


def _csr(edges: np.ndarray, n: int, weights=None) -> sparse.csr_matrix:
    w = np.ones(len(edges)) if weights is None else weights
    a = sparse.coo_matrix((np.concatenate([w, w]), (np.concatenate([edges[:, 0], edges[:, 1]]),
                                                    np.concatenate([edges[:, 1], edges[:, 0]]))), shape=(n, n))
    return a.tocsr()


def degrees_of(edges: np.ndarray, n: int) -> np.ndarray:
    return (np.bincount(edges[:, 0], minlength=n) + np.bincount(edges[:, 1], minlength=n)).astype(np.float64)


def triangles_of(edges: np.ndarray, n: int, *, block: int | None = None) -> np.ndarray:
    """Per-node triangle counts t_w = (A^3)_ww / 2 of a sparse graph, in row blocks
    (A[I] A) .* A[I], so that a fairly dense graph never holds the whole A^2."""
    a = _csr(edges, n)
    block = block or _rows_per_block(n, bytes_per_entry=21)
    tri = np.zeros(n)
    for s in range(0, n, block):
        ai = a[s:s + block]
        tri[s:s + ai.shape[0]] = np.asarray((ai @ a).multiply(ai).sum(1)).ravel() / 2.0
    return tri


NAIVE_DENSE_MAX_N = 1 << 15  # the naive baseline's dense triangle path up to this N (public)


def unclipped_motifs(graph, *, triangles: bool = True, block: int | None = None,
                     path: str = "auto") -> tuple[np.ndarray, np.ndarray | None]:
    """Degrees and per-node triangle counts of the UNCLIPPED graph (naive baseline).

    t_u = (A^3)_uu / 2 = 1/2 sum_w A_uw (A^2)_uw. On a sparse graph the sparse
    product is cheapest (work ~ sum_u deg_u^2); on a dense one (the label graphs
    have density ~0.5) it is hopeless and the product is done with dense float32
    BLAS over row blocks, O(N^3) flops and O(block * N) memory: for row block I,
    (A^2)[I, :] = sum_J A[I, J] A[J, :]. Exact: every partial sum is an integer
    <= N < 2^24, representable in float32; the row sums are taken in float64.
    The sparse path (``triangles_of``) works in row blocks too.

    ``path``: "dense", "sparse", or "auto", which chooses from the public N alone (dense BLAS
    below NAIVE_DENSE_MAX_N nodes, where N^3 flops stay affordable and float32 is exact; sparse
    above). Never from the private degrees: a path chosen from them would make the running time,
    and any output of the two paths, depend on the private graph beyond the release.
    """
    if path not in ("auto", "dense", "sparse"):
        raise ValueError(f"path={path!r}: choose auto, dense or sparse")
    n = graph.n
    if path == "auto":
        path = "dense" if n < NAIVE_DENSE_MAX_N else "sparse"
    # measured peak ~16 bytes per (row, column) entry for ri, a2, the inner block's float32 copy
    # and the matmul temporary, plus ~5 for an implicit graph's rows(): budget 21
    block = block or _rows_per_block(n, bytes_per_entry=21)
    deg = np.zeros(n)
    for s in range(0, n, block):
        deg[s:s + block] = graph.rows(s, min(n, s + block)).sum(1)
    if not triangles:
        return deg, None
    if path == "sparse" or n >= 1 << 24:  # float32 sums are exact below 2^24 only
        return deg, triangles_of(_all_edges(graph), n, block=block)
    tri = np.zeros(n)
    for s in range(0, n, block):
        ri = graph.rows(s, min(n, s + block)).astype(np.float32)
        a2 = np.zeros_like(ri)
        for t in range(0, n, block):
            a2 += ri[:, t:t + block] @ graph.rows(t, min(n, t + block)).astype(np.float32)
        tri[s:s + len(ri)] = (a2 * ri).sum(1, dtype=np.float64) / 2.0
    return deg, tri


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


# ---------------------------------------------------------------------------
# Block motif statistics over a public partition (each with its proof)
# ---------------------------------------------------------------------------
#
# Statistics of the private graph: call them only inside measure(). ``blocks``
# maps node -> block id in 0..K-1 (K = ``n_blocks``) and must be computed from
# public data only (e.g. k-means on the public projections). Summing over a
# block puts many nodes into one released entry while the sensitivity still
# depends on D only (not on N or the block sizes).
#
# Neighbouring relation, as everywhere in this file: G and G' differ in one
# edge e = (a, b). Let G' = G + e, H = clip(G), H' = clip(G'), n = D - 1, and
# L_w the top-D list of Lemma 1. Lemma 1 in the form used below:
#   (i)   e enters L_a and L_b: e is kept and H' = (H - R) + e, with R a subset
#         of {(a, x), (b, y)} of edges of H (the displaced ones; x = y possible);
#   (ii)  e enters exactly one list, say L_a: e is not kept and H' = H - R,
#         R a subset of {(a, x)};
#   (iii) e enters neither list: H' = H.
# H and H' have maximum degree <= D, and (a, b) is not an edge of H (H is a
# subgraph of G). Removing e is the same with G and G' swapped; every bound is
# a norm of the difference, so it holds in both directions. The per-node
# triangle change delta = t(H') - t(H) is written out in Claim 3
# (triangle_sensitivity), Step 1; Claims B4 and B5 reuse it.


def _check_blocks(blocks, n_blocks) -> np.ndarray:
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, (int, np.integer)) or n_blocks < 1:
        raise ValueError(f"n_blocks={n_blocks!r} must be an integer >= 1")
    b = np.asarray(blocks)
    if b.ndim != 1 or not (np.issubdtype(b.dtype, np.integer) and not np.issubdtype(b.dtype, np.bool_)):
        raise ValueError("blocks must be a 1-d integer array (node -> public block id)")
    if len(b) and (int(b.min()) < 0 or int(b.max()) >= n_blocks):
        raise ValueError(f"block ids must lie in 0..{int(n_blocks) - 1}")
    return b.astype(np.int64)


def _check_edges(edges, n: int) -> np.ndarray:
    """(m, 2) int64 edges with u < v, validated: endpoints in 0..n-1, no loops, no duplicates."""
    e = np.asarray(edges)
    if e.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if e.ndim != 2 or e.shape[1] != 2 or not np.issubdtype(e.dtype, np.integer):
        raise ValueError("edges must be an (m, 2) integer array")
    e = e.astype(np.int64)
    if int(e.min()) < 0 or int(e.max()) >= n:
        raise ValueError("edge endpoints must lie in 0..N-1 with N = len(blocks)")
    u, v = np.minimum(e[:, 0], e[:, 1]), np.maximum(e[:, 0], e[:, 1])
    if (u == v).any():
        raise ValueError("edges must not contain self-loops")
    if len(np.unique(u * n + v)) != len(u):
        raise ValueError("edges must not contain duplicates")
    return np.stack([u, v], 1)


def block_pairs(n_blocks: int) -> np.ndarray:
    """The (K(K+1)/2, 2) unordered block pairs (p, q), p <= q, in the order of the
    entries of ``block_edge_counts``: row-major upper triangle with the diagonal
    (np.triu_indices(K)); pair (p, q) has index p K - p (p - 1) / 2 + q - p."""
    _check_blocks(np.zeros(0, dtype=np.int64), n_blocks)
    return np.stack(np.triu_indices(int(n_blocks)), 1).astype(np.int64)


def block_triples(n_blocks: int) -> np.ndarray:
    """The (K(K+1)(K+2)/6, 3) unordered block triples p <= q <= r, in lexicographic
    order: the entries of ``block_triple_triangle_counts``."""
    _check_blocks(np.zeros(0, dtype=np.int64), n_blocks)
    k = int(n_blocks)
    p, q, r = np.indices((k, k, k)).reshape(3, -1)
    keep = (p <= q) & (q <= r)
    return np.stack([p[keep], q[keep], r[keep]], 1).astype(np.int64)


def _pair_index(p: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    lo, hi = np.minimum(p, q), np.maximum(p, q)
    return lo * k - lo * (lo - 1) // 2 + hi - lo


def block_edge_counts(edges, blocks, n_blocks: int) -> np.ndarray:
    """Number of edges between each unordered pair of public blocks.

    Entry (p, q), p <= q, in the order of ``block_pairs``: the number of edges
    with one endpoint in block p and the other in block q (both in p if p = q).
    Any simple graph given as (m, 2) edges; N = len(blocks). Sensitivity:
    ``block_edge_count_sensitivity`` (Claim B1).
    """
    b = _check_blocks(blocks, n_blocks)
    e = _check_edges(edges, len(b))
    k = int(n_blocks)
    idx = _pair_index(b[e[:, 0]], b[e[:, 1]], k)
    return np.bincount(idx, minlength=k * (k + 1) // 2).astype(np.float64)


def block_edge_counts_of_graph(graph, blocks, n_blocks: int, *, block: int | None = None) -> np.ndarray:
    """``block_edge_counts`` of a graph given by ``n`` and ``rows(a, b)`` (e.g. the
    unclipped private graph), in row blocks, never holding the N x N matrix.

    With the one-hot block matrix O (N x K), M = O^T A O has M_pq = edges between
    p and q (p != q) and M_pp = 2 x edges inside p. Exact: every entry of a row
    block's A[I] O is an integer <= N < 2^24, so float32 holds it; sums are float64.
    """
    n = graph.n
    b = _check_blocks(blocks, n_blocks)
    if len(b) != n:
        raise ValueError(f"blocks has {len(b)} entries for a graph of {n} nodes")
    if n >= 1 << 24:
        raise ValueError("N >= 2^24: float32 row sums would not be exact")
    k = int(n_blocks)
    onehot = np.zeros((n, k), dtype=np.float32)
    onehot[np.arange(n), b] = 1.0
    block = block or _rows_per_block(n, bytes_per_entry=6)
    m = np.zeros((k, k))
    for s in range(0, n, block):
        rows = graph.rows(s, min(n, s + block))
        m += onehot[s:s + len(rows)].T.astype(np.float64) @ (rows.astype(np.float32) @ onehot).astype(np.float64)
        _row_progress("block edge counts", s + len(rows), n, len(rows))
    iu = np.triu_indices(k)
    out = m[iu].copy()
    out[iu[0] == iu[1]] /= 2.0
    return out


def block_edge_count_sensitivity(*, clipped: bool) -> float:
    """Claim B1: L2 sensitivity of ``block_edge_counts``: 1 on the unclipped graph,
    sqrt(5) on the clipped graph. Both are attained (for K >= 2).

    Unclipped. Adding or removing e = (a, b) changes only the entry of the pair
    (block(a), block(b)), by exactly 1.

    Clipped. Write u_f for the unit vector of the block pair of an edge f.
    (iii) no change. (ii) H' = H - R, R a subset of {(a, x)}: the change is 0 or
    -u_(a,x), norm <= 1. (i) H' = (H - R) + e: the change is
        v = u_e - [(a, x) in R] u_(a,x) - [(b, y) in R] u_(b,y).
    Enumerating which of the (at most three) unit vectors coincide: all distinct
    ||v||^2 = 3; u_(a,x) = u_(b,y) != u_e: ||v||^2 = (-2)^2 + 1 = 5; u_e equal to
    one or both of the others: ||v||^2 = 1; fewer removals: <= 2. So ||v|| <=
    sqrt(5). The equal signs of the two displaced edges are what make it worse
    than sqrt(3). Attained: a, b in block 0, x, y in block 1, both displaced
    (e.g. the two books of Claim 3): -2 at (0, 1) and +1 at (0, 0). []
    """
    if not isinstance(clipped, bool):
        raise ValueError(f"clipped={clipped!r} must be True or False")
    return math.sqrt(5.0) if clipped else 1.0


def unclipped_degree_sensitivity() -> float:
    """Claim B2: L2 sensitivity of the degree vector of the UNCLIPPED graph is sqrt(2).

    Proof. Adding or removing e = (a, b), a != b, changes deg(a) and deg(b) by
    the same +-1 and no other degree: ||delta|| = sqrt(1 + 1), for every
    neighbouring pair (attained always). No D enters. []
    """
    return math.sqrt(2.0)


def block_wedge_counts(edges, blocks, n_blocks: int) -> np.ndarray:
    """Per public block p: the number of wedges (paths of length 2) centred in p,
    W_p = sum over w in p of C(deg_w, 2). Sensitivity on the clipped graph:
    ``block_wedge_sensitivity`` (Claim B3)."""
    b = _check_blocks(blocks, n_blocks)
    e = _check_edges(edges, len(b))
    d = degrees_of(e, len(b))
    return np.bincount(b, weights=d * (d - 1) / 2.0, minlength=int(n_blocks)).astype(np.float64)


def block_wedge_sensitivity(*, max_degree: int) -> float:
    """Claim B3: L2 sensitivity of ``block_wedge_counts`` of the clipped graph is
    2 (D - 1), attained for every D >= 2.

    Proof. Let omega_w = C(d_w, 2); going from degree d to d - 1 changes it by
    -(d - 1), from d - 1 to d by +(d - 1), and from d to d - 2 by -(2d - 3).
    (iii) no change. (ii) H' = H - R, R a subset of {(a, x)}: at most d_a and d_x
    drop by 1, so omega_a and omega_x change by -(d - 1), d <= D, each: per-node
    L1 norm <= 2 (D - 1). (i) "a side": if (a, x) is in R, d_a is unchanged
    (+1 - 1) and d_x drops by 1: -(d_x - 1), |.| <= D - 1; otherwise d_a rises
    by 1 to d'_a <= D: +(d'_a - 1) <= D - 1. The same on the b side. If x = y
    and both are removed, d_x drops by 2: -(2 d_x - 3) >= -(2D - 3). No other
    degree changes (x != b, y != a as (a, b) is not in H). So the per-node change
    has L1 norm <= 2 (D - 1) in every case, and the block vector
    Delta_p = sum_{w in p} delta_w has ||Delta||_2 <= ||Delta||_1 <= ||delta||_1
    <= 2 (D - 1). Attained: both displaced, x != y in one block, d_x = d_y = D
    (the two books of Claim 3). []
    """
    _check_D(max_degree)
    return 2.0 * (int(max_degree) - 1)


def block_triangle_counts(edges, blocks, n_blocks: int) -> np.ndarray:
    """Per public block p: T_p = sum over w in p of t_w (per-node triangle counts),
    i.e. each triangle counted once per vertex in p. Sensitivity on the clipped
    graph: ``block_triangle_sensitivity`` (Claim B4). T_p / W_p (Claim B3) is the
    block's mean local clustering weighted by wedges."""
    b = _check_blocks(blocks, n_blocks)
    e = _check_edges(edges, len(b))
    t = triangles_of(e, len(b))
    return np.bincount(b, weights=t, minlength=int(n_blocks)).astype(np.float64)


def block_triangle_sensitivity(*, max_degree: int) -> float:
    """Claim B4: L2 sensitivity of ``block_triangle_counts`` of the clipped graph is
    6 (D - 1), for every public partition; attained for every D >= 2.

    Proof. With delta = t(H') - t(H) per node, Delta_p = sum_{w in p} delta_w, so
    ||Delta||_2 <= ||Delta||_1 <= ||delta||_1; we show ||delta||_1 <= 6n, n = D-1.
    (iii) delta = 0. (ii) one deleted edge with c <= n triangles: ||delta||_1 = 3c
    <= 3n. (i) With the coordinates of Claim 3, Step 1:
      x != y (or fewer removals): |c - alpha| <= n, |c - beta| <= n,
      alpha + [x in B] <= n, beta + [y in A] <= n (Claim 3, Step 2), and at most
      2n other nodes with |delta_w| <= 1: ||delta||_1 <= 6n.
      x = y: (|c - alpha| + alpha) + (|c - beta| + beta) + (others), and
      |c - alpha| + alpha = max(c, 2 alpha - c) <= max(n, 2(n - 1)) <= 2n (alpha
      <= n - 1 there), likewise for beta: ||delta||_1 <= 2n + 2n + 2n = 6n.
    Attained: the two books of Claim 3 with all nodes in one block: every one of
    the 2n lost triangles has its three vertices in that block, Delta = -6n.
    (Incidentally ||delta||_1 <= 6(D - 1) is also the L1 sensitivity of the
    per-node triangle counts.) []
    """
    _check_D(max_degree)
    return 6.0 * (int(max_degree) - 1)


def triangle_list(edges, n: int, *, chunk: int = 1 << 20) -> np.ndarray:
    """All triangles of a simple graph as a (t, 3) int64 array of u < v < w.

    Orient every edge from its lower to its higher endpoint; a triangle u < v < w
    is exactly a path u -> v -> w closed by the edge u -> w. The paths are
    listed per edge (u, v) from v's out-list, in chunks of about ``chunk`` paths
    (memory), and closed by a binary search in the sorted edge keys u N + w.
    Work ~ sum_v indeg(v) outdeg(v) <= N D^2 / 4 on a clipped graph.
    """
    e = _check_edges(edges, n)
    if len(e) == 0:
        return np.zeros((0, 3), dtype=np.int64)
    order = np.lexsort((e[:, 1], e[:, 0]))
    u, v = e[order, 0], e[order, 1]  # sorted by (u, v): v[indptr[x]:indptr[x+1]] = out-list of x
    key = u * n + v
    indptr = np.zeros(n + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(np.bincount(u, minlength=n))
    cnt = np.diff(indptr)[v]  # paths u -> v -> w starting with edge i
    cum = np.cumsum(cnt)
    out = []
    start = 0
    while start < len(u):
        limit = (int(cum[start - 1]) if start else 0) + int(chunk)
        end = max(start + 1, int(np.searchsorted(cum, limit, side="right")))
        cc = cnt[start:end]
        tot = int(cc.sum())
        if tot:
            ru, rv = np.repeat(u[start:end], cc), np.repeat(v[start:end], cc)
            within = np.arange(tot) - np.repeat(np.cumsum(cc) - cc, cc)
            w = v[np.repeat(indptr[v[start:end]], cc) + within]
            k = ru * n + w
            pos = np.minimum(np.searchsorted(key, k), len(key) - 1)
            hit = key[pos] == k
            out.append(np.stack([ru[hit], rv[hit], w[hit]], 1))
        start = end
    return np.concatenate(out) if out else np.zeros((0, 3), dtype=np.int64)


def block_triple_triangle_counts(edges, blocks, n_blocks: int) -> np.ndarray:
    """Number of triangles per unordered block triple {p, q, r} (the multiset of its
    vertices' blocks), p <= q <= r in the order of ``block_triples``: K(K+1)(K+2)/6
    entries, each triangle counted once. ``block_triangle_counts`` is a linear
    function of it (T_p = sum over triples of (multiplicity of p) x count).
    Sensitivity on the clipped graph: ``block_triple_triangle_sensitivity`` (Claim B5)."""
    b = _check_blocks(blocks, n_blocks)
    k = int(n_blocks)
    tri = triangle_list(edges, len(b))
    keys_all = block_triples(k) @ np.array([k * k, k, 1], dtype=np.int64)  # ascending
    if len(tri) == 0:
        return np.zeros(len(keys_all))
    bt = np.sort(b[tri], axis=1)
    idx = np.searchsorted(keys_all, bt @ np.array([k * k, k, 1], dtype=np.int64))
    return np.bincount(idx, minlength=len(keys_all)).astype(np.float64)


def block_triple_triangle_sensitivity(*, max_degree: int) -> float:
    """Claim B5: L2 sensitivity of ``block_triple_triangle_counts`` of the clipped graph
    is sqrt(5) (D - 1), for every public partition; attained for every D >= 4.

    Proof. Every triangle of H' not in H contains e, every triangle of H not in H'
    contains an edge of R (Lemma 1 cases above). Let g (resp. l) count, per
    block triple, the gained (resp. lost) triangles: g, l >= 0 entrywise and the
    change is g - l, so |g_k - l_k| <= max(g_k, l_k) and
        ||g - l||^2 <= ||g||^2 + ||l||^2 <= ||g||_1^2 + ||l||_1^2.
    (iii) 0. (ii) g = 0, ||l||_1 = c <= n (one deleted edge of a graph of max
    degree D lies in <= D - 1 triangles). (i) ||g||_1 = c = |N_H'(a) & N_H'(b)|
    <= D - 1 (b is one of a's <= D neighbours in H'), and ||l||_1 = alpha + beta
    <= 2(D - 1) (each removed edge of H lies in <= D - 1 triangles of H). So
    ||g - l||^2 <= (D-1)^2 + 4 (D-1)^2 = 5 (D-1)^2.
    Attained (D >= 4): a ~ x, b ~ y, and n = D - 1 nodes C each adjacent to a,
    b, x, y (max degree D); x last in a's order, y last in b's. Adding e drops
    (a, x), (b, y): n triangles {a, b, w} gained, 2n triangles {a, x, w},
    {b, y, w} lost. With a, b, C in block 0 and x, y in block 1: +n at (0,0,0),
    -2n at (0,0,1), norm sqrt(5) n. []
    """
    _check_D(max_degree)
    return math.sqrt(5.0) * (int(max_degree) - 1)


# ---------------------------------------------------------------------------
# Measurement (the only place private values are computed)
# ---------------------------------------------------------------------------

STATISTICS = ("degrees", "triangles", "edges", "bilinear")


@dataclass
class Measurement:
    name: str
    noisy: np.ndarray
    sensitivity: float
    sigma: float
    share: float
    norm: str          # "L2" or "Frobenius"
    clipped: bool      # computed on the clipped graph?


@dataclass
class Release:
    """Everything that leaves the sanitizer: noisy values and their calibration."""
    measurements: dict[str, Measurement]
    epsilon: float
    delta: float
    mu: float
    max_degree: int | None
    n_nodes: int
    noise: str
    secure: bool
    clipped_edges_public_order: str = "cosine similarity of public projections, ties by neighbour index"
    # public top-k supports computed in measure's one pass (public data only), and a fingerprint of
    # the public projection they were computed from
    supports: dict = field(default_factory=dict, repr=False)
    support_fingerprint: str | None = field(default=None, repr=False)

    def __getitem__(self, name: str) -> Measurement:
        return self.measurements[name]

    def support_for(self, k: int, z: np.ndarray | None = None) -> np.ndarray:
        """``public_support(z, k=k)``: the one precomputed in measure's pass when it was asked for
        (``support_ks``) over this same z (checked by fingerprint), else computed now."""
        k = int(k)
        if k in self.supports and (z is None or _fingerprint(z) == self.support_fingerprint):
            return self.supports[k]
        if z is None:
            raise ValueError(f"no public support for k={k} was computed in measure (support_ks); pass z")
        return public_support(z, k=k)


def _fingerprint(z) -> str:
    """A digest of a public array (its dtype, shape and bytes), to match supports to their z."""
    import hashlib
    a = np.ascontiguousarray(z)
    h = hashlib.blake2b(f"{a.dtype.str}{a.shape}".encode(), digest_size=16)
    h.update(a.view(np.uint8).reshape(-1) if a.size else b"")
    return h.hexdigest()


def measure(graph, z: np.ndarray, *, epsilon: float, delta: float, max_degree: int | None,
            shares: dict[str, float], source: NoiseSource, clip: bool = True,
            noise: str = "gaussian", support_ks=()) -> Release:
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

    One ``row_block_pass`` reads the graph: the simple-graph checks, the clip (once; the motif
    statistics use its edges), the edge count and bilinear moments, and the public supports for
    every k in ``support_ks`` (public data only; ``Release.support_for(k)``), so the pipeline
    never repeats the O(N^2 r) similarity pass.
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
    z_public = np.asarray(z)  # as given: the supports are computed from it (as public_support(z))
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
    want_clip = clip and ("degrees" in names or "triangles" in names)
    want_moments = "edges" in names or "bilinear" in names
    passed = row_block_pass(graph, z, max_degree=max_degree if want_clip else None, support_ks=support_ks,
                            support_z=z_public, moments=want_moments, check=True,
                            label="clip, moments and supports")
    supports = passed.supports
    if "degrees" in names or "triangles" in names:
        if clip:
            motif_edges = passed.clipped
            passed.clipped = None
            deg = degrees_of(motif_edges, n)
            tri = triangles_of(motif_edges, n) if "triangles" in names else None
            del motif_edges
        else:
            deg, tri = unclipped_motifs(graph, triangles="triangles" in names)
        values.update({k: v for k, v in (("degrees", deg), ("triangles", tri)) if k in names})
        del deg, tri
    if want_moments:
        values["edges"] = np.array([passed.edges])
        values["bilinear"] = passed.bilinear
    del passed
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
                   max_degree=max_degree if clip else None, n_nodes=n, noise=noise, secure=source.secure,
                   supports=supports, support_fingerprint=_fingerprint(z_public) if supports else None)


def check_simple_graph(graph, block: int | None = None) -> None:
    """Refuse a graph that is not simple and undirected: 0/1 entries, no self-loops, symmetric.

    Every sensitivity above assumes such a graph (one edge = one symmetric pair of 0/1 entries).
    One pass over the rows (``_SimpleGraphCheck``; ``measure`` runs the same checks inside its one
    ``row_block_pass``). Symmetry is checked exactly on two random integer vectors r:
    A r == A^T r (no rounding); an asymmetric A passes with probability <= 2^-40.
    The errors name no statistic of the graph (no counts, no rows)."""
    row_block_pass(graph, np.zeros((graph.n, 1)), check=True, block=block, label="graph check")


def calibrate_rho(*, epsilon: float, delta: float) -> float:
    """Largest rho with zcdp_to_epsilon(rho, delta) <= epsilon (bisection; monotone in rho)."""
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon={epsilon} must be a positive finite number")
    if not 0 < delta < 1:
        raise ValueError(f"delta={delta} must be in (0, 1)")
    lo, hi = 0.0, 1.0
    while zcdp_to_epsilon(hi, delta=delta) < epsilon:
        hi *= 2
        if hi > 1e6:
            raise ValueError(f"epsilon={epsilon} is too large to calibrate")
    for _ in range(200):
        mid = (lo + hi) / 2
        if zcdp_to_epsilon(mid, delta=delta) <= epsilon:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return lo


def _all_edges(graph, block: int | None = None) -> np.ndarray:
    block = block or _rows_per_block(graph.n, bytes_per_entry=1)
    out = []
    for s in range(0, graph.n, block):
        r, c = np.nonzero(graph.rows(s, min(graph.n, s + block)))
        r = r + s
        keep = r < c
        out.append(np.stack([r[keep], c[keep]], 1))
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)


# ---------------------------------------------------------------------------
# Synthesis: semantic layer (closed form) + motif layer (Noisy Mirror Descent)
# ---------------------------------------------------------------------------


def public_support(z: np.ndarray, *, k: int, block: int | None = None) -> np.ndarray:
    """Candidate pairs: each node's k most similar nodes by public projection,
    symmetrised (union), as an (m, 2) array with u < v. Public: no graph input.
    Per row: argpartition of the row of z z^T (self excluded), in z's dtype; a function of the
    row alone, so the same for every block size. ``measure(support_ks=...)`` computes the same
    supports inside its one pass (``Release.support_for``)."""
    block = block or _rows_per_block(len(z), bytes_per_entry=24)
    return row_block_pass(None, z, support_ks=(k,), check=False, block=block, support_block=block,
                          label="public support").supports[int(k)]


def list_triangles(edges: np.ndarray, n: int) -> np.ndarray:
    """All triangles of a sparse graph as (t, 3) indices into ``edges`` (public support only)."""
    m = len(edges)
    order = np.lexsort((edges[:, 1], edges[:, 0]))
    e = edges[order]
    keys = e[:, 0] * n + e[:, 1]
    indptr = np.searchsorted(e[:, 0], np.arange(n + 1))
    tri = []
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for u in range(n):
        a, b = indptr[u], indptr[u + 1]
        d = b - a
        if d < 2:
            continue
        if d not in cache:
            cache[d] = np.triu_indices(d, 1)
        i, j = cache[d]
        v, w = e[a + i, 1], e[a + j, 1]  # v < w since neighbours are sorted
        pos = np.searchsorted(keys, v * n + w)
        pos = np.minimum(pos, m - 1)
        hit = keys[pos] == v * n + w
        tri.append(np.stack([order[a + i[hit]], order[a + j[hit]], order[pos[hit]]], 1))
    return np.concatenate(tri) if tri else np.zeros((0, 3), dtype=np.int64)


@dataclass
class SyntheticGraph:
    """The released synthetic graph: a DP post-processing of a Release.

    Semantic layer (dense, implicit): b_ij = clip(c + z_i^T W z_j, 0, 1), fitted
    in closed form to the noisy edge count and bilinear moments.
    Motif layer (sparse, on the public support): q_e, fitted by Noisy Mirror
    Descent to the noisy clipped degrees and triangle counts.
    Target for pair (i, j): max(b_ij, q_ij) on the support, b_ij elsewhere. The
    max is our design choice; it is consistent because clip(G) is a subgraph of
    G, so Pr[ij in G] >= Pr[ij in clip(G)].
    """
    z: np.ndarray
    w: np.ndarray
    c: float
    support: np.ndarray
    q: np.ndarray
    report: dict = field(default_factory=dict)
    _q_csr: sparse.csr_matrix | None = field(default=None, repr=False)
    _zw: np.ndarray | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return len(self.z)

    def semantic(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if self._zw is None:
            self._zw = (self.z @ self.w).astype(np.float32)
        return np.clip(self.c + self._zw[rows] @ self.z[cols].T.astype(np.float32), 0.0, 1.0)

    def calibrated(self, *, n_sample: int = 200000, seed: int = 0):
        """Hard 0/1 targets: threshold the soft targets so the fraction of positives equals
        the released density c (estimated on a public random sample of pairs). Our choice;
        post-processing only."""
        rng = np.random.default_rng(seed)
        i = rng.integers(0, self.n, n_sample)
        j = rng.integers(0, self.n, n_sample)
        keep = i != j
        i, j = i[keep], j[keep]
        if self._zw is None:
            self._zw = (self.z @ self.w).astype(np.float32)
        soft = np.concatenate([(self._zw[i[s:s + 65536]] * self.z[j[s:s + 65536]]).sum(1)
                               for s in range(0, len(i), 65536)])
        soft = np.clip(self.c + soft, 0.0, 1.0)
        if len(self.q):  # the same max(semantic, motif) scores that targets() thresholds
            if self._q_csr is None:
                self._q_csr = _csr(self.support, self.n, self.q)
            soft = np.maximum(soft, np.asarray(self._q_csr[i, j]).ravel())
        tau = float(np.quantile(soft, 1.0 - self.c)) if 0 < self.c < 1 else 0.5

        def hard(idx: np.ndarray) -> np.ndarray:
            t = (self.targets(idx) > tau).astype(np.float32)
            np.fill_diagonal(t, 1.0)
            return t
        return hard

    def pair_scores(self, pairs: np.ndarray, chunk: int = 65536) -> np.ndarray:
        """Semantic-layer scores clip(c + z_i^T W z_j, 0, 1) of the (m, 2) pairs, in chunks."""
        if self._zw is None:
            self._zw = (self.z @ self.w).astype(np.float32)
        out = [(self._zw[pairs[s:s + chunk, 0]] * self.z[pairs[s:s + chunk, 1]]).sum(1)
               for s in range(0, len(pairs), chunk)]
        return np.clip(self.c + np.concatenate(out) if out else np.zeros(0), 0.0, 1.0)

    def targets(self, idx: np.ndarray) -> np.ndarray:
        """(len(idx), len(idx)) float32 target matrix for a batch of training items."""
        t = self.semantic(idx, idx)
        if len(self.q):
            if self._q_csr is None:
                self._q_csr = _csr(self.support, self.n, self.q)
            t = np.maximum(t, self._q_csr[idx][:, idx].toarray())
        np.fill_diagonal(t, 1.0)
        return t.astype(np.float32)


SPECTRAL_MARGIN = 6.0  # noise-edge margin, in units of the largest entry sd (our choice; see fit_semantic)


def fit_semantic(release: Release, z: np.ndarray, *, ridge: float = 1e-3, noise_ridge: float = 0.4,
                 rank: int | None = None) -> tuple[np.ndarray, float, dict]:
    """Fit the semantic layer b_ij = clip(c + z_i^T W z_j, 0, 1) to the noisy edge count and moments.

    c = m~ / (N(N-1)/2) (density from the noisy edge count). With G = Z^T Z and
    s = Z^T 1, the centred moments are T = M~ - c (s s^T - G). On the leading k
    columns of Z (the top-k public PCA directions; the leading k x k block of M~
    is exactly the release at rank k) the ridge solution is
    W = R^-1 T_k R^-1, R = G_k + l I, l = ridge * tr(G)/r + noise_ridge * sigma
    (noise_ridge = 0.4 was picked on the MIRFlickr-25K training graph, split seed
    0; that selection is not covered by the DP guarantee).

    Which part of T_k is signal (``rank=None``; an int k overrides: the plain
    ridge fit on the leading k x k block, as in earlier versions). The graph's
    pairwise structure is low rank (a few communities, labels or tastes), while
    the noise is spread over all k^2 entries, so we look for it in the spectrum.
    T_k = S_k + N_k + E_k, where
      * N_k is the symmetrised Gaussian noise, entries of variance sigma^2/2 off the
        diagonal (sigma^2 on it), the same in every orthonormal basis;
      * E_k = Z_k^T B Z_k is the sampling noise of the graph itself: even a graph
        drawn independently of Z, each pair an edge with probability c, has
        moments that wander from their expectation. B, the centred adjacency, has
        entries of variance v = c(1-c), so Cov(E_ab, E_cd) = v (G_ac G_bd + G_ad G_bc)
        (ignoring B's zero diagonal): in the eigenbasis of G_k, entry (a, b) has
        variance about v g_a g_b. It describes the one graph drawn, not the items;
      * S_k is the signal.
    For a symmetric Gaussian matrix with independent entries of variances s_ab^2,
    E ||X|| <= (1 + e)(2 s_max + C_e s_* sqrt(log k)), s_max^2 = max_a sum_b s_ab^2,
    s_* = max s_ab (Bandeira & van Handel, arXiv 1408.6185, Thm 1.1); for equal
    variances 2 s_max = 2 s sqrt(k) is the semicircle edge. Here
    s_max^2 <= k sigma^2/2 + v g_max tr(G_k), and we call edge_k = 2 s_max the noise
    edge. The largest eigenvalue is a Lipschitz function of the Gaussian entries,
    with constant sqrt(2) s_*, so it exceeds its mean by t with probability at most
    exp(-t^2 / (4 s_*^2)) (Gaussian concentration; Boucheron, Lugosi & Massart,
    Concentration Inequalities, Thm 5.6); with s_*^2 = sigma^2/2 + v g_max^2 we keep
    the eigen-directions of T_k with |eigenvalue| > tau_k = edge_k + SPECTRAL_MARGIN s_*
    (6 s_*: probability about exp(-9) per side, before the log term; the Monte
    Carlo test in tests/test_adaptive.py checks how often pure noise and random
    graphs pass). A kept eigenvalue l is shrunk to what it says of the signal: a
    spike theta above a Wigner matrix with edge e appears at l = theta + e^2/(4 theta),
    and its eigenvector keeps a squared overlap 1 - e^2/(4 theta^2) with the truth
    (Benaych-Georges & Nadakuditi, arXiv 0910.2120, Sec. 3.1), so
    theta = (l + sqrt(l^2 - e^2))/2 and we use eta = theta (1 - e^2/(4 theta^2)),
    the Frobenius-optimal weight for that overlap. T_k is replaced by
    sum over kept of eta u u^T, and k in {1, 2, 4, ..., r} is the block whose kept
    directions carry the most estimated signal energy sum eta^2. No direction kept
    at any k: W = 0, and the synthesis falls back to public structure.

    This is pure post-processing of the released moments, the released density
    and public Z: the bilinear sensitivity (2) depends on neither k nor the
    eigen-directions. Returns (W as an r x r matrix, zero outside the leading
    k x k block; c; a report: ``rank`` is the rank of W, ``fit_block`` the k).
    """
    n = len(z)
    r = z.shape[1]
    if n < 2:
        raise ValueError(f"the semantic fit needs at least 2 nodes, got {n}")
    zz = z.astype(np.float64)
    c = 0.0
    if "edges" in release.measurements:
        c = float(np.clip(release["edges"].noisy[0] / (n * (n - 1) / 2), 0.0, 1.0))
    if "bilinear" not in release.measurements:
        return np.zeros((r, r)), c, {"rank": 0, "rank_chosen_by": "no bilinear release"}
    m = release["bilinear"].noisy
    m = (m + m.T) / 2
    g = zz.T @ zz
    s = zz.sum(0)
    target = m - c * (np.outer(s, s) - g)
    sigma = release["bilinear"].sigma
    lam = ridge * np.trace(g) / len(g) + noise_ridge * sigma
    lam = max(lam, 1e-12 * max(1.0, float(np.trace(g))))  # a zero ridge on a singular G would not invert
    v = c * (1 - c)

    def weights(k: int, tk: np.ndarray) -> np.ndarray:
        rinv = np.linalg.inv(g[:k, :k] + lam * np.eye(k))
        wk = rinv @ tk @ rinv
        return (wk + wk.T) / 2

    def denoised(k: int) -> tuple[np.ndarray, float, int]:
        gev = np.linalg.eigvalsh(g[:k, :k])
        gmax = float(gev.max())
        edge = 2 * math.sqrt(k * sigma ** 2 / 2 + v * gmax * float(gev.sum()))
        tau = edge + SPECTRAL_MARGIN * math.sqrt(sigma ** 2 / 2 + v * gmax ** 2)
        lam_k, u = np.linalg.eigh(target[:k, :k])
        keep = np.abs(lam_k) > tau
        a = np.abs(lam_k[keep])
        theta = (a + np.sqrt(np.maximum(a ** 2 - edge ** 2, 0.0))) / 2
        eta = np.sign(lam_k[keep]) * theta * (1 - edge ** 2 / (4 * theta ** 2))
        return (u[:, keep] * eta) @ u[:, keep].T, float(eta @ eta), int(keep.sum())

    w = np.zeros((r, r))
    if rank is not None:
        if not (isinstance(rank, (int, np.integer)) and rank >= 0):
            raise ValueError(f"fit rank={rank} must be an integer >= 0")
        k = min(int(rank), r)
        if k > 0:
            w[:k, :k] = weights(k, target[:k, :k])
        return w, c, {"rank": k, "rank_chosen_by": "explicit override"}
    ks = sorted({min(2 ** j, r) for j in range(int(math.log2(max(r, 1))) + 2)})
    found = {}
    for k in ks:
        _, energy, kept = denoised(k)
        found[k] = (kept, energy)
    k = max(ks, key=lambda kk: (found[kk][1], -kk))
    kept = found[k][0] if found[k][1] > 0 else 0
    if kept:
        w[:k, :k] = weights(k, denoised(k)[0])
    how = (f"release: {kept} eigen-directions of the noisy moments on the top {k} public directions clear "
           "the noise edge" if kept else "release: no eigenvalue of the noisy moments clears the noise edge")
    return w, c, {"rank": kept, "fit_block": k if kept else 0, "rank_chosen_by": how,
                  "rank_search": {str(kk): [nk, round(en, 3)] for kk, (nk, en) in found.items()}}


def noisy_mirror_descent(release: Release, support: np.ndarray, q0: np.ndarray, *, n_nodes: int,
                         max_iter: int = 200, step: float = 1.0, prior: float = 1e-3,
                         verbose: bool = True) -> tuple[np.ndarray, dict]:
    """Fit edge probabilities q on ``support`` to the noisy motif measurements.

    Loss (Gaussian negative log-likelihood, each residual over its own sigma,
    plus a Bernoulli-KL prior toward the public/semantic initialisation q0):
        L(q) = sum_i (deg_i(q) - d~_i)^2 / (2 s_d^2) + sum_i (tri_i(q) - t~_i)^2 / (2 s_t^2)
               + prior * sum_e KL(Bern(q_e) || Bern(q0_e)),
    with deg_i(q) = sum_{e ni i} q_e and tri_i(q) = sum_{triangles T ni i} prod_{e in T} q_e
    (expected counts under independent edges). Mirror map: the Bernoulli negative
    entropy phi(q) = sum q log q + (1-q) log(1-q), whose gradient is logit(q), so
    the mirror step is theta <- theta - eta * dL/dq with q = sigmoid(theta)
    (Beck & Teboulle 2003, eq. 3.1-3.3). Step size: backtracking (halve eta on
    an increase, grow 1.2x on success). Stops when chi^2 = sum of squared
    standardised residuals is within 2 standard deviations of its expectation
    (n + 2 sqrt(2n)), i.e. the fit reached the noise level, or at max_iter.
    Post-processing only: inputs are the Release and public support.
    """
    t0 = time.perf_counter()
    stats = [k for k in ("degrees", "triangles") if k in release.measurements]
    if not stats or len(support) == 0:
        return q0.copy(), {"iterations": 0, "seconds": 0.0, "residual_rms": {}, "chi2": 0.0, "n_measurements": 0}
    tris = list_triangles(support, n_nodes) if "triangles" in stats else np.zeros((0, 3), dtype=np.int64)
    tri_nodes = _triangle_nodes(support, tris)
    # epsilon = inf (the NOT PRIVATE reference) has sigma = 0: fit by plain least
    # squares (unit weights) and run to convergence instead of to a noise level
    exact = any(release[k].sigma == 0 for k in stats)
    sig = {k: (release[k].sigma if release[k].sigma > 0 else 1.0) for k in stats}
    target = {k: release[k].noisy for k in stats}
    eps_q = 1e-6
    theta0 = logit(np.clip(q0, eps_q, 1 - eps_q))

    def evaluate(theta):
        q = expit(theta)
        res, grad, loss = {}, np.zeros_like(q), 0.0
        if "degrees" in stats:
            deg = np.bincount(support[:, 0], q, n_nodes) + np.bincount(support[:, 1], q, n_nodes)
            r = (deg - target["degrees"]) / sig["degrees"]
            res["degrees"] = r
            loss += 0.5 * float(r @ r)
            g = r / sig["degrees"]
            grad += g[support[:, 0]] + g[support[:, 1]]
        if "triangles" in stats:
            qa, qb, qc = q[tris[:, 0]], q[tris[:, 1]], q[tris[:, 2]]
            p = qa * qb * qc
            tri = sum(np.bincount(tri_nodes[:, k], p, n_nodes) for k in range(3))
            r = (tri - target["triangles"]) / sig["triangles"]
            res["triangles"] = r
            loss += 0.5 * float(r @ r)
            g = r / sig["triangles"]
            coef = g[tri_nodes[:, 0]] + g[tri_nodes[:, 1]] + g[tri_nodes[:, 2]]
            m = len(q)
            grad += (np.bincount(tris[:, 0], coef * qb * qc, m) + np.bincount(tris[:, 1], coef * qa * qc, m)
                     + np.bincount(tris[:, 2], coef * qa * qb, m))
        # KL(Bern(q)||Bern(q0)) has d/dq = logit(q) - logit(q0) = theta - theta0
        q0c = np.clip(q0, eps_q, 1 - eps_q)
        kl = q * (np.log(np.clip(q, eps_q, 1)) - np.log(q0c)) + (1 - q) * (
            np.log(np.clip(1 - q, eps_q, 1)) - np.log(1 - q0c))
        loss += prior * float(kl.sum())
        grad += prior * (theta - theta0)
        return loss, grad, res

    n_meas = sum(len(target[k]) for k in stats)
    goal = 0.0 if exact else n_meas + 2 * math.sqrt(2 * n_meas)
    theta = theta0.copy()
    loss, grad, res = evaluate(theta)
    eta = step
    it = 0
    for it in range(1, max_iter + 1):
        chi2 = sum(float(r @ r) for r in res.values())
        if chi2 <= goal:
            break
        cand = theta - eta * grad
        c_loss, c_grad, c_res = evaluate(cand)
        if c_loss <= loss:
            converged = exact and loss - c_loss <= 1e-9 * max(loss, 1e-12)
            theta, loss, grad, res = cand, c_loss, c_grad, c_res
            eta *= 1.2
            if converged:
                break
        else:
            eta *= 0.5
            if eta < 1e-12:
                break
        if verbose and (it % 25 == 0 or it == 1):
            print(f"  nmd iter {it:4d}  loss {loss:.4g}  chi2/n {chi2 / n_meas:.3f}  eta {eta:.3g}", flush=True)
    chi2 = sum(float(r @ r) for r in res.values())
    report = {"iterations": it, "seconds": time.perf_counter() - t0, "chi2": chi2, "n_measurements": n_meas,
              "chi2_goal": goal, "support_pairs": int(len(support)), "support_triangles": int(len(tris)),
              "residual_rms": {k: float(np.sqrt(np.mean(r ** 2))) for k, r in res.items()}}
    return expit(theta), report


def _triangle_nodes(edges: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """The three node ids of each triangle given as edge indices."""
    if len(tris) == 0:
        return np.zeros((0, 3), dtype=np.int64)
    e0, e1 = edges[tris[:, 0]], edges[tris[:, 1]]
    shared = np.where((e0[:, 0] == e1[:, 0]) | (e0[:, 0] == e1[:, 1]), e0[:, 0], e0[:, 1])
    a = np.where(e0[:, 0] == shared, e0[:, 1], e0[:, 0])
    b = np.where(e1[:, 0] == shared, e1[:, 1], e1[:, 0])
    return np.stack([shared, a, b], 1)


def synthesize(release: Release, z: np.ndarray, *, support_k: int, nmd_iters: int = 200,
               prior: float = 1e-3, noise_ridge: float = 0.4, fit_rank: int | None = None,
               verbose: bool = True) -> SyntheticGraph:
    """Post-process a Release into a SyntheticGraph (semantic fit, then NMD)."""
    w, c, rank_report = fit_semantic(release, z, noise_ridge=noise_ridge, rank=fit_rank)
    has_motif = any(k in release.measurements for k in ("degrees", "triangles"))
    support = release.support_for(support_k, z) if has_motif else np.zeros((0, 2), dtype=np.int64)
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


def prior_agreement(z: np.ndarray, moments: np.ndarray, prior_pairs: np.ndarray, *, k: int | None = None) -> float:
    """Cosine similarity between the private graph's centred moments and the public prior's.

    ``moments`` is an estimate of the centred moments Z^T (A - c(J - I)) Z of the
    private graph (the fitted G_k W G_k, or, for a NOT PRIVATE reference, the exact
    ones); the prior graph P (the public kNN pairs, symmetrised) gives
    Z^T (P - c_P (J - I)) Z, c_P its density. Both on the leading k public
    directions (default: all). The cosine <X, Y> / (||X|| ||Y||) is near 1 when
    the private graph links, in the public feature space, what the features
    already link, and small when it links along other directions. Public data and
    a post-processing of the release only. nan when either matrix is zero.
    """
    n = len(z)
    k = z.shape[1] if k is None else int(k)
    if k < 1 or len(prior_pairs) == 0:
        return math.nan
    zk = z[:, :k].astype(np.float64)
    g = zk.T @ zk
    s = zk.sum(0)
    cp = 2 * len(prior_pairs) / (n * (n - 1))
    prior = zk.T @ (_csr(prior_pairs, n) @ zk) - cp * (np.outer(s, s) - g)
    mine = np.asarray(moments, dtype=np.float64)[:k, :k]
    norm = float(np.linalg.norm(prior) * np.linalg.norm(mine))
    return float((prior * mine).sum() / norm) if norm > 0 else math.nan


def training_choices(synth: SyntheticGraph, *, targets: str = "auto", pair_balance: str = "auto",
                     prior: str = "auto", prior_pairs: np.ndarray | None = None) -> dict:
    """How the distill step uses the synthetic graph, decided from the release and public data only.

    Reads nothing but ``synth`` (a post-processing of the Release: the density c
    from the noisy edge count, and the fit W that ``fit_semantic`` made from the
    noisy moments), public Z and the public prior pairs, so every choice here is
    post-processing and spends no budget. Explicit values ("true"/"false",
    "soft"/"calibrated") override. Our rules:

    * use_private: False when the bilinear moments were released and the rank
      rule kept no eigen-direction of them (rank 0). The distill step then trains
      on the public prior alone, exactly as the public-only model does: a release
      that is all noise cannot pull the codes towards noise.
    * public_prior: train on the public prior graph (public-feature kNN, the pairs
      ``prior_pairs``) beside the synthetic graph when the private graph agrees
      with it: ``prior_agreement`` of the fitted moments G_k W G_k with the prior's
      is at least PRIOR_AGREEMENT = 0.6. Then the prior adds local structure that
      the low-rank fit cannot carry, in the directions the private graph itself
      favours. Where they disagree, the prior's positives contradict or dilute
      what the private graph teaches. Measured (32 bits, seed 0): the agreement
      is 0.81-0.89 on the synthetic label and interaction graphs and 0.27-0.42 on
      the MIRFlickr-25K label, kNN and interaction graphs, at every epsilon from
      0.1 to inf. With the prior, the synthetic graphs gain (interaction graph,
      epsilon 1, I->T: 0.631 with it, 0.582 without) and the MIRFlickr graphs lose
      (kNN graph, epsilon 1: 0.611 with it, 0.623 without; interaction graph
      0.616 against 0.636; label graph 0.685 against 0.707). Always when the
      private signal is not used. ``prior="never"`` switches it off.
    * pair_balance: on when the released density is below SPARSE_DENSITY (there,
      positives are rare and the plain likelihood learns little) or when the
      private signal is not used (the public kNN prior is sparse).
    * targets: "calibrated" (0/1 at the released density) for a dense graph
      trained on alone, "soft" (the fitted edge probabilities) otherwise: beside
      the prior, the prior gives hard local positives and the private graph
      graded evidence on every pair; on a sparse graph the calibrated threshold
      keeps only the extreme tail of the fitted scores, which piles the positives
      onto a few hub-like items. Measured, seed 0, 32 bits: synthetic label graph
      (with the prior), epsilon 0.1 / 1, I->T soft 0.655 / 0.657 against
      calibrated 0.638 / 0.649; MIRFlickr kNN graph, epsilon 1, 0.611 against
      0.595; MIRFlickr label graph (alone, dense), epsilon 0.1 / 1, soft
      0.660 / 0.694 against calibrated 0.702 / 0.706.
    """
    if targets not in ("auto", "soft", "calibrated"):
        raise ValueError(f"targets={targets!r}: choose auto, soft or calibrated")
    if pair_balance not in ("auto", "true", "false"):
        raise ValueError(f"pair_balance={pair_balance!r}: choose auto, true or false")
    if prior not in ("auto", "never"):
        raise ValueError(f"prior={prior!r}: choose auto or never")
    rank = synth.report.get("rank")
    released_bilinear = "rank_search" in synth.report or synth.report.get("rank_chosen_by") == "explicit override"
    use_private = not (released_bilinear and rank == 0)
    sparse = synth.c < SPARSE_DENSITY
    out = {"use_private": use_private,
           "use_private_because": (("rank set explicitly" if synth.report.get("rank_chosen_by") == "explicit override"
                                    else "eigen-directions of the noisy moments clear the noise edge")
                                   if use_private and rank else "no bilinear release: the motif layer is used"
                                   if use_private else "no eigen-direction of the noisy moments clears the noise "
                                   "edge (no pairwise signal above the noise): public prior only"),
           "released_density_below_sparse_threshold": bool(sparse)}
    agreement = math.nan
    k = synth.report.get("fit_block", rank) or 0
    if prior_pairs is not None and use_private and k > 0:
        g = synth.z[:, :k].astype(np.float64).T @ synth.z[:, :k].astype(np.float64)
        agreement = prior_agreement(synth.z, g @ synth.w[:k, :k] @ g, prior_pairs, k=k)
    out["prior_agreement"] = None if math.isnan(agreement) else round(agreement, 4)
    agrees = bool(agreement >= PRIOR_AGREEMENT)
    out["public_prior"] = prior == "auto" and bool(agrees or not use_private)
    out["public_prior_because"] = ("switched off" if prior == "never" else
                                   "auto: no usable private signal" if not use_private else
                                   f"auto: the private graph agrees with the prior ({agreement:.2f} >= "
                                   f"{PRIOR_AGREEMENT:g})" if agrees else
                                   f"auto: the private graph departs from the prior (agreement {agreement:.2f} < "
                                   f"{PRIOR_AGREEMENT:g})")
    if pair_balance == "auto":
        out["pair_balance"] = bool(sparse or not use_private)
        out["pair_balance_because"] = "auto: released density" + (" below " if sparse else " at or above ") + \
            f"{SPARSE_DENSITY:g}" + ("" if use_private else ", and the public prior alone is sparse")
    else:
        out["pair_balance"] = pair_balance == "true"
        out["pair_balance_because"] = "explicit"
    if targets == "auto":
        alone_dense = not out["public_prior"] and not sparse
        out["targets"] = "calibrated" if alone_dense else "soft"
        out["targets_because"] = ("auto: calibrated 0/1 at the released density (a dense graph, trained on alone)"
                                  if alone_dense else "auto: soft edge probabilities (" +
                                  ("beside the public prior)" if out["public_prior"] else "a sparse graph)"))
    else:
        out["targets"], out["targets_because"] = targets, "explicit"
    return out


def choices_statement(choices: dict, *, rank: int | None, rank_chosen_by: str | None, proj_dim: int) -> str:
    """The statement's paragraph on what was decided after the release, and how (no budget spent)."""
    lines = ["Choices made after the release, from the noisy measurements and public data only (post-processing: "
             "no privacy budget is spent on them):",
             f"  - semantic fit rank {rank} of {proj_dim} public directions ({rank_chosen_by});",
             f"  - private signal used: {'yes' if choices['use_private'] else 'no'} ({choices['use_private_because']});",
             f"  - public prior graph beside the synthetic graph: {'yes' if choices['public_prior'] else 'no'} "
             f"({choices['public_prior_because']});",
             f"  - pair balance: {'on' if choices['pair_balance'] else 'off'} ({choices['pair_balance_because']});",
             f"  - targets: {choices['targets']} ({choices['targets_because']}).",
             "The defaults behind these rules were chosen by looking at results on benchmark graphs; a user who "
             "tunes such settings on results from their own private graph spends privacy that this statement "
             "does not count."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# The privacy statement
# ---------------------------------------------------------------------------


# What no statement's guarantee covers; every statement of a private run ends with these lines.
FLOAT_NOISE_CAVEAT = (
    "Floating-point caveat: continuous Gaussian noise is drawn in floating point (Box-Muller on 53-bit "
    "uniforms) and added in float64. Floating-point samplers can leak information through the low-order "
    "bits of their outputs (Mironov, \"On Significance of the Least Significant Bits for Differential "
    "Privacy\", CCS 2012; shown there for Laplace noise, and the same concern applies to Gaussian noise); "
    "this implementation does not defend against that, and the guarantee above is for ideal real-valued noise.")
NOT_COVERED = (
    "Not covered: running time and memory (stage timings depend weakly on the private graph and are outside "
    "the guarantee); and hyper-parameters (epsilon split, D, ranks, training settings) chosen by looking at "
    "results computed from this private graph spend privacy budget that this statement does not count.")


def not_private_reasons_of(release: Release) -> list[str]:
    """The reasons, readable from the release alone, why it carries no guarantee."""
    reasons = []
    if math.isinf(release.epsilon):
        reasons.append("epsilon = infinity: the statistics were released without noise")
    if not release.secure and not math.isinf(release.epsilon):
        reasons.append("--insecure-seed: the DP noise comes from a fixed seed, and noise from a known seed is "
                       "known noise")
    return reasons


def mark_not_private(statement: str, reasons) -> str:
    """Open ``statement`` with 'NOT PRIVATE: <reasons>.' and withdraw every claim in it.

    A claim 'This run satisfies (eps, delta)-differential privacy ...' becomes what the mechanism was
    calibrated for, followed by the fact that this run does not have it; no sentence says 'satisfies'.
    Reasons already named in an opening 'NOT PRIVATE:' line are not repeated."""
    reasons = [r for r in dict.fromkeys(reasons) if r]
    if not reasons:
        return statement
    lines = statement.splitlines()
    if lines and lines[0].startswith("NOT PRIVATE:"):
        first = lines.pop(0)[len("NOT PRIVATE:"):].strip().rstrip(".")
        reasons = list(dict.fromkeys([*[p.strip() for p in first.split("; ") if p.strip()], *reasons]))
    body = "\n".join(lines) + ("\n" if statement.endswith("\n") else "")
    body = re.sub(r"This run satisfies (\([^)]*\)-differential privacy[^.(]*)",
                  r"The mechanism is calibrated for \1, but this run does NOT have that guarantee (see the "
                  r"first line)", body)
    body = body.replace("satisfies", "would satisfy")
    return "NOT PRIVATE: " + "; ".join(reasons) + ".\n" + body


def privacy_statement(release: Release, *, dataset: str, graph_kind: str, method: str,
                      not_private: tuple[str, ...] | list[str] = ()) -> str:
    """Plain-language statement of what is protected, printed and saved each run.

    ``not_private``: further reasons (from the run's settings) why this run carries no guarantee; with
    any reason, from the caller or from the release itself (epsilon = inf, a fixed seed), the statement
    opens with 'NOT PRIVATE:' and claims nothing."""
    reasons = [*not_private_reasons_of(release), *not_private]
    inf = math.isinf(release.epsilon)
    lines = []
    if not reasons:
        lines.append(f"This run satisfies ({release.epsilon:g}, {release.delta:g})-differential privacy "
                     "at the edge level.")
    elif not inf:
        lines.append(f"Calibrated for ({release.epsilon:g}, {release.delta:g})-differential privacy at the edge "
                     "level; this run does NOT have that guarantee (see the first line).")
    else:
        lines.append("This run is a non-private reference; the sections below say what a run at a finite "
                     "epsilon would protect.")
    protected = ("the presence or absence of any single edge of the training graph. Training labels are "
                 "read only to build that graph, so they are protected edge by edge; changing one item's labels "
                 "can change many edges at once, and that (node-level privacy) is NOT covered by this guarantee.")
    lines += [
        f"Dataset: {dataset}. Method: {method}. Private graph: '{graph_kind}' over {release.n_nodes} training items.",
        "Neighbouring relation: two private graphs on the same training items that differ in exactly one edge "
        "(one pair of items linked or not).",
        ("Protected: " + protected) if not reasons else
        ("Would be protected by a run at a finite epsilon with secure noise (NOTHING is protected in this run): "
         + protected.replace("this guarantee", "that guarantee")),
        "Public (not protected): item features (image and text), item identities, the train/query/database "
        "split, and everything computed from those alone (projections, clip order, candidate pairs).",
    ]
    if inf:
        lines.append("Released: the EXACT measurements below (no noise); the synthetic graph, hashing networks and "
                     "codes are computed from them and carry NO privacy guarantee.")
    elif reasons:
        lines.append("Released: the measurements below; the synthetic graph, hashing networks and codes are "
                     "post-processing of them and carry NO privacy guarantee in this run.")
    else:
        lines.append("Released: the noisy measurements below; the synthetic graph, hashing networks and codes are "
                     "post-processing of them and carry the same guarantee.")
    if release.max_degree is not None:
        lines.append(f"Degree clipping: D = {release.max_degree}, stable mutual top-D under a public order "
                     f"({release.clipped_edges_public_order}).")
    else:
        lines.append("Degree clipping: none (motif statistics use the worst-case unclipped sensitivity).")
    if release.noise == "discrete":
        discrete = [m.name for m in release.measurements.values() if m.name != "bilinear"]
        continuous = [m.name for m in release.measurements.values() if m.name == "bilinear"]
        noise = (f"exact discrete Gaussian on the integer statistics ({', '.join(discrete) or 'none released'})"
                 + (f"; the real-valued {', '.join(continuous)} release stays CONTINUOUS (floating-point "
                    "Gaussian, see the caveat below)" if continuous else ""))
    else:
        noise = "continuous Gaussian (floating point, see the caveat below)"
    if inf:
        lines.append("Noise: none (sigma = 0).")
    else:
        lines.append(f"Noise: {noise}, from " + ("the operating system's secure random source." if release.secure
                                                 else "a FIXED SEED (--insecure-seed): NOT SECURE."))
    lines.append("Measurements (sensitivity is the change from one edge; budget share is of mu^2):")
    for m in release.measurements.values():
        where = "clipped graph" if m.clipped else "unclipped graph"
        lines.append(f"  - {m.name:<9} ({where}, {m.noisy.size} values): {m.norm} sensitivity {m.sensitivity:.6g}, "
                     f"sigma {m.sigma:.6g}, budget share {m.share:.3f}")
    if not inf and release.noise == "discrete":
        lines.append(f"Accounting: each measurement is Delta^2/(2 sigma^2)-zCDP (Canonne, Kamath & Steinke, "
                     f"arXiv 2004.00010, Thm. 14; Bun & Steinke, arXiv 1605.02065, Prop. 1.6); the sum "
                     f"rho = {release.mu ** 2 / 2:.6f} is converted to (epsilon, delta) by CKS Cor. 13.")
    elif not inf:
        lines.append(f"Accounting: composition of Gaussian mechanisms as mu-GDP with mu = {release.mu:.6f} "
                     "(Dong, Roth & Su, arXiv 1905.02383, Cor. 3.3), converted exactly to (epsilon, delta) by "
                     "Cor. 2.13 (Balle & Wang, arXiv 1805.06530, Thm. 8).")
    if not inf:
        lines.append(FLOAT_NOISE_CAVEAT)
    lines.append(NOT_COVERED)
    return mark_not_private("\n".join(lines) + "\n", reasons)


# ===========================================================================
# Exact discrete Gaussian (integer statistics) and zCDP accounting
#   Canonne, Kamath, Steinke, arXiv 2004.00010: Algorithms 1-3, Theorems 4 and
#   14, Proposition 12 / Corollary 13. Bun & Steinke, arXiv 1605.02065.
# Poisson-subsampled Gaussian RDP accountant (DP-SGD baseline)
#   Mironov, Talwar, Zhang, arXiv 1908.10530, Section 3.3; Mironov, arXiv
#   1702.07476, Prop. 3; Balle et al., arXiv 1905.09982, Theorem 21.
# Exactness: the sampler uses only integer arithmetic and randbelow(n); the
# accounting searches return values on the conservative side of the target.
# ===========================================================================

class InsecureRandomnessWarning(UserWarning):
    """Noise was drawn from a non-cryptographic (e.g. seeded) generator."""


# ---------------------------------------------------------------------------
# Part A: exact discrete Gaussian sampler ([CKS20] Section 5)
# ---------------------------------------------------------------------------


def _uniform_source(rng):
    """Return a callable ``rb(n)`` that is uniform on {0, ..., n-1}.

    Accepted: ``None`` (the operating system's CSPRNG via ``secrets``), any
    object with a callable ``randbelow`` (the ``secrets`` module itself, a
    custom exact source), or a ``random.Random`` instance (``randrange(n)`` is
    exactly uniform on {0, ..., n-1}; ``random.SystemRandom`` is a CSPRNG). A
    non-cryptographic ``random.Random`` (seeded Mersenne Twister) is accepted
    for reproducible tests only and triggers ``InsecureRandomnessWarning``.
    """
    if rng is None:
        return secrets.randbelow
    rb = getattr(rng, "randbelow", None)
    if callable(rb):
        return rb
    if isinstance(rng, random.Random):
        if not isinstance(rng, random.SystemRandom):
            warnings.warn(
                "discrete Gaussian noise drawn from a non-cryptographic "
                f"generator ({type(rng).__name__}); the noise is reproducible "
                "and the release is NOT private. Use rng=None for real runs.",
                InsecureRandomnessWarning,
                stacklevel=3,
            )
        return rng.randrange
    raise TypeError(
        "rng must be None, an object with randbelow(n), or a random.Random "
        f"instance; got {type(rng).__name__} (a numpy Generator is not exact "
        "over unbounded integers and is refused)"
    )


def _exact_sigma2(sigma):
    """sigma**2 as an exact Fraction; refuses anything non-finite or <= 0."""
    if isinstance(sigma, bool) or not isinstance(sigma, (numbers.Rational, float, np.floating)):
        raise TypeError(f"sigma must be an int, float or Fraction; got {type(sigma).__name__}")
    if isinstance(sigma, (float, np.floating)) and not math.isfinite(float(sigma)):
        raise ValueError(f"sigma must be finite; got sigma={sigma!r}")
    s = Fraction(sigma) if not isinstance(sigma, np.floating) else Fraction(float(sigma))
    if s <= 0:
        raise ValueError(f"sigma must be > 0; got sigma={sigma!r}")
    return s * s


def _bernoulli_exp_unit(rb, n, d):
    """Exact Bernoulli(exp(-n/d)) for 0 <= n <= d ([CKS20] Algorithm 1, gamma in [0, 1]).

    K <- 1; repeat: draw A ~ Bernoulli(gamma / K) (as randbelow(d K) < n); stop
    at the first A = 0, otherwise K <- K + 1. Return 1 iff K is odd. Since
    P[K > k] = gamma^k / k!, P[K odd] = sum_k (-gamma)^k / k! = exp(-gamma).
    """
    k = 1
    while rb(d * k) < n:
        k += 1
    return k & 1


def _bernoulli_exp(rb, n, d):
    """Exact Bernoulli(exp(-n/d)) for n >= 0, d >= 1 ([CKS20] Algorithm 1).

    For gamma = n/d > 1: floor(gamma) independent Bernoulli(exp(-1)) trials
    must all succeed, then one Bernoulli(exp(-(gamma - floor(gamma)))); the
    product of the success probabilities is exp(-gamma). (An integer gamma is
    written as (gamma - 1) unit trials plus one trial with exponent 1.)
    """
    while n > d:
        if not _bernoulli_exp_unit(rb, 1, 1):
            return 0
        n -= d
    return _bernoulli_exp_unit(rb, n, d)


def bernoulli_exp(*, gamma, rng=None):
    """One exact draw of Bernoulli(exp(-gamma)), gamma >= 0 rational ([CKS20] Algorithm 1).

    Public for testing. ``gamma`` is converted exactly with ``Fraction``.
    """
    if isinstance(gamma, bool):
        raise TypeError("gamma must be a number, not bool")
    if isinstance(gamma, float) and not math.isfinite(gamma):
        raise ValueError(f"gamma must be finite; got gamma={gamma!r}")
    g = Fraction(gamma)
    if g < 0:
        raise ValueError(f"gamma must be >= 0; got gamma={gamma!r}")
    return _bernoulli_exp(_uniform_source(rng), g.numerator, g.denominator)


def _discrete_laplace(rb, t):
    """Exact discrete Laplace with scale t (integer >= 1) ([CKS20] Algorithm 2, s = 1).

    Target P[Y = y] = (1 - e^{-1/t}) / (1 + e^{-1/t}) * exp(-|y| / t).
    Loop: U uniform on {0..t-1}, accept with probability exp(-U/t); V counts
    successes of Bernoulli(exp(-1)) before the first failure (so
    P[V = v] = (1 - e^{-1}) e^{-v}); X = U + t V has P[X = x] ∝ exp(-x/t) on
    x >= 0. B ~ Bernoulli(1/2) is the sign; (B = 1, X = 0) is rejected so that
    0 is not counted twice. Return (1 - 2B) X.
    """
    while True:
        u = rb(t)
        if not _bernoulli_exp_unit(rb, u, t):
            continue
        v = 0
        while _bernoulli_exp_unit(rb, 1, 1):
            v += 1
        x = u + t * v
        if rb(2):
            if x == 0:
                continue
            return -x
        return x


def sample_discrete_laplace(size, *, scale, rng=None):
    """Exact discrete Laplace samples, P[Y=y] ∝ exp(-|y|/scale), integer scale >= 1.

    [CKS20] arXiv:2004.00010, Algorithm 2 (with s = 1, t = scale). Returns int64.
    """
    if isinstance(scale, bool) or not isinstance(scale, numbers.Integral) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1; got scale={scale!r}")
    rb = _uniform_source(rng)
    shape, count = _shape_and_count(size)
    out = [_discrete_laplace(rb, int(scale)) for _ in range(count)]
    return np.array(out, dtype=np.int64).reshape(shape)


def _shape_and_count(size):
    if isinstance(size, bool):
        raise TypeError("size must be an int or a tuple of ints, not bool")
    if isinstance(size, numbers.Integral):
        shape = (int(size),)
    else:
        shape = tuple(int(s) for s in size)
    if any(s < 0 for s in shape):
        raise ValueError(f"size must be non-negative; got size={size!r}")
    return shape, math.prod(shape)


def sample_discrete_gaussian(size, *, sigma, rng=None):
    """Exact samples of the discrete Gaussian N_Z(0, sigma^2), as int64.

    P[X = x] = exp(-x^2 / (2 sigma^2)) / sum_{y in Z} exp(-y^2 / (2 sigma^2)),  x in Z.

    [CKS20] arXiv:2004.00010, Algorithm 3 (Section 5): with t = floor(sigma) + 1,
    repeat
        Y ~ Lap_Z(t)                            (Algorithm 2, exact)
        C ~ Bernoulli(exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2)))   (Algorithm 1, exact)
    until C = 1, and return Y. Acceptance multiplies exp(-|y|/t) by
    exp(-(|y| - sigma^2/t)^2 / (2 sigma^2)) = exp(-y^2/(2 sigma^2)) * const, so the
    output law is exactly N_Z(0, sigma^2) for any integer t >= 1; t = floor(sigma)+1
    is the paper's choice (expected O(1) loop iterations).

    Exactness: sigma^2 is the exact rational ``Fraction(sigma)**2`` (a float sigma
    is taken at its exact binary value), gamma = (|Y| q t - p)^2 / (2 p q t^2) for
    sigma^2 = p/q is an exact ratio of integers, and every Bernoulli(n/d) is
    ``randbelow(d) < n``. floor(sigma) = isqrt(floor(sigma^2)) exactly.

    Args:
        size: int or tuple of ints, the output shape.
        sigma: scale (> 0, finite); int, float or Fraction.
        rng: None (default; the OS CSPRNG through ``secrets``), an object with
            ``randbelow(n)``, or a ``random.Random`` (a seeded, non-cryptographic
            one warns: reproducible noise is not private).

    Add the result to an integer-valued statistic; account for it with
    ``discrete_gaussian_rho``.
    """
    sigma2 = _exact_sigma2(sigma)
    rb = _uniform_source(rng)
    shape, count = _shape_and_count(size)
    p, q = sigma2.numerator, sigma2.denominator
    t = math.isqrt(p // q) + 1
    qt = q * t
    den = 2 * p * q * t * t
    out = []
    append = out.append
    for _ in range(count):
        while True:
            y = _discrete_laplace(rb, t)
            a = qt * (y if y >= 0 else -y) - p
            if _bernoulli_exp(rb, a * a, den):
                append(y)
                break
    # np.array raises OverflowError for an out-of-range value rather than wrapping.
    return np.array(out, dtype=np.int64).reshape(shape)


def discrete_gaussian_pmf(k, *, sigma):
    """Float pmf of N_Z(0, sigma^2) at integers ``k`` (for tests and reports only)."""
    s = float(sigma)
    if not (math.isfinite(s) and s > 0):
        raise ValueError(f"sigma must be finite and > 0; got sigma={sigma!r}")
    half = int(math.ceil(40 * s)) + 10
    grid = np.arange(-half, half + 1)
    log_norm = special.logsumexp(-(grid.astype(float) ** 2) / (2 * s * s))
    k = np.asarray(k, dtype=float)
    return np.exp(-(k**2) / (2 * s * s) - log_norm)


def discrete_gaussian_variance(*, sigma):
    """Exact variance of N_Z(0, sigma^2) by summing the pmf (below sigma^2 for small sigma).

    Var = sum_k k^2 exp(-k^2/(2 sigma^2)) / sum_k exp(-k^2/(2 sigma^2)); the
    truncation at |k| <= 40 sigma + 10 leaves a tail below exp(-800).
    """
    s = float(sigma)
    half = int(math.ceil(40 * s)) + 10
    k = np.arange(-half, half + 1)
    pmf = discrete_gaussian_pmf(k, sigma=s)
    return float(np.sum(pmf * k.astype(float) ** 2) / np.sum(pmf))


# ---------------------------------------------------------------------------
# Part A: zCDP accounting
# ---------------------------------------------------------------------------


def _sampling_rate(q) -> float:
    """A Poisson sampling rate: a real number in [0, 1] (bool refused)."""
    if isinstance(q, bool):
        raise TypeError("q must be a number, not bool")
    q = float(q)
    if not (0.0 <= q <= 1.0):
        raise ValueError(f"q must be in [0, 1]; got q={q!r}")
    return q


def _positive_finite(name, value):
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, not bool")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be finite and > 0; got {name}={value!r}")
    return v


def _nonnegative_finite(name, value):
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, not bool")
    v = float(value)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be finite and >= 0; got {name}={value!r}")
    return v


def _probability(name, value):
    v = float(value)
    if not (0.0 < v < 1.0):
        raise ValueError(f"{name} must be in (0, 1); got {name}={value!r}")
    return v


def gaussian_rho(*, sigma, sensitivity):
    """zCDP rho of the continuous Gaussian mechanism.

    [BS16] arXiv:1605.02065, Proposition 1.6: adding N(0, sigma^2 I) to a query
    with L2 sensitivity Delta is rho-zCDP with

        rho = Delta^2 / (2 sigma^2).

    zCDP composes additively ([BS16] Lemma 2.3 / Proposition 1.4): the total is
    sum_i rho_i.
    """
    sigma = _positive_finite("sigma", sigma)
    sensitivity = _nonnegative_finite("sensitivity", sensitivity)
    return sensitivity**2 / (2.0 * sigma**2)


def discrete_gaussian_rho(*, sigma, l2_sensitivity, l1_sensitivity, dim):
    """zCDP rho of adding i.i.d. N_Z(0, sigma^2) noise to an integer vector statistic.

    [CKS20] arXiv:2004.00010, Theorem 14 (multivariate; Theorem 4 for d = 1): if
    q: X^n -> Z^d satisfies sum_j (q_j(x) - q_j(x'))^2 / sigma_j^2 <= eps^2 for
    all neighbours, then M(x) = q(x) + Y, Y_j ~ N_Z(0, sigma_j^2) independent, is
    (1/2) eps^2-concentrated DP. The proof: for integer shifts mu,
    D_alpha(N_Z(0, s^2) || N_Z(mu, s^2)) <= alpha mu^2 / (2 s^2), exactly the
    continuous value, and Renyi divergences add over independent coordinates.
    With one sigma:

        rho = min(Delta_2, Delta_1)^2 / (2 sigma^2).

    The statistic must be integer-valued: the divergence bound holds for
    integer shifts only (a non-integer shift can exceed it).

    Delta_1 enters only because ||v||_2 <= ||v||_1, so min(Delta_2, Delta_1) is
    also an L2 bound; for a consistent pair Delta_2 <= Delta_1 and rho is
    Delta_2^2 / (2 sigma^2).

    On the tau term: the bound
        eps = min( sqrt(Delta_2^2/(n sigma^2) + 2 tau d), ... ),
        tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k/(k+1)),
    is for the SUM OF n independent discrete Gaussians (distributed noise) and
    comes from Kairouz, Liu, Steinke, "The Distributed Discrete Gaussian
    Mechanism", arXiv:2102.06387 (Proposition 14 / Theorem 15 there), not from
    [CKS20]. With one noise draw per coordinate (n = 1) the sum is empty,
    tau = 0, and it reduces to the formula above. The distributed case is not
    implemented here (its exact statement was not verified); do not use this
    function for noise that is a sum of several discrete Gaussians.

    Args (keyword-only): sigma > 0 (the same for every coordinate);
    l2_sensitivity, l1_sensitivity >= 0, upper bounds over all neighbouring
    pairs; dim >= 1, the number of noised integer coordinates. With one draw
    per coordinate dim does not change rho (it would enter through tau d in
    the distributed bound); it is validated and kept for the privacy statement.
    """
    sigma = _positive_finite("sigma", sigma)
    d2 = _nonnegative_finite("l2_sensitivity", l2_sensitivity)
    d1 = _nonnegative_finite("l1_sensitivity", l1_sensitivity)
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1; got dim={dim!r}")
    delta = min(d2, d1)
    return delta**2 / (2.0 * sigma**2)


def _log_delta_at(rho, epsilon, alpha):
    """log of (exp((a-1)(a rho - eps)) / (a-1)) (1 - 1/a)^a at one order a > 1."""
    return (alpha - 1.0) * (alpha * rho - epsilon) + alpha * math.log1p(-1.0 / alpha) - math.log(alpha - 1.0)


def zcdp_to_delta(rho, *, epsilon):
    """Smallest delta certified for (epsilon, delta)-DP by rho-zCDP ([CKS20] conversion).

    [CKS20] arXiv:2004.00010, Corollary 13 (zCDP form of Proposition 12; the
    arXiv v3 cdp2adp reference code cites page 13): rho-zCDP implies
    (epsilon, delta)-DP for

        delta = inf_{alpha > 1} exp((alpha - 1)(alpha rho - epsilon)) / (alpha - 1)
                                 * (1 - 1/alpha)^alpha.

    In log space f(alpha) = (a-1)(a rho - eps) + a log(1 - 1/a) - log(a - 1) has
    f'(alpha) = (2a - 1) rho - eps + log(1 - 1/a), strictly increasing from
    -inf (a -> 1) to +inf, so the infimum is at the unique root, found with
    brentq. Every alpha gives a valid bound, so numerical error in the root
    only makes delta larger, never invalid. Returns min(delta, 1).
    """
    rho = _nonnegative_finite("rho", rho)
    epsilon = _nonnegative_finite("epsilon", epsilon)
    if rho == 0.0:
        return 0.0

    def dfdalpha(a):
        return (2.0 * a - 1.0) * rho - epsilon + math.log1p(-1.0 / a)

    lo = 1.0 + 1e-12
    if dfdalpha(lo) >= 0:
        alpha = lo
    else:
        hi = max(2.0, (epsilon + 1.0) / (2.0 * rho) + 2.0)
        while dfdalpha(hi) <= 0:
            hi *= 2.0
        alpha = optimize.brentq(dfdalpha, lo, hi, xtol=1e-14, rtol=1e-15, maxiter=500)
    log_delta = _log_delta_at(rho, epsilon, alpha)
    return min(1.0, math.exp(log_delta)) if log_delta < 0 else 1.0


def zcdp_to_epsilon(rho, *, delta):
    """Smallest epsilon with (epsilon, delta)-DP certified by rho-zCDP ([CKS20] conversion).

    Inverts ``zcdp_to_delta`` (arXiv:2004.00010, Corollary 13):

        epsilon(rho, delta) = min{ eps >= 0 :
            inf_{a > 1} exp((a-1)(a rho - eps)) / (a-1) * (1 - 1/a)^a <= delta }.

    Never larger than the classic [BS16] arXiv:1605.02065 Proposition 1.3 value
    rho + 2 sqrt(rho log(1/delta)), which brackets the search. The returned
    epsilon is checked to satisfy zcdp_to_delta(rho, epsilon) <= delta (the
    search steps up until it does), so it is conservative.
    """
    rho = _nonnegative_finite("rho", rho)
    delta = _probability("delta", delta)
    if rho == 0.0:
        return 0.0
    if zcdp_to_delta(rho, epsilon=0.0) <= delta:
        return 0.0
    hi = rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))
    log_target = math.log(delta)

    def gap(eps):
        return math.log(max(zcdp_to_delta(rho, epsilon=eps), 1e-300)) - log_target

    if gap(hi) > 0:  # cannot happen mathematically; refuse rather than return a wrong value
        raise RuntimeError(f"CKS conversion exceeded the BS16 bound at rho={rho!r}, delta={delta!r}")
    eps = optimize.brentq(gap, 0.0, hi, xtol=1e-13, rtol=1e-14, maxiter=500)
    step = max(abs(eps), 1e-12) * 1e-13
    while zcdp_to_delta(rho, epsilon=eps) > delta:
        eps += step
        step *= 2.0
    return eps


def zcdp_to_epsilon_bs16(rho, *, delta):
    """Classic conversion, [BS16] arXiv:1605.02065 Proposition 1.3:

        rho-zCDP => (rho + 2 sqrt(rho log(1/delta)), delta)-DP.

    Looser than ``zcdp_to_epsilon``; kept for comparison and reports.
    """
    rho = _nonnegative_finite("rho", rho)
    delta = _probability("delta", delta)
    return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))


# ---------------------------------------------------------------------------
# Part B: RDP of the Poisson-subsampled Gaussian (DP-SGD baseline)
# ---------------------------------------------------------------------------

DEFAULT_ORDERS = tuple([1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5] + [float(a) for a in range(5, 64)] + [128.0, 256.0, 512.0])


def _log_a_integer(q, sigma, alpha):
    """log A_alpha for integer alpha >= 2, 0 < q < 1 ([MTZ19] Section 3.3, Case I).

    A_alpha = sum_{k=0}^{alpha} C(alpha, k) (1 - q)^(alpha - k) q^k exp((k^2 - k) / (2 sigma^2)),
    summed in log space (logsumexp) with exact integer binomials.
    """
    k = np.arange(alpha + 1, dtype=float)
    log_binom = np.array([math.log(math.comb(alpha, int(j))) for j in range(alpha + 1)])
    terms = log_binom + k * math.log(q) + (alpha - k) * math.log1p(-q) + (k * k - k) / (2.0 * sigma * sigma)
    return float(special.logsumexp(terms))


def _log_erfc(x):
    """log(erfc(x)), accurate in both tails: erfc(x) = 2 Phi(-sqrt(2) x)."""
    return math.log(2.0) + special.log_ndtr(-x * math.sqrt(2.0))


def _log_a_fractional(q, sigma, alpha, max_terms=10_000_000):
    """log A_alpha for fractional alpha > 1, 0 < q < 1 ([MTZ19] Section 3.3, Case II).

    With z0 = sigma^2 log(1/q - 1) + 1/2 (where (1-q) = q exp((2z-1)/(2 sigma^2))),
    A_alpha = A_1 + A_2,
      A_1 = sum_{i>=0} C(alpha, i) q^i (1-q)^(alpha-i) exp((i^2 - i)/(2 sigma^2))
                       * (1/2) erfc((i - z0) / (sqrt(2) sigma)),
      A_2 = sum_{i>=0} C(alpha, i) q^(alpha-i) (1-q)^i exp(((alpha-i)^2 - (alpha-i))/(2 sigma^2))
                       * (1/2) erfc((z0 - (alpha - i)) / (sqrt(2) sigma)),
    where C(alpha, i) = alpha (alpha-1) ... (alpha-i+1) / i! is the generalised
    binomial (its sign alternates once i > alpha). Derivation: split
    E_{z~N(0,s^2)}[((1-q) + q exp((2z-1)/(2s^2)))^alpha] at z0 and expand each
    side in its convergent binomial series.

    Terms are evaluated in blocks with numpy as (sign, log|term|); positive and
    negative parts are summed separately with logsumexp. For large i the terms
    decay only polynomially (like |C(alpha, i)| / i ~ i^(-alpha-2)), so the sum
    stops once a whole block (past i > alpha) lies below e^-40 of the largest
    term, and a conservative tail allowance (largest term of the last block
    times the index reached) is added to the positive part.
    """
    z0 = sigma * sigma * math.log(1.0 / q - 1.0) + 0.5
    log_q, log_1mq = math.log(q), math.log1p(-q)
    inv2s2 = 1.0 / (2.0 * sigma * sigma)
    root2s = math.sqrt(2.0) * sigma
    log_half = math.log(0.5)

    pos, neg = [], []
    log_abs_c, sign = 0.0, 1.0  # C(alpha, 0) = 1, carried across blocks
    start, block = 0, 1024
    peak = -math.inf
    while True:
        i = np.arange(start, start + block, dtype=float)
        factor = (alpha - i) / (i + 1.0)  # C(alpha, i+1) = C(alpha, i) * factor_i
        # log|C(alpha, i)| and sign for this block, from the running values.
        steps_log = np.concatenate(([0.0], np.cumsum(np.log(np.abs(factor[:-1])))))
        steps_sign = np.concatenate(([1.0], np.cumprod(np.sign(factor[:-1]))))
        log_c = log_abs_c + steps_log
        sgn = sign * steps_sign
        j = alpha - i
        log_erfc1 = _log_erfc((i - z0) / root2s)
        log_erfc2 = _log_erfc((z0 - j) / root2s)
        t1 = log_c + i * log_q + j * log_1mq + (i * i - i) * inv2s2 + log_half + log_erfc1
        t2 = log_c + j * log_q + i * log_1mq + (j * j - j) * inv2s2 + log_half + log_erfc2
        for t in (t1, t2):
            pos.append(special.logsumexp(np.where(sgn > 0, t, -np.inf)))
            neg.append(special.logsumexp(np.where(sgn < 0, t, -np.inf)))
        block_max = float(max(t1.max(), t2.max()))
        peak = max(peak, block_max)
        # advance the running binomial to the first index of the next block
        log_abs_c = float(log_c[-1] + math.log(abs(factor[-1])))
        sign = float(sgn[-1] * np.sign(factor[-1]))
        start += block
        if start > alpha + 1 and block_max < peak - 40.0:
            pos.append(block_max + math.log(start))  # conservative tail allowance
            break
        if start > max_terms:
            raise RuntimeError(f"fractional-order series did not converge (q={q}, sigma={sigma}, alpha={alpha})")
        block = min(2 * block, 1 << 20)
    lp = float(special.logsumexp(pos))
    ln = float(special.logsumexp(neg))
    if ln == -math.inf:
        return lp
    if not ln < lp:
        raise RuntimeError(f"cancellation in the fractional-order series (q={q}, sigma={sigma}, alpha={alpha})")
    return lp + math.log1p(-math.exp(ln - lp))


def _check_orders(orders):
    arr = np.atleast_1d(np.asarray(orders, dtype=float))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"orders must be a non-empty 1-D sequence; got orders={orders!r}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 1.0):
        raise ValueError(f"every order must be finite and > 1; got orders={orders!r}")
    return arr


def rdp_subsampled_gaussian(*, q, noise_multiplier, orders):
    """Per-step RDP epsilon(alpha) of the Poisson-subsampled Gaussian mechanism (add/remove).

    Mechanism: each record joins the batch independently with probability q;
    the clipped sum (L2 sensitivity C) gets N(0, (noise_multiplier C)^2 I).
    With sigma = noise_multiplier, [MTZ19] arXiv:1908.10530 (Section 3) reduces
    the worst case to the pair mu_0 = N(0, sigma^2), mu = (1 - q) N(0, sigma^2)
    + q N(1, sigma^2), and shows the order mu || mu_0 is the larger one
    (A_alpha >= B_alpha, their notation), so

        epsilon(alpha) = log(A_alpha) / (alpha - 1),
        A_alpha = E_{z ~ mu_0}[(mu(z) / mu_0(z))^alpha].

    Integer alpha ([MTZ19] Section 3.3, Case I):
        A_alpha = sum_{k=0}^{alpha} C(alpha,k) (1-q)^(alpha-k) q^k exp((k^2 - k)/(2 sigma^2)).
    Fractional alpha ([MTZ19] Section 3.3, Case II): see ``_log_a_fractional``.
    q = 1 gives the plain Gaussian, epsilon(alpha) = alpha / (2 sigma^2)
    ([Mir17] arXiv:1702.07476, Proposition 7), returned exactly; q = 0 gives 0.

    This covers add/remove neighbours with Poisson sampling only. It is NOT a
    bound for the substitution relation (see ``dpsgd_sensitivity``).

    Returns a float array of per-step RDP values, one per order; compose over
    steps by multiplying ([Mir17] Proposition 1).
    """
    q = _sampling_rate(q)
    sigma = _positive_finite("noise_multiplier", noise_multiplier)
    arr = _check_orders(orders)
    out = np.empty(arr.shape, dtype=float)
    for idx, alpha in enumerate(arr):
        if q == 0.0:
            out[idx] = 0.0
        elif q == 1.0:
            out[idx] = alpha / (2.0 * sigma * sigma)
        elif float(alpha).is_integer():
            out[idx] = _log_a_integer(q, sigma, int(alpha)) / (alpha - 1.0)
        else:
            out[idx] = _log_a_fractional(q, sigma, float(alpha)) / (alpha - 1.0)
    # A_alpha >= 1 mathematically; clamp round-off below zero.
    return np.maximum(out, 0.0)


def _check_rdp_pair(orders, rdp, delta):
    arr = _check_orders(orders)
    r = np.atleast_1d(np.asarray(rdp, dtype=float))
    if r.shape != arr.shape:
        raise ValueError(f"orders and rdp must have the same length; got {arr.size} and {r.size}")
    if np.any(np.isnan(r)) or np.any(r < 0):
        raise ValueError(f"rdp values must be >= 0 and not NaN; got rdp={rdp!r}")
    delta = _probability("delta", delta)
    return arr, r, delta


def rdp_to_epsilon(orders, rdp, *, delta, return_order=False):
    """epsilon of (epsilon, delta)-DP from an RDP curve, improved conversion.

    Returns epsilon (a float), or (epsilon, best_order) with return_order=True.

    [BBGHS20] arXiv:1905.09982, Theorem 21 (= [CKS20] arXiv:2004.00010,
    Proposition 12 in v4): if M is (alpha, r)-RDP then M is (eps, delta)-DP with

        eps = r + log((alpha - 1) / alpha) - (log(delta) + log(alpha)) / (alpha - 1),

    minimised over the given orders, and clamped at 0 ((eps, delta)-DP with
    eps < 0 implies (0, delta)-DP). Always <= the classic [Mir17] Proposition 3
    value r + log(1/delta) / (alpha - 1) (see ``rdp_to_epsilon_classic``),
    because log((a-1)/a) - log(a)/(a-1) < 0 for every a > 1.
    """
    arr, r, delta = _check_rdp_pair(orders, rdp, delta)
    with np.errstate(over="ignore", invalid="ignore"):
        eps = r + np.log1p(-1.0 / arr) - (math.log(delta) + np.log(arr)) / (arr - 1.0)
    eps = np.where(np.isfinite(r), eps, np.inf)
    best = int(np.argmin(eps))
    value = max(0.0, float(eps[best]))
    return (value, float(arr[best])) if return_order else value


def rdp_to_epsilon_classic(orders, rdp, *, delta, return_order=False):
    """Classic RDP -> (epsilon, delta) conversion; epsilon, or (epsilon, best_order).

    [Mir17] arXiv:1702.07476, Proposition 3: (alpha, r)-RDP implies
    (r + log(1/delta) / (alpha - 1), delta)-DP, minimised over orders. This is
    what the 2018-2019 TF-Privacy ``get_privacy_spent`` used; kept to reproduce
    published numbers. Prefer ``rdp_to_epsilon``.
    """
    arr, r, delta = _check_rdp_pair(orders, rdp, delta)
    eps = r + math.log(1.0 / delta) / (arr - 1.0)
    best = int(np.argmin(eps))
    return (float(eps[best]), float(arr[best])) if return_order else float(eps[best])


def _check_steps(steps):
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0; got steps={steps!r}")
    return int(steps)


def dpsgd_epsilon(*, q, noise_multiplier, steps, delta, orders=DEFAULT_ORDERS):
    """epsilon of DP-SGD with Poisson sampling rate q after ``steps`` steps (add/remove).

    RDP composes additively over steps ([Mir17] Proposition 1):
    rdp_total(alpha) = steps * rdp_subsampled_gaussian(q, sigma, alpha), then
    ``rdp_to_epsilon`` ([BBGHS20] Theorem 21) over ``orders``.

    Neighbouring relation for the DMP-MH DP-SGD baseline (edge-level DP).
    Flipping one edge substitutes one pair's label S_ij in {0, 1}. Write the
    pairwise loss as a public, label-free part plus a private part linear in
    the label, -S_ij * g_ij with g_ij = grad theta_ij (the label-free gradient
    of the pair's logit term), and clip g_ij to norm C on its own. The private
    sum over sampled pairs, sum S_ij clip(g_ij), then changes by exactly one
    clipped term (norm <= C) when one edge is added or removed: an add/remove
    change with sensitivity C, so this add/remove accountant applies to the
    private sum with noise std = noise_multiplier * C. The public part reads
    no label, but it must not be computed on the secret Poisson sample S
    (that would reveal S and void the amplification by subsampling):
    ``hashing.train_dpsgd`` computes it on an independent uniform sample S'. This needs S_ij in {0, 1}; with
    +/-1 labels a flip changes the term by 2 clip(g_ij). If instead whole
    per-pair gradients (public and private parts together) are clipped, a flip
    is a substitution of one clipped vector by another and the sum's
    sensitivity is 2C (``dpsgd_sensitivity(relation='substitution')``); the
    subsampled accountant here is not a substitution analysis, so that route
    needs a different accountant.
    """
    steps = _check_steps(steps)
    delta = _probability("delta", delta)
    per_step = rdp_subsampled_gaussian(q=q, noise_multiplier=noise_multiplier, orders=orders)
    if steps == 0:
        return 0.0
    return rdp_to_epsilon(orders, steps * per_step, delta=delta)


def calibrate_noise_multiplier(*, q, steps, epsilon, delta, orders=DEFAULT_ORDERS, sigma_bounds=(0.05, 1000.0),
                               accountant="rdp"):
    """Smallest noise multiplier whose accounted epsilon is <= the target.

    accountant='rdp': ``dpsgd_epsilon``. epsilon(sigma) is non-increasing in sigma (each RDP value
    is, and the conversion is monotone in the RDP values), so brentq on f(log sigma) =
    epsilon(sigma) - target over ``sigma_bounds`` finds the crossing; the returned sigma is then
    nudged up until its epsilon is <= the target, so the answer is never on the unsafe side.
    Raises ValueError if the target is not reachable within ``sigma_bounds``.

    accountant='pld' (``pld_dpsgd_epsilon``) or 'best' (the smaller of the two, both upper
    bounds): the same search, started from the RDP answer (searching down to a fifth of it, or up
    when PLD alone is looser), to a relative tolerance of 1e-3, then nudged up by 0.1% steps until
    the accounted epsilon is <= the target. The search runs on a coarser PLD grid (h = 2.5e-4, also an
    upper bound); the returned sigma is checked on the fine grid (h = 1e-4).
    """
    if accountant not in ("rdp", "pld", "best"):
        raise ValueError(f"accountant={accountant!r}: choose rdp, pld or best")
    target = _positive_finite("epsilon", epsilon)
    delta = _probability("delta", delta)
    steps = _check_steps(steps)
    if steps == 0:
        raise ValueError("steps must be >= 1 to calibrate noise")
    q = float(q)
    if not (0.0 < q <= 1.0):
        raise ValueError(f"q must be in (0, 1]; got q={q!r}")
    lo, hi = (float(b) for b in sigma_bounds)

    def eps_of(sig):
        return dpsgd_epsilon(q=q, noise_multiplier=sig, steps=steps, delta=delta, orders=orders)

    # The accountants' own resolution bounds epsilon from below whatever the noise (RDP: the largest
    # order's log(1/delta) / (alpha - 1) term; PLD: the pessimistic grid's slack per step), so first
    # check that the target is above the chosen accountant's epsilon at the largest sigma allowed.
    floor = rdp_hi = eps_of(hi)
    if accountant != "rdp":
        pld_hi = pld_dpsgd_epsilon(q=q, noise_multiplier=hi, steps=steps, delta=delta)
        floor = pld_hi if accountant == "pld" else min(floor, pld_hi)
    if floor > target:
        raise ValueError(f"epsilon={epsilon!r} not reachable with noise_multiplier <= {hi}: even that is accounted "
                         f"at epsilon {floor:.3g} ({accountant}; q={q:.3g}, {steps} steps, delta={delta:g}); there the "
                         "accountant's resolution, not the noise, is the limit. Use a larger epsilon or delta, or "
                         "fewer steps")
    if rdp_hi > target:  # PLD can certify it, RDP cannot: the PLD search below runs over the whole range
        sigma = hi
    elif eps_of(lo) <= target:
        sigma = lo
    else:
        log_sigma = optimize.brentq(lambda ls: eps_of(math.exp(ls)) - target, math.log(lo), math.log(hi),
                                    xtol=1e-10, maxiter=200)
        sigma = math.exp(log_sigma)
        while eps_of(sigma) > target:
            sigma *= 1.0 + 1e-9
    if accountant == "rdp":
        return sigma

    def acc(sig, h=1e-4):
        e = pld_dpsgd_epsilon(q=q, noise_multiplier=sig, steps=steps, delta=delta, h=h)
        return min(e, eps_of(sig)) if accountant == "best" else e

    coarse = lambda sig: acc(sig, h=2.5e-4)  # noqa: E731  also an upper bound (pessimistic grid), faster

    top = sigma
    while acc(top) > target:  # only for 'pld' where it is looser than RDP
        top *= 1.5
        if top > hi:
            raise ValueError(f"epsilon={epsilon!r} not reachable with noise_multiplier <= {hi}")
    bottom = max(lo, top / 5.0) if sigma < hi else lo
    if acc(bottom) <= target:
        return bottom
    if coarse(bottom) <= target:
        log_sigma = math.log(bottom)
    else:  # search on the coarse grid (its epsilon >= the fine one's up to grid effects), check on the fine;
        # on the fine grid itself where the coarse one cannot reach the target at all (near the floor)
        f = coarse if coarse(top) <= target else acc
        log_sigma = optimize.brentq(lambda ls: f(math.exp(ls)) - target, math.log(bottom), math.log(top),
                                    xtol=1e-3, maxiter=60)
    sigma = min(top, math.exp(log_sigma) * 1.001)
    while acc(sigma) > target:
        sigma = min(top, sigma * 1.001)
    return sigma


def dpsgd_sensitivity(*, clip_norm, relation):
    """L2 sensitivity of the noised gradient sum of one DP-SGD step, per neighbouring relation.

    relation='add_remove_private_part': the edge-level relation with the loss
    split into a public label-free part and a private part linear in the label
    S_ij in {0, 1} (see ``dpsgd_epsilon``): one edge flip adds or removes one
    clipped term, so the sensitivity is C = clip_norm.

    relation='substitution': one per-pair clipped gradient is replaced by
    another; ||clip(g) - clip(g')|| <= ||clip(g)|| + ||clip(g')|| <= 2C, tight
    for opposite vectors, so the sensitivity is 2C. (The Poisson-subsampled
    accountant in this file is an add/remove analysis and does not cover this
    relation.)
    """
    c = _positive_finite("clip_norm", clip_norm)
    if relation == "add_remove_private_part":
        return c
    if relation == "substitution":
        return 2.0 * c
    raise ValueError(
        f"relation must be 'add_remove_private_part' or 'substitution'; got relation={relation!r}"
    )


# ---------------------------------------------------------------------------
# PLD accountant for Poisson-subsampled Gaussian steps (tighter than RDP)
# ---------------------------------------------------------------------------

def _pld_grid_pmf(q, sigma, *, direction, h, tail_z=8.0):
    """One step's privacy-loss distribution, discretised on the grid k h with PESSIMISTIC rounding.

    Dominating pairs of one Poisson-subsampled Gaussian step (sensitivity 1, noise sigma) under
    add/remove (Zhu, Dong & Wang, arXiv 2106.08567, their dominating pairs for Poisson subsampling; the
    same pair as [MTZ19] Section 3):
      'remove': P = (1-q) N(0, s^2) + q N(1, s^2), Q = N(0, s^2);
                L(x) = log(P(x)/Q(x)) = log(1 - q + q exp((2x - 1) / (2 s^2))), increasing in x;
      'add':    P = N(0, s^2), Q = (1-q) N(0, s^2) + q N(1, s^2);
                L(x) = -log(1 - q + q exp((2x - 1) / (2 s^2))), decreasing in x.
    Inverse (both): x(l) = s^2 log((e^{+-l} - (1 - q)) / q) + 1/2.
    The mass of P whose loss lies in ((k-1) h, k h] goes to k h (rounded UP); the x-tail beyond
    tail_z sigmas on the side of small losses goes to the smallest grid point used (also up), and on
    the side of large losses ('remove', x > 1 + tail_z s) to loss +infinity (returned separately as
    omega, counted in delta in full). Returns (k_min, pmf over k_min.., omega).

    Why rounding up is safe: with P' the rounded masses p_k and Q' given by q_k = p_k e^{-k h}
    (plus a leftover atom where P' has none; sum q_k <= 1 since e^{-kh} <= e^{-L(x)} in bin k),
    for every real eps
        delta_{P',Q'}(eps) = sum_k p_k (1 - e^{eps - k h})_+ >= E_P[(1 - e^{eps - L})_+] = delta_{P,Q}(eps),
    so (P', Q') dominates (P, Q), and dominating pairs compose under adaptive composition (Zhu, Dong
    & Wang, arXiv 2106.08567, their composition theorem for dominating pairs). The same pessimistic estimate: Meiser & Mohammadi, CCS 2018
    (ePrint 2017/1034); Koskela, Jalko, Prediger & Honkela, arXiv 2006.07134.
    """
    s = float(sigma)
    if direction == "remove":
        x_lo, x_hi = -tail_z * s, 1.0 + tail_z * s
        def loss(x):
            return np.logaddexp(math.log1p(-q) if q < 1 else -np.inf, math.log(q) + (2 * x - 1) / (2 * s * s))
        l_lo, l_hi = float(loss(x_lo)), float(loss(x_hi))
        omega = float((1 - q) * ndtr(-x_hi / s) + q * ndtr(-(x_hi - 1) / s))  # P-mass above x_hi -> +inf
    else:
        x_lo, x_hi = -tail_z * s, tail_z * s
        def loss(x):
            return -np.logaddexp(math.log1p(-q) if q < 1 else -np.inf, math.log(q) + (2 * x - 1) / (2 * s * s))
        l_lo, l_hi = float(loss(x_hi)), float(loss(x_lo))  # decreasing
        omega = 0.0
    k_min, k_max = int(math.floor(l_lo / h)), int(math.ceil(l_hi / h))
    grid = np.arange(k_min, k_max + 1) * h  # bin k is ((k-1) h, k h]
    sign = 1.0 if direction == "remove" else -1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        inner = np.exp(sign * grid) - (1.0 - q)
        xb = np.where(inner > 0, s * s * (np.log(inner) - math.log(q)) + 0.5, -np.inf)
    if direction == "remove":
        # P(x <= x(l)) for the mixture; bins beyond x_hi were sent to omega
        xb = np.minimum(xb, x_hi)
        cdf = (1 - q) * ndtr(xb / s) + q * ndtr((xb - 1) / s)
        cdf[-1] = 1.0 - omega
        pmf = np.diff(cdf, prepend=0.0)  # bin k_min takes the whole lower tail (rounded up)
    else:
        # L <= k h  <=>  x >= x(kh); P(L in ((k-1)h, kh]) = P(x(kh) <= x < x((k-1)h)), x ~ N(0, s^2)
        sf = ndtr(-xb / s)  # P(x > x(kh)); x(kh) = -inf (sf = 1) once kh >= -log(1 - q)
        sf[-1] = 1.0
        pmf = np.diff(sf, prepend=0.0)  # bin k_min also takes the far x-tail (losses below l_lo)
    pmf = np.clip(pmf, 0.0, None)
    return k_min, pmf, omega


def _pld_delta_curve(k_min, pmf, omega, steps, h):
    """T-fold composition by FFT: (losses, composed pmf, omega_T), omega_T = 1 - (1 - omega)^T."""
    n_out = steps * (len(pmf) - 1) + 1
    size = 1 << int(math.ceil(math.log2(max(n_out, 2))))
    comp = np.fft.irfft(np.fft.rfft(pmf, size) ** steps, size)[:n_out]
    comp = np.clip(comp, 0.0, None)
    losses = (steps * k_min + np.arange(n_out)) * h
    return losses, comp, -math.expm1(steps * math.log1p(-omega)) if omega < 1 else 1.0


def _pld_epsilon_from(losses, pmf, omega, delta):
    """Smallest eps >= 0 with delta(eps) = omega + sum_{l_k > eps} p_k (1 - e^{eps - l_k}) <= delta.

    delta(eps) = sup_S P(S) - e^eps Q(S) = E_P[(1 - e^{eps - L})_+] (the set S = {L > eps} is
    optimal); it is continuous and non-increasing in eps, and on [l_j, l_{j+1}) equals
    A_j - e^eps B_j with A_j = omega + sum_{k>j} p_k, B_j = sum_{k>j} p_k e^{-l_k}.
    """
    if omega >= delta:
        return math.inf
    pos = losses > 0
    d0 = omega + float(np.sum(pmf[pos] * -np.expm1(-losses[pos])))  # delta(0)
    if d0 <= delta:
        return 0.0
    i0 = int(np.argmax(pos))  # first grid loss > 0; eps in (0, l_i0) uses the suffix k >= i0
    lt, pt = losses[i0:], pmf[i0:]
    # entry j (j = -1 .. len - 1 over the tail): A = omega + sum_{k > j} p_k, B = sum_{k > j} p_k e^{-l_k}
    a = omega + np.concatenate([np.cumsum(pt[::-1])[::-1], [0.0]])
    b = np.concatenate([np.cumsum((pt * np.exp(-lt))[::-1])[::-1], [0.0]])
    left = np.concatenate([[0.0], lt])  # the interval [left_j, l_{j+1}) on which (A_j, B_j) hold
    with np.errstate(over="ignore", invalid="ignore"):
        d_left = a - np.exp(left) * b
    j = int(np.nonzero(d_left > delta)[0].max())  # delta(left_j) > target, and delta is non-increasing
    if b[j] <= 0:
        return float(left[j])
    return max(0.0, math.log((a[j] - delta) / b[j]))


def pld_dpsgd_epsilon(*, q, noise_multiplier, steps, delta, h=1e-4, max_bins=1 << 23):
    """epsilon of ``steps`` Poisson-subsampled Gaussian steps by the privacy-loss distribution (add/remove).

    Each step is dominated by the 'remove' pair and by the 'add' pair of ``_pld_grid_pmf``; the
    T-step mechanism by the T-fold products of each (adaptive composition of dominating pairs, Zhu,
    Dong & Wang, arXiv 2106.08567), whose PLD is the T-fold convolution of the one-step
    PLD (Sommer, Meiser & Mohammadi, PoPETs 2019), computed by FFT (Koskela, Jalko & Honkela, arXiv
    1906.03049). Neighbours in both directions are covered by the larger of the two deltas, so the
    returned epsilon is the larger of the two epsilons. Rounding each step's losses up to the grid
    k h (``_pld_grid_pmf``) keeps the result an upper bound; it overstates epsilon by at most about
    T h. h grows above the given value only to keep the composed grid within ``max_bins``.

    Check: q = 1 is the Gaussian mechanism composed T times, i.e. mu-GDP with mu = sqrt(T) / sigma,
    whose exact delta(eps) is ``gdp_delta`` (Dong, Roth & Su, arXiv 1905.02383, Corollary 2.13).
    """
    q = _sampling_rate(q)
    sigma = _positive_finite("noise_multiplier", noise_multiplier)
    steps = _check_steps(steps)
    delta = _probability("delta", delta)
    if steps == 0 or q == 0.0:
        return 0.0
    eps = 0.0
    for direction in ("remove", "add"):
        hh = float(h)
        while True:
            k_min, pmf, omega = _pld_grid_pmf(q, sigma, direction=direction, h=hh)
            if steps * len(pmf) <= max_bins:
                break
            hh *= 2.0
        losses, comp, omega_t = _pld_delta_curve(k_min, pmf, omega, steps, hh)
        eps = max(eps, _pld_epsilon_from(losses, comp, omega_t, delta))
    return eps


# ---------------------------------------------------------------------------
# The DP-SGD mechanism (edge level): Poisson sampling of pairs, per-edge clipping, Gaussian noise
# ---------------------------------------------------------------------------

def n_pairs(n: int) -> int:
    """M = n(n-1)/2, the number of unordered pairs i < j of n items."""
    return n * (n - 1) // 2


def pair_index(i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Pair (i, j), 0 <= i < j, -> index p = j(j-1)/2 + i (column-major triangular order).

    The pairs of items 0..N-1 get exactly the indices 0..M-1, M = N(N-1)/2, and
    the index does not depend on N.
    """
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    if np.any(i < 0) or np.any(i >= j):
        raise ValueError("pair_index needs 0 <= i < j for every pair")
    return j * (j - 1) // 2 + i


def pair_from_index(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``pair_index``: j = floor((1 + sqrt(1 + 8p)) / 2), i = p - j(j-1)/2.

    The float square root is only a first guess; j is then corrected in exact
    int64 arithmetic so that j(j-1)/2 <= p < j(j+1)/2 holds for every p < 2^52.
    """
    p = np.asarray(p, dtype=np.int64)
    if np.any(p < 0):
        raise ValueError("pair indices must be >= 0")
    j = np.floor((1.0 + np.sqrt(1.0 + 8.0 * p.astype(np.float64))) / 2.0).astype(np.int64)
    for _ in range(2):
        j = np.where(j * (j - 1) // 2 > p, j - 1, j)
        j = np.where((j + 1) * j // 2 <= p, j + 1, j)
    return p - j * (j - 1) // 2, j


def uniform_subset(m: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random k-subset of {0, ..., m-1}, sorted, without building range(m).

    Rejection: draw k integers uniformly with replacement, keep the distinct ones,
    draw the shortfall again, until k distinct values are held. The procedure
    commutes with every permutation of {0, ..., m-1} (relabelling the values
    relabels the draws) and always returns k values, so every k-subset is equally
    likely. Expected draws are about k (1 + k / (2m)) for k << m; when k > m/2 the
    complement is drawn instead (m is then small, since k fits in memory).
    """
    if not 0 <= k <= m:
        raise ValueError(f"uniform_subset: need 0 <= k <= m, got k={k}, m={m}")
    if k > m // 2:
        drop = uniform_subset(m, m - k, rng)
        return np.setdiff1d(np.arange(m, dtype=np.int64), drop, assume_unique=True)
    held = _sorted_distinct(rng.integers(0, m, size=k, dtype=np.int64))
    while len(held) < k:
        held = _sorted_distinct(np.concatenate([held, rng.integers(0, m, size=k - len(held), dtype=np.int64)]))
    return held


def _sorted_distinct(x: np.ndarray) -> np.ndarray:
    """np.unique(x) for a 1-D int array, by one sort (np.unique is several times slower here at 10^6 values)."""
    x = np.sort(x)
    return x[np.concatenate([[True], x[1:] != x[:-1]])] if len(x) else x


def poisson_pair_sample(n: int, q: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Poisson sampling of the unordered pairs of n items: each pair independently w.p. q.

    Implemented as K ~ Binomial(M, q), then a uniformly random K-subset of the M
    pair indices (``uniform_subset``), mapped to (i, j) by ``pair_from_index``.
    This is the same distribution as M independent Bernoulli(q) inclusions: under
    independent inclusion, P(sample = A) = q^|A| (1-q)^(M-|A|) depends on A only
    through |A|, so |A| ~ Binomial(M, q) and, given |A| = K, A is uniform over the
    K-subsets. Cost O(K), never O(M).
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"sampling rate q={q} must be in [0, 1]")
    m = n_pairs(n)
    k = int(rng.binomial(m, q)) if m else 0
    return pair_from_index(uniform_subset(m, k, rng))


DPSGD_COUNT_SHARE = 0.05  # share of epsilon and of delta that DP-SGD's 'edges' sampling spends on the edge count
DPSGD_MAX_PAIRS_PER_STEP = 1 << 24  # cap on the expected secret sample q M of an 'edges' step (memory)


def private_edge_count(graph, *, block: int | None = None) -> int:
    """The number of edges of the private graph (row blocks; never printed, logged or saved)."""
    n = graph.n
    b = block or _rows_per_block(n, bytes_per_entry=1)
    total = 0
    for s in range(0, n, b):
        total += int(np.count_nonzero(graph.rows(s, min(n, s + b))))
    return total // 2  # symmetric, no self-loops: every edge is counted from both ends


def dpsgd_edge_rate(graph, *, epsilon: float, delta: float, edges_per_step: float, source: NoiseSource,
                    share: float = DPSGD_COUNT_SHARE) -> dict:
    """DP-SGD's pair sampling rate q for the 'edges' sampling (issue 16, sixth pass), from a noisy edge count.

    Why. With q = B / M (B pairs per step out of M = N(N-1)/2), a step samples q m of the graph's m
    edges in expectation: B times the density, about 10 per step on a graph of mean degree 25 over
    10,000 items, so the private term of the step is tiny and DP-SGD learns nothing on sparse
    graphs. Here q is set so that a step samples about ``edges_per_step`` (E, public) edges:

      1. Release m~ = m + N(0, sigma_c^2), sigma_c = 1 / gdp_mu(share * epsilon, share * delta).
      2. q = min(E / max(m~, E), P / M): post-processing of m~ and public constants. The floor E
         keeps a small or negative m~ from dividing the step by about nothing (the trainer divides
         the edge sum by q max(m~, E), ``edge_denominator``); the cap P = ``DPSGD_MAX_PAIRS_PER_STEP``
         keeps the secret sample of q M pairs in memory.
      3. The DP-SGD steps (``EdgeDPSGD`` at rate q) are calibrated to the rest of the budget,
         ((1 - share) epsilon, (1 - share) delta).

    Claim (the whole run is (epsilon, delta)-edge-DP). Step 1: adding or removing one edge changes m
    by exactly 1 (Claim 4, ``edge_count_sensitivity``), so the release is (1 / sigma_c)-GDP (Dong,
    Roth & Su, arXiv 1905.02383, Theorem 2.7) and, by the choice of sigma_c, (share epsilon, share
    delta)-DP (``gdp_mu``: Corollary 2.13 of the same paper). Step 3: for any fixed q the steps are
    ((1 - share) epsilon, (1 - share) delta)-DP (``EdgeDPSGD``'s proof and accountant); q is a
    function of the released m~ only, so the steps are a mechanism chosen adaptively from the first
    release. Basic composition, which holds for adaptively chosen mechanisms (Dwork & Roth, "The
    Algorithmic Foundations of Differential Privacy", 2014, Theorem 3.16, and its adaptive form,
    Theorem B.1), gives (epsilon, delta) for the pair. []

    Returns q, ``edge_denominator`` = q max(m~, E) (the expected number of sampled edges by the
    release, floored), the released count ``noisy_edges`` (m~, a DP release: safe to print), ``count_sigma``,
    ``count_epsilon`` / ``count_delta`` and the steps' share ``steps_epsilon`` / ``steps_delta``.
    With epsilon = inf (the NOT PRIVATE sanity mode) the count is exact and the steps get inf.
    """
    if not 0 < share < 1:
        raise ValueError(f"share={share} must be in (0, 1)")
    if not (edges_per_step > 0 and math.isfinite(edges_per_step)):
        raise ValueError(f"edges_per_step={edges_per_step} must be a finite number > 0")
    m = private_edge_count(graph)
    if epsilon == math.inf:  # sanity mode, NOT PRIVATE: the caller marks it
        noisy, sigma_c, eps_c, delta_c, eps_s, delta_s = float(m), 0.0, math.inf, 0.0, math.inf, delta
    else:
        eps_c, delta_c = share * epsilon, share * delta
        sigma_c = edge_count_sensitivity() / gdp_mu(epsilon=eps_c, delta=delta_c)
        noisy = float(m + sigma_c * float(source.normal((1,))[0]))
        eps_s, delta_s = epsilon - eps_c, delta - delta_c
    del m
    e = float(edges_per_step)
    m_pairs = n_pairs(graph.n)
    q = min(e / max(noisy, e), DPSGD_MAX_PAIRS_PER_STEP / m_pairs if m_pairs else 1.0)
    q = float(q * m_pairs) / m_pairs if m_pairs else q  # the q that EdgeDPSGD(expected_batch_pairs=q M) holds
    return {"q": q, "noisy_edges": noisy, "count_sigma": sigma_c, "count_epsilon": eps_c,
            "count_delta": delta_c, "steps_epsilon": eps_s, "steps_delta": delta_s,
            "edge_denominator": q * max(noisy, e)}


class EdgeDPSGD:
    """The edge-level DP-SGD mechanism: Poisson sampling of pairs, per-edge clipping, Gaussian noise.

    ``hashing.train_dpsgd`` computes gradients and applies updates; every step that touches the
    private graph goes through ``step`` here, and only through it.

    Setting. N training items, M = N(N-1)/2 unordered pairs, the private graph a set of edges
    among them. Neighbouring graphs differ in one edge, added or removed (module docstring).

    One step (``step``):
      1. S: each pair joins independently with probability q = B / M (``poisson_pair_sample``),
         B = ``expected_batch_pairs``. The sampler's PCG64 state is 128 fresh bits from the noise
         source each step (the OS CSPRNG unless an insecure seed was given); S is never released.
      2. E = the edges in S, read through ``edge_lookup(i, j)``: the only access to the graph.
      3. Q = sum_{(i, j) in E} clip_C(g_ij), computed by the caller's ``clipped_sum`` as the sum of
         per-edge gradients g_ij = grad f_ij, each scaled by min(1, C / ||g_ij||). f_ij = Theta_ij
         under 'pairs' sampling (the likelihood's label term); under 'edges' sampling f_ij =
         sum_theta log(1 + e^-theta) (2T times the linked-pair loss l+_ij of the pair-balanced likelihood)
         (``hashing.train_dpsgd``), with q from a noisy edge count (``dpsgd_edge_rate``).
      4. Released: Q + N(0, (sigma C)^2 I), sigma = ``noise_multiplier``, the noise from
         ``source.normal`` (never torch's generator).

    Claim (edge-level privacy of one step). Q is a sum over the sampled EDGES with one term per
    edge, and each term has L2 norm <= C. Adding or removing one edge (u, v) adds or removes
    exactly the term of (u, v) if (u, v) is sampled, and changes nothing otherwise. This is the
    add/remove relation on the edge set with Poisson subsampling of rate q and sensitivity C.

    Proof. g_ij depends only on the public features of i and j and on the current parameters
    (themselves a function of earlier released outputs); it does not read the label S_uv of any
    pair. The label enters the loss linearly: under 'pairs' the pairwise loss l_ij = sum_theta
    log(1 + e^theta) - S_ij Theta_ij, whose first part is label-free (public; the trainer computes
    it on an independent public sample S', so it reveals nothing about S) and whose second part
    contributes -S_ij g_ij; under 'edges' the pair-balanced loss mean_pairs l-_ij + (1/E) sum_ij
    S_ij l+_ij, whose first part is label-free (again on S') and whose second contributes S_ij g_ij.
    Flipping S_uv therefore changes exactly one summand of Q, by clip_C(g_uv), of norm <= C by
    construction of the clip (min(1, C/||g||) ||g|| <= C). Membership of (u, v) in S is a
    Bernoulli(q) event independent of everything else, so the released vector is the
    Poisson-subsampled Gaussian mechanism of Abadi et al. (arXiv 1607.00133, Algorithm 1 and
    Theorem 1, the moments accountant) with sensitivity C and noise std sigma C. Its Renyi DP is
    the one of the pair mu_0 = N(0, sigma^2) vs mu = (1-q) N(0, sigma^2) + q N(1, sigma^2)
    (Mironov, Talwar & Zhang, arXiv 1908.10530, Section 3, for Poisson sampling;
    ``rdp_subsampled_gaussian``), and the T steps compose adaptively (Mironov, arXiv 1702.07476,
    Proposition 1): ``dpsgd_epsilon``. The PLD of the same pair gives a tighter epsilon
    (``pld_dpsgd_epsilon``); ``epsilon_spent`` takes the smaller, both being valid upper bounds.
    Everything after the release (the public part, Adam, the model) is post-processing.

    Why the label-free part must not be clipped together with the label part: clipping the
    whole per-pair gradient makes an edge flip a SUBSTITUTION of one clipped vector by another,
    sensitivity 2C (``dpsgd_sensitivity``). Clipping the public part on its own, per pair of S',
    to the same C (``--dpsgd-public-clip true``) reads no label and is post-processing: it only
    rescales the public part so that the clipped private signal is not swamped by it.

    ``noise_multiplier = 0`` adds no noise: NOT PRIVATE (the sanity mode ``--epsilon inf``).
    """

    def __init__(self, *, n_items, expected_batch_pairs, clip_norm, noise_multiplier, source):
        if isinstance(n_items, bool) or not isinstance(n_items, numbers.Integral) or n_items < 2:
            raise ValueError(f"n_items={n_items!r} must be an integer >= 2 (DP-SGD needs at least one pair)")
        self.n = int(n_items)
        self.m = n_pairs(self.n)
        b = float(expected_batch_pairs)
        if not (0 < b <= self.m):
            raise ValueError(f"expected_batch_pairs={expected_batch_pairs} must be in (0, M={self.m}]")
        self.expected_batch_pairs = b
        self.q = b / self.m
        if not (clip_norm > 0 and np.isfinite(clip_norm)):
            raise ValueError(f"clip_norm={clip_norm} must be a finite number > 0")
        if not (noise_multiplier >= 0 and np.isfinite(noise_multiplier)):
            raise ValueError(f"noise_multiplier={noise_multiplier} must be a finite number >= 0")
        if source is None or not (hasattr(source, "normal") and hasattr(source, "randbelow")):
            raise ValueError(f"noise_source={source!r}: pass a privacy.NoiseSource (normal() and randbelow())")
        self.clip_norm = float(clip_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.source = source

    @property
    def private(self) -> bool:
        """False when no noise is added (noise_multiplier 0): NOT PRIVATE."""
        return self.noise_multiplier > 0

    def public_sample(self, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """k pairs uniformly without replacement from a PUBLIC generator: S', independent of S and the graph."""
        return pair_from_index(uniform_subset(self.m, int(k), rng))

    def step(self, edge_lookup, clipped_sum, dim: int):
        """One release: (Q, noise, (si, sj, is_edge)); the caller adds ``noise`` (None: sigma = 0) to Q.

        ``clipped_sum(i, j, clip_norm)`` must return the sum over the given edges of their
        gradients clipped to ``clip_norm`` (the per-edge contract of the proof above).
        (si, sj, is_edge) are the secret sample and its labels: the caller may use them only
        behind an explicit NOT PRIVATE debug flag.
        """
        rng = np.random.Generator(np.random.PCG64(self.source.randbelow(2 ** 128)))
        si, sj = poisson_pair_sample(self.n, self.q, rng)
        is_edge = np.asarray(edge_lookup(si, sj), dtype=bool)
        if is_edge.shape != si.shape:
            raise ValueError(f"edge_lookup returned shape {is_edge.shape}, expected {si.shape}")
        total = clipped_sum(si[is_edge], sj[is_edge], self.clip_norm)
        noise = None
        if self.noise_multiplier > 0:
            sigma = self.noise_multiplier * self.clip_norm
            noise = np.asarray(self.source.normal((int(dim),)), dtype=np.float32) * np.float32(sigma)
        return total, noise, (si, sj, is_edge)

    def epsilon_spent(self, *, steps: int, delta: float) -> dict:
        """{'rdp': eps, 'pld': eps or None, 'epsilon': the smaller}: both are upper bounds (see the class)."""
        if self.noise_multiplier == 0:
            return {"rdp": math.inf, "pld": math.inf, "epsilon": math.inf}
        rdp = dpsgd_epsilon(q=self.q, noise_multiplier=self.noise_multiplier, steps=steps, delta=delta)
        pld = pld_dpsgd_epsilon(q=self.q, noise_multiplier=self.noise_multiplier, steps=steps, delta=delta)
        return {"rdp": rdp, "pld": pld, "epsilon": min(rdp, pld)}

# ===========================================================================
# Baseline: edge randomized response (Warner 1965; as edge-DP e.g. in
# Qin et al., "Generating Synthetic Decentralized Social Graphs with Local
# Differential Privacy", CCS 2017)
# ===========================================================================


@dataclass
class RandomizedGraph:
    """Released output of edge randomized response, with calibrated soft targets.

    ``noisy`` is the randomized adjacency (bool, symmetric). ``prior`` is the
    debiased edge density. ``targets(idx)`` gives the posterior
    P(edge | released bit) under that density: the unbiased estimate
    (y~ - p)/(1 - 2p) is not a probability, so we debias through Bayes' rule
    instead, which keeps targets in [0, 1] (our choice). All post-processing.
    """
    noisy: np.ndarray
    flip: float
    prior: float
    epsilon: float
    secure: bool = True

    def targets(self, idx: np.ndarray) -> np.ndarray:
        p, pi = self.flip, self.prior
        on = pi * (1 - p) / max(pi * (1 - p) + (1 - pi) * p, 1e-12)
        off = pi * p / max(pi * p + (1 - pi) * (1 - p), 1e-12)
        t = np.where(self.noisy[np.ix_(idx, idx)], on, off).astype(np.float32)
        np.fill_diagonal(t, 1.0)
        return t


def edge_randomized_response(graph, *, epsilon: float, source: NoiseSource, block: int = 1024) -> RandomizedGraph:
    """Release every pair's edge bit through randomized response.

    Each pair i < j reports its bit flipped with probability p = 1/(1 + e^eps).
    Claim 6: this is (eps, 0)-edge-DP. Proof: neighbouring graphs differ in one
    pair's bit; the other reports have identical distributions, and for that
    pair P[report = r | bit = 1] / P[report = r | bit = 0] is in
    {(1-p)/p, p/(1-p)} = {e^eps, e^-eps}. []
    The density is debiased with the exact unbiased estimator
    pi^ = (mean(y~) - p)/(1 - 2p), clamped to [0, 1] (post-processing).
    """
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon={epsilon} must be a positive finite number for randomized response")
    n = graph.n
    p = 1.0 / (1.0 + math.exp(epsilon))
    noisy = np.zeros((n, n), dtype=bool)
    for s in range(0, n, block):
        rows = graph.rows(s, min(n, s + block))
        flips = source.uniform(rows.size).reshape(rows.shape) < p
        noisy[s:s + len(rows)] = rows ^ flips
    noisy = np.triu(noisy, 1)
    noisy |= noisy.T  # only the upper triangle's reports are used: one report per pair
    m = n * (n - 1) / 2
    observed = float(np.triu(noisy, 1).sum()) / m
    prior = float(np.clip((observed - p) / (1 - 2 * p), 0.0, 1.0))
    return RandomizedGraph(noisy=noisy, flip=p, prior=prior, epsilon=epsilon, secure=source.secure)


def randomized_response_statement(rr: RandomizedGraph, *, dataset: str, graph_kind: str, n_nodes: int) -> str:
    return "\n".join([
        f"This run satisfies ({rr.epsilon:g}, 0)-differential privacy at the edge level (method edgerr).",
        f"Dataset: {dataset}. Private graph: '{graph_kind}' over {n_nodes} training items.",
        "Neighbouring relation: two private graphs on the same training items that differ in exactly one edge.",
        "Mechanism: randomized response on every pair of training items; each pair's bit is flipped with "
        f"probability p = 1/(1 + e^epsilon) = {rr.flip:.6g}, using "
        + ("the operating system's secure random source." if rr.secure
           else "a FIXED SEED (--insecure-seed): NOT SECURE."),
        "Released: the randomized adjacency; the density estimate, targets, networks and codes are post-processing.",
        "Node-level privacy (changing one item's labels) is NOT covered.",
        NOT_COVERED,
    ]) + "\n"
