"""Datasets, splits, public projections and the private graph for dmpmh.

This module is the only place that reads training labels, and it reads them for
one purpose: building the private similarity graph (``build_private_graph``).
Everything else it returns is public: features, the split, public projections.

Formats read (DESIGN.md, "Data"):
  * DCMH-style ``.mat`` triplets ``<name>-iall.mat`` / ``<name>-yall.mat`` /
    ``<name>-lall.mat`` with keys ``IAll`` / ``YAll`` / ``LAll`` (Jiang & Li,
    "Deep Cross-Modal Hashing", CVPR 2017, arXiv 1602.02255, whose released
    MIRFlickr-25K and NUS-WIDE files use this layout). ``IAll`` holds either
    image feature vectors (N x d) or raw images (N x 3 x H x W, N x H x W x 3, or
    MATLAB's H x W x 3 x N). MATLAB v7.3 files are HDF5 and need h5py; their
    large arrays are read in slabs of items (``STREAM_CHUNK_BYTES``), never whole.
  * a plain ``.npz`` with ``image`` (optional, streamed), ``text``, ``labels``.
  * NUS-WIDE's official release layout (Chua et al., CIVR 2009): ``AllTags1k.txt``
    for the 1,000-tag bag of words, the ``Groundtruth/AllLabels/Labels_<concept>.txt``
    ground truth files (``TrainTestLabels`` is ignored), and optionally a
    ``Normalized_*.dat`` / ``BoW_int.dat`` low-level feature file.
  * ``--split-file``: a fixed split (``load_split_file``).
  * ``synthetic``: a seeded generator with skewed multi-label statistics,
    label-conditioned image features and tag bags-of-words (our design).

Sizes and splits follow DESIGN.md, "Evaluation protocol": MIRFlickr-25K 2,000
queries / 10,000 train; NUS-WIDE TC-10 2,100 queries / 10,500 train.
"""
from __future__ import annotations

import contextlib
import glob
import os
from dataclasses import dataclass, field

import numpy as np


class DataError(ValueError):
    """Bad or missing input data. The message says what is wrong and what to do."""


# ---------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------

@dataclass
class Dataset:
    """Features are public; labels are private for training items (see LabelStore)."""
    name: str
    text: np.ndarray | None           # (N, dt) float32 or None
    image: np.ndarray | None          # (N, di) float32 or None
    labels: np.ndarray | None         # (N, C) uint8, wrapped by LabelStore before use; None only with --graph-file
    raw_images: np.ndarray | None = None   # (N, H, W, 3) uint8 thumbnails, if given
    source: str = ""

    @property
    def n(self) -> int:
        view = self.text if self.text is not None else self.image
        return int(view.shape[0]) if view is not None else int(self.labels.shape[0])

    @property
    def views(self) -> tuple[str, ...]:
        return tuple(v for v in ("image", "text") if getattr(self, v) is not None)


@dataclass
class Split:
    """Seeded split of item indices (sorted). Public."""
    query: np.ndarray
    train: np.ndarray
    database: np.ndarray
    protocol: str


class LabelStore:
    """Holds the labels and enforces who may read which rows.

    Rows of training items are private: ``for_graph`` is the only reader allowed
    to see them, and only ``build_private_graph`` calls it. ``for_evaluation``
    refuses training rows unless the protocol puts training items in the
    database (``--protocol standard``), where evaluation ground truth needs them;
    metrics are not part of the DP release. Every read is recorded in ``reads``
    so a test can check the flow.
    """

    def __init__(self, labels: np.ndarray | None, train: np.ndarray, *, allow_train_in_evaluation: bool):
        self._labels = labels
        self._train = None  # a dataset without labels (allowed with --graph-file) has nothing to guard
        if labels is not None:
            self._train = np.zeros(labels.shape[0], dtype=bool)
            self._train[train] = True
        self._allow = allow_train_in_evaluation
        self.reads: list[tuple[str, int]] = []

    @property
    def has_labels(self) -> bool:
        return self._labels is not None

    def _require_labels(self) -> None:
        if self._labels is None:
            raise DataError("the dataset has no 'labels' array, so there is no label graph to build and no label "
                            "relevance to evaluate: add 'labels' (items x classes, 0/1) to the dataset, or give "
                            "your own graph with --graph-file PATH")

    def for_graph(self, idx: np.ndarray) -> np.ndarray:
        self._require_labels()
        self.reads.append(("graph", int(self._train[idx].sum())))
        return self._labels[idx]

    def for_evaluation(self, idx: np.ndarray) -> np.ndarray:
        self._require_labels()
        n_private = int(self._train[idx].sum())
        if n_private and not self._allow:
            raise RuntimeError("evaluation asked for training labels under the strict inductive protocol")
        self.reads.append(("evaluation", n_private))
        return self._labels[idx]


# ---------------------------------------------------------------------------
# Synthetic data (our design; DESIGN.md asks for realistic multi-label stats)
# ---------------------------------------------------------------------------

def make_synthetic(n_items: int, *, seed: int, n_labels: int = 24, n_topics: int = 8,
                   image_dim: int = 256, vocab: int = 1000) -> Dataset:
    """Seeded multi-label data with MIRFlickr-like statistics.

    * Label frequencies are skewed (Zipf, exponent 0.9, about 2 labels per item) and correlated through
      ``n_topics`` latent topics; every item has at least one label.
    * Image features: a sum of per-label prototypes plus a topic prototype and
      isotropic noise (signal-to-noise chosen so retrieval is far from perfect).
    * Text: a binary tag bag-of-words; each label owns a peaked tag distribution,
      mixed with a Zipf background of generic tags (80/20), 4-16 tags per item.
    """
    if n_items < 50:
        raise DataError(f"synthetic n_items={n_items} is too small; use at least 50")
    rng = np.random.default_rng(seed)
    base = 1.0 / np.arange(1, n_labels + 1) ** 0.9
    base = 0.25 * base / base[0]
    topic_labels = [rng.choice(n_labels, size=4, replace=False) for _ in range(n_topics)]
    topic = rng.integers(0, n_topics, size=n_items)
    probs = np.tile(base, (n_items, 1))
    for t in range(n_topics):
        rows = topic == t
        probs[np.ix_(rows, topic_labels[t])] += 0.3
    labels = (rng.random((n_items, n_labels)) < np.clip(probs, 0, 0.95)).astype(np.uint8)
    empty = labels.sum(1) == 0
    labels[empty, rng.choice(n_labels, size=int(empty.sum()), p=base / base.sum())] = 1

    proto = rng.normal(size=(n_labels, image_dim)).astype(np.float32)
    tproto = rng.normal(size=(n_topics, image_dim)).astype(np.float32)
    lab = labels.astype(np.float32)
    image = (lab @ proto) / np.sqrt(lab.sum(1, keepdims=True)) * 0.9
    image += 0.5 * tproto[topic] + 1.6 * rng.normal(size=(n_items, image_dim)).astype(np.float32)

    # tag distributions: each label has 25 favourite tags; background is Zipf.
    tag_dist = np.full((n_labels, vocab), 1e-3)
    for c in range(n_labels):
        fav = rng.choice(vocab, size=20, replace=False)
        tag_dist[c, fav] += rng.dirichlet(np.full(20, 0.5))
    tag_dist /= tag_dist.sum(1, keepdims=True)
    background = 1.0 / np.arange(1, vocab + 1) ** 1.1
    background = background[rng.permutation(vocab)]
    background /= background.sum()
    text = np.zeros((n_items, vocab), dtype=np.float32)
    n_tags = rng.integers(4, 17, size=n_items)
    for i in range(n_items):
        mix = lab[i] @ tag_dist / lab[i].sum()
        mix = 0.8 * mix + 0.2 * background
        text[i, rng.choice(vocab, size=n_tags[i], p=mix)] = 1.0
    return Dataset(name="synthetic", text=text, image=image.astype(np.float32),
                   labels=labels, source=f"synthetic(n_items={n_items}, seed={seed})")


# ---------------------------------------------------------------------------
# Real formats
# ---------------------------------------------------------------------------

