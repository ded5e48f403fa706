"""Tests for the edge-level DP-SGD baseline in hashing.py.

Independent references: exhaustive enumeration of pairs, sampling frequencies
against their binomial laws, per-example gradients against plain autograd one
pair at a time, and the sensitivity claim checked by removing each edge of a
batch (add/remove, <= C) against clipping whole per-pair gradients and flipping
a label (substitution, which exceeds C).
"""
import math

import numpy as np
import pytest
import torch
from scipy import stats

import data
import hashing
import privacy


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: one thread is faster and immune to a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def quiet_source(seed):
    return privacy.NoiseSource(insecure_seed=seed, quiet=True)


def train_dpsgd(features, lookup, *, expected_batch_pairs, clip_norm, noise_multiplier, noise_source, **kw):
    """hashing.train_dpsgd with its mechanism built from the old keyword arguments."""
    n = len(next(iter(features.values())))
    mech = privacy.EdgeDPSGD(n_items=n, expected_batch_pairs=expected_batch_pairs, clip_norm=clip_norm,
                             noise_multiplier=noise_multiplier, source=noise_source)
    return hashing.train_dpsgd(features, lookup, mechanism=mech, **kw)


# ---------------------------------------------------------------------------
# Pair indexing and Poisson sampling
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("n", range(2, 31))
def test_pair_index_bijection_exhaustive(n):
    i, j = np.triu_indices(n, k=1)
    p = privacy.pair_index(i, j)
    m = privacy.n_pairs(n)
    assert m == len(i) == n * (n - 1) // 2
    assert np.array_equal(np.sort(p), np.arange(m))  # onto [0, M), no collisions
    ii, jj = privacy.pair_from_index(np.arange(m))
    assert np.all((0 <= ii) & (ii < jj) & (jj < n))
    assert np.array_equal(privacy.pair_index(ii, jj), np.arange(m))
    back_i, back_j = privacy.pair_from_index(p)
    assert np.array_equal(back_i, i) and np.array_equal(back_j, j)


