"""Post-processing of the release into targets: calibrated hard targets, feature normalisation."""
import numpy as np

import hashing
import privacy


def _synthetic_graph(n=400, r=8, c=0.3, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, r))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    w = np.eye(r) * 0.8
    return privacy.SyntheticGraph(z=z, w=w, c=c, support=np.zeros((0, 2), dtype=np.int64), q=np.zeros(0))


def test_calibrated_targets_match_released_density():
    g = _synthetic_graph(c=0.3)
    hard = g.calibrated(seed=1)
    idx = np.arange(400)
    t = hard(idx)
    off = t[~np.eye(400, dtype=bool)]
    assert set(np.unique(off)) <= {0.0, 1.0}
    assert abs(off.mean() - 0.3) < 0.02          # positives at the released density
    soft = g.targets(idx)[~np.eye(400, dtype=bool)]
    assert soft[off == 1].min() >= soft[off == 0].max()  # a threshold of the soft targets


def test_feature_normalisations():
    x = np.abs(np.random.default_rng(0).normal(size=(50, 7))).astype(np.float32)
    s = hashing.Standardizer.fit(x, mode="standardize")(x)
    assert np.allclose(s.mean(0), 0, atol=1e-5) and np.allclose(s.std(0), 1, atol=1e-3)
    l2 = hashing.Standardizer.fit(x, mode="l2")(x)
    assert np.allclose(np.linalg.norm(l2, axis=1), 10.0, rtol=1e-5)
    assert np.array_equal(hashing.Standardizer.fit(x, mode="none")(x), x)


def test_calibrated_threshold_uses_combined_scores():
    g = _synthetic_graph(c=0.3)
    g.support = np.array([[0, 1], [2, 3], [4, 5]])
    g.q = np.array([0.99, 0.99, 0.99])
    t = g.calibrated(seed=0)(np.arange(400))
    assert t[0, 1] == t[2, 3] == t[4, 5] == 1.0
    assert abs(t[~np.eye(400, dtype=bool)].mean() - 0.3) < 0.02


def test_gdp_mu_is_on_the_safe_side():
    for eps in (0.1, 1.0, 3.0):
        for delta in (1e-5, 1e-8):
            mu = privacy.gdp_mu(epsilon=eps, delta=delta)
            assert privacy.gdp_delta(mu=mu, epsilon=eps) <= delta


def test_measure_rejects_minus_infinity():
    import pytest

    class G:
        n = 4

        def rows(self, a, b):
            return np.zeros((b - a, 4), dtype=bool)

    with pytest.raises(ValueError, match="epsilon=-inf"):
        privacy.measure(G(), np.eye(4), epsilon=-np.inf, delta=1e-5, max_degree=2, shares={"edges": 1.0},
                        source=privacy.NoiseSource(insecure_seed=0, quiet=True))


def test_hashers_for_all_code_lengths_and_loss_switches():
    import torch
    for bits in (16, 32, 64, 128):
        m = hashing.DualStreamHasher({"image": 6, "text": 5}, bits, hidden=16, cnn_views=())
        codes = hashing.encode(m, {"image": np.zeros((3, 6)), "text": np.ones((3, 5))}, device=torch.device("cpu"))
        assert codes["image"].shape == (3, bits) and set(np.unique(codes["text"])) <= {0, 1}
    h = {"image": torch.tanh(torch.randn(8, 16)), "text": torch.tanh(torch.randn(8, 16))}
    t = torch.rand(8, 8)
    full, parts = hashing.holistic_loss(h, t, hashing.LossWeights())
    assert set(parts) == {"first_order", "triangle", "alignment", "quantization", "balance"}
    for term in parts:
        w = hashing.LossWeights(**{term: 0.0})
        _, p = hashing.holistic_loss(h, t, w)
        assert term not in p                     # each term switches off
    try:
        hashing.DualStreamHasher({"text": 5}, 12, hidden=4)
        raise AssertionError("bits=12 accepted")
    except ValueError as e:
        assert "bits=12" in str(e)


def test_balanced_pairwise_likelihood():
    import torch
    logits = torch.tensor([[2.0, -1.0], [0.5, -3.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    got = hashing._pairwise_bce(logits, target, True)
    p = 0.25
    ls = torch.nn.functional.logsigmoid
    pos = -(ls(torch.tensor(2.0))) / 4 / p
    neg = -(ls(-torch.tensor([-1.0, 0.5, -3.0]))).sum() / 4 / (1 - p)
    assert torch.isclose(got, 0.5 * (pos + neg))
    plain = hashing._pairwise_bce(logits, target, False)
    assert torch.isclose(plain, torch.nn.functional.binary_cross_entropy_with_logits(logits, target))


def test_calibrate_rho_round_trip():
    for eps in (0.1, 1.0, 4.0):
        for delta in (1e-5, 1e-8):
            rho = privacy.calibrate_rho(epsilon=eps, delta=delta)
            got = privacy.zcdp_to_epsilon(rho, delta=delta)
            assert got <= eps and abs(got - eps) < 1e-6 * eps
            # and rho is below the closed-form inverse of the weaker Bun-Steinke bound's epsilon
            assert privacy.zcdp_to_epsilon_bs16(rho, delta=delta) >= eps
