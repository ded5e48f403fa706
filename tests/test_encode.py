"""A trained run: model.pt opens with plain torch.load, load_run rebuilds it, `encode` reproduces its codes."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import dmpmh
import hashing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--synthetic-items", "400", "--epochs", "2", "--proj-dim", "16", "--hidden", "64",
        "--support-k", "8", "--max-degree", "8", "--batch-size", "64", "--insecure-seed", "3"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("encode")
    m = dmpmh.run(dmpmh.parse_config(TINY + ["--out-dir", str(out / "runs")]))
    return m["run_dir"]


def test_model_pt_opens_with_default_torch_load(tiny_run):
    rec = torch.load(os.path.join(tiny_run, "model.pt"))  # weights_only=True, the default
    assert set(rec["state_dict"]) and rec["bits"] == 32 and rec["views"] == ["image", "text"]
    assert json.loads(json.dumps(rec["config"])) == rec["config"]  # JSON-serialisable
    assert rec["config"]["synthetic_items"] == 400 and rec["config"]["method"] == "dmpmh"
    for s in rec["scalers"].values():
        assert isinstance(s["mean"], torch.Tensor) and isinstance(s["std"], torch.Tensor)


@pytest.mark.parametrize("items", ["database", "query"])
def test_encode_reproduces_the_runs_codes_bit_for_bit(tiny_run, tmp_path, items):
    out = tmp_path / "codes.npz"
    assert dmpmh.main(["encode", "--run", tiny_run, "--dataset", "synthetic", "--items", items,
                       "--out", str(out)]) == 0
    mine, theirs = np.load(out), np.load(os.path.join(tiny_run, "codes.npz"))
    keys = [k for k in theirs.files if k.startswith(items + "_")] + ["bits"]
    assert sorted(mine.files) == sorted(keys)
    for k in keys:
        assert mine[k].dtype == theirs[k].dtype and np.array_equal(mine[k], theirs[k]), k
    assert not os.path.exists(str(out) + ".tmp")


def test_load_run_and_index_file(tiny_run, tmp_path):
    trained = hashing.load_run(tiny_run)
    assert trained.views == ("image", "text") and not trained.model.training
    stored = np.load(os.path.join(tiny_run, "codes.npz"))
    pick = stored["database_index"][[5, 0, 17]]
    (tmp_path / "idx.txt").write_text("\n".join(str(i) for i in pick) + "\n")
    out = tmp_path / "some.npz"
    assert dmpmh.main(["encode", "--run", tiny_run, "--items", str(tmp_path / "idx.txt"), "--out", str(out)]) == 0
    got = np.load(out)
    assert np.array_equal(got["items_index"], pick)
    assert np.array_equal(got["items_text"], stored["database_text"][[5, 0, 17]])
    ds = __import__("data").make_synthetic(400, seed=0)
    codes = trained.encode({"image": ds.image[pick], "text": ds.text[pick]})
    assert np.array_equal(np.packbits(codes["image"], axis=1), stored["database_image"][[5, 0, 17]])


@pytest.mark.parametrize("make, words", [
    (lambda d: str(d / "nowhere"), "no such directory"),
    (lambda d: str(d), "no model.pt"),
])
def test_bad_run_dir_exit_2(tmp_path, make, words):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "dmpmh.py"), "encode", "--run", make(tmp_path),
                        "--out", str(tmp_path / "c.npz")], capture_output=True, text=True, cwd=tmp_path,
                       timeout=300)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0]
    assert not (tmp_path / "c.npz").exists()


def test_bad_index_file_exit_2(tiny_run, tmp_path, capsys):
    (tmp_path / "idx.txt").write_text("3\n99999\n")
    assert dmpmh.main(["encode", "--run", tiny_run, "--items", str(tmp_path / "idx.txt"),
                       "--out", str(tmp_path / "c.npz")]) == 2
    assert "indices must be in 0..399" in capsys.readouterr().err


def test_old_model_pt_says_retrain(tmp_path, capsys):
    run = tmp_path / "old"
    run.mkdir()
    torch.save({"state_dict": {}, "scalers": {"text": ("l2", np.zeros(3), np.ones(3))}}, run / "model.pt")
    assert dmpmh.main(["encode", "--run", str(run), "--out", str(tmp_path / "c.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "retrain the run" in err[0]