def test_pair_index_round_trip_large():
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.integers(0, 2 ** 50, size=20000), [0, 1, 2, 2 ** 50 - 1]])
    # include the exact triangular numbers and their neighbours, where float sqrt is at risk
    t = np.arange(1, 2 ** 25, 9973, dtype=np.int64)
    p = np.concatenate([p, t * (t - 1) // 2, t * (t - 1) // 2 - 1, t * (t + 1) // 2 - 1]).astype(np.int64)
    p = p[p >= 0]
    i, j = privacy.pair_from_index(p)
    assert np.all((0 <= i) & (i < j))
    assert np.array_equal(privacy.pair_index(i, j), p)
    with pytest.raises(ValueError):
        privacy.pair_index(np.array([3]), np.array([3]))


def test_uniform_subset_distinct_and_uniform():
    rng = np.random.default_rng(1)
    m, k, reps = 10, 3, 20000
    counts = np.zeros(m)
    for _ in range(reps):
        s = privacy.uniform_subset(m, k, rng)
        assert len(s) == k == len(np.unique(s)) and s.min() >= 0 and s.max() < m
        counts[s] += 1
    expected = reps * k / m
    assert stats.chisquare(counts, np.full(m, expected)).pvalue > 1e-3
    for k2 in (0, 7, 10):  # the complement branch and the edges
        s = privacy.uniform_subset(m, k2, rng)
        assert len(s) == k2 == len(np.unique(s))
    with pytest.raises(ValueError, match="k=11"):
        privacy.uniform_subset(m, 11, rng)


def test_sorted_distinct_is_np_unique():
    """uniform_subset's one-sort dedupe (sixth pass: np.unique was the sampler's cost at 10^6 pairs) is np.unique."""
    rng = np.random.default_rng(2)
    for size, high in [(0, 5), (1, 5), (50, 5), (1000, 10 ** 12), (5000, 3000)]:
        x = rng.integers(0, high, size=size, dtype=np.int64)
        got = privacy._sorted_distinct(x)
        np.testing.assert_array_equal(got, np.unique(x))
        assert got.dtype == np.int64
    # the sample of a sparse-graph step (about 10^6 of 5 x 10^7 pairs): sorted, distinct, the size asked for
    s = privacy.uniform_subset(privacy.n_pairs(10000), 200000, rng)
    assert len(s) == 200000 and (np.diff(s) > 0).all()


def test_poisson_pair_sampling_frequencies():
    n, q, reps = 8, 0.3, 20000
    m = privacy.n_pairs(n)
    rng = np.random.default_rng(2)
    incl = np.zeros((reps, m), dtype=bool)
    ks = np.empty(reps)
    for r in range(reps):
        i, j = privacy.poisson_pair_sample(n, q, rng)
        assert np.all((0 <= i) & (i < j) & (j < n))
        p = privacy.pair_index(i, j)
        assert len(np.unique(p)) == len(p)
        incl[r, p] = True
        ks[r] = len(p)
    freq = incl.mean(0)
    sd = np.sqrt(q * (1 - q) / reps)
    assert np.max(np.abs(freq - q)) < 5 * sd  # each pair's inclusion rate is q
    assert abs(ks.mean() - m * q) < 5 * np.sqrt(m * q * (1 - q) / reps)  # E K = M q
    assert abs(ks.var() / (m * q * (1 - q)) - 1) < 0.05  # Var K = M q (1 - q)
    # independence: joint inclusion of two pairs ~ q^2 (a fixed K would give q (Mq-1)/(M-1))
    joint = (incl[:, 0] & incl[:, m - 1]).mean()
    assert abs(joint - q * q) < 5 * np.sqrt(q * q * (1 - q * q) / reps)


# ---------------------------------------------------------------------------
# Per-edge gradients, clipping, sensitivity
# ---------------------------------------------------------------------------

def small_setup(seed=0, n=12, views=("image", "text")):
    torch.manual_seed(seed)
    dims = {"image": 6, "text": 5}
    model = hashing.DualStreamHasher({v: dims[v] for v in views}, bits=8, hidden=16).eval()
    feats = {v: torch.randn(n, dims[v]) * 2.0 for v in views}
    return model, feats


def autograd_theta_grad(model, feats, i, j, fn=lambda t: t):
    """grad of sum(fn(logits_ij)) by plain autograd (fn = identity: grad Theta_ij)."""
    model.zero_grad()
    codes = model({v: x[[i, j]] for v, x in feats.items()})
    theta = hashing._pair_logits({v: h[0:1] for v, h in codes.items()}, {v: h[1:2] for v, h in codes.items()})
    fn(theta).sum().backward()
    return {k: p.grad.detach().clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("views", [("image", "text"), ("text",)])
def test_vmap_per_edge_grads_match_autograd(views):
    model, feats = small_setup(views=views)
    i = np.array([0, 1, 2, 3, 5, 0, 7])
    j = np.array([1, 4, 9, 11, 6, 10, 8])
    g = hashing.per_edge_theta_grads(model, feats, i, j)
    assert set(g) == {k for k, _ in model.named_parameters()}
    for e in range(len(i)):
        ref = autograd_theta_grad(model, feats, int(i[e]), int(j[e]))
        for k in ref:
            torch.testing.assert_close(g[k][e], ref[k], atol=1e-5, rtol=1e-5)


def test_pair_logits_match_holistic_first_order():
    """The 2T logits of (i, j) are the (i, j) and (j, i) entries of holistic_loss's logit blocks."""
    model, feats = small_setup()
    codes = model(feats)
    views = list(codes)
    i, j = np.array([0, 3, 5]), np.array([2, 4, 11])
    got = hashing._pair_logits({v: h[i] for v, h in codes.items()}, {v: h[j] for v, h in codes.items()})
    cols = []
    for a, b in hashing._view_pairs(views):
        block = 0.5 * codes[a] @ codes[b].T
        cols += [block[i, j], block[j, i]]
    torch.testing.assert_close(got, torch.stack(cols, -1))
    assert got.shape[1] == 6  # (I,I), (I,T), (T,T), two directions each


def test_public_private_split_is_exact():
    """With no clipping and no noise, grad P - sum_edges grad Theta = grad of the full pairwise loss."""
    model, feats = small_setup()
    i = np.array([0, 1, 2, 3, 5, 0, 7, 2])
    j = np.array([1, 4, 9, 11, 6, 10, 8, 3])
    s = np.array([1, 0, 1, 1, 0, 0, 1, 0], dtype=bool)
    model.zero_grad()
    codes = model(feats)
    lg = hashing._pair_logits({v: h[i] for v, h in codes.items()}, {v: h[j] for v, h in codes.items()})
    y = torch.from_numpy(s).float()[:, None]
    (torch.nn.functional.softplus(lg) - y * lg).sum().backward()
    full = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    codes = model(feats)
    lg = hashing._pair_logits({v: h[i] for v, h in codes.items()}, {v: h[j] for v, h in codes.items()})
    torch.nn.functional.softplus(lg).sum().backward()
    priv, _ = hashing.clip_and_sum(hashing.per_edge_theta_grads(model, feats, i[s], j[s]), clip_norm=1e9)
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.grad - priv[k], full[k], atol=1e-5, rtol=1e-5)


def flat_norm(d):
    return float(torch.sqrt(sum((v.double() ** 2).sum() for v in d.values())))


@pytest.mark.parametrize("clip_norm", [1e-3, 0.05, 1.0, 100.0])
def test_clipping_and_add_remove_sensitivity_is_C(clip_norm):
    model, feats = small_setup(seed=3, n=20)
    rng = np.random.default_rng(4)
    i, j = privacy.pair_from_index(privacy.uniform_subset(privacy.n_pairs(20), 15, rng))
    g = hashing.per_edge_theta_grads(model, feats, i, j)
    one = [{k: v[e:e + 1] for k, v in g.items()} for e in range(len(i))]
    for e in range(len(i)):
        clipped, norm = hashing.clip_and_sum(one[e], clip_norm)
        assert flat_norm(clipped) <= clip_norm + 1e-6
        assert flat_norm(clipped) == pytest.approx(min(float(norm[0]), clip_norm), rel=1e-5)
    full, _ = hashing.clip_and_sum(g, clip_norm)
    worst = 0.0
    for e in range(len(i)):  # neighbour: the same batch without edge e
        keep = np.arange(len(i)) != e
        without, _ = hashing.clip_and_sum({k: v[keep] for k, v in g.items()}, clip_norm)
        worst = max(worst, flat_norm({k: full[k] - without[k] for k in full}))
    assert worst <= clip_norm * (1 + 1e-5)
    if clip_norm <= 0.05:  # clipping active: the bound is attained
        assert worst == pytest.approx(clip_norm, rel=1e-4)


@pytest.mark.parametrize("clip_norm", [1e-3, 0.3, 1e6])
@pytest.mark.parametrize("views", [("image", "text"), ("text",)])
def test_ghost_clipping_equals_vmap(views, clip_norm):
    model, feats = small_setup(seed=6, n=15, views=views)
    rng = np.random.default_rng(7)
    i, j = privacy.pair_from_index(privacy.uniform_subset(privacy.n_pairs(15), 40, rng))  # items repeat
    ref, ref_norms = hashing.clip_and_sum(hashing.per_edge_theta_grads(model, feats, i, j), clip_norm)
    got, norms = hashing.ghost_clipped_edge_sum(model, feats, i, j, clip_norm)
    torch.testing.assert_close(norms, ref_norms, atol=1e-5, rtol=1e-4)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], atol=1e-5, rtol=1e-4)
    chunked = hashing.clipped_edge_sum(model, feats, i, j, clip_norm=clip_norm, method="vmap", chunk_size=7)
    for k in ref:
        torch.testing.assert_close(chunked[k], ref[k], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["vmap", "ghost"])
def test_clipped_sum_drop_one_edge_moves_at_most_C(method):
    model, feats = small_setup(seed=8, n=20)
    rng = np.random.default_rng(9)
    i, j = privacy.pair_from_index(privacy.uniform_subset(privacy.n_pairs(20), 12, rng))
    c = 0.01
    full = hashing.clipped_edge_sum(model, feats, i, j, clip_norm=c, method=method)
    for e in range(len(i)):
        keep = np.arange(len(i)) != e
        without = hashing.clipped_edge_sum(model, feats, i[keep], j[keep], clip_norm=c, method=method)
        assert flat_norm({k: full[k] - without[k] for k in full}) <= c * (1 + 1e-4)


