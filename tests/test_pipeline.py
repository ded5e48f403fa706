"""End-to-end pipeline, CLI errors, data formats, and the label-flow guard."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import data
import dmpmh

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data")
TINY = ["--synthetic-items", "400", "--epochs", "2", "--proj-dim", "16", "--hidden", "64",
        "--support-k", "8", "--max-degree", "8", "--batch-size", "64", "--insecure-seed", "3"]


def run_cli(args, tmp_path):
    return subprocess.run([sys.executable, os.path.join(ROOT, "dmpmh.py"), *args, "--out-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)


def test_end_to_end_tiny(tmp_path):
    cfg = dmpmh.parse_config(TINY + ["--out-dir", str(tmp_path / "runs")])
    m = dmpmh.run(cfg)
    run_dir = m["run_dir"]
    # TINY uses --insecure-seed (known noise): the run is tagged NOT PRIVATE
    assert os.path.basename(run_dir).endswith("-synthetic-dmpmh-NOT-PRIVATE")
    files = set(os.listdir(run_dir))
    assert {"config.json", "privacy.txt", "metrics.json", "metrics.md", "codes.npz", "model.pt"} <= files
    assert not [f for f in os.listdir(tmp_path / "runs") if f.startswith(".")]  # no partial dirs left
    assert set(m["retrieval"]) == {"I->I", "I->T", "T->I", "T->T"}
    for r in m["retrieval"].values():
        assert 0.0 < r["map"] <= 1.0 and 0.0 < r["map_tie_aware"] <= 1.0
    codes = np.load(os.path.join(run_dir, "codes.npz"))
    assert codes["query_text"].shape == (40, 32 // 8) and codes["query_text"].dtype == np.uint8
    cfg_saved = json.load(open(os.path.join(run_dir, "config.json")))
    assert cfg_saved["epsilon"] == 1.0 and cfg_saved["max_degree"] == 8
    statement = open(os.path.join(run_dir, "privacy.txt")).read()
    assert "(1, 1e-06)-differential privacy" in statement and "D = 8" in statement


def test_cli_prints_statement_and_table(tmp_path):
    r = run_cli(TINY, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "differential privacy at the edge level" in r.stdout
    assert "| T->I |" in r.stdout and "| I->T |" in r.stdout
    assert "WARNING: --insecure-seed" in r.stderr


@pytest.mark.parametrize("args, words", [
    (["--epsilon", "0"], "epsilon=0"),
    (["--epsilon", "-1"], "epsilon=-1"),
    (["--delta", "0"], "delta=0"),
    (["--delta", "1.5"], "delta=1.5"),
    (["--max-degree", "0"], "max_degree"),
    (["--dataset", "cifar"], "unknown dataset 'cifar'"),
    (["--method", "magic"], "unknown method 'magic'"),
    (["--bits", "12"], "bits=12"),
    (["--bits", "0"], "bits=0"),
    (["--dataset", "mirflickr", "--data-dir", "nowhere"], "mirflickr25k-iall.mat"),
    (["--dataset", "nowhere.npz"], "no such file"),
])
def test_bad_input_exit_2(tmp_path, args, words):
    r = run_cli(TINY + args, tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert words in r.stderr
    assert "Traceback" not in r.stderr
    runs = tmp_path / "runs"
    assert not runs.exists() or os.listdir(runs) == []  # nothing half-written


def test_unknown_flag_exit_2(tmp_path):
    r = run_cli(["--epsilom", "1"], tmp_path)
    assert r.returncode == 2 and "unrecognized arguments" in r.stderr


def _npz(path, n=300, seed=0, **over):
    rng = np.random.default_rng(seed)
    arrays = {"labels": (rng.random((n, 5)) < 0.4).astype(np.uint8),
              "text": (rng.random((n, 40)) < 0.1).astype(np.float32),
              "image": rng.normal(size=(n, 12)).astype(np.float32)}
    arrays["labels"][np.arange(n), rng.integers(0, 5, n)] = 1
    arrays.update(over)
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("case, words", [
    ("nan", "NaN or inf"), ("inf", "NaN or inf"), ("rows", "has 299 rows but labels has 300"),
    ("nolabel", "have no label"),
])
def test_bad_data_exit_2(tmp_path, case, words):
    rng = np.random.default_rng(1)
    over = {}
    if case in ("nan", "inf"):
        img = rng.normal(size=(300, 12)).astype(np.float32)
        img[7, 3] = np.nan if case == "nan" else np.inf
        over["image"] = img
    elif case == "rows":
        over["text"] = np.zeros((299, 40), dtype=np.float32)
    elif case == "nolabel":
        lab = np.ones((300, 5), dtype=np.uint8)
        lab[11] = 0
        over["labels"] = lab
    path = _npz(tmp_path / "bad.npz", **over)
    r = run_cli(TINY + ["--dataset", path], tmp_path)
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr


def test_hdf5_mat_needs_h5py(tmp_path, monkeypatch):
    folder = tmp_path / "mir"
    folder.mkdir()
    with open(folder / "mirflickr25k-lall.mat", "wb") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(128, b" "))
    monkeypatch.setitem(sys.modules, "h5py", None)  # simulate h5py not installed
    with pytest.raises(data.DataError, match="needs h5py"):
        data.load_dataset("mirflickr", data_dir=str(folder), synthetic_items=0, seed=0)


def test_dcmh_mat_triplet(tmp_path):
    from scipy.io import savemat
    rng = np.random.default_rng(0)
    lab = (rng.random((60, 4)) < 0.5).astype(np.uint8)
    lab[:, 0] = 1
    savemat(tmp_path / "mirflickr25k-lall.mat", {"LAll": lab})
    savemat(tmp_path / "mirflickr25k-yall.mat", {"YAll": rng.random((60, 9))})
    savemat(tmp_path / "mirflickr25k-iall.mat", {"IAll": rng.random((60, 7))})
    ds = data.load_dataset("mirflickr", data_dir=str(tmp_path), synthetic_items=0, seed=0)
    assert ds.views == ("image", "text") and ds.n == 60
    np.testing.assert_array_equal(ds.labels, lab)
    # raw images (N, 3, H, W) become 32x32 thumbnails and pixel features
    savemat(tmp_path / "mirflickr25k-iall.mat", {"IAll": rng.integers(0, 255, (60, 3, 40, 40)).astype(np.uint8)})
    ds = data.load_dataset("mirflickr", data_dir=str(tmp_path), synthetic_items=0, seed=0)
    assert ds.raw_images.shape == (60, 32, 32, 3) and ds.image.shape == (60, 32 * 32 * 3)


def test_nuswide_official_layout(tmp_path):
    rng = np.random.default_rng(0)
    n = 50
    (tmp_path / "NUS_WID_Tags").mkdir()
    (tmp_path / "Groundtruth" / "AllLabels").mkdir(parents=True)
    np.savetxt(tmp_path / "NUS_WID_Tags" / "AllTags1k.txt", (rng.random((n, 20)) < 0.2).astype(int), fmt="%d")
    freq = np.linspace(0.05, 0.6, 12)
    labs = (rng.random((n, 12)) < freq).astype(int)
    for c in range(12):
        np.savetxt(tmp_path / "Groundtruth" / "AllLabels" / f"Labels_c{c:02d}.txt", labs[:, c], fmt="%d")
    ds = data.load_dataset("nuswide", data_dir=str(tmp_path), synthetic_items=0, seed=0)
    keep = labs[:, np.sort(np.argsort(-labs.sum(0), kind="stable")[:10])].sum(1) > 0
    assert ds.labels.shape == (keep.sum(), 10) and ds.views == ("text",)


def test_split_protocols():
    s = data.make_split(1000, n_query=100, n_train=500, protocol="inductive", seed=4)
    assert len(s.query) == 100 and len(s.train) == 500 and len(s.database) == 400
    assert not (set(s.query) & set(s.train)) and not (set(s.train) & set(s.database))
    assert not (set(s.query) & set(s.database))
    s2 = data.make_split(1000, n_query=100, n_train=500, protocol="inductive", seed=4)
    np.testing.assert_array_equal(s.train, s2.train)
    std = data.make_split(1000, n_query=100, n_train=500, protocol="standard", seed=4)
    assert set(std.train) <= set(std.database) and not (set(std.query) & set(std.database))


def test_knn_graph_is_symmetric_with_min_degree_k():
    rng = np.random.default_rng(0)
    lab = (rng.random((300, 8)) < 0.3).astype(np.uint8)
    lab[:, 0] |= (lab.sum(1) == 0)
    store = data.LabelStore(lab, np.arange(300), allow_train_in_evaluation=False)
    g = data.build_private_graph(store, np.arange(300), kind="knn", knn_k=5)
    a = g.dense()
    assert (a == a.T).all() and not a.diagonal().any() and (a.sum(1) >= 5).all()


def test_labels_read_only_by_graph_construction(tmp_path, monkeypatch):
    stores = []
    original = data.LabelStore

    class Spy(original):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            stores.append(self)

    monkeypatch.setattr(data, "LabelStore", Spy)
    cfg = dmpmh.parse_config(TINY + ["--out-dir", str(tmp_path / "runs")])
    dmpmh.run(cfg)
    (store,) = stores
    graph_reads = [r for r in store.reads if r[0] == "graph"]
    assert graph_reads == [("graph", 200)]              # all training rows, once, to build the graph
    assert all(n_private == 0 for p, n_private in store.reads if p == "evaluation")
    with pytest.raises(RuntimeError):
        store.for_evaluation(np.array([int(np.flatnonzero(store._train)[0])]))


def _imports(module):
    import ast
    tree = ast.parse(open(os.path.join(ROOT, module + ".py")).read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add((node.module or "").split(".")[0])
    return names


def test_one_way_data_flow():
    """hashing sees neither data.py (labels, private graph) nor privacy internals; privacy has no torch."""
    assert not _imports("hashing") & {"data", "privacy", "dmpmh", "evaluate"}
    assert not _imports("privacy") & {"torch", "data", "hashing", "dmpmh"}
    assert not _imports("evaluate") & {"torch", "data", "hashing", "privacy", "dmpmh"}
    assert not _imports("data") & {"torch", "privacy", "hashing", "evaluate", "dmpmh"}


@pytest.mark.skipif(not os.path.exists(os.path.join(SHARED, "mirflickr25k", "mirflickr25k_tags_labels.npz")),
                    reason="../shared/data/mirflickr25k is absent")
def test_single_view_real_mirflickr(tmp_path):
    """Real MIRFlickr tags + labels through the generic .npz path: text stream only, T->T."""
    src = np.load(os.path.join(SHARED, "mirflickr25k", "mirflickr25k_tags_labels.npz"))
    sub = np.random.default_rng(0).choice(len(src["labels"]), 3000, replace=False)
    path = tmp_path / "mir_text_only.npz"
    np.savez(path, text=src["text"][sub], labels=src["labels"][sub])
    cfg = dmpmh.parse_config(["--dataset", str(path), "--n-query", "300", "--n-train", "1500", "--epochs", "8",
                              "--hidden", "256", "--proj-dim", "64", "--insecure-seed", "0",
                              "--out-dir", str(tmp_path / "runs")])
    m = dmpmh.run(cfg)
    assert list(m["retrieval"]) == ["T->T"]
    assert m["retrieval"]["T->T"]["map"] > m["chance_map"] + 0.01


def test_attack_evaluation_only_behind_not_private_flag(tmp_path, capsys):
    m = dmpmh.run(dmpmh.parse_config(TINY + ["--out-dir", str(tmp_path / "a")]))
    assert "attack" not in m
    m = dmpmh.run(dmpmh.parse_config(TINY + ["--attack-eval-not-private", "true", "--out-dir", str(tmp_path / "b")]))
    assert "NOT differentially private" in capsys.readouterr().err
    for a in m["attack"].values():
        assert 0 <= a["auc_codes"] <= 1 and a["advantage"] == pytest.approx(a["auc_codes"] - a["auc_public"])


def test_not_private_runs_are_marked_and_timings_not_saved(tmp_path):
    m = dmpmh.run(dmpmh.parse_config(TINY + ["--epsilon", "inf", "--out-dir", str(tmp_path)]))
    assert m["run_dir"].endswith("-synthetic-dmpmh-NOT-PRIVATE")
    saved = json.load(open(os.path.join(m["run_dir"], "metrics.json")))
    assert saved["not_private"]["outputs"] is True and "timings_s" not in saved
    assert open(os.path.join(m["run_dir"], "privacy.txt")).read().startswith("NOT PRIVATE")


def test_raw_thumbnails_train_the_small_cnn(tmp_path):
    rng = np.random.default_rng(0)
    n = 240
    lab = (rng.random((n, 4)) < 0.4).astype(np.uint8)
    lab[np.arange(n), rng.integers(0, 4, n)] = 1
    imgs = rng.integers(0, 255, (n, 3, 36, 36)).astype(np.uint8)
    path = tmp_path / "raw.npz"
    np.savez(path, image=imgs, text=(rng.random((n, 30)) < 0.2).astype(np.float32), labels=lab)
    m = dmpmh.run(dmpmh.parse_config(TINY + ["--dataset", str(path), "--out-dir", str(tmp_path / "runs")]))
    import torch
    state = torch.load(os.path.join(m["run_dir"], "model.pt"))["state_dict"]  # default weights_only=True
    assert any(k.startswith("encoders.image.conv") for k in state)     # the CNN stream was used
    import hashing  # the loaded CNN run reproduces its database codes
    trained = hashing.load_run(m["run_dir"])
    stored = np.load(os.path.join(m["run_dir"], "codes.npz"))
    ds = data.load_npz(str(path))
    idx = stored["database_index"]
    codes = trained.encode({v: getattr(ds, v)[idx] for v in trained.views})
    assert all(np.array_equal(np.packbits(codes[v], axis=1), stored[f"database_{v}"]) for v in trained.views)
    assert set(m["retrieval"]) == {"I->I", "I->T", "T->I", "T->T"}


@pytest.mark.parametrize("args, words", [
    (["sweep", "--epsilons", "1,-1"], "epsilon=-1.0 must be > 0"),
    (["sweep", "--bits", "7"], "bits=7 must be a positive multiple of 8"),
    (["sweep", "--seeds", "x"], "--seeds 'x' must be comma-separated integers"),
    (["sweep", "--epsilons", ""], "--epsilons is empty"),
    (["sweep", "--methods", ","], "--methods is empty"),
    (["sweep", "--methods", "dmpmh,nonprivate"], "not a private method"),
    (["ablation", "--seeds", "q"], "--seeds 'q' must be comma-separated integers"),
    (["ablation", "--seeds", "-1"], "every value must be >= 0"),
])
def test_subcommand_bad_input_exit_2_writes_nothing(tmp_path, capsys, args, words):
    out = tmp_path / "out"
    assert dmpmh.main(args + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not out.exists()  # checked before the output folder is claimed


@pytest.mark.parametrize("args, words", [
    (["--what", "foo"], "choose sanitize, scaling, map or pipeline"),
    (["--what", "scaling", "--sizes", "abc"], "--sizes 'abc' must be comma-separated integers"),
    (["--what", "scaling", "--sizes", "2500,0"], "every value must be >= 100"),
    (["--what", "map", "--repeats", "0"], "--repeats 0 must be >= 1"),
])
def test_bench_bad_input_exit_2(capsys, args, words):
    assert dmpmh.main(["bench", *args]) == 2
    captured = capsys.readouterr()
    assert words in captured.err and "Traceback" not in captured.err
    assert captured.out == ""  # refused before the header line


def test_run_directory_keeps_the_not_private_tag_when_names_collide(tmp_path):
    cfg = dmpmh.parse_config(["--method", "nonprivate", "--out-dir", str(tmp_path)])
    first = dmpmh.RunDir(cfg)
    second = dmpmh.RunDir(cfg)  # same second, same dataset and method
    assert first.final != second.final
    assert first.final.endswith("-synthetic-nonprivate-NOT-PRIVATE")
    assert second.final.endswith("-NOT-PRIVATE")
    private = dmpmh.RunDir(dmpmh.parse_config(["--out-dir", str(tmp_path)]))
    assert "NOT-PRIVATE" not in private.final


def test_help_shows_defaults():
    p = subprocess.run([sys.executable, "dmpmh.py", "--help"], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert p.returncode == 0
    text = " ".join(p.stdout.split())
    assert "edge-level delta, in (0, 1) (default: 1e-06)" in text
    assert "D, the stable clipping bound (default: 32)" in text