KNOWN = {
    "mirflickr": dict(prefixes=("mirflickr25k", "mirflickr", "flickr"), n_query=2000, n_train=10000,
                      where="the MIRFlickr-25K site (press.liacs.nl/mirflickr), or the FLICKR-25K.mat that DCMH's "
                            "MATLAB demo downloads (github.com/jiangqy/DCMH-CVPR2017), turned into an .npz with "
                            "'python dmpmh.py convert'"),
    "nuswide": dict(prefixes=("nus-wide-tc10", "nuswide-tc10", "nus-wide", "nuswide"), n_query=2100, n_train=10500,
                    where="the official NUS-WIDE release (lms.comp.nus.edu.sg/research/NUS-WIDE.htm): AllTags1k.txt "
                          "+ Labels_<concept>.txt, read directly; DCMH-style 'nus-wide-tc10-*.mat' files are read "
                          "directly too, or turned into an .npz with 'python dmpmh.py convert'"),
}


STREAM_CHUNK_BYTES = 64 << 20  # bytes of a large array read at a time (raw images, features): peak memory
                                # is the output plus about this much, not the whole array


class _MatlabH5:
    """A MATLAB v7.3 (HDF5) variable seen in MATLAB's dimension order, read in slabs.

    HDF5 stores MATLAB's column-major arrays with the dimensions reversed, so h5py's shape (a, b, c, d)
    is MATLAB's d x c x b x a. ``slab(axis, start, stop)`` reads the items start:stop of one MATLAB
    axis and nothing else; ``np.asarray`` reads it all (for the small arrays: labels, tags)."""

    def __init__(self, dset):
        self.dset = dset
        self.shape = tuple(reversed(dset.shape))
        self.ndim = len(self.shape)
        self.dtype = dset.dtype

    def slab(self, axis: int, start: int, stop: int) -> np.ndarray:
        idx = [slice(None)] * self.ndim
        idx[self.ndim - 1 - axis] = slice(start, stop)
        return np.asarray(self.dset[tuple(idx)]).T

    def __array__(self, dtype=None, copy=None):
        a = np.asarray(self.dset).T
        return a if dtype is None else a.astype(dtype)


def _read_mat(path: str, key: str, convert=np.asarray):
    """``convert`` applied to the variable ``key`` while the file is open: an ndarray for v5/v7 files
    (scipy.io reads them whole), a ``_MatlabH5`` view for v7.3 (HDF5) files, read in slabs on demand."""
    with open(path, "rb") as f:
        head = f.read(128)
    if b"MATLAB 7.3" in head or head[:8] == b"\x89HDF\r\n\x1a\n":
        try:
            import h5py  # only needed for MATLAB v7.3 files
        except ImportError:
            raise DataError(f"{path} is a MATLAB v7.3 (HDF5) file, and reading it needs h5py, which is not "
                            "installed. Install it with 'pip install h5py', or re-save the file with "
                            "MATLAB's save(..., '-v7') or as .npz.") from None
        with h5py.File(path, "r") as f:
            if key not in f:
                raise DataError(f"{path} has no key '{key}' (keys: {sorted(f.keys())})")
            return convert(_MatlabH5(f[key]))
    from scipy.io import loadmat
    m = loadmat(path)
    if key not in m:
        raise DataError(f"{path} has no key '{key}' (keys: {sorted(k for k in m if not k.startswith('__'))})")
    return convert(np.asarray(m[key]))


def _slab(src, axis: int, start: int, stop: int) -> np.ndarray:
    """Items start:stop along ``axis`` of an ndarray, a ``_MatlabH5`` view or an ``_NpyStream``."""
    if hasattr(src, "slab"):
        return src.slab(axis, start, stop)
    return np.asarray(src[(slice(None),) * axis + (slice(start, stop),)])


def _item_axis(shape: tuple, n_items: int | None) -> int:
    """The axis that indexes items: the first, or the last when only it matches ``n_items`` (MATLAB's
    H x W x 3 x N image stacks)."""
    if n_items is None or shape[0] == n_items:
        return 0
    if shape[-1] == n_items:
        return len(shape) - 1
    raise DataError(f"image array has shape {shape}, and neither its first nor its last axis has one entry per "
                    f"item ({n_items} items in the labels)")


def _feature_rows(src) -> np.ndarray:
    """A 2-D feature array (items x d) as float32, converted in slabs of about STREAM_CHUNK_BYTES items:
    no whole-array temporary (a v7.3 variable is read slab by slab). A row count that disagrees with
    the labels is left to ``validate``, which names both counts."""
    n, d = src.shape
    rows = max(1, STREAM_CHUNK_BYTES // max(1, d * np.dtype(src.dtype).itemsize))
    feats = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, rows):
        feats[s:s + rows] = _slab(src, 0, s, min(n, s + rows))
    return feats