def test_ghost_refuses_cnn_and_auto_falls_back_to_vmap():
    torch.manual_seed(0)
    model = hashing.DualStreamHasher({"image": 3 * 32 * 32}, bits=8, hidden=16, cnn_views=("image",)).eval()
    feats = {"image": torch.rand(6, 3 * 32 * 32)}
    i, j = np.array([0, 2]), np.array([1, 5])
    with pytest.raises(ValueError, match="MLPEncoder"):
        hashing.ghost_clipped_edge_sum(model, feats, i, j, 1.0)
    auto = hashing.clipped_edge_sum(model, feats, i, j, clip_norm=1.0, method="auto")
    ref, _ = hashing.clip_and_sum(hashing.per_edge_theta_grads(model, feats, i, j), 1.0)
    for k in ref:
        torch.testing.assert_close(auto[k], ref[k])


def test_whole_pair_clipping_under_label_flip_exceeds_C():
    """Clipping the WHOLE per-pair gradient (sigmoid(theta) - S) grad theta and flipping S:
    a substitution. The change reaches ~2C, so claiming sensitivity C would be wrong."""
    model, feats = small_setup(seed=5)
    params = {k: v.detach() for k, v in model.named_parameters()}
    i, j = np.array([0, 2, 4]), np.array([1, 3, 5])
    x = {v: torch.stack([t[i], t[j]], 1) for v, t in feats.items()}

    def pair_loss(p, xs, s):
        codes = torch.func.functional_call(model, p, (xs,))
        lg = hashing._pair_logits({v: h[0] for v, h in codes.items()}, {v: h[1] for v, h in codes.items()})
        return (torch.nn.functional.softplus(lg) - s * lg).sum()

    per_pair = torch.func.vmap(torch.func.grad(pair_loss), in_dims=(None, 0, 0))
    c = 1e-3
    s0 = torch.tensor([1.0, 0.0, 1.0])
    s1 = torch.tensor([1.0, 1.0, 1.0])  # pair (2, 3) flipped: 0 -> 1
    sum0, _ = hashing.clip_and_sum(per_pair(params, x, s0), c)
    sum1, _ = hashing.clip_and_sum(per_pair(params, x, s1), c)
    change = flat_norm({k: sum0[k] - sum1[k] for k in sum0})
    assert change > 1.5 * c  # far above C ...
    assert change <= 2 * c * (1 + 1e-5)  # ... and within the substitution bound 2C
    # the split route on the same flip: one clipped private term, at most C
    g = hashing.per_edge_theta_grads(model, feats, i[1:2], j[1:2])
    term, _ = hashing.clip_and_sum(g, c)
    assert flat_norm(term) <= c * (1 + 1e-6)


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

def planted(n=200, d=32, seed=0):
    """Two clusters; the signal sits in one feature dimension among d noisy ones."""
    rng = np.random.default_rng(seed)
    cluster = np.arange(n) % 2
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[:, 0] += np.where(cluster == 1, 1.5, -1.5)
    lookup = lambda i, j: cluster[i] == cluster[j]  # noqa: E731
    return x, cluster, lookup


def code_auc(model, x, cluster):
    codes = hashing.encode(model, {"text": x}, device=torch.device("cpu"))["text"].astype(np.float64) * 2 - 1
    i, j = np.triu_indices(len(x), k=1)
    sim = (codes[i] * codes[j]).sum(1)
    pos = cluster[i] == cluster[j]
    r = stats.rankdata(sim)
    npos, nneg = pos.sum(), (~pos).sum()
    return (r[pos].sum() - npos * (npos + 1) / 2) / (npos * nneg)


def test_dpsgd_without_noise_learns_planted_clusters(capsys):
    x, cluster, lookup = planted()
    kw = dict(bits=16, expected_batch_pairs=512, lr=1e-2, hidden=64, clip_norm=1.0,
              noise_multiplier=0.0, device=torch.device("cpu"), log_every=20, chunk_size=512)
    torch.manual_seed(0)
    init = train_dpsgd({"text": x}, lookup, steps=1, noise_source=quiet_source(1), **{**kw, "lr": 0.0})
    auc0 = code_auc(init, x, cluster)
    torch.manual_seed(0)
    model = train_dpsgd({"text": x}, lookup, steps=40, noise_source=quiet_source(1), **kw)
    auc = code_auc(model, x, cluster)
    assert not model.training
    assert auc > 0.7 and auc > auc0 + 0.1, (auc0, auc)
    out = capsys.readouterr().out
    assert "NOT PRIVATE" in out  # noise_multiplier = 0 is flagged
    assert "dpsgd step    40/40" in out and "edges" not in out  # no un-noised graph statistic logged


class SpySource:
    """Wraps a NoiseSource and counts calls; ``zero`` makes normal() return zeros."""

    def __init__(self, seed, zero=False):
        self.inner = quiet_source(seed)
        self.zero = zero
        self.normal_shapes = []
        self.randbelow_calls = 0

    def normal(self, shape):
        self.normal_shapes.append(tuple(shape))
        out = self.inner.normal(shape)
        return np.zeros_like(out) if self.zero else out

    def randbelow(self, n):
        self.randbelow_calls += 1
        return self.inner.randbelow(n)

    def uniform(self, size):
        return self.inner.uniform(size)


def test_dp_noise_comes_from_noise_source(monkeypatch):
    x, cluster, lookup = planted(n=40, d=8)
    kw = dict(bits=8, steps=5, expected_batch_pairs=64, lr=1e-2, hidden=16, clip_norm=0.5,
              device=torch.device("cpu"), log_every=0, per_edge="vmap")

    def forbidden(*a, **k):
        raise AssertionError("DP noise must not come from torch's generator")

    for name in ("randn", "normal", "randn_like"):
        monkeypatch.setattr(torch, name, forbidden)

    spy = SpySource(7)
    torch.manual_seed(0)
    noisy = train_dpsgd({"text": x}, lookup, noise_multiplier=1.3, noise_source=spy, **kw)
    n_params = sum(p.numel() for p in noisy.parameters())
    assert spy.normal_shapes == [(n_params,)] * 5  # once per step, every coordinate
    assert spy.randbelow_calls == 5  # sampling seeded from the source each step

    # zero "noise" from the spy gives exactly the noise-free run: all DP noise passes through normal()
    spy0 = SpySource(7, zero=True)
    torch.manual_seed(0)
    zeroed = train_dpsgd({"text": x}, lookup, noise_multiplier=1.3, noise_source=spy0, **kw)
    torch.manual_seed(0)
    clean = train_dpsgd({"text": x}, lookup, noise_multiplier=0.0, noise_source=SpySource(7), **kw)
    for a, b, c in zip(zeroed.parameters(), clean.parameters(), noisy.parameters()):
        torch.testing.assert_close(a, b)
    assert any(not torch.allclose(a, c) for a, c in zip(clean.parameters(), noisy.parameters()))


