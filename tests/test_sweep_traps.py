"""The sweep has no silent traps: clashing --extra options, order-dependent manifests, late errors, wrong headers."""
import json

import pytest

import dmpmh
import evaluate

TINY = ["--synthetic-items", "400", "--epochs", "2", "--proj-dim", "16", "--hidden", "64"]
CELLS = ["--methods", "dmpmh", "--epsilons", "1", "--bits", "8", "--seeds", "0", "--reference", "false"]


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


@pytest.mark.parametrize("extra, words", [
    ("--epsilon 2", "--epsilon (use --epsilons)"),
    ("--eps=2", "--epsilon (use --epsilons)"),       # an abbreviation argparse accepts
    ("--bits 64", "--bits (use --bits)"),
    ("--seed 1", "--seed (use --seeds)"),
    ("--method naive", "--method (use --methods)"),
    ("--out-dir elsewhere", "--out-dir (use --out)"),
])
def test_sweep_extra_may_not_set_what_the_sweep_sets(tmp_path, capsys, extra, words):
    out = tmp_path / "sw"
    assert dmpmh.main(["sweep", *CELLS, "--out", str(out), "--extra", " ".join(TINY) + " " + extra]) == 2
    assert words in one_error_line(capsys)
    assert not out.exists()


def test_ablation_extra_may_not_set_the_seed(tmp_path, capsys):
    out = tmp_path / "abl"
    assert dmpmh.main(["ablation", "--seeds", "0", "--out", str(out), "--extra", "--seed 2"]) == 2
    assert "--seed (use --seeds)" in one_error_line(capsys)
    assert not out.exists()


def test_manifest_is_canonical(tmp_path):
    out = str(tmp_path / "sw")
    dmpmh._claim_output_folder(out, "sweep", ["--epochs", "3", "--hidden", "64"])
    dmpmh._claim_output_folder(out, "sweep", ["--hidden", "64", "--epochs", "3"])        # order does not matter
    dmpmh._claim_output_folder(out, "sweep", ["--hidden=64", "--epochs", "3", "--lr", "1e-3"])  # a default spelled out
    with pytest.raises(ValueError, match=r"epochs: 3 there, 4 now"):
        dmpmh._claim_output_folder(out, "sweep", ["--hidden", "64", "--epochs", "4"])
    # a manifest of the older layout (the option list only) is compared canonically too
    (tmp_path / "sw" / "sweep.json").write_text(json.dumps({"kind": "sweep", "extra": ["--epochs", "3"]}))
    dmpmh._claim_output_folder(out, "sweep", ["--epochs=3"])


def test_bad_dpsgd_batch_pairs_is_found_before_the_first_cell(tmp_path, capsys):
    out = tmp_path / "sw"
    args = ["--methods", "dmpmh,dpsgd", "--epsilons", "1", "--bits", "8", "--seeds", "0", "--reference", "false"]
    extra = " ".join(TINY + ["--dpsgd-batch-pairs", "100000"])  # 200 training items: 19,900 pairs
    assert dmpmh.main(["sweep", *args, "--out", str(out), "--extra", extra]) == 2
    assert "dpsgd_batch_pairs=100000" in one_error_line(capsys)
    assert not out.exists()


def test_bench_defaults_to_synthetic_and_names_the_map_source(monkeypatch, capsys):
    assert dmpmh.BenchConfig().source == "synthetic"
    monkeypatch.setattr(evaluate, "benchmark_map", lambda seed: {"seconds": 1.0})
    assert dmpmh.main(["bench", "--what", "map", "--repeats", "1"]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert "random codes" in head and "mirflickr" not in head