def _image_view(src, n_items: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Feature vectors (N x d) pass through as float32; raw images (4-D) become 32x32 thumbnails + pixel
    features.

    ``src`` is an ndarray, a ``_MatlabH5`` view or an ``_NpyStream``; it is read in slabs of items of
    about STREAM_CHUNK_BYTES, so peak memory is the output plus one slab. Images are N x 3 x H x W,
    N x H x W x 3 or (MATLAB's stacks) H x W x 3 x N; the item axis is the one with ``n_items`` entries.
    """
    shape = tuple(src.shape)
    if len(shape) == 2:
        return _feature_rows(src), None
    if len(shape) != 4:
        raise DataError(f"image array has shape {shape}; expected (N, d) features or (N, 3, H, W) images")
    ax = _item_axis(shape, n_items)
    n = shape[ax]
    per_item = max(1, int(np.prod(shape)) // max(n, 1) * np.dtype(src.dtype).itemsize)
    rows = max(1, STREAM_CHUNK_BYTES // per_item)
    rest = [a for a in range(4) if a != ax]
    channel = rest[-1] if shape[rest[-1]] == 3 else rest[0] if shape[rest[0]] == 3 else None
    if channel is None:
        raise DataError(f"image array has shape {shape}; expected 3 colour channels next to the two image axes")
    order = (ax, *[a for a in rest if a != channel], channel)  # -> items x H x W x 3
    from PIL import Image
    thumbs = np.empty((n, 32, 32, 3), dtype=np.uint8)
    for s in range(0, n, rows):
        blk = np.transpose(_slab(src, ax, s, min(n, s + rows)), order)
        for i, a in enumerate(blk):
            thumbs[s + i] = np.asarray(Image.fromarray(np.asarray(a, dtype=np.uint8)).resize((32, 32)))
        del blk
    feats = thumbs.reshape(n, -1).astype(np.float32)
    feats /= 255.0  # in place: no second N x 3,072 float temporary
    return feats, thumbs


class _NpyStream:
    """One C-order array of an .npz, read front to back in slabs of rows (axis 0).

    The archive member is streamed through zipfile (stored or deflated alike), so peak memory is one
    slab, not the array; np.load cannot memory-map a member of an .npz (it ignores mmap_mode there).
    The member's CRC is checked when the last slab has been read. ``open`` returns None where the
    format does not allow it (Fortran order, object dtype, .npy version 3): then the array is read whole.
    """

    def __init__(self, zf, member, shape, dtype):
        self._zf, self._f = zf, member
        self.shape, self.dtype, self.ndim = shape, dtype, len(shape)
        self._row = int(np.prod(shape[1:])) * dtype.itemsize
        self._at = 0

    @classmethod
    def open(cls, path: str, key: str):
        import zipfile
        zf = zipfile.ZipFile(path)
        try:
            member = zf.open(key + ".npy")
            version = np.lib.format.read_magic(member)
            if version not in ((1, 0), (2, 0)):
                raise ValueError
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(member)
            if fortran or dtype.hasobject or len(shape) == 0:
                raise ValueError
        except Exception:  # not streamable: the caller reads the array whole (and reports what is wrong)
            zf.close()
            return None
        return cls(zf, member, tuple(shape), dtype)

    def slab(self, axis: int, start: int, stop: int) -> np.ndarray:
        if axis != 0 or start != self._at:
            raise ValueError("an .npz member is read front to back along its first axis")
        want = (stop - start) * self._row
        buf = self._f.read(want)
        if len(buf) != want:
            raise EOFError("the array ends early")
        self._at = stop
        if stop == self.shape[0]:
            self._f.read()  # reaching the end checks the member's CRC (zipfile raises BadZipFile)
        return np.frombuffer(buf, dtype=self.dtype).reshape((stop - start,) + self.shape[1:])

    def close(self) -> None:
        self._f.close()
        self._zf.close()


NPZ_DATASET_FORMAT = "an .npz archive (np.savez) with arrays 'labels' and at least one of 'text', 'image'"


def open_npz(path: str, expected: str = NPZ_DATASET_FORMAT):
    """np.load of an .npz, with every read failure turned into one DataError '<path>: <what is wrong>; expected ...'.

    Checked in order: a folder, permissions, an empty file, the format (zip magic bytes: a bare .npy,
    a text or CSV file, an unknown binary), then the archive itself (corrupt or truncated)."""
    import zipfile
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder; expected a file: {expected}")
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except PermissionError:
        raise DataError(f"{path}: permission denied (the file cannot be read); expected a readable file: "
                        f"{expected}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e}); expected {expected}") from None
    if not head:
        raise DataError(f"{path}: is empty (0 bytes); expected {expected}")
    if head.startswith(b"\x93NUMPY"):
        raise DataError(f"{path}: is a single .npy array, not an .npz archive; expected {expected}")
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        try:
            head.decode("utf-8")
            looks = "a text or CSV file"
        except UnicodeDecodeError:
            looks = "not a zip archive"
        raise DataError(f"{path}: is {looks} with an .npz name, not an .npz archive; expected {expected}")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError) as e:
        raise DataError(f"{path}: is a corrupt or truncated .npz archive ({type(e).__name__}); "
                        f"expected {expected}") from None


def npz_array(d, key: str, path: str, expected: str = NPZ_DATASET_FORMAT) -> np.ndarray:
    """One array of an open .npz; a corrupt member or an object (pickled) array is one DataError."""
    try:
        return np.asarray(d[key])
    except Exception as e:  # zlib/zip errors, CRC mismatch, object arrays (allow_pickle=False), EOF
        raise DataError(f"{path}: the array '{key}' cannot be read (a corrupt or truncated archive, or an object "
                        f"array, which is not allowed; {type(e).__name__}); expected {expected}") from None


def load_npz(path: str, name: str | None = None) -> Dataset:
    d = open_npz(path)
    with d:
        files = list(d.files)
        # 'labels' may be absent only with --graph-file: dmpmh.validate_config checks a direct .npz path up
        # front (require_labels), and LabelStore refuses to build a label graph without labels
        if "text" not in files and "image" not in files:
            raise DataError(f"{path}: must hold 'labels' and at least one of 'text', 'image'; it has {files}")
        arrays = {k: npz_array(d, k, path) for k in ("text", "labels") if k in files}
    image, raw = None, None
    try:
        for k in ("image", "text"):
            if k in arrays and not (np.issubdtype(arrays[k].dtype, np.number) or arrays[k].dtype == np.bool_):
                raise DataError(f"array '{k}' has dtype {arrays[k].dtype}; expected numbers")
        if "image" in files:  # streamed in slabs where the format allows (raw images can be many GB)
            n_items = next((len(arrays[k]) for k in ("labels", "text") if k in arrays), None)
            image, raw = _npz_image(path, n_items)
        text = arrays["text"].astype(np.float32) if "text" in arrays else None
        ds = Dataset(name=name or os.path.splitext(os.path.basename(path))[0], text=text, image=image,
                     labels=arrays.get("labels"), raw_images=raw, source=path)
        return validate(ds)
    except DataError as e:
        msg = str(e)
        raise DataError(msg if msg.startswith(path) else f"{path}: {msg}") from None


def _npz_image(path: str, n_items: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The 'image' array of an .npz through ``_image_view``, streamed by ``_NpyStream`` where it can be."""
    import zipfile
    import zlib
    stream = _NpyStream.open(path, "image")
    if stream is None:
        with open_npz(path) as d:
            arr = npz_array(d, "image", path)
    else:
        arr = stream
    try:
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise DataError(f"array 'image' has dtype {arr.dtype}; expected numbers")
        return _image_view(arr, n_items)
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{path}: the array 'image' cannot be read (a corrupt or truncated archive; "
                        f"{type(e).__name__}); expected {NPZ_DATASET_FORMAT}") from None
    finally:
        if stream is not None:
            stream.close()


def _read_mat_checked(path: str, key: str, convert=np.asarray):
    """_read_mat with every read failure as one DataError naming the file and what was expected."""
    expected = f"a MATLAB .mat file (v5/v7, or v7.3 with h5py) holding the array '{key}'"
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder; expected {expected}")
    try:
        return _read_mat(path, key, convert)
    except DataError:
        raise
    except PermissionError:
        raise DataError(f"{path}: permission denied (the file cannot be read); expected {expected}") from None
    except Exception as e:  # scipy.io / h5py raise many kinds on corrupt or truncated files
        raise DataError(f"{path}: cannot be read as a .mat file, corrupt or truncated ({type(e).__name__}); "
                        f"expected {expected}") from None


def load_mat_triplet(folder: str, prefix: str, name: str) -> Dataset:
    paths = {k: os.path.join(folder, f"{prefix}-{k}all.mat") for k in ("i", "y", "l")}
    labels = _read_mat_checked(paths["l"], "LAll")
    text = None
    if os.path.exists(paths["y"]):  # float32 rows; v7.3 read in slabs (NUS-WIDE's tags are N x 1000)
        text = _read_mat_checked(paths["y"], "YAll", lambda src: _feature_rows(src) if len(src.shape) == 2
                                 else np.asarray(src))
    image, raw = (None, None)
    try:
        if os.path.exists(paths["i"]):  # v7.3 raw images are streamed in slabs, never read whole
            image, raw = _read_mat_checked(paths["i"], "IAll",
                                           lambda src: _image_view(src, n_items=labels.shape[0]))
        ds = Dataset(name=name, text=text, image=image, labels=labels, raw_images=raw, source=folder)
        return validate(ds)
    except (TypeError, ValueError) as e:
        msg = str(e)
        raise DataError(msg if msg.startswith(folder) else f"{folder}/{prefix}-*all.mat: {msg}") from None


CONVERT_OUTPUT = ("an .npz archive with 'labels' (N, C) uint8 0/1, 'text' (N, d) (uint8 when every entry is an "
                  "integer in 0..255, else float32) and, from --image, 'image': (N, 32, 32, 3) uint8 thumbnails of "
                  "raw images or (N, d) float32 features")


# the variable names read by convert_mat, in order of preference: DCMH's MIRFlickr demo file FLICKR-25K.mat
# (github.com/jiangqy/DCMH-CVPR2017, DCMH_matlab/DCMH_release/preprocessing.m) holds 'images', 'YAll' and 'LAll'
CONVERT_KEYS = {"LAll": ("LAll",), "YAll": ("YAll",), "IAll": ("IAll", "images")}


def _mat_key(path: str, keys: tuple[str, ...]) -> str:
    """The first of ``keys`` that the .mat file holds, read from its directory without loading anything;
    else ``keys[0]`` (the read then fails with a message that lists the file's keys)."""
    try:
        with open(path, "rb") as f:
            head = f.read(128)
        if b"MATLAB 7.3" in head or head[:8] == b"\x89HDF\r\n\x1a\n":
            import h5py
            with h5py.File(path, "r") as f:
                names = set(f.keys())
        else:
            from scipy.io import whosmat
            names = {w[0] for w in whosmat(path)}
    except Exception:  # unreadable or h5py missing: _read_mat_checked says what is wrong
        return keys[0]
    return next((k for k in keys if k in names), keys[0])


def convert_mat(*, labels: str, out: str, text: str | None = None, image: str | None = None) -> dict:
    """Build the ``.npz`` that ``--dataset path/to/file.npz`` reads from DCMH-style ``.mat`` files.

    ``labels`` is the ``LAll`` file (N x C, 0/1), ``text`` the ``YAll`` file (N x d tags or features) and
    ``image`` the optional ``IAll`` file (N x d features, or raw images in any layout the loader reads;
    raw images are stored as the 32 x 32 uint8 thumbnails a run makes of them anyway). With neither
    ``text`` nor ``image`` the archive holds labels only: what ``bench --source nuswide`` reads, not a dataset
    a run can train on (a run needs a view). One file holding
    several of these variables may be given for each (DCMH's ``FLICKR-25K.mat``: ``LAll``, ``YAll``, and
    the raw images as ``images``; see ``CONVERT_KEYS``). At least one of
    ``text``, ``image`` is needed. MATLAB v7.3 (HDF5) files need h5py (the error says how to install it).

    Checked before anything is written, each failure one ``DataError`` naming the file: every file
    exists and holds its key; labels are 2-D and 0/1 with at least one label per item; every view has
    one row per label row, and finite values. The archive is written to ``out + '.tmp'`` and renamed into
    place, so an interrupted conversion leaves no half-written ``out``. Returns a summary: the number of
    items, each array's shape and dtype, and the label sums (to compare with the dataset's documentation).
    The conversion reads labels only to copy them: nothing here is a statistic that a run releases.
    """
    import zipfile
    if not out.endswith(".npz"):
        raise DataError(f"--out {out}: the output is an .npz; give a path ending in .npz")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise DataError(f"--out {out}: the folder {folder} does not exist; expected an existing folder")
    given = {"--labels": (labels, "LAll"), "--text": (text, "YAll"), "--image": (image, "IAll")}
    for flag, (path, key) in given.items():
        if path is not None and not os.path.exists(path):
            raise DataError(f"{flag} {path}: no such file; expected a MATLAB .mat file (v5/v7, or v7.3 with h5py) "
                            f"holding the array '{key}'")
    lab = _read_mat_checked(labels, _mat_key(labels, CONVERT_KEYS["LAll"]))
    if lab.ndim != 2 or lab.shape[0] == 0 or lab.shape[1] == 0:
        raise DataError(f"{labels}: 'LAll' has shape {lab.shape}; expected a 2-D (items x classes) array")
    if not np.isin(lab, (0, 1)).all():
        raise DataError(f"{labels}: 'LAll' holds values other than 0 and 1; expected binary labels")
    n = lab.shape[0]
    empty = int((lab.sum(1) == 0).sum())
    if empty:  # the count only (see validate)
        raise DataError(f"{labels}: {empty} of {n} items have no label; expected at least one label per item "
                        "(a run refuses such items: relevance is 'shares a label'); drop those rows from every file")
    arrays = {"labels": lab.astype(np.uint8)}

    def rows_of(name: str, path: str, key: str, x: np.ndarray) -> np.ndarray:
        if x.ndim < 2 or x.shape[0] != n:
            raise DataError(f"{path}: '{key}' has {x.shape[0] if x.ndim else 0} rows (shape {x.shape}) but "
                            f"{labels} has {n} label rows; expected one row per item in every file")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise DataError(f"{path}: '{key}' holds NaN or inf; expected finite {name} values")
        return x

    if text is not None:
        x = rows_of("text", text, "YAll", _read_mat_checked(
            text, _mat_key(text, CONVERT_KEYS["YAll"]), lambda src: _feature_rows(src) if len(src.shape) == 2 else np.asarray(src)))
        if x.ndim != 2:
            raise DataError(f"{text}: 'YAll' has shape {x.shape}; expected a 2-D (items x tags) array")
        small = (x >= 0).all() and (x <= 255).all() and (x == np.round(x)).all()
        arrays["text"] = x.astype(np.uint8) if small else x.astype(np.float32)
    if image is not None:
        try:
            feats, thumbs = _read_mat_checked(image, _mat_key(image, CONVERT_KEYS["IAll"]), lambda src: _image_view(src, n_items=n))
        except DataError as e:
            msg = str(e)
            raise DataError(msg if msg.startswith(image) else f"{image}: {msg}") from None
        arrays["image"] = rows_of("image", image, "IAll", thumbs if thumbs is not None else feats)
    tmp = out + ".tmp"
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, out)
    except BaseException as e:  # Ctrl-C included: no half-written .tmp stays behind
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if not isinstance(e, (OSError, zipfile.LargeZipFile)):
            raise
        raise DataError(f"--out {out}: cannot be written ({getattr(e, 'strerror', None) or e}); expected a "
                        "writable location with room for the archive") from None
    return {"n": n, "out": out, "arrays": {k: (tuple(v.shape), str(v.dtype)) for k, v in arrays.items()},
            "label_sum": int(arrays["labels"].sum(dtype=np.int64)),
            "label_sums": arrays["labels"].sum(0, dtype=np.int64).tolist()}


def _loadtxt(path: str, dtype, ndmin: int, expected: str) -> np.ndarray:
    """np.loadtxt with a read failure as one DataError naming the file."""
    try:
        return np.loadtxt(path, dtype=dtype, ndmin=ndmin)
    except PermissionError:
        raise DataError(f"{path}: permission denied (the file cannot be read); expected {expected}") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); "
                        f"expected {expected}") from None