def test_edge_lookup_sees_only_sampled_pairs_and_bad_arguments_fail():
    x, cluster, lookup = planted(n=30, d=4)
    seen = []

    def spy_lookup(i, j):
        seen.append(len(i))
        assert np.all(i < j)
        return lookup(i, j)

    kw = dict(bits=8, steps=3, expected_batch_pairs=20, lr=1e-2, hidden=8, clip_norm=1.0, noise_multiplier=1.0,
              device=torch.device("cpu"), noise_source=quiet_source(0), log_every=0)
    train_dpsgd({"text": x}, spy_lookup, **kw)
    assert len(seen) == 3 and sum(seen) < 3 * privacy.n_pairs(30) / 4
    for bad, match in [({"clip_norm": 0.0}, "clip_norm=0.0"), ({"noise_multiplier": -1.0}, "noise_multiplier=-1.0"),
                       ({"expected_batch_pairs": 10 ** 6}, "expected_batch_pairs=1000000"),
                       ({"steps": 0}, "steps=0"), ({"per_edge": "fast"}, "per_edge='fast'")]:
        with pytest.raises(ValueError, match=match):
            train_dpsgd({"text": x}, lookup, **{**kw, **bad})
    with pytest.raises(ValueError, match="noise_source=None"):
        train_dpsgd({"text": x}, lookup, **{**kw, "noise_source": None})
    with pytest.raises(ValueError, match="edge_lookup returned shape"):
        train_dpsgd({"text": x}, lambda i, j: np.array([True]), **kw)


# ---------------------------------------------------------------------------
# Issue 16: the mechanism in privacy.EdgeDPSGD, the clipped public part, the sanity mode
# ---------------------------------------------------------------------------

def _param_sha(model):
    import hashlib
    return hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()


# sha256 of the final parameters of the pre-issue-16 train_dpsgd (commit b1f88e3) on this problem;
# --dpsgd-public-clip false must reproduce it bit for bit (CPU, one thread)
OLD_UPDATE_SHA = {"ghost": "2566fcbece985858c0f612a2ff00e08968bcf3d8f6715122f84611f85205b354",
                  "vmap": "fe552bcf71d1ddb3e081a1172ce07b157abae14f398d32350624c4688c437273"}


@pytest.mark.parametrize("per_edge", ["ghost", "vmap"])
def test_public_clip_false_is_the_old_update_bit_for_bit(per_edge):
    x, cluster, lookup = planted(n=40, d=8)
    kw = dict(bits=8, steps=5, expected_batch_pairs=64, lr=1e-2, hidden=16, clip_norm=0.5, noise_multiplier=1.3,
              device=torch.device("cpu"), log_every=0, per_edge=per_edge)
    kw["optimizer"] = "adam"  # the pre-issue-16 optimiser, given explicitly (the default changed in issue 16)
    torch.manual_seed(0)
    old = train_dpsgd({"text": x}, lookup, noise_source=quiet_source(3), public_clip=False, **kw)
    assert _param_sha(old) == OLD_UPDATE_SHA[per_edge]
    torch.manual_seed(0)
    new = train_dpsgd({"text": x}, lookup, noise_source=quiet_source(3), public_clip=True, **kw)
    assert _param_sha(new) != OLD_UPDATE_SHA[per_edge]  # the flag changes the update


@pytest.mark.parametrize("views", [("text",), ("image", "text")])
def test_public_softplus_clipping_ghost_equals_vmap_and_is_clipped(views):
    torch.manual_seed(0)
    dims = {"image": 7, "text": 5}
    model = hashing.DualStreamHasher({v: dims[v] for v in views}, 8, 16).eval()
    feats = {v: torch.randn(20, dims[v]) * 3 for v in views}
    rng = np.random.default_rng(1)
    i, j = privacy.pair_from_index(privacy.uniform_subset(privacy.n_pairs(20), 30, rng))
    c = 0.3
    ghost, gn = hashing.ghost_clipped_edge_sum(model, feats, i, j, c, fn=hashing._softplus_sum)
    per = hashing.per_edge_theta_grads(model, feats, i, j, fn=hashing._softplus_sum)
    vm, vn = hashing.clip_and_sum(per, c)
    torch.testing.assert_close(gn, vn, rtol=1e-4, atol=1e-6)
    for k in ghost:
        torch.testing.assert_close(ghost[k], vm[k], rtol=1e-4, atol=1e-6)
    assert float(vn.min()) > c  # the public per-pair gradients are far above C: clipping matters
    # with two views the softplus per-pair gradient is not parallel to the Theta gradient (with one view
    # it is, and both clip to the same vector): a different function is clipped
    th, _ = hashing.clip_and_sum(hashing.per_edge_theta_grads(model, feats, i, j), c)
    assert any(not torch.allclose(th[k], vm[k]) for k in th) == (len(views) == 2)


