"""Baselines wired into the CLI: edge randomized response, DP-SGD, naive synthesis; the resumable sweep."""
import json
import math
import os

import numpy as np
import pytest

import data
import dmpmh
import privacy

TINY = ["--synthetic-items", "400", "--epochs", "2", "--proj-dim", "16", "--hidden", "64", "--support-k", "8",
        "--max-degree", "8", "--batch-size", "64", "--insecure-seed", "3", "--dpsgd-steps", "5",
        "--dpsgd-batch-pairs", "256"]


def _graph(n=300, seed=0):
    rng = np.random.default_rng(seed)
    lab = (rng.random((n, 5)) < 0.25).astype(np.uint8)
    lab[:, 0] |= lab.sum(1) == 0
    return data.build_private_graph(data.LabelStore(lab, np.arange(n), allow_train_in_evaluation=False), np.arange(n))


def test_randomized_response_flip_rate_and_debiasing():
    g = _graph()
    adj = g.dense()
    eps = 1.0
    flips, priors = [], []
    for s in range(20):
        rr = privacy.edge_randomized_response(g, epsilon=eps, source=privacy.NoiseSource(insecure_seed=s, quiet=True))
        assert (rr.noisy == rr.noisy.T).all() and not rr.noisy.diagonal().any()
        iu = np.triu_indices(g.n, 1)
        flips.append(float((rr.noisy[iu] != adj[iu]).mean()))
        priors.append(rr.prior)
    p = 1 / (1 + math.exp(eps))
    assert abs(np.mean(flips) - p) < 0.005
    assert abs(np.mean(priors) - adj[np.triu_indices(g.n, 1)].mean()) < 0.01   # the debiased density


def test_randomized_response_likelihood_ratio_is_e_to_the_epsilon():
    """Claim 6 checked by enumeration: for each possible report of the differing pair, the
    probability ratio between neighbouring graphs is exactly e^eps or e^-eps (the rest is identical)."""
    for eps in (0.1, 1.0, 3.0):
        p = 1 / (1 + math.exp(eps))
        for report in (0, 1):
            prob = {bit: (1 - p) if report == bit else p for bit in (0, 1)}
            ratio = prob[1] / prob[0]
            assert math.isclose(max(ratio, 1 / ratio), math.exp(eps), rel_tol=1e-12)


def test_randomized_response_targets_are_posteriors():
    g = _graph()
    rr = privacy.edge_randomized_response(g, epsilon=2.0, source=privacy.NoiseSource(insecure_seed=0, quiet=True))
    t = rr.targets(np.arange(50))
    assert t.min() >= 0 and t.max() <= 1
    assert len(np.unique(t[~np.eye(50, dtype=bool)])) == 2   # one value per released bit
    on = t[rr.noisy[:50, :50]].mean()
    off = t[~rr.noisy[:50, :50] & ~np.eye(50, dtype=bool)].mean()
    assert on > rr.prior > off
    with pytest.raises(ValueError, match="epsilon=inf"):
        privacy.edge_randomized_response(g, epsilon=math.inf, source=privacy.NoiseSource(insecure_seed=0, quiet=True))


@pytest.mark.parametrize("method, words", [("edgerr", "(1, 0)-differential privacy"),
                                           ("dpsgd", "method dpsgd"), ("naive", "Degree clipping: none")])
def test_baseline_methods_run(tmp_path, method, words):
    cfg = dmpmh.parse_config(TINY + ["--method", method, "--out-dir", str(tmp_path)])
    m = dmpmh.run(cfg)
    statement = open(os.path.join(m["run_dir"], "privacy.txt")).read()
    assert words in statement
    assert all(0 < r["map"] <= 1 for r in m["retrieval"].values())


def test_naive_uses_worst_case_triangle_sensitivity():
    g = _graph(60)
    z = np.random.default_rng(0).normal(size=(60, 4))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    r = privacy.measure(g, z, epsilon=1.0, delta=1e-6, max_degree=8, shares={"triangles": 1.0},
                        source=privacy.NoiseSource(insecure_seed=0, quiet=True), clip=False)
    assert r["triangles"].sensitivity == privacy.naive_triangle_sensitivity(n_nodes=60)
    assert r["triangles"].sensitivity > privacy.triangle_sensitivity(max_degree=8)


