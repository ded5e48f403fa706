"""Choices made from the release: the rank of the semantic fit, and its fallback to public structure."""
import os

import numpy as np
import pytest

import data
import privacy


def _z(n=300, r=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, r)) * (1.0 / np.arange(1, r + 1)) ** 0.5  # decreasing variance, like a PCA
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _graph(adj):
    adj = np.asarray(adj, dtype=bool)
    return data.PrivateGraph(n=len(adj), kind="test", _adj=adj)


def _release(adj, z, epsilon, seed=0):
    return privacy.measure(_graph(adj), z, epsilon=epsilon, delta=1e-6, max_degree=8,
                           shares={"edges": 0.05, "bilinear": 0.95},
                           source=privacy.NoiseSource(insecure_seed=seed, quiet=True))


def _planted(z, k=2, c=0.1):
    """A graph whose edges follow the leading k public directions: signal the fit can find."""
    score = z[:, :k] @ z[:, :k].T
    adj = score > np.quantile(score, 1 - c)
    np.fill_diagonal(adj, False)
    return adj | adj.T


def test_spike_formulas_match_monte_carlo():
    # a spike theta u u^T above a Wigner matrix with edge e = 2 s sqrt(k): top eigenvalue ~ theta + e^2/(4 theta),
    # squared overlap ~ 1 - e^2/(4 theta^2) (Benaych-Georges & Nadakuditi); fit_semantic inverts both
    rng = np.random.default_rng(4)
    k, s = 600, 0.7
    edge = 2 * s * np.sqrt(k)
    u = rng.normal(size=k)
    u /= np.linalg.norm(u)
    for theta in (0.8 * edge, 1.5 * edge):
        tops, overlaps = [], []
        for _ in range(5):
            g = rng.normal(size=(k, k)) * s
            x = (g + g.T) / np.sqrt(2) + theta * np.outer(u, u)  # off-diagonal variance s^2
            vals, vecs = np.linalg.eigh(x)
            tops.append(vals[-1])
            overlaps.append((vecs[:, -1] @ u) ** 2)
        assert abs(np.mean(tops) - (theta + edge ** 2 / (4 * theta))) < 0.03 * edge
        assert abs(np.mean(overlaps) - (1 - edge ** 2 / (4 * theta ** 2))) < 0.06
    # and the pure-noise edge itself
    g = rng.normal(size=(k, k)) * s
    assert abs(np.linalg.eigvalsh((g + g.T) / np.sqrt(2))[-1] - edge) < 0.05 * edge


def test_pure_noise_rarely_clears_the_noise_edge():
    # an empty graph: the released moments are Gaussian noise alone (and the density about 0)
    z = _z(n=200, r=32)
    empty = np.zeros((200, 200), dtype=bool)
    passed = sum(privacy.fit_semantic(_release(empty, z, eps, seed), z)[2]["rank"] > 0
                 for seed in range(40) for eps in (0.5, 4.0))
    assert passed <= 2, passed


def test_rank_is_zero_for_graphs_independent_of_the_features():
    # random graphs: even exact moments (epsilon inf) hold sampling noise of the one graph drawn
    z = _z()
    rng = np.random.default_rng(3)
    passed, trials = 0, 0
    for density in (0.02, 0.1, 0.3):
        for eps in (1.0, 8.0, np.inf):
            for seed in range(5):
                adj = np.triu(rng.random((300, 300)) < density, 1)
                rep = privacy.fit_semantic(_release(adj | adj.T, z, eps, seed), z)[2]
                passed += rep["rank"] > 0
                trials += 1
                assert rep["rank_chosen_by"].startswith("release")
    assert passed <= 2, (passed, trials)


def test_rank_is_positive_when_the_graph_follows_public_directions():
    z = _z()
    adj = _planted(z)
    for eps in (1.0, 4.0, np.inf):  # two public directions carry the planted edges: found at every eps
        w, _, rep = privacy.fit_semantic(_release(adj, z, eps), z)
        assert rep["rank"] >= 1 and rep["fit_block"] >= 2
        assert np.linalg.matrix_rank(w, tol=1e-9 * np.abs(w).max()) == rep["rank"]
        # the fitted scores rank the planted edges first
        score = z @ w @ z.T
        iu = np.triu_indices(len(z), 1)
        top = np.argsort(-score[iu])[:int(adj[iu].sum())]
        assert adj[iu][top].mean() > 0.7


def test_rank_zero_gives_a_zero_fit_and_an_override_is_kept():
    z = _z()
    rel = _release(_planted(z), z, 4.0)
    w0, c0, rep0 = privacy.fit_semantic(rel, z, rank=0)
    assert rep0 == {"rank": 0, "rank_chosen_by": "explicit override"} and not w0.any()
    w3, c3, _ = privacy.fit_semantic(rel, z, rank=3)
    assert c3 == c0 and w3[:3, :3].any() and not w3[3:].any() and not w3[:, 3:].any()
    with pytest.raises(ValueError, match="rank"):
        privacy.fit_semantic(rel, z, rank=-1)


# --------------------------------------------------------------------------- the pipeline

import dmpmh  # noqa: E402

TINY = ["--synthetic-items", "600", "--epochs", "3", "--proj-dim", "32", "--hidden", "64", "--support-k", "8",
        "--max-degree", "8", "--batch-size", "100", "--insecure-seed", "3", "--bits", "16"]


class _Sealed:
    """A private graph that refuses every read once sealed."""

    def __init__(self, graph):
        self.graph, self.n, self.kind, self.sealed = graph, graph.n, graph.kind, False

    def rows(self, a, b):
        assert not self.sealed, "the private graph was read after the measurements were released"
        return self.graph.rows(a, b)

    def has_edge(self, i, j):
        assert not self.sealed, "the private graph was read after the measurements were released"
        return self.graph.has_edge(i, j)