def test_edge_dpsgd_step_noise_scale_and_lookup():
    src = quiet_source(5)
    mech = privacy.EdgeDPSGD(n_items=50, expected_batch_pairs=100, clip_norm=0.7, noise_multiplier=2.0, source=src)
    assert mech.q == pytest.approx(100 / privacy.n_pairs(50)) and mech.private
    seen = []

    def lookup(i, j):
        seen.append((i.copy(), j.copy()))
        return (i + j) % 3 == 0

    def csum(i, j, c):
        assert c == 0.7 and np.all((i + j) % 3 == 0)  # only the sampled EDGES reach the clipped sum
        return len(i)

    total, noise, (si, sj, is_edge) = mech.step(lookup, csum, 20000)
    assert total == int(is_edge.sum()) and len(seen) == 1 and np.array_equal(seen[0][0], si)
    assert noise.dtype == np.float32 and noise.shape == (20000,)
    assert abs(float(noise.std()) - 1.4) < 0.03 and abs(float(noise.mean())) < 0.05  # sigma C = 2 * 0.7
    sizes = [len(mech.step(lookup, lambda i, j, c: 0, 1)[2][0]) for _ in range(300)]
    assert abs(np.mean(sizes) - 100) < 4 * math.sqrt(100 / 300)  # Poisson: E|S| = q M = B
    zero = privacy.EdgeDPSGD(n_items=50, expected_batch_pairs=100, clip_norm=0.7, noise_multiplier=0.0, source=src)
    assert zero.step(lookup, lambda i, j, c: 0, 10)[1] is None and not zero.private
    assert math.isinf(zero.epsilon_spent(steps=3, delta=1e-5)["epsilon"])
    spent = mech.epsilon_spent(steps=10, delta=1e-5)
    assert spent["epsilon"] == min(spent["rdp"], spent["pld"])
    assert spent["rdp"] == privacy.dpsgd_epsilon(q=mech.q, noise_multiplier=2.0, steps=10, delta=1e-5)
    for bad, match in [({"n_items": 1}, "n_items=1"), ({"clip_norm": -1.0}, "clip_norm=-1.0"),
                       ({"expected_batch_pairs": 0}, "expected_batch_pairs=0"), ({"source": None}, "noise_source")]:
        with pytest.raises(ValueError, match=match):
            privacy.EdgeDPSGD(**{"n_items": 50, "expected_batch_pairs": 100, "clip_norm": 0.7,
                                 "noise_multiplier": 1.0, "source": src, **bad})


def test_warm_start_loads_the_given_weights():
    x, cluster, lookup = planted(n=40, d=8)
    torch.manual_seed(1)
    init = hashing.DualStreamHasher({"text": 8}, 8, 16).state_dict()
    kw = dict(bits=8, steps=1, expected_batch_pairs=64, lr=0.0, hidden=16, clip_norm=0.5, noise_multiplier=0.0,
              device=torch.device("cpu"), log_every=0)
    torch.manual_seed(0)
    m = train_dpsgd({"text": x}, lookup, noise_source=quiet_source(3), init_state=init, **kw)
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, init[k])  # lr 0: the weights are exactly the warm start's


# ---------------------------------------------------------------------------
# Issue 16, third pass: the optimiser and its rule
# ---------------------------------------------------------------------------

def test_optimizer_names_agree():
    import dmpmh
    assert dmpmh.DPSGD_OPTIMIZERS == hashing.DPSGD_OPTIMIZERS  # dmpmh validates without importing torch


@pytest.mark.parametrize("name", hashing.DPSGD_OPTIMIZERS)
def test_optimizer_rule_reads_only_public_quantities(monkeypatch, name):
    """The rule's inputs are lr, C, 2T and B (public); the graph never reaches it: three different graphs
    on the same items give the same optimiser settings, and those are the documented formula."""
    import inspect
    assert set(inspect.signature(hashing.dpsgd_optimizer).parameters) == {
        "params", "name", "lr", "clip_norm", "n_logits", "expected_batch_pairs"}
    seen = []
    real = hashing.dpsgd_optimizer

    def spy(params, opt_name, **kw):
        opt = real(params, opt_name, **kw)
        seen.append((opt_name, kw, {k: v for k, v in opt.param_groups[0].items() if k != "params"}))
        return opt

    monkeypatch.setattr(hashing, "dpsgd_optimizer", spy)
    x, cluster, _ = planted(n=40, d=8)
    graphs = [lambda i, j: cluster[i] == cluster[j], lambda i, j: np.zeros(len(i), bool),
              lambda i, j: np.ones(len(i), bool)]
    feats = {"image": x, "text": x[:, ::-1].copy()}
    for lookup in graphs:
        torch.manual_seed(0)
        train_dpsgd(feats, lookup, bits=8, steps=2, expected_batch_pairs=64, lr=2e-3, hidden=16, clip_norm=0.5,
                    noise_multiplier=0.0, noise_source=quiet_source(1), device=torch.device("cpu"), log_every=0,
                    optimizer=name)
    assert len(seen) == 3 and seen[0] == seen[1] == seen[2]
    opt_name, kw, group = seen[0]
    assert opt_name == name and kw == {"lr": 2e-3, "clip_norm": 0.5, "n_logits": 6, "expected_batch_pairs": 64.0}
    unit = 0.5 / (6 * 64)  # C / (2T B): two views, three view pairs, both directions
    if name == "sgd":
        assert group["lr"] == pytest.approx(2e-3 / unit) and group["momentum"] == 0
    elif name == "adam-eps":
        assert group["lr"] == 2e-3 and group["eps"] == pytest.approx(unit)
    else:
        assert group["lr"] == 2e-3 and group["eps"] == 1e-8  # torch's default: the pre-issue-16 Adam


def _one_step_grad(x, lookup, init, **kw):
    """(model, the gradient train_dpsgd hands plain SGD in its one noise-free step, per parameter name)."""
    mech = privacy.EdgeDPSGD(n_items=len(x), expected_batch_pairs=32, clip_norm=0.5, noise_multiplier=0.0,
                             source=quiet_source(4))
    return _one_step_grad_with(mech, x, lookup, init, **kw)


def _one_step_grad_with(mech, x, lookup, init, **kw):
    """``_one_step_grad`` with a given mechanism."""
    grads = {}
    real_step = torch.optim.SGD.step

    def record(self, *a, **k):
        for g in self.param_groups:
            for p in g["params"]:
                grads[id(p)] = p.grad.detach().clone()
        return real_step(self, *a, **k)

    torch.optim.SGD.step = record
    try:
        m = hashing.train_dpsgd({"text": x}, lookup, mechanism=mech, lr=1e-3, optimizer="sgd", bits=8, steps=1,
                                hidden=8, device=torch.device("cpu"), log_every=0, init_state=init,
                                per_edge="vmap", **kw)
    finally:
        torch.optim.SGD.step = real_step
    return m, {k: grads[id(p)] for k, p in m.named_parameters()}


def test_sgd_step_is_lr_over_unit_times_the_noisy_gradient():
    """One plain-SGD step from a known start moves the weights by exactly -lr 2T B / C times the gradient that
    train_dpsgd hands the optimiser: the same run under Adam(lr 0) logs no step, so compare two runs."""
    x, cluster, lookup = planted(n=30, d=4)
    torch.manual_seed(2)
    init = hashing.DualStreamHasher({"text": 4}, 8, 8).state_dict()
    m, grads = _one_step_grad(x, lookup, init)
    unit = 0.5 / (2 * 32)
    for (k, p) in m.named_parameters():
        torch.testing.assert_close(p.detach(), init[k] - (1e-3 / unit) * grads[k])