def test_sweep_is_resumable(tmp_path, capsys):
    args = ["--methods", "dmpmh", "--epsilons", "1", "--bits", "8", "--seeds", "0", "--reference", "false",
            "--out", str(tmp_path / "sw"), "--extra", " ".join(TINY)]
    assert dmpmh.main(["sweep", *args]) == 0
    cell = tmp_path / "sw" / "cells" / "dmpmh_eps1_b8_s0.json"
    assert [p.name for p in (tmp_path / "sw" / "cells").iterdir()] == [cell.name]  # --reference false honoured
    rec = json.loads(cell.read_text())
    assert rec["method"] == "dmpmh" and "I->T" in rec["retrieval"] and rec["graph"] == "label"
    mtime = cell.stat().st_mtime_ns
    capsys.readouterr()
    assert dmpmh.main(["sweep", *args]) == 0          # second call: nothing recomputed
    assert "sweep cell" not in capsys.readouterr().out and cell.stat().st_mtime_ns == mtime
    md = (tmp_path / "sw" / "results.md").read_text()
    assert "| I->T | 8 | dmpmh | 1 |" in md
    # TINY runs use --insecure-seed: every row says it is not private
    assert all(line.endswith("| NOT PRIVATE (--insecure-seed) |") for line in md.splitlines()[2:])
    assert "**NOT PRIVATE**" in (tmp_path / "sw" / "summary.md").read_text()
    assert (tmp_path / "sw" / "privacy_utility_I2T_8bits.png").exists()


def test_sweep_refuses_to_mix_run_options(tmp_path, capsys):
    out = tmp_path / "sw"
    args = ["--methods", "dmpmh", "--epsilons", "1", "--bits", "8", "--seeds", "0", "--reference", "false", "--out", str(out)]
    assert dmpmh.main(["sweep", *args, "--extra", " ".join(TINY)]) == 0
    assert json.loads((out / "sweep.json").read_text())["extra"] == TINY
    capsys.readouterr()
    # another --extra on the same folder would average two experiments under one cell name
    assert dmpmh.main(["sweep", *args, "--extra", " ".join(TINY + ["--max-degree", "4"])]) == 2
    err = capsys.readouterr().err
    assert "--extra" in err and "another --out" in err and "Traceback" not in err
    assert sorted(p.name for p in (out / "cells").iterdir()) == ["dmpmh_eps1_b8_s0.json"]
    # cells without a manifest (unknown options) are not silently reused either
    (out / "sweep.json").unlink()
    assert dmpmh.main(["sweep", *args, "--extra", " ".join(TINY)]) == 2
    assert "missing" in capsys.readouterr().err


def test_sweep_summary_margin_and_retention():
    cells = []
    for s, (d, n, r) in enumerate([(0.70, 0.60, 0.50), (0.72, 0.62, 0.52), (0.74, 0.64, 0.54)]):
        for method, eps, v in [("dmpmh", 1.0, d), ("naive", 1.0, n), ("edgerr", 1.0, r),
                               ("nonprivate", math.inf, 0.80), ("dmpmh", math.inf, 0.78)]:
            cells.append({"method": method, "epsilon": eps, "bits": 32, "seed": s, "chance_map": 0.4,
                          "retrieval": {"T->T": v}})
    md = dmpmh.sweep_summary(cells)
    assert "## T->T, 32 bits (reference 0.8000 (nonprivate, NOT PRIVATE), public-only: not run, chance 0.4000)" in md
    row = [ln for ln in md.splitlines() if ln.startswith("| 1 |")][0].split(" | ")
    # dmpmh first, then baselines alphabetically; no public cells: no retention against them;
    # retention above chance (0.72 - 0.4) / (0.8 - 0.4) = 80%;
    # best baseline naive, margin 0.10, std 0.02 each -> 5.0 std
    assert row[1:4] == ["0.7200 ± 0.0200", "0.5200 ± 0.0200", "0.6200 ± 0.0200"]
    # paired: the per-seed differences are 0.10 every time, so their std is 0 and no ratio is shown
    assert row[4:12] == ["-", "80.0%", "-", "-", "naive", "+0.1000", "+5.0", "- |"]
    # perturb one seed: DMP-MH 0.70, 0.72, 0.77 (std 0.0361) against naive 0.60, 0.62, 0.64 (std 0.02):
    # margin 0.11 -> 0.11 / 0.0361 = 3.1 unpaired; differences 0.10, 0.10, 0.13 (std 0.0173) -> 6.4 paired
    cells[10]["retrieval"]["T->T"] = 0.77
    row = [ln for ln in dmpmh.sweep_summary(cells).splitlines() if ln.startswith("| 1 |")][0].split(" | ")
    assert row[10:12] == ["+3.1", "+6.4 |"]