TEXT_CHUNK_ROWS = 16384  # rows per block when streaming a text matrix (AllTags1k.txt, Normalized_*.dat)


def _loadtxt_rows(path: str, keep: np.ndarray, dtype, expected: str, count_of: str) -> np.ndarray:
    """The rows ``keep`` (a bool mask over all rows) of a whitespace-separated text matrix, read in blocks of
    TEXT_CHUNK_ROWS lines: peak memory is the output plus one block. The file must have ``len(keep)`` rows
    (``count_of`` names the file that set that count)."""
    import itertools
    out, at, row = None, 0, 0
    try:
        with open(path) as f:
            while True:
                lines = list(itertools.islice(f, TEXT_CHUNK_ROWS))
                if not lines:
                    break
                block = np.loadtxt(lines, dtype=dtype, ndmin=2)
                if row + len(block) > len(keep):
                    row += len(block)
                    break
                if out is None:
                    out = np.empty((int(keep.sum()), block.shape[1]), dtype=dtype)
                elif block.shape[1] != out.shape[1]:
                    raise ValueError(f"rows of {block.shape[1]} and {out.shape[1]} numbers")
                mine = block[keep[row:row + len(block)]]
                out[at:at + len(mine)] = mine
                at += len(mine)
                row += len(block)
    except PermissionError:
        raise DataError(f"{path}: permission denied (the file cannot be read); expected {expected}") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); "
                        f"expected {expected}") from None
    if row != len(keep):
        raise DataError(f"{path} has {'more than ' if row > len(keep) else ''}{row} rows but {count_of} has "
                        f"{len(keep)}; every file of the layout needs one row per image")
    return out


def _nuswide_label_files(folder: str) -> list[str]:
    """The ``Labels_<concept>.txt`` files of the official layout: those in ``Groundtruth/AllLabels/``.

    The release also ships ``Groundtruth/TrainTestLabels/Labels_<concept>_Train.txt`` / ``_Test.txt``
    (its own train/test split, with other row counts); they are ignored. Without an ``AllLabels`` folder,
    any ``Labels_<concept>.txt`` that is not a ``_Train``/``_Test`` file is read."""
    found = sorted(glob.glob(os.path.join(folder, "**", "Labels_*.txt"), recursive=True))
    if not found:
        return []
    every = [f for f in found if os.path.basename(os.path.dirname(f)) == "AllLabels"]
    if not every:
        every = [f for f in found if not f.endswith(("_Train.txt", "_Test.txt"))
                 and "TrainTestLabels" not in os.path.relpath(f, folder).split(os.sep)]
    if not every:
        raise DataError(f"{folder}: found only the train/test label files (TrainTestLabels/Labels_<concept>_Train.txt "
                        "and _Test.txt); the loader needs the labels of every image: Groundtruth/AllLabels/"
                        "Labels_<concept>.txt from the official NUS-WIDE Groundtruth download")
    dirs = sorted({os.path.dirname(f) for f in every})
    if len(dirs) > 1:
        raise DataError(f"{folder}: Labels_<concept>.txt files in {len(dirs)} folders ({', '.join(dirs[:3])}); "
                        "keep one copy of Groundtruth/AllLabels below --data-dir")
    return every