def test_bad_optimizer_or_lr_fails():
    x, cluster, lookup = planted(n=30, d=4)
    kw = dict(bits=8, steps=1, expected_batch_pairs=20, lr=1e-2, hidden=8, clip_norm=1.0, noise_multiplier=0.0,
              device=torch.device("cpu"), noise_source=quiet_source(0), log_every=0)
    for bad, match in [({"optimizer": "rmsprop"}, "optimizer='rmsprop'"), ({"lr": float("nan")}, "lr=nan"),
                       ({"lr": -1.0}, "lr=-1.0"), ({"lr": float("inf")}, "lr=inf")]:
        with pytest.raises(ValueError, match=match):
            train_dpsgd({"text": x}, lookup, **{**kw, **bad})


# ---------------------------------------------------------------------------
# The public prior term (issue 16, fourth pass)
# ---------------------------------------------------------------------------

def clipped_reference(model, x, pairs, fn, clip_norm):
    """sum over (a, b) in pairs of grad sum(fn(logits_ab)) clipped to clip_norm: plain autograd, one pair at a time."""
    model.eval()
    feats = torch.from_numpy(x)
    out = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
    for a, b in pairs:
        model.zero_grad()
        h = model({"text": feats[[a, b]]})
        fn(hashing._pair_logits({"text": h["text"][:1]}, {"text": h["text"][1:]})).sum().backward()
        norm = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
        for k, p in model.named_parameters():
            out[k] += p.grad * min(1.0, clip_norm / float(norm))
    return out


def test_prior_term_is_the_clipped_mean_of_linked_pair_gradients():
    """g(w) = (1 - w/2) P - (1 - w) Q + w/2 * mean over the sampled prior pairs of clip(grad l^+), with P the
    public label-free part and Q the private part. P and Q come from runs without the prior (Q = 0 with
    a graph of no edges); the prior pairs' per-pair gradients from plain autograd one pair at a time."""
    x, cluster, lookup = planted(n=30, d=4)
    torch.manual_seed(2)
    model = hashing.DualStreamHasher({"text": 4}, 8, 8)
    init = model.state_dict()
    prior = np.array([[0, 2], [1, 3], [4, 6], [5, 9], [7, 8]])
    w = 0.5
    _, g_w = _one_step_grad(x, lookup, init, prior_pairs=prior, prior_weight=w)
    _, g_pq = _one_step_grad(x, lookup, init)
    _, g_p = _one_step_grad(x, lambda i, j: np.zeros(len(i), bool), init)
    # the prior pairs drawn as train_dpsgd draws them: after S' (32 pairs) on the public generator
    mech = privacy.EdgeDPSGD(n_items=30, expected_batch_pairs=32, clip_norm=0.5, noise_multiplier=0.0,
                             source=quiet_source(0))
    rng = np.random.default_rng(0)
    mech.public_sample(32, rng)
    pick = rng.integers(0, len(prior), size=32 // 4)
    pos = clipped_reference(model, x, prior[pick], lambda t: torch.nn.functional.softplus(-t), 0.5)
    n_logits = 2
    for k in g_w:
        P, Q = g_p[k], g_p[k] - g_pq[k]
        want = (1 - w / 2) * P - (1 - w) * Q + (w / 2) * pos[k] / (n_logits * len(pick))
        torch.testing.assert_close(g_w[k], want, rtol=1e-5, atol=1e-7)
    assert max(float((g_w[k] - g_pq[k]).abs().max()) for k in g_w) > 1e-4  # the prior changes the step


def test_prior_reads_no_private_data_and_bad_prior_arguments_fail():
    x, cluster, lookup = planted(n=30, d=4)
    calls = []

    def spy(i, j):
        calls.append(len(i))
        return lookup(i, j)

    kw = dict(bits=8, steps=3, expected_batch_pairs=20, lr=1e-3, hidden=8, clip_norm=1.0, noise_multiplier=0.0,
              device=torch.device("cpu"), noise_source=quiet_source(0), log_every=0)
    prior = np.array([[0, 2], [1, 3]])
    train_dpsgd({"text": x}, spy, prior_pairs=prior, **kw)
    assert len(calls) == 3  # one lookup per step, by the mechanism, on its secret sample only
    for bad, match in [({"prior_pairs": np.zeros((0, 2))}, "prior_pairs"), ({"prior_pairs": np.zeros((3, 3))}, "prior_pairs"),
                       ({"prior_pairs": prior, "prior_weight": 1.0}, "prior_weight"),
                       ({"prior_pairs": prior, "prior_weight": float("nan")}, "prior_weight"),
                       ({"prior_pairs": prior, "public_clip": False}, "public_clip")]:
        with pytest.raises(ValueError, match=match):
            train_dpsgd({"text": x}, lookup, **{**kw, **bad})


# ---------------------------------------------------------------------------
# Issue 16, fifth pass: the clip norm from public data (--dpsgd-clip auto)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("views", [("image", "text"), ("text",)])
@pytest.mark.parametrize("method", ["ghost", "vmap"])
def test_pair_grad_norms_match_autograd_one_pair_at_a_time(views, method):
    model, feats = small_setup(views=views)
    i = np.array([0, 1, 2, 3, 5, 0, 7, 4])
    j = np.array([1, 4, 9, 11, 6, 10, 8, 2])
    got = hashing.pair_grad_norms(model, feats, i, j, method=method, chunk_size=3)
    ref = [math.sqrt(sum(float((g.double() ** 2).sum()) for g in autograd_theta_grad(model, feats, a, b).values()))
           for a, b in zip(i.tolist(), j.tolist())]
    assert got.dtype == np.float64 and got.shape == (len(i),)
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    assert len(set(np.round(got, 6))) > 1  # distinct pairs, distinct norms: the check can tell them apart


def test_public_clip_norm_is_the_quantile_of_public_pair_norms():
    model, feats = small_setup(views=("image", "text"))
    x = {v: t.numpy() for v, t in feats.items()}
    rng = np.random.default_rng(0)
    i, j = privacy.pair_from_index(privacy.uniform_subset(privacy.n_pairs(len(x["text"])), 40, rng))
    ref = np.array([math.sqrt(sum(float((g.double() ** 2).sum()) for g in autograd_theta_grad(model, feats, a, b)
                                  .values())) for a, b in zip(i.tolist(), j.tolist())])
    kw = dict(bits=model.bits, hidden=model.encoders["text"].net[0].out_features, init_state=model.state_dict(),
              pairs=(i, j), device=torch.device("cpu"))
    for q in (0.5, 0.9, 1.0):
        assert hashing.public_clip_norm(x, quantile=q, **kw) == pytest.approx(float(np.quantile(ref, q)), rel=1e-5)
    assert hashing.public_clip_norm(x, **kw) == pytest.approx(float(np.quantile(ref, 0.9)), rel=1e-5)  # the default
    assert hashing.DPSGD_CLIP_QUANTILE == 0.9
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="quantile"):
            hashing.public_clip_norm(x, quantile=bad, **kw)
    with pytest.raises(ValueError, match="at least one public pair"):
        hashing.public_clip_norm(x, **{**kw, "pairs": (np.zeros(0, int), np.zeros(0, int))})
    # 'edges' sampling's rule: the norms of the linked-pair loss l+ = sum log(1 + e^-theta), its quantile
    sp = lambda t: torch.nn.functional.softplus(-t)  # noqa: E731
    ref_l = np.array([math.sqrt(sum(float((g.double() ** 2).sum()) for g in autograd_theta_grad(model, feats, a, b, sp)
                                    .values())) for a, b in zip(i.tolist(), j.tolist())])
    assert not np.allclose(ref_l, ref)  # a different function, different norms
    for q in (0.1, 0.5):
        assert hashing.public_clip_norm(x, quantile=q, linked=True, **kw) == pytest.approx(
            float(np.quantile(ref_l, q)), rel=1e-5)
    assert hashing.DPSGD_EDGES_CLIP_QUANTILE == 0.1


