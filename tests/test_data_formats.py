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


# ---------------------------------------------------------------------------
# Streamed image arrays: MATLAB v7.3 (HDF5) and .npz
# ---------------------------------------------------------------------------

def _has_h5py():
    try:
        import h5py  # noqa: F401
        return True
    except ImportError:
        return False


needs_h5py = pytest.mark.skipif(not _has_h5py(), reason="h5py is not installed (optional: pip install h5py)")
V73_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Wed Dec  2 00:00:00 2026 HDF5 schema 1.00 ."


def _write_v73(path, variables, slab=256):
    """A v7.3-like .mat: HDF5 behind a 512-byte MATLAB header, each variable stored with its dimensions
    reversed (as MATLAB writes column-major arrays), written in slabs of the stored first axis.
    ``variables``: name -> (MATLAB shape, dtype, fill(start, stop) giving stored[start:stop])."""
    import h5py
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, (shape, dtype, fill) in variables.items():
            stored = tuple(reversed(shape))
            d = f.create_dataset(name, shape=stored, dtype=dtype)
            d.attrs["MATLAB_class"] = np.bytes_(np.dtype(dtype).name)
            for s in range(0, stored[0], slab):
                d[s:min(stored[0], s + slab)] = fill(s, min(stored[0], s + slab))
    with open(path, "r+b") as f:
        f.write(V73_HEADER.ljust(116) + bytes(12))


def _whole(variables):
    """The MATLAB-order arrays of _write_v73's variables, in memory (the non-streamed reference)."""
    return {k: np.asarray(fill(0, tuple(reversed(shape))[0])).T for k, (shape, dtype, fill) in variables.items()}


def _triplet(folder, images, labels, text, prefix="mirflickr25k"):
    """A DCMH-style v7.3 triplet; each argument a MATLAB-order array."""
    for key, arr in (("i", images), ("l", labels), ("y", text)):
        _write_v73(folder / f"{prefix}-{key}all.mat", {f"{key.upper()}All": (arr.shape, arr.dtype,
                                                                           lambda s, e, a=arr: a.T[s:e])})


def _ref_thumbs(nhwc):
    from PIL import Image
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(a)).resize((32, 32))) for a in nhwc])


def _small_set(n=37, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 4)) < 0.4).astype(np.uint8)
    labels[:, 0] |= labels.sum(1) == 0
    return rng.integers(0, 256, (n, 40, 44, 3), dtype=np.uint8), labels, rng.random((n, 9)).astype(np.float32)


@needs_h5py
@pytest.mark.parametrize("layout", ["N x 3 x H x W", "H x W x 3 x N"])
def test_v73_raw_images_are_streamed_and_equal_the_whole_read(tmp_path, monkeypatch, layout):
    nhwc, labels, text = _small_set()
    matlab = nhwc.transpose(0, 3, 1, 2) if layout == "N x 3 x H x W" else nhwc.transpose(1, 2, 3, 0)
    _triplet(tmp_path, matlab, labels, text)
    monkeypatch.setattr(data, "STREAM_CHUNK_BYTES", 8 * 40 * 44 * 3)  # 8 images a slab: 5 slabs, the last short
    reads = []
    slab = data._MatlabH5.slab
    monkeypatch.setattr(data._MatlabH5, "slab", lambda self, *a: reads.append((self.ndim, a)) or slab(self, *a))
    ds = data.load_dataset("mirflickr", data_dir=str(tmp_path), synthetic_items=0, seed=0)
    item_axis = 0 if layout == "N x 3 x H x W" else 3
    assert [a for ndim, a in reads if ndim == 4] == [(item_axis, s, min(37, s + 8)) for s in range(0, 37, 8)]
    np.testing.assert_array_equal(ds.raw_images, _ref_thumbs(nhwc))
    monkeypatch.setattr(data, "STREAM_CHUNK_BYTES", 1 << 30)  # the whole array at once, in memory
    feats, thumbs = data._image_view(matlab, n_items=37)
    np.testing.assert_array_equal(ds.raw_images, thumbs)
    np.testing.assert_array_equal(ds.image, feats)
    np.testing.assert_array_equal(ds.labels, labels)
    np.testing.assert_allclose(ds.text, text)


@needs_h5py
def test_v73_feature_vectors_are_streamed(tmp_path, monkeypatch):
    _, labels, text = _small_set()
    feats = np.random.default_rng(3).normal(size=(37, 6))  # float64 in the file, float32 out
    _triplet(tmp_path, feats, labels, text)
    monkeypatch.setattr(data, "STREAM_CHUNK_BYTES", 5 * 6 * 8)
    ds = data.load_dataset("mirflickr", data_dir=str(tmp_path), synthetic_items=0, seed=0)
    assert ds.raw_images is None and ds.image.dtype == np.float32
    np.testing.assert_array_equal(ds.image, feats.astype(np.float32))


