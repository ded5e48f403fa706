"""Real data layouts at full size (issue 14): the official NUS-WIDE tree with both label folders, and
streamed reads of large image arrays (MATLAB v7.3 / HDF5 and .npz).

The NUS-WIDE tree is fabricated with the release's real folder and file names (Groundtruth/AllLabels/
Labels_<concept>.txt, Groundtruth/TrainTestLabels/Labels_<concept>_Train.txt and _Test.txt,
NUS_WID_Tags/AllTags1k.txt) and small sizes.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 14 of the 81 NUS-WIDE concepts, in file-name order (the loader's column order); the TC-10 ten among them
CONCEPTS = sorted(["airport", "animal", "buildings", "clouds", "grass", "lake", "person", "plants", "sky", "water",
            "window", "zebra", "whales", "toy"])


def _nuswide_tree(root, n=90, seed=0, train_test=True, all_labels=True):
    rng = np.random.default_rng(seed)
    (root / "NUS_WID_Tags").mkdir(parents=True)
    tags = (rng.random((n, 30)) < 0.2).astype(int)
    np.savetxt(root / "NUS_WID_Tags" / "AllTags1k.txt", tags, fmt="%d")
    freq = np.linspace(0.02, 0.5, len(CONCEPTS))[rng.permutation(len(CONCEPTS))]
    labs = (rng.random((n, len(CONCEPTS))) < freq).astype(int)
    if all_labels:
        (root / "Groundtruth" / "AllLabels").mkdir(parents=True)
        for c, name in enumerate(CONCEPTS):
            np.savetxt(root / "Groundtruth" / "AllLabels" / f"Labels_{name}.txt", labs[:, c], fmt="%d")
    if train_test:  # the release's own split: other row counts (here 60% / 40%)
        (root / "Groundtruth" / "TrainTestLabels").mkdir(parents=True)
        cut = int(0.6 * n)
        for c, name in enumerate(CONCEPTS):
            np.savetxt(root / "Groundtruth" / "TrainTestLabels" / f"Labels_{name}_Train.txt", labs[:cut, c], fmt="%d")
            np.savetxt(root / "Groundtruth" / "TrainTestLabels" / f"Labels_{name}_Test.txt", labs[cut:, c], fmt="%d")
    return tags, labs


def _tc10(tags, labs):
    top = np.sort(np.argsort(-labs.sum(0), kind="stable")[:10])
    keep = labs[:, top].sum(1) > 0
    return tags[keep], labs[keep][:, top]


def test_official_nuswide_layout_with_both_label_folders(tmp_path):
    tags, labs = _nuswide_tree(tmp_path)
    ds = data.load_dataset("nuswide", data_dir=str(tmp_path), synthetic_items=0, seed=0)
    want_text, want_labels = _tc10(tags, labs)
    np.testing.assert_array_equal(ds.labels, want_labels)
    np.testing.assert_array_equal(ds.text, want_text.astype(np.float32))
    assert ds.views == ("text",)


def test_official_nuswide_streams_the_tag_matrix(tmp_path, monkeypatch):
    tags, labs = _nuswide_tree(tmp_path, n=100, seed=1)
    monkeypatch.setattr(data, "TEXT_CHUNK_ROWS", 7)  # many blocks, the last one short
    ds = data.load_dataset("nuswide", data_dir=str(tmp_path), synthetic_items=0, seed=0)
    np.testing.assert_array_equal(ds.text, _tc10(tags, labs)[0].astype(np.float32))
    # a low-level feature file is streamed the same way
    feats = np.random.default_rng(2).random((100, 5)).astype(np.float32)
    (tmp_path / "Low_Level_Features").mkdir()
    np.savetxt(tmp_path / "Low_Level_Features" / "Normalized_CH.dat", feats, fmt="%.6f")
    ds = data.load_dataset("nuswide", data_dir=str(tmp_path), synthetic_items=0, seed=0)
    keep = labs[:, np.sort(np.argsort(-labs.sum(0), kind="stable")[:10])].sum(1) > 0
    np.testing.assert_allclose(ds.image, feats[keep], atol=1e-6)


def test_official_nuswide_without_train_test_folder(tmp_path):
    tags, labs = _nuswide_tree(tmp_path, train_test=False)
    ds = data.load_dataset("nuswide", data_dir=str(tmp_path), synthetic_items=0, seed=0)
    np.testing.assert_array_equal(ds.labels, _tc10(tags, labs)[1])


def test_official_nuswide_only_train_test_labels_is_a_clear_error(tmp_path):
    _nuswide_tree(tmp_path, all_labels=False)
    with pytest.raises(data.DataError, match="needs the labels of every image: Groundtruth/AllLabels"):
        data.load_dataset("nuswide", data_dir=str(tmp_path), synthetic_items=0, seed=0)


@pytest.mark.parametrize("rows", [80, 95])
def test_official_nuswide_row_count_mismatch_names_the_file(tmp_path, rows):
    _nuswide_tree(tmp_path)
    np.savetxt(tmp_path / "NUS_WID_Tags" / "AllTags1k.txt", np.zeros((rows, 30), int), fmt="%d")
    with pytest.raises(data.DataError, match=r"AllTags1k.txt has (more than )?\d+ rows but "
                                             r"Groundtruth/AllLabels/Labels_airport.txt has 90"):
        data.load_dataset("nuswide", data_dir=str(tmp_path), synthetic_items=0, seed=0)