def test_sweep_summary_public_reference_and_retention_against_it():
    cells = []
    for s, (d, p_knn, p_empty) in enumerate([(0.70, 0.60, 0.50), (0.72, 0.63, 0.52), (0.74, 0.64, 0.54)]):
        for method, eps, v in [("dmpmh", 1.0, d), ("naive", 1.0, d - 0.05), ("nonprivate", math.inf, 0.80)]:
            cells.append({"method": method, "epsilon": eps, "bits": 32, "seed": s, "chance_map": 0.4,
                          "retrieval": {"T->T": v}})
        for variant, v in [("knn-pb", p_knn), ("empty", p_empty)]:
            cells.append({"method": "public", "variant": variant, "epsilon": 0.0, "bits": 32, "seed": s,
                          "chance_map": 0.4, "retrieval": {"T->T": v}})
    refs = dmpmh.sweep_references(cells)[("T->T", 32)]
    assert refs["public_variant"] == "knn-pb" and refs["public"] == pytest.approx(0.6233333, abs=1e-6)
    md = dmpmh.sweep_summary(cells)
    assert "public-only 0.6233 (knn-pb)" in md
    row = [ln for ln in md.splitlines() if ln.startswith("| 1 |")][0].split(" | ")
    # public cells are references, not methods: only dmpmh and naive are columns
    assert row[1:3] == ["0.7200 ± 0.0200", "0.6700 ± 0.0200"]
    # retention vs public (0.72 - 0.62333) / (0.8 - 0.62333) = 54.7%; above chance 80%
    assert row[3:5] == ["54.7%", "80.0%"]
    # vs public: differences 0.10, 0.09, 0.10 -> +0.0967, std 0.00577 -> +16.7 paired std
    assert row[5:7] == ["+0.0967", "+16.7"]


def test_sweep_summary_single_seed_shows_no_std():
    # one seed has no std: "± 0.0000" would claim a precision nobody measured
    cells = [{"method": m, "epsilon": 1.0, "bits": 16, "seed": 0, "chance_map": 0.4, "retrieval": {"I->T": v}}
             for m, v in [("dmpmh", 0.70), ("naive", 0.65)]]
    row = [ln for ln in dmpmh.sweep_summary(cells).splitlines() if ln.startswith("| 1 |")][0].split(" | ")
    assert row[1:3] == ["0.7000 (1 seed)", "0.6500 (1 seed)"]
    assert row[7:11] == ["naive", "+0.0500", "-", "- |"]
    assert dmpmh.mean_std_text([0.5, 0.7]) == "0.6000 ± 0.1414"


