"""Golden test: the wording of the privacy statement is pinned."""
import numpy as np

import privacy

GOLDEN = """\
This run satisfies (1, 1e-06)-differential privacy at the edge level.
Dataset: synthetic. Method: dmpmh. Private graph: 'label' over 10 training items.
Neighbouring relation: two private graphs on the same training items that differ in exactly one edge (one pair of items linked or not).
Protected: the presence or absence of any single edge of the training graph. Training labels are read only to build that graph, so they are protected edge by edge; changing one item's labels can change many edges at once, and that (node-level privacy) is NOT covered by this guarantee.
Public (not protected): item features (image and text), item identities, the train/query/database split, and everything computed from those alone (projections, clip order, candidate pairs).
Released: the noisy measurements below; the synthetic graph, hashing networks and codes are post-processing of them and carry the same guarantee.
Degree clipping: D = 32, stable mutual top-D under a public order (cosine similarity of public projections, ties by neighbour index).
Noise: Gaussian, from the operating system's secure random source.
Measurements (sensitivity is the change from one edge; budget share is of mu^2):
  - degrees   (clipped graph, 10 values): L2 sensitivity 2, sigma 26.5, budget share 0.100
  - bilinear  (unclipped graph, 16 values): Frobenius sensitivity 2, sigma 9.75, budget share 0.900
Accounting: composition of Gaussian mechanisms as mu-GDP with mu = 0.236700 (Dong, Roth & Su, arXiv 1905.02383, Cor. 3.3), converted exactly to (epsilon, delta) by Cor. 2.13 (Balle & Wang, arXiv 1805.06530, Thm. 8).
"""


def _release(**over):
    m = privacy.Measurement
    kw = dict(measurements={"degrees": m("degrees", np.zeros(10), 2.0, 26.5, 0.1, "L2", True),
                            "bilinear": m("bilinear", np.zeros((4, 4)), 2.0, 9.75, 0.9, "Frobenius", False)},
              epsilon=1.0, delta=1e-6, mu=0.2367, max_degree=32, n_nodes=10, noise="gaussian", secure=True)
    kw.update(over)
    return privacy.Release(**kw)


def test_golden_statement():
    text = privacy.privacy_statement(_release(), dataset="synthetic", graph_kind="label", method="dmpmh")
    assert text == GOLDEN


def test_statement_flags_insecure_and_nonprivate():
    text = privacy.privacy_statement(_release(secure=False), dataset="s", graph_kind="label", method="dmpmh")
    assert "FIXED SEED (--insecure-seed): NOT SECURE." in text
    text = privacy.privacy_statement(_release(secure=False, epsilon=float("inf")), dataset="s",
                                     graph_kind="label", method="dmpmh")
    assert text.startswith("NOT PRIVATE: epsilon = infinity.")
    assert "differential privacy at the edge level" not in text
    # no noise was drawn, and nothing downstream carries a guarantee
    assert "Noise: none (sigma = 0)." in text and "Gaussian" not in text.split("Measurements")[0]
    assert "carry the same guarantee" not in text and "carry NO privacy guarantee" in text


def test_statement_from_a_real_release_matches_its_sigmas():
    adj = np.zeros((8, 8), dtype=bool)
    adj[0, 1:] = adj[1:, 0] = True

    class G:
        n = 8

        def rows(self, a, b):
            return adj[a:b]

    z = np.eye(8, 3)
    r = privacy.measure(G(), z, epsilon=2.0, delta=1e-5, max_degree=3,
                        shares={"degrees": 0.5, "triangles": 0.5}, source=privacy.NoiseSource(insecure_seed=0, quiet=True))
    text = privacy.privacy_statement(r, dataset="toy", graph_kind="label", method="dmpmh")
    for m in r.measurements.values():
        assert f"sigma {m.sigma:.6g}" in text and f"sensitivity {m.sensitivity:.6g}" in text
    assert "(2, 1e-05)-differential privacy" in text and "D = 3" in text