def load_nuswide_official(folder: str) -> Dataset:
    """NUS-WIDE's official layout, reduced to TC-10 (the 10 most frequent concepts).

    Looks for ``AllTags1k.txt`` (N x 1000, whitespace-separated 0/1; ``NUS_WID_Tags/`` in the release)
    and the ``Labels_<concept>.txt`` files of ``Groundtruth/AllLabels/`` (N lines of 0/1 each; the
    ``Groundtruth/TrainTestLabels/`` files are ignored: ``_nuswide_label_files``) anywhere below
    ``folder``, and one optional low-level feature file (``Normalized_*.dat`` or ``BoW_int.dat``).
    Items with none of the 10 concepts are dropped, as in TC-10. The labels are read first; the tag and
    feature matrices are then streamed in blocks of lines, keeping only the TC-10 rows.
    """
    tags = sorted(glob.glob(os.path.join(folder, "**", "AllTags1k.txt"), recursive=True))
    lab_files = _nuswide_label_files(folder)
    if not tags or not lab_files:
        raise FileNotFoundError
    cols = [_loadtxt(f, np.uint8, 1, "one 0/1 per line, one line per item") for f in lab_files]
    if any(len(c) != len(cols[0]) for c in cols):
        counts = sorted({len(c) for c in cols})
        raise DataError(f"NUS-WIDE label files in {os.path.dirname(lab_files[0])} disagree on the item count "
                        f"({counts[0]} to {counts[-1]} lines); each Labels_<concept>.txt holds one line per image")
    labels = np.stack(cols, 1)
    del cols
    top = np.argsort(-labels.sum(0), kind="stable")[:10]
    labels = labels[:, np.sort(top)]
    keep = labels.sum(1) > 0
    first = os.path.relpath(lab_files[0], folder)
    text = _loadtxt_rows(tags[0], keep, np.float32, "whitespace-separated 0/1 tag counts, one row per item", first)
    image = None
    feat = sorted(glob.glob(os.path.join(folder, "**", "Normalized_*.dat"), recursive=True)
                  + glob.glob(os.path.join(folder, "**", "BoW_int.dat"), recursive=True))
    if feat:
        image = _loadtxt_rows(feat[0], keep, np.float32, "whitespace-separated numbers, one row per item", first)
    return validate(Dataset(name="nuswide", text=text, image=image, labels=labels[keep], source=folder))


def _missing_message(name: str, folder: str) -> str:
    info = KNOWN[name]
    p = info["prefixes"][0]
    return (f"dataset '{name}' not found in {folder}\n"
            f"  expected one of:\n"
            f"    {folder}/{p}-iall.mat, {p}-yall.mat, {p}-lall.mat  (DCMH-style; keys IAll, YAll, LAll;"
            f" the image file is optional)\n"
            f"    {folder}/{p}.npz  (arrays 'text', 'labels', optional 'image')\n"
            + ("    the official NUS-WIDE layout below that folder: NUS_WID_Tags/AllTags1k.txt and\n"
               "    Groundtruth/AllLabels/Labels_<concept>.txt\n"
               if name == "nuswide" else "")
            + f"  the official data comes from {info['where']}.\n"
            f"  Point --data-dir at the folder, pass any .npz as --dataset path/to/file.npz,\n"
            f"  or run the embedded demo: python dmpmh.py --dataset synthetic")


def load_dataset(name: str, *, data_dir: str | None, synthetic_items: int, seed: int) -> Dataset:
    """Resolve ``--dataset`` to a Dataset, or raise DataError with what to do."""
    if name == "synthetic":
        return make_synthetic(synthetic_items, seed=seed)
    if name.endswith(".npz"):
        if not os.path.exists(name):
            raise DataError(f"--dataset {name}: no such file. Give the path of an .npz with 'text' and/or "
                            "'image' and 'labels', or run --dataset synthetic")
        return load_npz(name)
    if name not in KNOWN:
        raise DataError(f"unknown dataset '{name}'; choose synthetic, mirflickr, nuswide or a path to an .npz")
    folder = data_dir or os.path.join("data", name)
    for p in KNOWN[name]["prefixes"]:
        if os.path.exists(os.path.join(folder, f"{p}-lall.mat")):
            return load_mat_triplet(folder, p, name)
        if os.path.exists(os.path.join(folder, f"{p}.npz")):
            return load_npz(os.path.join(folder, f"{p}.npz"), name)
    if name == "nuswide" and os.path.isdir(folder):
        try:
            return load_nuswide_official(folder)
        except FileNotFoundError:
            pass
    raise DataError(_missing_message(name, folder))


def validate(ds: Dataset) -> Dataset:
    """Reject inputs that would give meaningless or unsafe results.

    ``labels`` may be None (a dataset used with --graph-file); the views must then agree on N.
    """
    if ds.labels is None:
        if ds.text is None and ds.image is None:
            raise DataError("the dataset has neither an image nor a text view")
        ref = "text" if ds.text is not None else "image"
        n = getattr(ds, ref).shape[0]
    else:
        ref, n = "labels", ds.labels.shape[0]
        if ds.labels.ndim != 2:
            raise DataError(f"labels must be a 2-D (items x classes) array, got shape {ds.labels.shape}")
    for view in ("image", "text"):
        x = getattr(ds, view)
        if x is None:
            continue
        if x.ndim != 2:
            raise DataError(f"{view} features must be 2-D, got shape {x.shape}")
        if x.shape[0] != n:
            raise DataError(f"{view} has {x.shape[0]} rows but {ref} has {n}; every view needs one row per item")
        bad = ~np.isfinite(x)
        if bad.any():
            rows = np.flatnonzero(bad.any(1))
            raise DataError(f"{view} features contain NaN or inf in {len(rows)} rows (first: {rows[:5].tolist()}); "
                            "clean or impute them first")
    if ds.text is None and ds.image is None:
        raise DataError("the dataset has neither an image nor a text view")
    lab = ds.labels
    if lab is None:
        return ds
    if not np.isin(lab, (0, 1)).all():
        raise DataError("labels must be 0/1")
    empty = int((lab.sum(1) == 0).sum())
    if empty:  # the count only: the indices would say something about (possibly private) labels
        raise DataError(f"{empty} items have no label; relevance is 'shares a label', so drop those items "
                        "from the file first (e.g. keep = labels.sum(1) > 0)")
    ds.labels = lab.astype(np.uint8)
    return ds


# ---------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------

