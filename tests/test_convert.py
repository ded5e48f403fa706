"""`python dmpmh.py convert`: DCMH-style .mat files -> the .npz that `--dataset path.npz` reads.

The .mat files are fabricated here with scipy.io.savemat in DCMH's layout (LAll, YAll as double 0/1,
IAll as features or as MATLAB's H x W x 3 x N raw image stack)."""
import os

import numpy as np
import pytest
import scipy.io

import data
import dmpmh


def fabricate(folder, n=60, c=5, d=40, image=None, seed=0):
    rng = np.random.default_rng(seed)
    lab = (rng.random((n, c)) < 0.3).astype(np.float64)
    lab[np.arange(n), rng.integers(0, c, n)] = 1  # every item has a label
    tags = (rng.random((n, d)) < 0.2).astype(np.float64)
    paths = {"labels": os.path.join(folder, "x-lall.mat"), "text": os.path.join(folder, "x-yall.mat")}
    scipy.io.savemat(paths["labels"], {"LAll": lab})
    scipy.io.savemat(paths["text"], {"YAll": tags})
    if image is not None:
        paths["image"] = os.path.join(folder, "x-iall.mat")
        scipy.io.savemat(paths["image"], {"IAll": image})
    return lab, tags, paths


def convert(capsys, *argv):
    rc = dmpmh.main(["convert", *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_convert_text_and_labels_round_trip(tmp_path, capsys):
    lab, tags, p = fabricate(str(tmp_path))
    out = str(tmp_path / "x.npz")
    rc, stdout, err = convert(capsys, "--text", p["text"], "--labels", p["labels"], "--out", out)
    assert rc == 0, err
    assert f"labels sum to {int(lab.sum())}" in stdout and "60 items" in stdout
    with np.load(out) as z:
        assert sorted(z.files) == ["labels", "text"]
        assert z["labels"].dtype == np.uint8 and z["text"].dtype == np.uint8
        np.testing.assert_array_equal(z["labels"], lab)
        np.testing.assert_array_equal(z["text"], tags)
    ds = data.load_dataset(out, data_dir=None, synthetic_items=0, seed=0)  # what --dataset x.npz reads
    assert ds.n == 60 and ds.views == ("text",)
    np.testing.assert_array_equal(ds.text, tags.astype(np.float32))
    assert not os.path.exists(out + ".tmp")


def test_convert_features_and_raw_images(tmp_path, capsys):
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(60, 12))
    _, _, p = fabricate(str(tmp_path), image=feats)
    out = str(tmp_path / "f.npz")
    rc, _, err = convert(capsys, "--text", p["text"], "--labels", p["labels"], "--image", p["image"], "--out", out)
    assert rc == 0, err
    with np.load(out) as z:
        assert z["image"].dtype == np.float32
        np.testing.assert_allclose(z["image"], feats.astype(np.float32))
    # raw images in MATLAB's own H x W x 3 x N order become the thumbnails a run would make of them
    raw = rng.integers(0, 256, size=(48, 40, 3, 60), dtype=np.uint8)
    os.makedirs(tmp_path / "raw")
    _, _, p = fabricate(str(tmp_path / "raw"), image=raw)
    out = str(tmp_path / "r.npz")
    rc, _, err = convert(capsys, "--labels", p["labels"], "--image", p["image"], "--out", out)
    assert rc == 0, err
    with np.load(out) as z:
        assert sorted(z.files) == ["image", "labels"] and z["image"].shape == (60, 32, 32, 3)
    direct = data.load_mat_triplet(str(tmp_path / "raw"), "x", "x")  # the same files read directly
    via_npz = data.load_npz(out)
    np.testing.assert_array_equal(via_npz.image, direct.image)


@pytest.mark.parametrize("case, words", [
    ("missing", ["--text", "no such file", "YAll"]),
    ("rows", ["x-yall.mat", "59 rows", "60 label rows"]),
    ("nonbinary", ["x-lall.mat", "other than 0 and 1"]),
    ("unlabelled", ["x-lall.mat", "3 of 60 items have no label"]),
    ("key", ["x-yall.mat", "no key 'YAll'"]),
    ("not_npz", ["--out", ".npz"]),
    ("no_folder", ["--out", "does not exist"]),
    ("no_labels", ["--labels", "--out"]),
    ("nan", ["x-yall.mat", "NaN"]),
])
def test_convert_bad_input_one_error_line_exit_2(tmp_path, capsys, case, words):
    lab, tags, p = fabricate(str(tmp_path))
    out = str(tmp_path / "bad.npz")
    argv = ["--text", p["text"], "--labels", p["labels"], "--out", out]
    if case == "missing":
        argv[1] = str(tmp_path / "nope-yall.mat")
    elif case == "rows":
        scipy.io.savemat(p["text"], {"YAll": tags[:59]})
    elif case == "nonbinary":
        lab[0, 0] = 2
        scipy.io.savemat(p["labels"], {"LAll": lab})
    elif case == "unlabelled":
        lab[:3] = 0
        scipy.io.savemat(p["labels"], {"LAll": lab})
    elif case == "key":
        scipy.io.savemat(p["text"], {"tags": tags})
    elif case == "not_npz":
        argv[-1] = str(tmp_path / "bad.mat")
    elif case == "no_folder":
        argv[-1] = str(tmp_path / "nowhere" / "bad.npz")
    elif case == "no_labels":
        argv = argv[:2] + argv[4:]
    elif case == "nan":
        tags[1, 1] = np.nan
        scipy.io.savemat(p["text"], {"YAll": tags})
    rc, stdout, err = convert(capsys, *argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not os.path.exists(out) and not os.path.exists(out + ".tmp")


def test_convert_writes_atomically(tmp_path, capsys, monkeypatch):
    _, _, p = fabricate(str(tmp_path))
    out = str(tmp_path / "x.npz")
    with open(out, "w") as f:
        f.write("an older file")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "savez_compressed", boom)
    rc, _, err = convert(capsys, "--text", p["text"], "--labels", p["labels"], "--out", out)
    assert rc == 2 and "No space left on device" in err and len(err.strip().splitlines()) == 1
    assert open(out).read() == "an older file" and not os.path.exists(out + ".tmp")


def test_convert_one_dcmh_file_holding_every_variable(tmp_path, capsys):
    """DCMH's MIRFlickr demo file FLICKR-25K.mat holds LAll, YAll and the raw images as 'images'."""
    rng = np.random.default_rng(2)
    lab, tags, _ = fabricate(str(tmp_path))
    raw = rng.integers(0, 256, size=(36, 36, 3, 60), dtype=np.uint8)  # MATLAB's H x W x 3 x N
    one = str(tmp_path / "FLICKR-25K.mat")
    scipy.io.savemat(one, {"LAll": lab, "YAll": tags, "images": raw})
    out = str(tmp_path / "flickr.npz")
    rc, stdout, err = convert(capsys, "--labels", one, "--text", one, "--image", one, "--out", out)
    assert rc == 0, err
    with np.load(out) as z:
        assert z["image"].shape == (60, 32, 32, 3) and z["text"].shape == (60, 40)
        np.testing.assert_array_equal(z["labels"], lab)


def test_convert_labels_only_for_bench(tmp_path, capsys):
    lab, _, p = fabricate(str(tmp_path))
    out = str(tmp_path / "nuswide_tc10_labels.npz")
    rc, stdout, err = convert(capsys, "--labels", p["labels"], "--out", out)
    assert rc == 0, err
    assert "labels only" in stdout
    with np.load(out) as z:
        assert z.files == ["labels"]
        np.testing.assert_array_equal(z["labels"], lab)


def test_bench_reads_a_converted_label_file_relative_to_the_working_directory(tmp_path, capsys, monkeypatch):
    _, _, p = fabricate(str(tmp_path), n=80)
    os.makedirs(tmp_path / "shared" / "nuswide")
    rc, _, err = convert(capsys, "--labels", p["labels"], "--out",
                         str(tmp_path / "shared" / "nuswide" / "nuswide_tc10_labels.npz"))
    assert rc == 0, err
    monkeypatch.chdir(tmp_path)
    small = ["--n-train", "80", "--proj-dim", "8", "--support-k", "4", "--max-degree", "4", "--repeats", "1"]
    assert dmpmh.main(["bench", "--source", "nuswide", "--shared-dir", "shared", *small]) == 0
    assert "SANITIZE" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path / "shared")  # the same relative folder, from elsewhere: not found, and said where
    assert dmpmh.main(["bench", "--source", "nuswide", "--shared-dir", "shared", *small]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: shared/nuswide/nuswide_tc10_labels.npz: no such file")
    assert str(tmp_path / "shared") in err[0]