def test_sweep_references_include_the_pipeline_without_noise_or_clipping():
    sc = dmpmh.SweepConfig(methods="dmpmh", epsilons="1", bits="32", seeds="0")
    refs = [(c["method"], c["epsilon"]) for c in dmpmh.sweep_cells(sc) if c["epsilon"] == math.inf]
    # issue 6: "the same pipeline with no noise and no clipping" is naive synthesis at epsilon = inf
    # issue 13: DP-SGD's sanity mode too (on sparse graphs it can beat the holistic loss on the true graph)
    assert refs == [("nonprivate", math.inf), ("dmpmh", math.inf), ("naive", math.inf), ("dpsgd", math.inf)]
    # issue 13: the four public-only models (empty / public kNN graph, pair balance off / on)
    pub = [dmpmh.cell_label(c) for c in dmpmh.sweep_cells(sc) if c["method"] == "public"]
    assert pub == ["public-empty", "public-empty-pb", "public-knn", "public-knn-pb"]
    cells = [{"method": m, "epsilon": e, "bits": 32, "seed": 0, "chance_map": 0.4, "retrieval": {"T->T": v}}
             for m, e, v in [("dmpmh", 1.0, 0.7), ("nonprivate", math.inf, 0.75), ("dmpmh", math.inf, 0.76),
                             ("naive", math.inf, 0.80)]]
    md = dmpmh.sweep_summary(cells)
    assert "(reference 0.8000 (naive at epsilon inf, NOT PRIVATE), public-only: not run, chance 0.4000)" in md
    assert "| 75.0% |" in md  # (0.7 - 0.4) / (0.8 - 0.4)
    cells.append({"method": "dpsgd", "epsilon": math.inf, "bits": 32, "seed": 0, "chance_map": 0.4,
                  "retrieval": {"T->T": 0.85}})
    md = dmpmh.sweep_summary(cells)  # the best of the four, whichever it is
    assert "(reference 0.8500 (dpsgd at epsilon inf, NOT PRIVATE), public-only: not run" in md
    assert "| 66.7% |" in md  # (0.7 - 0.4) / (0.85 - 0.4)
    cells = [c for c in cells if c["epsilon"] < math.inf]
    assert "(reference: not run, public-only: not run, chance 0.4000)" in dmpmh.sweep_summary(cells)


def test_sweep_summary_edge_cases():
    cell = lambda m, e, s, v, ch=0.4: {"method": m, "epsilon": e, "bits": 8, "seed": s, "chance_map": ch,
                                       "retrieval": {"T->T": v}}
    row = lambda md: [ln for ln in md.splitlines() if ln.startswith("| 1 |")][0].split(" | ")
    # equal per-seed differences that float rounding makes unequal: no absurd paired ratio
    cells = [cell("dmpmh", 1.0, s, d) for s, d in enumerate((0.8, 0.5, 0.3))]
    cells += [cell("naive", 1.0, s, b) for s, b in enumerate((0.7, 0.4, 0.2))]
    assert row(dmpmh.sweep_summary(cells))[8:11] == ["+0.1000", "+0.4", "- |"]
    # uneven seeds: the margin compares the shared seeds (0 and 1) only
    cells = [cell("dmpmh", 1.0, s, v) for s, v in [(0, 0.60), (1, 0.62), (2, 0.90)]]
    cells += [cell("naive", 1.0, s, v) for s, v in [(0, 0.50), (1, 0.54)]]
    assert row(dmpmh.sweep_summary(cells))[8] == "+0.0900"
    # a reference at chance: retention undefined, not a crash
    cells = [cell("dmpmh", 1.0, 0, 0.5), cell("dmpmh", math.inf, 0, 0.4), cell("naive", 1.0, 0, 0.45)]
    assert row(dmpmh.sweep_summary(cells))[3:5] == ["-", "-"]


def test_sweep_rejects_nonprivate_as_a_method_and_foreign_folders(tmp_path, capsys):
    with pytest.raises(ValueError, match="not a private method"):
        dmpmh.sweep_cells(dmpmh.SweepConfig(methods="dmpmh,nonprivate"))
    out = tmp_path / "x"
    out.mkdir()
    (out / "ablation.json").write_text('{"kind": "ablation", "extra": []}')
    assert dmpmh.main(["sweep", "--methods", "dmpmh", "--epsilons", "1", "--bits", "8", "--seeds", "0",
                       "--out", str(out), "--extra", " ".join(TINY)]) == 2
    assert "already holds ablation cells" in capsys.readouterr().err


