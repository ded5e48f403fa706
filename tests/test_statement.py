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
Noise: continuous Gaussian (floating point, see the caveat below), from the operating system's secure random source.
Measurements (sensitivity is the change from one edge; budget share is of mu^2):
  - degrees   (clipped graph, 10 values): L2 sensitivity 2, sigma 26.5, budget share 0.100
  - bilinear  (unclipped graph, 16 values): Frobenius sensitivity 2, sigma 9.75, budget share 0.900
Accounting: composition of Gaussian mechanisms as mu-GDP with mu = 0.236700 (Dong, Roth & Su, arXiv 1905.02383, Cor. 3.3), converted exactly to (epsilon, delta) by Cor. 2.13 (Balle & Wang, arXiv 1805.06530, Thm. 8).
Floating-point caveat: continuous Gaussian noise is drawn in floating point (Box-Muller on 53-bit uniforms) and added in float64. Floating-point samplers can leak information through the low-order bits of their outputs (Mironov, "On Significance of the Least Significant Bits for Differential Privacy", CCS 2012; shown there for Laplace noise, and the same concern applies to Gaussian noise); this implementation does not defend against that, and the guarantee above is for ideal real-valued noise.
Not covered: running time and memory (stage timings depend weakly on the private graph and are outside the guarantee); and hyper-parameters (epsilon split, D, ranks, training settings) chosen by looking at results computed from this private graph spend privacy budget that this statement does not count.
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
    assert text.startswith("NOT PRIVATE: --insecure-seed: the DP noise comes from a fixed seed")
    assert "FIXED SEED (--insecure-seed): NOT SECURE." in text and "satisfies" not in text
    assert "Protected:" not in text and "NOTHING is protected in this run" in text
    text = privacy.privacy_statement(_release(secure=False, epsilon=float("inf")), dataset="s",
                                     graph_kind="label", method="dmpmh")
    assert text.startswith("NOT PRIVATE: epsilon = infinity")
    assert "differential privacy at the edge level" not in text and "satisfies" not in text
    # what would be protected is said conditionally, never as a fact of this run
    assert "\nProtected:" not in text and "Would be protected by a run at a finite epsilon" in text
    # no noise was drawn, and nothing downstream carries a guarantee
    assert "Noise: none (sigma = 0)." in text and "Gaussian" not in text.split("Measurements")[0]
    assert "carry the same guarantee" not in text and "carry NO privacy guarantee" in text


def test_statement_names_every_further_reason_and_claims_nothing():
    text = privacy.privacy_statement(_release(), dataset="s", graph_kind="label", method="dmpmh",
                                     not_private=["--attack-eval-not-private: x", "--protocol standard: y"])
    assert text.splitlines()[0] == "NOT PRIVATE: --attack-eval-not-private: x; --protocol standard: y."
    assert "satisfies" not in text and "does NOT have that guarantee" in text
    # marking twice names each reason once
    again = privacy.mark_not_private(text, ["--protocol standard: y", "z"])
    assert again.splitlines()[0] == "NOT PRIVATE: --attack-eval-not-private: x; --protocol standard: y; z."
    assert privacy.mark_not_private("This run satisfies (1, 0)-differential privacy at the edge level.\n", ["r"]) \
        == ("NOT PRIVATE: r.\nThe mechanism is calibrated for (1, 0)-differential privacy at the edge level, but this "
            "run does NOT have that guarantee (see the first line).\n")


def test_statement_names_floating_point_timing_and_tuning_caveats():
    text = privacy.privacy_statement(_release(), dataset="s", graph_kind="label", method="dmpmh")
    assert "Mironov" in text and "CCS 2012" in text and "low-order bits" in text
    assert "running time" in text and "outside the guarantee" in text
    assert "spend privacy budget that this statement does not count" in text
    text = privacy.privacy_statement(_release(noise="discrete"), dataset="s", graph_kind="label", method="dmpmh")
    assert "exact discrete Gaussian on the integer statistics (degrees)" in text
    assert "bilinear release stays CONTINUOUS" in text and "Mironov" in text


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