def test_v73_without_h5py_names_the_install_line(tmp_path, monkeypatch):
    path = tmp_path / "mirflickr25k-lall.mat"
    path.write_bytes(V73_HEADER.ljust(128) + b"\x89HDF\r\n\x1a\n" + bytes(64))
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py fails
    with pytest.raises(data.DataError, match="needs h5py, which is not installed. Install it with 'pip install h5py'"):
        data.load_dataset("mirflickr", data_dir=str(tmp_path), synthetic_items=0, seed=0)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["stored", "deflated"])
@pytest.mark.parametrize("layout", ["N x 3 x H x W", "N x H x W x 3"])
def test_npz_raw_images_are_streamed(tmp_path, monkeypatch, save, layout):
    nhwc, labels, text = _small_set(seed=1)
    arr = nhwc.transpose(0, 3, 1, 2) if layout == "N x 3 x H x W" else nhwc
    save(tmp_path / "set.npz", image=arr, text=text, labels=labels)
    monkeypatch.setattr(data, "STREAM_CHUNK_BYTES", 6 * 40 * 44 * 3)
    reads = []
    slab = data._NpyStream.slab
    monkeypatch.setattr(data._NpyStream, "slab", lambda self, *a: reads.append(a) or slab(self, *a))
    ds = data.load_dataset(str(tmp_path / "set.npz"), data_dir=None, synthetic_items=0, seed=0)
    assert reads == [(0, s, min(37, s + 6)) for s in range(0, 37, 6)]
    np.testing.assert_array_equal(ds.raw_images, _ref_thumbs(nhwc))
    np.testing.assert_array_equal(ds.raw_images, data._image_view(arr)[1])


def test_npz_fortran_order_images_are_read_whole(tmp_path):
    nhwc, labels, text = _small_set(seed=2)
    np.savez(tmp_path / "set.npz", image=np.asfortranarray(nhwc), text=text, labels=labels)
    ds = data.load_dataset(str(tmp_path / "set.npz"), data_dir=None, synthetic_items=0, seed=0)
    np.testing.assert_array_equal(ds.raw_images, _ref_thumbs(nhwc))


def test_npz_corrupt_image_member_is_one_data_error(tmp_path):
    import zipfile
    nhwc, labels, text = _small_set(seed=3)
    np.savez(tmp_path / "src.npz", image=nhwc, text=text, labels=labels)
    raw = bytearray((tmp_path / "src.npz").read_bytes())
    i = raw.find(b"\x93NUMPY", raw.find(b"image.npy")) + 5000
    raw[i:i + 64] = bytes(64)  # the CRC of the member no longer matches
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    assert zipfile.ZipFile(tmp_path / "bad.npz").testzip() == "image.npy"
    with pytest.raises(data.DataError, match="the array 'image' cannot be read"):
        data.load_dataset(str(tmp_path / "bad.npz"), data_dir=None, synthetic_items=0, seed=0)


PEAK = """
import resource, sys, time
import numpy as np, h5py, PIL.Image, scipy.io
sys.path.insert(0, {root!r})
import data
data.load_dataset("nuswide", data_dir={folder!r}, synthetic_items=0, seed=0)  # warm up the code paths
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ds = data.load_dataset("nuswide", data_dir={big!r}, synthetic_items=0, seed=0)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, after, ds.raw_images.shape[0], ds.raw_images.nbytes + ds.image.nbytes)
"""


