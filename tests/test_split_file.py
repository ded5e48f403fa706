"""--split-file (issue 14): a fixed, published split, validated rule by rule; --protocol standard with
n_query + n_train = N.

Each bad split stops with one 'error:' line and exit 2 (the CLI in-process: the split is checked before
any data is read or any folder made, except the index range, which needs N). One tiny run reproduces a
split exactly, with no row reordering, and records the file's name and sha256.
"""
import hashlib
import json
import os

import numpy as np
import pytest

import data
import dmpmh

N = 120
TINY = ["--epochs", "1", "--proj-dim", "8", "--hidden", "16", "--support-k", "4", "--max-degree", "4",
        "--batch-size", "32", "--insecure-seed", "3", "--bits", "8"]


def _dataset(tmp):
    rng = np.random.default_rng(0)
    lab = (rng.random((N, 3)) < 0.5).astype(np.uint8)
    lab[:, 0] |= lab.sum(1) == 0
    path = tmp / "set.npz"
    np.savez(path, text=rng.random((N, 12)).astype(np.float32), labels=lab)
    return str(path)


def _split(tmp, name="split.npz", **arrays):
    base = {"query": np.arange(0, 20), "train": np.arange(20, 80), "database": np.arange(80, N)}
    base.update(arrays)
    path = tmp / name
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return str(path)


def _cli(argv, tmp, capsys):
    rc = dmpmh.main(argv + ["--out-dir", str(tmp / "runs")])
    err = capsys.readouterr().err
    return rc, [ln for ln in err.splitlines() if ln.strip()]


BAD = [
    ("no such file", lambda t: str(t / "missing.npz"), "no such file"),
    ("a text file", lambda t: (t / "s.npz").write_text("1,2,3\n") and str(t / "s.npz"), "not an .npz archive"),
    ("no database", lambda t: _split(t, database=None), "has no array 'database'"),
    ("2-D", lambda t: _split(t, query=np.arange(20).reshape(4, 5)), "1-D"),
    ("floats", lambda t: _split(t, query=np.arange(20.0)), "dtype float64"),
    ("a boolean mask", lambda t: _split(t, query=np.arange(N) < 20), "np.flatnonzero"),
    ("empty", lambda t: _split(t, query=np.array([], dtype=np.int64)), "'query' is empty"),
    ("negative", lambda t: _split(t, query=np.array([-1, 2])), "negative index (-1)"),
    ("duplicate", lambda t: _split(t, train=np.array([20, 21, 21, 22])), "item 21 more than once"),
    ("query in train", lambda t: _split(t, query=np.arange(0, 21)), "'query' and 'train' share 1 item(s) (first: 20)"),
    ("query in database", lambda t: _split(t, database=np.arange(19, N)), "'query' and 'database' share"),
    ("train in database, inductive", lambda t: _split(t, database=np.arange(20, N)),
     "'train' and 'database' share 60 item(s) (first: 20); they must be disjoint under the inductive protocol"),
    ("out of range", lambda t: _split(t, database=np.arange(80, N + 5)), f"index {N + 4}, but the dataset has N = {N}"),
    ("1-based", lambda t: _split(t, database=np.arange(81, N + 1)), "needs idx - 1"),
]


@pytest.mark.parametrize("case,make,says", BAD, ids=[c[0] for c in BAD])
def test_bad_split_file_is_one_line_exit_2(case, make, says, tmp_path, capsys):
    ds = _dataset(tmp_path)
    rc, lines = _cli(["--dataset", ds, "--split-file", make(tmp_path)] + TINY, tmp_path, capsys)
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: --split-file"), lines
    assert says in lines[0], lines[0]
    assert "Traceback" not in lines[0]
    assert not os.path.exists(tmp_path / "runs") or not [f for f in os.listdir(tmp_path / "runs")
                                                         if not f.startswith(".")]


def test_split_file_with_sizes_is_refused(tmp_path, capsys):
    rc, lines = _cli(["--dataset", _dataset(tmp_path), "--split-file", _split(tmp_path), "--n-query", "10"] + TINY,
                     tmp_path, capsys)
    assert rc == 2 and len(lines) == 1 and "--n-query would resize it" in lines[0]