def test_ablation_writes_table(tmp_path):
    out = tmp_path / "abl"
    assert dmpmh.main(["ablation", "--seeds", "0", "--out", str(out), "--extra", " ".join(TINY)]) == 0
    md = (out / "ablation.md").read_text()
    for name in dmpmh.ABLATIONS:
        assert f"| {name} |" in md
    assert "| public-only reference (best of the four public models) |" in md
    assert md.splitlines()[0].startswith("# Ablation") and "(NOT PRIVATE: --insecure-seed)" in md.splitlines()[0]
    rows = [line for line in md.splitlines() if line.startswith("| ") and "variant" not in line and "---" not in line]
    assert all(line.endswith("| NOT PRIVATE: --insecure-seed |") for line in rows if "public-only" not in line)
    assert len(list((out / "cells").iterdir())) == len(dmpmh.ABLATIONS) + len(dmpmh.PUBLIC_VARIANTS)


def _spy_graph_reads(monkeypatch, reads, state, flag):
    """Record (method name, state[flag] at the call) for every call of a PrivateGraph method that reads edges."""
    for name in ("rows", "has_edge", "dense", "_upper_edges"):
        orig = getattr(data.PrivateGraph, name)

        def spy(self, *a, _orig=orig, _name=name, **k):
            reads.append((_name, state[flag]))
            return _orig(self, *a, **k)
        monkeypatch.setattr(data.PrivateGraph, name, spy)


def test_dpsgd_warm_start_is_the_public_knn_reference_and_reads_no_private_graph(tmp_path, monkeypatch):
    """--dpsgd-warm-start true trains what --method public --public-graph knn trains (public kNN graph,
    pair balance on), and no method of the private graph is called while it trains (issue 16)."""
    import hashing
    seen, reads, state = [], [], {"warm": False}
    _spy_graph_reads(monkeypatch, reads, state, "warm")
    orig_train = hashing.train_hashing

    def train(features, targets, **kw):
        seen.append((targets, kw["weights"]))
        state["warm"] = True
        try:
            return orig_train(features, targets, **kw)
        finally:
            state["warm"] = False
    monkeypatch.setattr(hashing, "train_hashing", train)
    m = dmpmh.run(dmpmh.parse_config(TINY + ["--method", "dpsgd", "--out-dir", str(tmp_path)]))
    assert len(seen) == 1  # the warm start; DP-SGD itself trains with train_dpsgd
    targets, weights = seen[0]
    assert isinstance(targets, dmpmh.PublicTargets) and targets.kind == "knn"
    assert weights.pair_balance is True
    assert not any(warm for _, warm in reads), reads       # nothing of the private graph during the warm start
    assert any(name == "has_edge" for name, _ in reads)     # ... while DP-SGD does read it (the spy works)
    assert all(0 < r["map"] <= 1 for r in m["retrieval"].values())


def test_dpsgd_auto_clip_reads_no_private_graph_and_is_named_in_the_statement(tmp_path, monkeypatch):
    """--dpsgd-clip auto (the default): C comes from public pairs at the public warm start. Nothing of the
    private graph is read while it is computed, two different private graphs give the same C, the
    mechanism uses it, and the statement names it; an explicit --dpsgd-clip skips the rule (issue 16)."""
    import hashing
    reads, state, got, mech_c = [], {"in_rule": False}, [], []
    _spy_graph_reads(monkeypatch, reads, state, "in_rule")
    orig_rule, orig_mech = hashing.public_clip_norm, privacy.EdgeDPSGD.__init__

    def rule(*a, **k):
        state["in_rule"] = True
        try:
            got.append(orig_rule(*a, **k))
            return got[-1]
        finally:
            state["in_rule"] = False

    def mech(self, **k):
        mech_c.append(k["clip_norm"])
        return orig_mech(self, **k)
    monkeypatch.setattr(hashing, "public_clip_norm", rule)
    monkeypatch.setattr(privacy.EdgeDPSGD, "__init__", mech)
    rng = np.random.default_rng(5)
    edges = rng.integers(0, 400, size=(300, 2))
    np.savez(tmp_path / "random.npz", edges=edges[edges[:, 0] != edges[:, 1]])
    runs = []
    for sampling in ("pairs", "edges"):  # each sampling's rule: Theta's norms under pairs, l+'s under edges
        for extra in ([], ["--graph-file", str(tmp_path / "random.npz")]):
            out = tmp_path / f"run{len(runs)}"
            m = dmpmh.run(dmpmh.parse_config(TINY + ["--method", "dpsgd", "--dpsgd-clip", "auto", "--dpsgd-sampling",
                                                     sampling, "--out-dir", str(out)] + extra))
            runs.append((next(out.iterdir()) / "privacy.txt").read_text())
            assert m["dpsgd"]["clip_norm"] == got[-1] and m["dpsgd"]["clip_rule"].startswith("auto")
    assert len(got) == 4 and got[0] == got[1] and got[2] == got[3]  # public: the private graph does not move C
    assert got[0] > got[2] > 0  # the linked-pair loss's gradients are smaller, and its quantile lower
    assert mech_c == got
    assert not any(in_rule for _, in_rule in reads), reads
    assert any(name == "has_edge" for name, _ in reads)  # DP-SGD itself reads the graph (the spy works)
    for text, c in zip(runs, got):
        assert f"C = {c:.6g} (from public data" in text
    assert "the 90th percentile of ||grad Theta||" in runs[0] and "the 10th percentile of the linked" in runs[2]
    out = tmp_path / "explicit"
    dmpmh.run(dmpmh.parse_config(TINY + ["--method", "dpsgd", "--dpsgd-clip", "2.5", "--out-dir", str(out)]))
    assert len(got) == 4 and mech_c[-1] == 2.5  # the rule was not called
    text = (next(out.iterdir()) / "privacy.txt").read_text()
    assert "C = 2.5 (sensitivity C" in text and "from public data" not in text
    out = tmp_path / "default"
    dmpmh.run(dmpmh.parse_config(TINY + ["--method", "dpsgd", "--out-dir", str(out)]))
    assert len(got) == 5 and mech_c[-1] == got[-1] == got[0]  # the default (auto: pairs on this dense graph)
    assert "(from public data: the 90th percentile" in (next(out.iterdir()) / "privacy.txt").read_text()