@needs_h5py
def test_v73_nuswide_peak_memory_stays_far_below_the_image_array(tmp_path):
    """A fabricated nus-wide-tc10-iall.mat (DCMH names, v7.3, N x 3 x 224 x 224 uint8 as the h5py shape,
    i.e. MATLAB's 224 x 224 x 3 x N) of 2,400 images = 361 MB: loading it raises the peak RSS by the
    output (29 MB) plus one slab (64 MB), far below the array."""
    n, side = 2400, 224
    rng = np.random.default_rng(0)
    labels = (rng.random((n, 10)) < 0.3).astype(np.uint8)
    labels[:, 0] |= labels.sum(1) == 0
    pattern = rng.integers(0, 256, (64, 3, side, side), dtype=np.uint8)

    def write(folder, count):
        folder.mkdir()
        _write_v73(folder / "nus-wide-tc10-iall.mat",
                   {"IAll": ((side, side, 3, count), np.uint8,
                             lambda s, e: pattern[np.arange(s, e) % 64] ^ np.uint8(s % 251))}, slab=64)
        _write_v73(folder / "nus-wide-tc10-lall.mat",
                   {"LAll": ((count, 10), np.uint8, lambda s, e: labels[:count].T[s:e])})

    write(tmp_path / "small", 64)
    write(tmp_path / "big", n)
    array_mib = n * 3 * side * side / 2 ** 20
    code = PEAK.format(root=ROOT, folder=str(tmp_path / "small"), big=str(tmp_path / "big"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    before, after, rows, out_bytes = map(int, r.stdout.split())
    grew_mib = (after - before) / 1024  # ru_maxrss is in KiB on Linux
    print(f"image array {array_mib:.0f} MiB, output {out_bytes / 2 ** 20:.0f} MiB, peak RSS grew {grew_mib:.0f} MiB")
    assert rows == n
    assert grew_mib < out_bytes / 2 ** 20 + 64 + 48  # the output, one 64 MiB slab, slack for h5py and PIL
    assert grew_mib < array_mib / 2.5


@needs_h5py
def test_v73_text_is_streamed(tmp_path, monkeypatch):
    nhwc, labels, _ = _small_set(seed=4)
    text = (np.random.default_rng(5).random((37, 11)) < 0.3).astype(np.float64)  # MATLAB's doubles
    _triplet(tmp_path, nhwc.transpose(0, 3, 1, 2), labels, text)
    monkeypatch.setattr(data, "STREAM_CHUNK_BYTES", 4 * 11 * 8)
    reads = []
    slab = data._MatlabH5.slab
    monkeypatch.setattr(data._MatlabH5, "slab", lambda self, *a: reads.append((self.shape, a)) or slab(self, *a))
    ds = data.load_dataset("mirflickr", data_dir=str(tmp_path), synthetic_items=0, seed=0)
    assert [a for shape, a in reads if shape == (37, 11)] == [(0, s, min(37, s + 4)) for s in range(0, 37, 4)]
    assert ds.text.dtype == np.float32
    np.testing.assert_array_equal(ds.text, text.astype(np.float32))


@needs_h5py
@pytest.mark.skipif(not os.environ.get("DMPMH_BIG_TESTS"), reason="writes a 1.2 GB file and trains for about 30 s; "
                    "run with DMPMH_BIG_TESTS=1")
def test_cli_nuswide_v73_peak_rss_below_the_image_array(tmp_path):
    """The issue's target: `python dmpmh.py --dataset nuswide` on a fabricated v7.3 nus-wide-tc10-iall.mat
    whose raw-image array (8,000 x 3 x 224 x 224 uint8 = 1,204 MB) is larger than the limit set here, the
    array's own size: the whole run (torch, training, encoding included) peaks below it."""
    import resource
    n, side = 8000, 224
    rng = np.random.default_rng(0)
    labels = (rng.random((n, 10)) < 0.3).astype(np.uint8)
    labels[:, 0] |= labels.sum(1) == 0
    pattern = rng.integers(0, 256, (64, 3, side, side), dtype=np.uint8)
    folder = tmp_path / "nw"
    folder.mkdir()
    _write_v73(folder / "nus-wide-tc10-iall.mat",
               {"IAll": ((side, side, 3, n), np.uint8, lambda s, e: pattern[np.arange(s, e) % 64] ^ np.uint8(s % 251))},
               slab=64)
    _write_v73(folder / "nus-wide-tc10-lall.mat", {"LAll": ((n, 10), np.uint8, lambda s, e: labels.T[s:e])})
    limit = n * 3 * side * side
    r = subprocess.run([sys.executable, os.path.join(ROOT, "dmpmh.py"), "--dataset", "nuswide", "--data-dir",
                        str(folder), "--epochs", "1", "--hidden", "32", "--proj-dim", "64", "--n-train", "2000",
                        "--n-query", "500", "--insecure-seed", "1", "--out-dir", str(tmp_path / "runs")],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # the largest child: this run
    print(f"image array {limit / 1e6:.0f} MB, peak RSS of the run {peak / 1e6:.0f} MB")
    assert peak < limit


@pytest.mark.parametrize("c, values", [(3, (0, 1)), (10, (0, 1)), (64, (0, 1)), (70, (0, 1)), (10, (0, 1, 2))])
def test_implicit_label_graph_rows_by_bitmask_equal_the_label_product(c, values):
    """PrivateGraph.rows of an implicit label graph: the bitmask path (0/1 labels, at most 64) and the
    product fallback both give "shares a label" exactly, without self-loops."""
    rng = np.random.default_rng(c + len(values))
    lab = rng.choice(values, size=(300, c), p=None).astype(np.float32) * (rng.random((300, c)) < 0.08)
    lab[:5] = 0  # items with no label: isolated
    g = data.PrivateGraph(n=300, kind="label", _labels=lab)
    want = (lab @ lab.T) > 0
    np.fill_diagonal(want, False)
    got = np.concatenate([g.rows(s, min(300, s + 37)) for s in range(0, 300, 37)])
    assert np.array_equal(got, want)
    uses_mask = c <= 64 and set(np.unique(lab)) <= {0, 1}
    assert (g._mask is not False) == uses_mask