def split_sizes(name: str, n: int) -> tuple[int, int]:
    """(n_query, n_train): DESIGN.md sizes for the real sets, proportional otherwise."""
    base = name if name in KNOWN else None
    if base and n >= KNOWN[base]["n_query"] + KNOWN[base]["n_train"] + 1:
        return KNOWN[base]["n_query"], KNOWN[base]["n_train"]
    if n >= 20015:
        return 2000, 10000
    return max(1, n // 10), max(2, n // 2)


def make_split(n: int, *, n_query: int, n_train: int, protocol: str, seed: int) -> Split:
    """A seeded split. Inductive: query, train and database disjoint, so n_query + n_train < N. Standard:
    the database is every non-query item and holds the training items, so n_query + n_train <= N (with
    equality the database is the training set, as published tables build it)."""
    if protocol not in ("inductive", "standard"):
        raise DataError(f"unknown protocol '{protocol}'; choose inductive or standard")
    room = n if protocol == "standard" else n - 1  # inductive keeps at least one database item of its own
    if n_query < 1 or n_train < 2 or n_query + n_train > room:
        need = ("n_query + n_train <= N under --protocol standard" if protocol == "standard" else
                "n_query + n_train < N under the inductive protocol (the database is the rest), or "
                "--protocol standard, where n_query + n_train <= N")
        raise DataError(f"split sizes n_query={n_query}, n_train={n_train} do not fit {n} items; need n_query >= 1, "
                        f"n_train >= 2 and {need}")
    perm = np.random.default_rng(seed).permutation(n)
    query = np.sort(perm[:n_query])
    train = np.sort(perm[n_query:n_query + n_train])
    rest = perm[n_query + n_train:]
    database = np.sort(rest if protocol == "inductive" else perm[n_query:])
    return Split(query=query, train=train, database=database, protocol=protocol)


SPLIT_FILE_FORMAT = ("an .npz with three 1-D integer arrays 'query', 'train' and 'database' of item indices "
                     "0..N-1 in the dataset's order (np.savez(path, query=q, train=t, database=d))")


def file_sha256(path: str) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_split_file(path: str, *, protocol: str) -> dict[str, np.ndarray]:
    """Read and check ``--split-file`` without the dataset: every rule but the index range.

    Returns the sorted int64 arrays 'query', 'train', 'database'. Rules, each a DataError naming the file:
    an .npz archive holding the three arrays; each 1-D, of an integer dtype, non-empty, no index twice,
    no negative index; query disjoint from train and from database; under the inductive protocol train
    disjoint from database too (``--protocol standard`` lets train lie inside the database). The split
    is public, so messages may name indices.
    """
    where = f"--split-file {path}"
    if not os.path.exists(path):
        raise DataError(f"{where}: no such file; expected {SPLIT_FILE_FORMAT}")
    try:
        d = open_npz(path, SPLIT_FILE_FORMAT)
    except DataError as e:
        raise DataError(f"--split-file {e}") from None
    with d:
        missing = [k for k in ("query", "train", "database") if k not in d.files]
        if missing:
            raise DataError(f"{where}: has no array {', '.join(repr(k) for k in missing)} (it has {sorted(d.files)}); "
                            f"expected {SPLIT_FILE_FORMAT}")
        arrays = {k: npz_array(d, k, path, SPLIT_FILE_FORMAT) for k in ("query", "train", "database")}
    out = {}
    for k, a in arrays.items():
        if a.ndim != 1:
            raise DataError(f"{where}: '{k}' has shape {a.shape}; expected a 1-D array of item indices "
                            f"(e.g. save {k}.ravel())")
        if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
            raise DataError(f"{where}: '{k}' has dtype {a.dtype}; expected integer item indices (a boolean mask "
                            f"becomes indices with np.flatnonzero(mask); whole floats with .astype(np.int64))")
        if a.size == 0:
            raise DataError(f"{where}: '{k}' is empty; every part of the split needs at least one item")
        if (a < 0).any():
            raise DataError(f"{where}: '{k}' holds a negative index ({int(a.min())}); expected item indices "
                            "0..N-1")
        s = np.sort(a.astype(np.int64))
        dup = s[1:][s[1:] == s[:-1]]
        if len(dup):
            raise DataError(f"{where}: '{k}' lists item {int(dup[0])} more than once; expected distinct indices "
                            f"(np.unique({k}))")
        out[k] = s
    pairs = [("query", "train"), ("query", "database")] + ([("train", "database")] if protocol != "standard" else [])
    for a, b in pairs:
        both = np.intersect1d(out[a], out[b])
        if len(both):
            extra = (" under the inductive protocol (use --protocol standard if the training items belong in the "
                     "database)" if (a, b) == ("train", "database") else "")
            raise DataError(f"{where}: '{a}' and '{b}' share {len(both)} item(s) (first: {int(both[0])}); they "
                            f"must be disjoint{extra}")
    return out


def load_split_file(path: str, n: int, *, protocol: str) -> Split:
    """``--split-file`` as a Split over a dataset of ``n`` items (``read_split_file`` plus the index range)."""
    a = read_split_file(path, protocol=protocol)
    for k, v in a.items():
        if v[-1] >= n:
            hint = (" (indices are 0-based: a 1-based file, e.g. from MATLAB, needs idx - 1)"
                    if v[-1] == n else "")
            raise DataError(f"--split-file {path}: '{k}' holds index {int(v[-1])}, but the dataset has N = {n} "
                            f"items, indexed 0..{n - 1}{hint}")
    if len(a["train"]) < 2:
        raise DataError(f"--split-file {path}: 'train' has 1 item; training needs at least 2")
    return Split(query=a["query"], train=a["train"], database=a["database"], protocol=protocol)


# ---------------------------------------------------------------------------
# Public projections (public features only)
# ---------------------------------------------------------------------------

def _row_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def public_projection(ds: Dataset, idx: np.ndarray, *, dim: int) -> np.ndarray:
    """Unit-norm rows of a PCA of the public features of items ``idx``.

    Each view is row-normalised, the views are concatenated, centred and
    projected on the top ``dim`` principal directions; each projected row is then
    scaled to norm exactly 1 (zero rows stay zero), so ``||z_i|| <= 1`` as the
    bilinear-moment sensitivity bound in privacy.py requires.
    """
    parts = [_row_normalize(getattr(ds, v)[idx].astype(np.float64)) for v in ds.views]
    x = np.concatenate(parts, 1)
    x -= x.mean(0)
    dim = min(dim, x.shape[1], x.shape[0])
    cov = x.T @ x
    w, v = np.linalg.eigh(cov)
    basis = v[:, np.argsort(-w, kind="stable")[:dim]]
    z = x @ basis
    return _row_normalize(z).astype(np.float32)


# ---------------------------------------------------------------------------
# The private graph (the only reader of training labels)
# ---------------------------------------------------------------------------

def _label_bitmasks(lab: np.ndarray):
    """Each item's 0/1 label vector as one unsigned integer (bit j = label j), or False when the labels
    are not 0/1 or more than 64. For 0/1 labels, "share at least one label" ((l_i . l_j) > 0) is exactly
    (mask_i & mask_j) != 0, and a row block of it costs a few bytes per entry instead of a float product."""
    c = lab.shape[1]
    if c > 64 or not np.isin(lab, (0, 1)).all():
        return False
    dtype = next(t for t in (np.uint8, np.uint16, np.uint32, np.uint64) if np.dtype(t).itemsize * 8 >= c)
    mask = np.zeros(len(lab), dtype=dtype)
    for j in range(c):
        mask |= (lab[:, j] != 0).astype(dtype) << dtype(j)
    return mask


@dataclass
class PrivateGraph:
    """The private training graph. Never print, log or save anything derived from it.

    Dense (bool N x N, symmetric, no self-loops) up to ``dense_limit`` nodes;
    above that, rows are computed on demand from the private label matrix in
    blocks, so the N x N matrix is never materialised. A graph from
    ``--graph-file`` (kind 'file', ``graph_from_edges``) is held as a sparse
    symmetric CSR matrix; ``rows`` gives dense bool blocks of it.
    """
    n: int
    kind: str
    _adj: np.ndarray | None = field(default=None, repr=False)
    _labels: np.ndarray | None = field(default=None, repr=False)
    _sparse: object | None = field(default=None, repr=False)   # scipy.sparse csr_matrix (bool), kind 'file'
    _mask: object | None = field(default=None, repr=False)     # label bitmasks for rows(); False: not usable

    def __repr__(self) -> str:  # no statistic of the graph in the repr
        return f"PrivateGraph(n={self.n}, kind={self.kind!r})"

    def rows(self, start: int, stop: int) -> np.ndarray:
        if self._adj is not None:
            return self._adj[start:stop]
        if self._sparse is not None:
            return self._sparse[start:stop].toarray().astype(bool, copy=False)
        lab = self._labels
        if self._mask is None:
            self._mask = _label_bitmasks(lab)
        if self._mask is not False:  # 0/1 labels, at most 64: i ~ j iff their bitmasks share a bit
            m = self._mask
            block = (m[start:stop, None] & m[None, :]) != 0
        else:
            block = (lab[start:stop] @ lab.T) > 0
        block[np.arange(stop - start), np.arange(start, stop)] = False
        return block

    def has_edge(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Edge indicator for pairs (i, j): for DP-SGD (accounted) and the NOT PRIVATE attack evaluation."""
        if self._adj is not None:
            return self._adj[i, j]
        if self._sparse is not None:
            ii, jj = np.broadcast_arrays(np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64))
            if ii.size == 0:
                return np.zeros(ii.shape, dtype=bool)
            return (np.asarray(self._sparse[ii.ravel(), jj.ravel()]).ravel() != 0).reshape(ii.shape)
        return (self._labels[i] * self._labels[j]).sum(1) > 0

    def dense(self) -> np.ndarray:
        if self._sparse is not None and self.n <= 20000:  # the dense limit of build_private_graph
            return self._sparse.toarray().astype(bool, copy=False)
        if self._adj is None:
            raise MemoryError(f"the private graph over {self.n} nodes is kept implicit; use rows()")
        return self._adj

    def _upper_edges(self) -> tuple[np.ndarray, np.ndarray]:
        """(r, c) of every edge with r < c, in row-major order (for attack_pairs only)."""
        if self._sparse is not None:
            import scipy.sparse as sp
            up = sp.triu(self._sparse, 1).tocoo()
            order = np.lexsort((up.col, up.row))
            return up.row[order].astype(np.int64), up.col[order].astype(np.int64)
        return np.nonzero(np.triu(self._adj, 1))


def build_private_graph(labels: LabelStore, train: np.ndarray, *, kind: str = "label", knn_k: int = 20,
                        dense_limit: int = 20000, seed: int = 0) -> PrivateGraph:
    """The private graph over training items (index i = i-th training item).

    * ``label``: i ~ j iff they share at least one label (DESIGN.md default).
    * ``knn``: the symmetric (union) k-nearest-neighbour graph under the Jaccard
      similarity of label vectors, ties broken by the smaller index.
    * ``interact``: a seeded co-interaction graph of simulated user sessions whose
      interests are tied to the labels (``interaction_graph``); ``seed`` seeds it.
    """
    lab = labels.for_graph(train).astype(np.float32)
    n = len(train)
    if kind == "label":
        if n > dense_limit:
            return PrivateGraph(n=n, kind=kind, _labels=lab)
        adj = np.empty((n, n), dtype=bool)
        for s in range(0, n, 1024):  # in row blocks: no N x N float temporary
            adj[s:s + 1024] = (lab[s:s + 1024] @ lab.T) > 0
        np.fill_diagonal(adj, False)
        return PrivateGraph(n=n, kind=kind, _adj=adj)
    if kind == "knn":
        if knn_k < 1 or knn_k >= n:
            raise DataError(f"knn_k={knn_k} must be in [1, {n - 1}]")
        size = lab.sum(1)
        adj = np.zeros((n, n), dtype=bool)
        for s in range(0, n, 2048):
            inter = lab[s:s + 2048] @ lab.T
            jac = inter / (size[s:s + 2048, None] + size[None, :] - inter)
            jac[np.arange(len(jac)), np.arange(s, s + len(jac))] = -1.0
            # stable top-k: sort by (-jaccard, index)
            order = np.argsort(-jac, axis=1, kind="stable")[:, :knn_k]
            adj[np.arange(s, s + len(jac))[:, None], order] = True
        adj |= adj.T
        np.fill_diagonal(adj, False)
        return PrivateGraph(n=n, kind=kind, _adj=adj)
    if kind == "interact":
        return PrivateGraph(n=n, kind=kind, _adj=interaction_graph(lab, seed=seed))
    raise DataError(f"unknown graph kind '{kind}'; choose label, knn or interact")


def interaction_graph(lab: np.ndarray, *, seed: int, users_per_item: float = 6.0, activity_shape: float = 1.5,
                      popularity_shape: float = 2.5, nuisance: float = 0.2, max_sessions: int = 40) -> np.ndarray:
    """A seeded co-interaction graph over the training items (``--graph interact``; our user model).

    Simulates a log of users who view items in sessions, and links every pair of
    items viewed in the same session (co-view), as item-to-item similarity graphs
    built from click logs are. The user model:

    * ``users_per_item * N`` users; user u runs ``sessions_u = min(floor(Pareto(a) + 1), max_sessions)``
      sessions (power-law activity, a = ``activity_shape``);
    * item popularity ``pop_i = Pareto(p) + 1`` (power law, p = ``popularity_shape``):
      popular items are viewed in many sessions and become hubs;
    * each user has two interests: labels drawn with probability proportional to
      the square root of the label's frequency among the training items;
    * a session makes ``1 + Geometric(0.3)`` views (at least 2, at most 12), each
      drawn with replacement, so a session holds at most that many distinct items. With
      probability 1 - ``nuisance`` it is an interest session: one of the user's
      interests, and items carrying that label drawn by popularity. Otherwise it is
      a nuisance session: items drawn by popularity alone, whatever their labels.

    The interests are tied to the labels, which the public features carry only
    weakly, while popularity and the nuisance sessions add hubs and links that no
    feature explains: the graph teaches something the features do not, among
    noise. Its statistics are private: nothing here is printed.

    The defaults (6 users per item, popularity shape 2.5) replace earlier ones
    (2 and 1.2) whose graph reached too few items to teach much: on MIRFlickr-25K
    (T->T, seed 0) the model trained on the true graph gained 0.022 mAP over the
    public-only model with them, and 0.053 with these (0.039 with the public
    prior beside it). Heavier popularity tails (1.2) leave most items with no
    interest co-views; 2.5 still gives power-law hubs.
    Returns the symmetric bool adjacency (no self-loops).
    """
    rng = np.random.default_rng([seed, 0x1A7E5])
    n, n_labels = lab.shape
    pop = rng.pareto(popularity_shape, size=n) + 1.0
    pools = [np.flatnonzero(lab[:, c]) for c in range(n_labels)] + [np.arange(n)]  # the last: nuisance
    cums = []
    for pool in pools:
        cp = np.cumsum(pop[pool])
        cums.append(cp / cp[-1] if len(cp) else cp)
    freq = np.sqrt(np.maximum(lab.sum(0), 0).astype(np.float64))
    freq = freq / freq.sum()
    n_users = max(1, int(round(users_per_item * n)))
    sessions = np.minimum(np.floor(rng.pareto(activity_shape, size=n_users) + 1), max_sessions).astype(int)
    interests = np.stack([rng.choice(n_labels, size=n_users, p=freq) for _ in range(2)], 1)
    user = np.repeat(np.arange(n_users), sessions)                   # one row per session
    which = interests[user, rng.integers(0, 2, size=len(user))]
    which[rng.random(len(user)) < nuisance] = n_labels
    length = np.minimum(1 + rng.geometric(0.3, size=len(user)), 12)
    draws = rng.random((len(user), 12))
    a_idx, b_idx = np.triu_indices(12, 1)
    rows, cols = [], []
    for k, pool in enumerate(pools):  # all sessions on one pool at once
        mine = np.flatnonzero(which == k)
        if len(pool) < 2 or len(mine) == 0:
            continue
        items = pool[np.minimum(np.searchsorted(cums[k], draws[mine], side="right"), len(pool) - 1)]
        ok = b_idx[None, :] < length[mine, None]          # both views within the session's length
        rows.append(items[:, a_idx][ok])
        cols.append(items[:, b_idx][ok])
    adj = np.zeros((n, n), dtype=bool)
    if rows:
        r, c = np.concatenate(rows), np.concatenate(cols)
        adj[r, c] = True
        adj[c, r] = True
    np.fill_diagonal(adj, False)
    return adj


def attack_pairs(graph: PrivateGraph, n_pairs: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A balanced, seeded sample of edges and non-edges of the private graph.

    For the link-reconstruction evaluation only: the pairs are used to score an
    attack and are never released. Returns (pos, neg), each (n_pairs//2, 2).
    """
    rng = np.random.default_rng(seed + 7919)
    half = max(1, n_pairs // 2)
    pos, neg = [], []
    need_pos, need_neg = half, half
    for _ in range(200):
        if need_pos <= 0 and need_neg <= 0:
            break
        i = rng.integers(0, graph.n, size=4 * half)
        j = rng.integers(0, graph.n, size=4 * half)
        keep = i != j
        i, j = i[keep], j[keep]
        lab = graph.has_edge(i, j)
        if need_pos > 0:
            p_ = np.stack([i[lab], j[lab]], 1)[:need_pos]
            pos.append(p_)
            need_pos -= len(p_)
        if need_neg > 0:
            n_ = np.stack([i[~lab], j[~lab]], 1)[:need_neg]
            neg.append(n_)
            need_neg -= len(n_)
        if need_pos > 0 and (graph._adj is not None or graph._sparse is not None) and lab.mean() < 0.05:
            # sparse graph: draw the positives from the edge list directly
            r, c = graph._upper_edges()
            pick = rng.choice(len(r), size=min(need_pos, len(r)), replace=False)
            pos.append(np.stack([r[pick], c[pick]], 1))
            need_pos = 0
    return np.concatenate(pos)[:half], np.concatenate(neg)[:half]


# ---------------------------------------------------------------------------
# Your own graph (--graph-file)
# ---------------------------------------------------------------------------
# The file's train-train edges are the private graph. Every message below names the file and the
# expected format, and none states a statistic of the graph: no counts, no offending rows or
# indices, no degrees (the public N and the allowed index range are fine).

GRAPH_FILE_FORMAT = ("an .npz with an integer array 'edges' of shape (m, 2), or a .csv/.txt with two integer "
                     "columns (comma or whitespace separated; an optional header line), one undirected edge "
                     "(u, v) per row, u and v item indices 0..N-1 in the dataset's order")


def require_labels(path: str) -> None:
    """The error for an .npz dataset without 'labels' when no --graph-file is given (dmpmh.validate_config);
    an unreadable file gets its own error (open_npz), before any data is read."""
    with open_npz(path) as d:
        files = list(d.files)
    if "labels" not in files:
        raise DataError(f"{path}: must hold 'labels' and at least one of 'text', 'image'; it has {files}. "
                        "Without labels, give your own graph with --graph-file PATH")


def check_graph_path(path: str) -> str:
    """The --graph-file exists, is a file and has a known extension; returns 'npz' or 'text'."""
    if not os.path.exists(path):
        raise DataError(f"--graph-file {path}: no such file. Expected {GRAPH_FILE_FORMAT}")
    if os.path.isdir(path):
        raise DataError(f"--graph-file {path} is a folder; expected a file: {GRAPH_FILE_FORMAT}")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npz", ".csv", ".txt"):
        raise DataError(f"--graph-file {path}: unknown extension '{ext}'; expected {GRAPH_FILE_FORMAT}")
    return "npz" if ext == ".npz" else "text"


def _read_edges_npz(path: str, where: str) -> np.ndarray:
    import zipfile
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise DataError(f"{where}: permission denied (the file cannot be read); expected {GRAPH_FILE_FORMAT}") from None
    try:
        d = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        raise DataError(f"{where}: cannot read it as .npz (not a valid .npz archive); expected "
                        f"{GRAPH_FILE_FORMAT}") from None
    if not hasattr(d, "files"):  # a bare .npy saved under an .npz name
        raise DataError(f"{where} is a single .npy array, not an .npz archive; save it with "
                        "np.savez(path, edges=edges)")
    with d:
        if "edges" not in d.files:
            raise DataError(f"{where} has no array 'edges' (it has {sorted(d.files)}); expected {GRAPH_FILE_FORMAT}")
        try:
            return np.asarray(d["edges"])
        except Exception:  # corrupt member, or an object array (pickles are not read); no details: they hold sizes
            raise DataError(f"{where}: the array 'edges' cannot be read (a corrupt file, or an object array, "
                            f"which is not allowed); expected {GRAPH_FILE_FORMAT}") from None


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def _read_edges_text(path: str, where: str) -> np.ndarray:
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise DataError(f"{where} is not a UTF-8 text file; expected {GRAPH_FILE_FORMAT}") from None
    except OSError as e:
        raise DataError(f"{where} cannot be read ({e.strerror}); expected {GRAPH_FILE_FORMAT}") from None
    lines = [ln.replace(",", " ").split() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln[0].startswith("#")]
    if lines and not any(_is_number(t) for t in lines[0]):
        lines = lines[1:]  # a header line such as 'u,v' or 'source target'
    if not lines:
        return np.zeros((0, 2), dtype=np.int64)
    if any(len(ln) != 2 for ln in lines):
        raise DataError(f"{where}: every line must hold exactly two item indices separated by a comma or "
                        "whitespace, and some line does not (only the first line may be a header; lines "
                        "starting with '#' are skipped); find them with: awk -F'[ ,\\t]+' 'NF!=2' FILE")
    tokens = np.array(lines)
    try:
        return tokens.astype(np.int64)
    except (ValueError, OverflowError):
        pass
    try:
        return tokens.astype(np.float64)  # checked for integer values next
    except ValueError:
        raise DataError(f"{where}: some entry is not a number; expected integer item indices 0..N-1, "
                        "two per line") from None


def load_graph_file(path: str, n_items: int) -> np.ndarray:
    """Read ``--graph-file``: the (m, 2) int64 edge list over ALL items, u < v in each row, rows sorted.

    Formats: ``.npz`` with an integer array ``edges`` (m, 2), or ``.csv``/``.txt`` with two integer
    columns (comma or whitespace separated; an optional non-numeric header line; '#' comment lines).
    Edges are undirected, so (u, v) and (v, u) are the same edge. Anything wrong raises DataError
    naming the file and what is expected, and is rejected rather than dropped: a missing file or a
    folder, an unreadable archive, no 'edges', a wrong shape or dtype, NaN or non-integer values,
    indices outside 0..N-1, self-loops, duplicate edges, no edge at all. No message states a
    statistic of the graph (the train-train edges are private).
    """
    kind = check_graph_path(path)
    where = f"--graph-file {path}"
    what = "'edges'" if kind == "npz" else "the file"
    a = _read_edges_npz(path, where) if kind == "npz" else _read_edges_text(path, where)
    if a.ndim != 2 or a.shape[1] != 2:
        hint = (" (it has 2 rows: if the array is stored transposed, save edges.T)"
                if a.ndim == 2 and a.shape[0] == 2 else f" (it is {a.ndim}-D)" if a.ndim != 2 else "")
        raise DataError(f"{where}: {what} must have shape (m, 2), one (u, v) row per edge; it does not{hint}")
    if a.shape[0] == 0:
        raise DataError(f"{where} holds no edges; expected at least one (u, v) row: {GRAPH_FILE_FORMAT}")
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        kind_ = "booleans" if a.dtype == bool else "strings" if a.dtype.kind in "US" else "a non-numeric dtype"
        raise DataError(f"{where}: {what} holds {kind_}; expected integer item indices 0..N-1")
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise DataError(f"{where}: {what} contains NaN or inf; expected integer item indices 0..N-1")
        if (a != np.floor(a)).any():
            raise DataError(f"{where}: {what} contains non-integer values; expected integer item indices 0..N-1")
    if (a < 0).any() or (a >= n_items).any():
        raise DataError(f"{where}: item indices must be in 0..{n_items - 1} (the dataset has N = {n_items} items, "
                        "indexed from 0 in the dataset's order); the file holds some outside that range")
    a = a.astype(np.int64)
    if (a[:, 0] == a[:, 1]).any():
        raise DataError(f"{where} contains self-loops (rows with u == v); an item is not its own neighbour. "
                        "Remove them, e.g. edges = edges[edges[:, 0] != edges[:, 1]]")
    e = np.sort(a, axis=1)
    key = e[:, 0] * np.int64(n_items) + e[:, 1]
    uniq = np.unique(key)
    if len(uniq) != len(key):
        raise DataError(f"{where} contains duplicate edges ((u, v) and (v, u) are the same undirected edge). "
                        "Remove them, e.g. edges = np.unique(np.sort(edges, axis=1), axis=0)")
    return np.stack([uniq // n_items, uniq % n_items], 1).astype(np.int64)


def graph_from_edges(edges: np.ndarray, train: np.ndarray) -> PrivateGraph:
    """The private graph (kind 'file') over the training items, from a ``load_graph_file`` edge list.

    Node i is the i-th entry of the sorted ``train`` array. Only edges with both ends in ``train``
    are kept: the train-train edges are the private graph. Edges that touch a query or database
    item never enter it (they are evaluation ground truth: ``graph_relevance``). Held as a sparse
    symmetric bool CSR matrix without self-loops.
    """
    import scipy.sparse as sp
    train = np.asarray(train, dtype=np.int64)
    if train.ndim != 1 or (np.diff(train) <= 0).any():
        raise ValueError("train must be a sorted 1-D array of distinct item indices")
    n = len(train)
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    pos = np.minimum(np.searchsorted(train, e), max(n - 1, 0))
    inside = (train[pos] == e).all(1) if n else np.zeros(len(e), dtype=bool)
    r, c = pos[inside, 0], pos[inside, 1]
    r, c = r[r != c], c[r != c]
    adj = sp.csr_matrix((np.ones(2 * len(r), dtype=bool), (np.concatenate([r, c]), np.concatenate([c, r]))),
                        shape=(n, n))
    adj.sum_duplicates()
    adj.sort_indices()
    return PrivateGraph(n=n, kind="file", _sparse=adj)


def graph_relevance(edges: np.ndarray, query: np.ndarray, database: np.ndarray, *, required: bool,
                    path: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Graph-relevance ground truth: a database item is relevant to a query iff the file links them.

    Reads only query-database edges, which are not part of the private (train-train) graph. Returns
    ``(keep, query_labels, db_labels)`` in evaluate.py's "share a label" form: ``keep`` indexes the
    queries with at least one linked database item (a query with none has no relevant item, and its
    AP would count as 0), query k of ``keep`` gets the one-hot label e_k, and database item d the row
    A[d, keep] of its links to those queries, so "share a label" == "linked". With ``required`` (no
    labels to evaluate with instead), a file that links no query to the database is an error.
    """
    query = np.asarray(query, dtype=np.int64)
    database = np.asarray(database, dtype=np.int64)
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    e = np.concatenate([e, e[:, ::-1]])  # both orientations of each undirected edge: (query, database)
    qp = np.minimum(np.searchsorted(query, e[:, 0]), len(query) - 1)
    dp = np.minimum(np.searchsorted(database, e[:, 1]), len(database) - 1)
    ok = (query[qp] == e[:, 0]) & (database[dp] == e[:, 1])
    a = np.zeros((len(database), len(query)), dtype=bool)
    a[dp[ok], qp[ok]] = True
    keep = np.flatnonzero(a.any(0))
    if required and not len(keep):
        raise DataError(f"--graph-file {path} links no query item to any database item, and the dataset has no "
                        "labels, so there is no ground truth to evaluate retrieval with; the file should hold "
                        "the query-database links too (edges over all items, not only the training items)")
    return keep, np.eye(len(keep), dtype=bool), np.ascontiguousarray(a[:, keep])