def test_every_choice_after_the_release_reads_only_the_release_and_public_data(tmp_path, monkeypatch):
    # rank, fallback, pair balance and targets are chosen after measure(): seal the graph there
    sealed = []
    build, measure = data.build_private_graph, privacy.measure

    def build_sealed(*a, **k):
        sealed.append(_Sealed(build(*a, **k)))
        return sealed[-1]

    def measure_then_seal(graph, *a, **k):
        release = measure(graph, *a, **k)
        graph.sealed = True
        return release

    monkeypatch.setattr(data, "build_private_graph", build_sealed)
    monkeypatch.setattr(privacy, "measure", measure_then_seal)
    for graph in ("label", "interact"):
        m = dmpmh.run(dmpmh.parse_config(TINY + ["--graph", graph, "--out-dir", str(tmp_path)]))
        assert sealed[-1].sealed
        syn = m["synthesis"]
        assert {"fit_rank", "use_private", "pair_balance", "targets"} <= set(syn)
        assert syn["pair_balance_because"].startswith("auto") and syn["targets_because"].startswith("auto")
        statement = open(os.path.join(m["run_dir"], "privacy.txt")).read()
        assert "Choices made after the release" in statement and f"semantic fit rank {syn['fit_rank']} of" in statement


def _random_graph_file(path, n, density, seed):
    rng = np.random.default_rng(seed)
    i, j = np.triu_indices(n, 1)
    keep = rng.random(len(i)) < density
    np.savez(path, edges=np.stack([i[keep], j[keep]], 1))
    return str(path)


def test_a_graph_of_random_edges_does_no_harm(tmp_path):
    """Issue 13: a graph independent of everything carries no signal; DMP-MH must then train as well as the
    public-only model (by design it falls back to the public prior: the same targets, the same codes)."""
    for density in (0.02, 0.3):
        f = _random_graph_file(tmp_path / f"random{density}.npz", 600, density, seed=11)
        base = TINY + ["--graph-file", f, "--out-dir", str(tmp_path)]
        pub = dmpmh.run(dmpmh.parse_config(base + ["--method", "public", "--public-graph", "knn",
                                                   "--pair-balance", "true"]))
        dm = dmpmh.run(dmpmh.parse_config(base + ["--epsilon", "1"]))
        assert dm["synthesis"]["use_private"] is False and dm["synthesis"]["fit_rank"] == 0
        for task, r in pub["retrieval"].items():
            assert dm["retrieval"][task]["map"] >= r["map"] - 0.01, (density, task)


def _synth(z, w, c):
    return privacy.SyntheticGraph(z=z, w=w, c=c, support=np.zeros((0, 2), dtype=np.int64), q=np.zeros(0),
                                  report={"rank": 2, "fit_block": len(w), "rank_search": {}})


def test_prior_agreement_decides_the_prior_and_the_targets():
    z = _z(n=400, r=16)
    pairs = privacy.public_support(z, k=10)
    w_prior = np.zeros((16, 16))
    w_prior[:4, :4] = np.eye(4)                       # links along the leading public directions, as the kNN prior
    w_other = np.zeros((16, 16))
    w_other[0, 5] = w_other[5, 0] = 1.0               # links along a pairing the public kNN graph does not make
    for scale in (1.0, 0.05):                         # a fit shrunk 20x by the noise: the cosine must not move
        on = privacy.training_choices(_synth(z, scale * w_prior, 0.3), prior_pairs=pairs)
        off = privacy.training_choices(_synth(z, scale * w_other, 0.3), prior_pairs=pairs)
        assert on["prior_agreement"] > privacy.PRIOR_AGREEMENT > off["prior_agreement"], (on, off)
        assert on["public_prior"] and on["targets"] == "soft"              # beside the prior: soft
        assert not off["public_prior"] and off["targets"] == "calibrated"  # dense, alone: calibrated
    sparse = privacy.training_choices(_synth(z, w_other, 0.02), prior_pairs=pairs)
    assert not sparse["public_prior"] and sparse["pair_balance"] and sparse["targets"] == "soft"
    explicit = privacy.training_choices(_synth(z, w_other, 0.02), targets="calibrated", prior_pairs=pairs)
    assert explicit["targets"] == "calibrated" and explicit["targets_because"] == "explicit"
    none_kept = privacy.SyntheticGraph(z=z, w=np.zeros((16, 16)), c=0.3, support=np.zeros((0, 2), dtype=np.int64),
                                       q=np.zeros(0), report={"rank": 0, "rank_search": {}})
    nothing = privacy.training_choices(none_kept, prior_pairs=pairs)
    assert not nothing["use_private"] and nothing["public_prior"] and nothing["pair_balance"]


def test_prior_agreement_is_a_cosine():
    z = _z(n=200, r=8)
    pairs = privacy.public_support(z, k=5)
    zz = z.astype(np.float64)
    n = len(z)
    p = np.zeros((n, n))
    p[pairs[:, 0], pairs[:, 1]] = p[pairs[:, 1], pairs[:, 0]] = 1
    cp = p.sum() / (n * (n - 1))
    ref = zz.T @ (p - cp * (np.ones((n, n)) - np.eye(n))) @ zz   # the prior's centred moments, written out densely
    assert privacy.prior_agreement(z, ref, pairs) == pytest.approx(1.0)
    assert privacy.prior_agreement(z, -ref, pairs) == pytest.approx(-1.0)
    assert privacy.prior_agreement(z, 3 * ref[:4, :4], pairs, k=4) == pytest.approx(1.0)
    assert np.isnan(privacy.prior_agreement(z, np.zeros((8, 8)), pairs))
