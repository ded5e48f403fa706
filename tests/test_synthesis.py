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