def test_dpsgd_clip_option_values_and_canonical_form():
    cfg = lambda v: dmpmh.parse_config(["--dpsgd-clip", v])  # noqa: E731
    assert dmpmh.dpsgd_clip_value(cfg("auto")) is None and dmpmh.dpsgd_clip_value(cfg(" AUTO ")) is None
    assert dmpmh.dpsgd_clip_value(cfg("2.5")) == 2.5 and dmpmh.dpsgd_clip_value(dmpmh.Config()) is None
    for bad in ("0", "-1", "inf", "nan", "large", ""):
        with pytest.raises(ValueError, match="--dpsgd-clip"):
            dmpmh.dpsgd_clip_value(cfg(bad))
    canon = dmpmh.canonical_options
    assert canon(["--dpsgd-clip", "1.0"]) == canon(["--dpsgd-clip", "1"]) != canon([])
    assert canon(["--dpsgd-clip", "AUTO"]) == canon(["--dpsgd-clip", "auto"]) == canon([])


def test_dpsgd_edges_sampling_reads_the_graph_only_through_its_count_and_the_mechanism(tmp_path, monkeypatch, capsys):
    """--dpsgd-sampling edges (issue 16, sixth pass): a noisy edge count sets q, the statement names it and its
    budget, metrics.json records the released count, and the private graph is read only by the count (rows,
    inside privacy.dpsgd_edge_rate) and by the mechanism's lookups (has_edge). 'pairs' keeps q = B / M and
    releases no count."""
    reads, state = [], {"count": False}
    _spy_graph_reads(monkeypatch, reads, state, "count")
    orig = privacy.dpsgd_edge_rate

    def rate(*a, **k):
        state["count"] = True
        try:
            return orig(*a, **k)
        finally:
            state["count"] = False
    monkeypatch.setattr(privacy, "dpsgd_edge_rate", rate)
    m = dmpmh.run(dmpmh.parse_config(TINY + ["--method", "dpsgd", "--dpsgd-sampling", "edges",
                                             "--out-dir", str(tmp_path / "e")]))
    text = (next((tmp_path / "e").iterdir()) / "privacy.txt").read_text()
    rec = m["dpsgd"]
    assert rec["sampling"] == rec["sampling_used"] == "edges"
    assert rec["edge_count"]["count_epsilon"] == pytest.approx(0.05)
    assert rec["q"] == pytest.approx(2048 / max(rec["edge_count"]["noisy_edges"], 2048))
    assert f"released as {rec['edge_count']['noisy_edges']:.1f}" in text and "pair-balanced" in text
    assert "It sets the pair sampling rate q = 2048 / max(released count, 2048)" in text
    claimed = float(text.split("calibrated for (")[1].split(",")[0])  # --insecure-seed: calibrated, not claimed
    assert 0.99 <= claimed <= 1.0 + 1e-9  # count + steps within the target epsilon 1
    assert {name for name, _ in reads} >= {"rows", "has_edge"}
    assert all(in_count for name, in_count in reads if name == "rows")        # rows: the count only
    assert not any(in_count for name, in_count in reads if name != "rows")    # lookups: the mechanism only
    assert "released edge count" in capsys.readouterr().out
    reads.clear()
    m = dmpmh.run(dmpmh.parse_config(TINY + ["--method", "dpsgd", "--dpsgd-sampling", "pairs",
                                             "--out-dir", str(tmp_path / "p")]))
    text = (next((tmp_path / "p").iterdir()) / "privacy.txt").read_text()
    assert "Edge count" not in text and "edge_count" not in m["dpsgd"] and m["dpsgd"]["sampling_used"] == "pairs"
    n_train = int(text.split("' over ")[1].split(" training items")[0])
    assert m["dpsgd"]["q"] == pytest.approx(256 / privacy.n_pairs(n_train))
    assert {name for name, _ in reads} == {"has_edge"}