# ---------------------------------------------------------------------------
# Issue 16, sixth pass: 'edges' sampling (q from a noisy edge count) and the pair-balanced likelihood
# ---------------------------------------------------------------------------

class RecordingDPSGD(privacy.EdgeDPSGD):
    """The mechanism, keeping each step's secret sample for the test's reference."""
    samples: list

    def step(self, *a, **k):
        out = super().step(*a, **k)
        self.samples = getattr(self, "samples", []) + [out[2]]
        return out


@pytest.mark.parametrize("with_prior", [False, True])
def test_edges_sampling_step_is_the_pair_balanced_likelihood(with_prior):
    """One noise-free 'edges' step hands SGD 1/2 mean_{S'} clip(grad l^-) + (1 - w)/2 (1/E) sum over the sampled
    edges of clip(grad l^+) + w/2 mean over the prior picks of clip(grad l^+) (all over 2T = 2 logits), and SGD
    moves the weights by lr / u times it with u = C / (2T |S'|); the reference is plain autograd per pair."""
    x, cluster, lookup = planted(n=30, d=4)
    torch.manual_seed(2)
    model = hashing.DualStreamHasher({"text": 4}, 8, 8)
    init = model.state_dict()
    mech = RecordingDPSGD(n_items=30, expected_batch_pairs=120, clip_norm=0.5, noise_multiplier=0.0,
                          source=quiet_source(4))
    prior = np.array([[0, 2], [1, 3], [4, 6], [5, 9], [7, 8]])
    w, n_pub, e_den = (0.5 if with_prior else 0.0), 16, 7.5
    m, g = _one_step_grad_with(mech, x, lookup, init, sampling="edges", public_pairs=n_pub, edge_denominator=e_den,
                               prior_pairs=prior if with_prior else None, prior_weight=0.5)
    si, sj, is_edge = mech.samples[0]
    assert is_edge.sum() >= 3 and (~is_edge).sum() >= 3  # the sample holds edges and non-edges
    rng = np.random.default_rng(0)  # S' and the prior picks, drawn as train_dpsgd draws them
    pi, pj = mech.public_sample(n_pub, rng)
    pick = rng.integers(0, len(prior), size=n_pub // 4)
    model.load_state_dict(init)
    sp = torch.nn.functional.softplus
    neg = clipped_reference(model, x, zip(pi, pj), sp, 0.5)
    pos = clipped_reference(model, x, zip(si[is_edge], sj[is_edge]), lambda t: sp(-t), 0.5)
    pri = clipped_reference(model, x, prior[pick], lambda t: sp(-t), 0.5)
    unit = 0.5 / (2 * n_pub)
    for k, p in m.named_parameters():
        want = 0.5 * neg[k] / (2 * n_pub) + (1 - w) * 0.5 * pos[k] / (2 * e_den)
        if with_prior:
            want = want + w * 0.5 * pri[k] / (2 * len(pick))
        torch.testing.assert_close(g[k], want, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(p.detach(), init[k] - (1e-3 / unit) * g[k])
    # E divides the private part only: the same step (same secret sample) with E doubled halves that part
    _, g2 = _one_step_grad_with(RecordingDPSGD(n_items=30, expected_batch_pairs=120, clip_norm=0.5,
                                               noise_multiplier=0.0, source=quiet_source(4)),
                                x, lookup, init, sampling="edges", public_pairs=n_pub, edge_denominator=e_den * 2,
                                prior_pairs=prior if with_prior else None)
    for k in g:
        torch.testing.assert_close(g2[k], g[k] - (1 - w) * 0.25 * pos[k] / (2 * e_den), rtol=1e-5, atol=1e-7)


def test_edges_sampling_bad_arguments_fail():
    x, cluster, lookup = planted(n=30, d=4)
    kw = dict(bits=8, steps=1, expected_batch_pairs=20, lr=1e-3, hidden=8, clip_norm=1.0, noise_multiplier=0.0,
              device=torch.device("cpu"), noise_source=quiet_source(0), log_every=0)
    for bad, match in [({"sampling": "nodes"}, "sampling='nodes'"),
                       ({"sampling": "edges", "edge_denominator": 5.0}, "public_pairs"),
                       ({"sampling": "edges", "public_pairs": 8, "edge_denominator": 5.0, "public_clip": False},
                        "public_clip"),
                       ({"sampling": "edges", "public_pairs": 8}, "edge_denominator"),
                       ({"sampling": "edges", "public_pairs": 8, "edge_denominator": 0.0}, "edge_denominator"),
                       ({"sampling": "edges", "public_pairs": 8, "edge_denominator": float("nan")},
                        "edge_denominator")]:
        with pytest.raises(ValueError, match=match):
            train_dpsgd({"text": x}, lookup, **{**kw, **bad})


def test_private_edge_count_on_every_storage_against_a_brute_force_count():
    rng = np.random.default_rng(3)
    n = 40
    upper = np.triu(rng.random((n, n)) < 0.2, 1)
    adj = upper | upper.T
    lab = (rng.random((n, 4)) < 0.3).astype(np.uint8)
    shared = (lab @ lab.T) > 0
    edges = np.argwhere(upper)
    noisy_edges = np.concatenate([edges, edges[:5, ::-1], [[0, 0]]])  # duplicates, a reversed copy, a self-loop
    for g, want in [(data.PrivateGraph(n=n, kind="x", _adj=adj), int(upper.sum())),
                    (data.PrivateGraph(n=n, kind="label", _labels=lab), int(np.triu(shared, 1).sum())),
                    (data.graph_from_edges(noisy_edges, np.arange(n)), int(upper.sum()))]:
        assert privacy.private_edge_count(g) == want
        assert privacy.private_edge_count(g, block=3) == want


def test_edge_count_sensitivity_by_brute_force_over_all_graphs_on_five_nodes():
    """Every graph on 5 nodes and each of its 10 neighbours (one pair flipped): the count moves by exactly 1."""
    n = 5
    iu = np.triu_indices(n, 1)
    worst = 0
    for code in range(2 ** len(iu[0])):
        bits = (code >> np.arange(len(iu[0]))) & 1
        adj = np.zeros((n, n), bool)
        adj[iu] = bits.astype(bool)
        adj |= adj.T
        c = privacy.private_edge_count(data.PrivateGraph(n=n, kind="x", _adj=adj))
        assert c == bits.sum()
        for p in range(len(iu[0])):
            nb = adj.copy()
            nb[iu[0][p], iu[1][p]] ^= True
            nb[iu[1][p], iu[0][p]] ^= True
            worst = max(worst, abs(privacy.private_edge_count(data.PrivateGraph(n=n, kind="x", _adj=nb)) - c))
    assert worst == privacy.edge_count_sensitivity() == 1


def test_dpsgd_edge_rate_noise_budget_split_and_rate():
    rng = np.random.default_rng(4)
    upper = np.triu(rng.random((60, 60)) < 0.3, 1)
    g = data.PrivateGraph(n=60, kind="x", _adj=upper | upper.T)
    m = int(upper.sum())
    # share * epsilon = 1 and share * delta = 1e-5: sigma_c = 1 / 0.26805 (the known gdp_mu value)
    r = privacy.dpsgd_edge_rate(g, epsilon=20.0, delta=2e-4, edges_per_step=100, source=quiet_source(7))
    assert r["count_sigma"] == pytest.approx(1 / 0.26805, rel=1e-4)
    z = float(quiet_source(7).normal((1,))[0])  # an independent copy of the same noise stream
    assert r["noisy_edges"] == pytest.approx(m + r["count_sigma"] * z)
    assert r["q"] == pytest.approx(100 / r["noisy_edges"])
    assert r["count_epsilon"] == pytest.approx(1.0) and r["count_delta"] == pytest.approx(1e-5)
    assert r["count_epsilon"] + r["steps_epsilon"] == pytest.approx(20.0)
    assert r["count_delta"] + r["steps_delta"] == pytest.approx(2e-4)
    # more edges wanted than the count: every edge, every step (q = 1)
    assert privacy.dpsgd_edge_rate(g, epsilon=20.0, delta=2e-4, edges_per_step=10 ** 6,
                                   source=quiet_source(7))["q"] == 1.0
    # a tiny budget: the count is mostly noise, and q stays in (0, 1]
    for seed in range(20):
        r = privacy.dpsgd_edge_rate(g, epsilon=0.01, delta=1e-6, edges_per_step=100, source=quiet_source(seed))
        assert 0 < r["q"] <= 1 and r["count_sigma"] > 1000
    # a count at or below E (here negative): q = 1 and the step's denominator floored at E, never about 0
    r = privacy.dpsgd_edge_rate(data.PrivateGraph(n=60, kind="x", _adj=np.zeros((60, 60), bool)), epsilon=0.5,
                                delta=1e-6, edges_per_step=100, source=quiet_source(4))
    assert r["noisy_edges"] < 0 and r["q"] == 1.0 and r["edge_denominator"] == 100.0
    r = privacy.dpsgd_edge_rate(g, epsilon=20.0, delta=2e-4, edges_per_step=100, source=quiet_source(7))
    assert r["edge_denominator"] == pytest.approx(r["q"] * r["noisy_edges"])
    # the memory cap on the secret sample q M
    monkey_cap = privacy.DPSGD_MAX_PAIRS_PER_STEP
    try:
        privacy.DPSGD_MAX_PAIRS_PER_STEP = 50
        r = privacy.dpsgd_edge_rate(g, epsilon=20.0, delta=2e-4, edges_per_step=100, source=quiet_source(7))
        assert r["q"] == pytest.approx(50 / privacy.n_pairs(60)) and r["edge_denominator"] == pytest.approx(
            r["q"] * r["noisy_edges"])
    finally:
        privacy.DPSGD_MAX_PAIRS_PER_STEP = monkey_cap
    # sanity mode (NOT PRIVATE): the exact count, no budget
    r = privacy.dpsgd_edge_rate(g, epsilon=math.inf, delta=1e-6, edges_per_step=100, source=quiet_source(0))
    assert r["noisy_edges"] == m and r["count_sigma"] == 0 and r["q"] == pytest.approx(100 / m)
    for bad, match in [({"share": 0.0}, "share"), ({"share": 1.0}, "share"), ({"edges_per_step": 0}, "edges_per_step"),
                       ({"edges_per_step": float("inf")}, "edges_per_step")]:
        with pytest.raises(ValueError, match=match):
            privacy.dpsgd_edge_rate(g, **{"epsilon": 1.0, "delta": 1e-6, "edges_per_step": 100,
                                          "source": quiet_source(0), **bad})