def test_read_split_file_rules_and_sorting(tmp_path):
    p = _split(tmp_path, query=np.array([5, 1, 3]), train=np.array([40, 20, 30]), database=np.array([99, 90]))
    s = data.load_split_file(p, N, protocol="inductive")
    assert s.query.tolist() == [1, 3, 5] and s.train.tolist() == [20, 30, 40] and s.database.tolist() == [90, 99]
    assert s.query.dtype == np.int64 and s.protocol == "inductive"
    # standard: train inside the database is allowed; the query never is
    p = _split(tmp_path, database=np.arange(20, N))
    s = data.load_split_file(p, N, protocol="standard")
    assert set(s.train) <= set(s.database)
    with pytest.raises(data.DataError, match="'query' and 'database' share"):
        data.load_split_file(_split(tmp_path, database=np.arange(0, N)), N, protocol="standard")
    with pytest.raises(data.DataError, match="training needs at least 2"):
        data.load_split_file(_split(tmp_path, train=np.array([20])), N, protocol="inductive")
    # int32 and uint16 indices are fine
    p = _split(tmp_path, query=np.arange(20, dtype=np.uint16), train=np.arange(20, 80, dtype=np.int32))
    assert len(data.load_split_file(p, N, protocol="inductive").train) == 60


def test_standard_protocol_accepts_query_plus_train_equal_to_n():
    s = data.make_split(100, n_query=30, n_train=70, protocol="standard", seed=1)
    assert len(s.query) == 30 and len(s.train) == 70
    np.testing.assert_array_equal(s.database, s.train)  # database = every non-query item = the training set
    assert not set(s.query) & set(s.database)
    s = data.make_split(100, n_query=30, n_train=50, protocol="standard", seed=1)
    assert len(s.database) == 70 and set(s.train) <= set(s.database)
    with pytest.raises(data.DataError, match="n_query \\+ n_train < N under the inductive protocol"):
        data.make_split(100, n_query=30, n_train=70, protocol="inductive", seed=1)
    with pytest.raises(data.DataError, match="n_query \\+ n_train <= N under --protocol standard"):
        data.make_split(100, n_query=30, n_train=71, protocol="standard", seed=1)
    # the inductive protocol still fits n_query + n_train = N - 1 (one database item)
    assert len(data.make_split(100, n_query=30, n_train=69, protocol="inductive", seed=1).database) == 1


def test_cli_standard_split_sizes_summing_to_n_run(tmp_path, capsys):
    """The issue's case: a 693 / 2,173 test/train split of 2,866 items, scaled down (12 / 108 of 120)."""
    ds = _dataset(tmp_path)
    metrics = dmpmh.run(dmpmh.parse_config(["--dataset", ds, "--protocol", "standard", "--n-query", "12",
                                            "--n-train", "108", "--out-dir", str(tmp_path / "runs")] + TINY))
    codes = np.load(os.path.join(metrics["run_dir"], "codes.npz"))
    assert len(codes["query_index"]) == 12 and len(codes["database_index"]) == 108


def test_published_split_reproduced_without_reordering(tmp_path, capsys):
    """A published (standard) split: query = a scattered test set, train = the rest = the database."""
    ds = _dataset(tmp_path)
    rng = np.random.default_rng(7)
    query = np.sort(rng.choice(N, size=17, replace=False))
    rest = np.setdiff1d(np.arange(N), query)
    path = _split(tmp_path, "published.npz", query=query[::-1].astype(np.int32), train=rest, database=rest)
    cfg = dmpmh.parse_config(["--dataset", ds, "--protocol", "standard", "--split-file", path,
                              "--out-dir", str(tmp_path / "runs")] + TINY)
    metrics = dmpmh.run(cfg)
    out = capsys.readouterr().out
    assert "split from published.npz" in out and f"query {len(query)}, train {len(rest)}, database {len(rest)}" in out
    run_dir = metrics["run_dir"]
    codes = np.load(os.path.join(run_dir, "codes.npz"))
    np.testing.assert_array_equal(codes["query_index"], query)
    np.testing.assert_array_equal(codes["database_index"], rest)
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    saved = json.load(open(os.path.join(run_dir, "config.json")))
    assert saved["split_file"] == path and saved["split_file_sha256"] == sha
    assert json.load(open(os.path.join(run_dir, "metrics.json")))["split"] == {"file": "published.npz", "sha256": sha}
    # the seeded split would differ: the file, not the seed, chose the items
    seeded = data.make_split(N, n_query=17, n_train=N - 17, protocol="standard", seed=0)
    assert not np.array_equal(seeded.query, query)