def test_dpsgd_auto_sampling_follows_the_released_density(tmp_path):
    """--dpsgd-sampling auto (the default): the released density chooses, as DMP-MH's sparse-graph rule does:
    the dense label graph gets 'pairs' (q = B / M), a sparse graph file 'edges' (q from the count); both spend
    the count's share of the budget, and the statement says which was chosen and why."""
    assert dmpmh.Config().dpsgd_sampling == "auto"
    rng = np.random.default_rng(5)
    edges = rng.integers(0, 400, size=(300, 2))
    np.savez(tmp_path / "sparse.npz", edges=edges[edges[:, 0] != edges[:, 1]])
    for extra, want in [([], "pairs"), (["--graph-file", str(tmp_path / "sparse.npz")], "edges")]:
        out = tmp_path / want
        m = dmpmh.run(dmpmh.parse_config(TINY + ["--method", "dpsgd", "--out-dir", str(out)] + extra))
        text = (next(out.iterdir()) / "privacy.txt").read_text()
        rec = m["dpsgd"]
        assert rec["sampling"] == "auto" and rec["sampling_used"] == want
        density = rec["edge_count"]["noisy_edges"] / privacy.n_pairs(int(text.split("' over ")[1].split(" ")[0]))
        assert (density < privacy.SPARSE_DENSITY) == (want == "edges")
        assert f"the released density {density:.4g} is" in text and f"so '{want}'" in text
        assert ("pair-balanced" in text) == (want == "edges")
        assert rec["edge_count"]["count_epsilon"] == pytest.approx(0.05)


def test_dpsgd_edges_sanity_mode_shows_neither_the_exact_count_nor_q(tmp_path, capsys):
    """In sanity mode the count is exact, so neither it nor q (a function of it) is printed or saved."""
    m = dmpmh.run(dmpmh.parse_config(TINY + ["--method", "dpsgd", "--epsilon", "inf",
                                             "--out-dir", str(tmp_path)]))
    run_dir = next(tmp_path.iterdir())
    text = (run_dir / "privacy.txt").read_text()
    out = capsys.readouterr().out
    assert "chosen from the EXACT edge count (not shown)" in text and "rate q =" not in text
    assert "C = " not in text and "(C and the rule not shown)" in text  # C would tell which rule, so the choice
    assert m["dpsgd"]["q"] is None and m["dpsgd"]["sampling_used"] is None and "edge_count" not in m["dpsgd"]
    assert m["dpsgd"]["clip_norm"] is None and "clip norm C =" not in out
    assert "released edge count" not in out and "not printed; NOT PRIVATE" in out
    saved = (run_dir / "metrics.json").read_text()
    assert '"q": null' in saved and "noisy_edges" not in saved
