"""--graph-file: the user's own interaction graph (formats, errors, which edges are private, end to end)."""
import json
import os

import numpy as np
import pytest

import data
import dmpmh

N = 400
FAST = ["--epochs", "1", "--bits", "8", "--proj-dim", "16", "--hidden", "32", "--support-k", "8",
        "--max-degree", "8", "--batch-size", "64", "--nmd-iters", "20", "--insecure-seed", "3"]


def _dataset(path, *, labels: bool, seed=0):
    """400 items in 8 clusters; small feature dimensions keep the run fast."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, 8, N)
    arrays = {"image": (rng.normal(size=(8, 16))[cluster] + rng.normal(size=(N, 16))).astype(np.float32),
              "text": ((rng.random((8, 24)) < 0.3)[cluster] | (rng.random((N, 24)) < 0.05)).astype(np.float32)}
    if labels:
        arrays["labels"] = np.eye(8, dtype=np.uint8)[cluster]
    np.savez(path, **arrays)
    return str(path), cluster


def _cluster_edges(cluster, seed=0, p=0.15):
    rng = np.random.default_rng(seed)
    i, j = np.triu_indices(len(cluster), 1)
    keep = (cluster[i] == cluster[j]) & (rng.random(len(i)) < p)
    return np.stack([i[keep], j[keep]], 1)


# ---------------------------------------------------------------------------
# formats
# ---------------------------------------------------------------------------

def test_npz_and_csv_agree(tmp_path):
    rng = np.random.default_rng(1)
    e = _cluster_edges(rng.integers(0, 5, 60), p=0.3)
    want = np.unique(np.sort(e, 1), axis=0)
    # shuffled rows, random orientation: the result is canonical (u < v, rows sorted)
    mixed = e[rng.permutation(len(e))]
    flip = rng.random(len(e)) < 0.5
    mixed[flip] = mixed[flip][:, ::-1]
    np.savez(tmp_path / "g.npz", edges=mixed.astype(np.int32))
    np.savez(tmp_path / "gf.npz", edges=mixed.astype(np.float64))           # integral floats are fine
    np.savetxt(tmp_path / "g.csv", mixed, fmt="%d", delimiter=",", header="u,v", comments="")
    np.savetxt(tmp_path / "g.txt", mixed, fmt="%d")                         # whitespace, no header
    for name in ("g.npz", "gf.npz", "g.csv", "g.txt"):
        got = data.load_graph_file(str(tmp_path / name), 60)
        assert got.dtype == np.int64 and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want)
        assert (got[:, 0] < got[:, 1]).all()


def _msg_without(err: str, path) -> str:
    return err.replace(str(path), "")


M = 523   # edges in each bad file: a number that appears nowhere else


def _bad(kind, tmp_path):
    """(path, numbers that must not appear in the message) for one kind of bad file."""
    rng = np.random.default_rng(7)
    e = np.unique(np.sort(rng.integers(0, N, (2 * M, 2)), 1), axis=0)
    e = e[e[:, 0] != e[:, 1]][:M]
    assert len(e) == M
    secret = [str(M)]
    p = tmp_path / "g.npz"
    if kind == "missing":
        p = tmp_path / "nothere.npz"
    elif kind == "folder":
        p = tmp_path / "edges.csv"
        p.mkdir()
    elif kind == "corrupt":
        p.write_bytes(b"PK\x03\x04 this is not a zip archive" + bytes(range(200)))
    elif kind == "npy_as_npz":
        with open(p, "wb") as f:
            np.save(f, e)
    elif kind == "no_edges_key":
        np.savez(p, pairs=e)
    elif kind == "shape3":
        np.savez(p, edges=np.concatenate([e, e[:, :1]], 1))
    elif kind == "shape1d":
        np.savez(p, edges=e.ravel())
    elif kind == "transposed":
        np.savez(p, edges=e.T)
    elif kind == "strings":
        np.savez(p, edges=e.astype(str))
    elif kind == "nonint":
        f = e.astype(np.float64)
        f[[5, 311, 400]] += 0.5
        np.savez(p, edges=f)
        secret += ["311"]
    elif kind == "nan":
        f = e.astype(np.float64)
        f[311, 1] = np.nan
        np.savez(p, edges=f)
        secret += ["311"]
    elif kind == "negative":
        e[[3, 311], 0] = -1
        np.savez(p, edges=e)
        secret += ["311"]
    elif kind == "too_big":
        e[311:322, 1] = N + 5        # 11 rows, index 405
        np.savez(p, edges=e)
        secret += ["311", "405"]
    elif kind == "self_loops":
        e[300:313, 1] = e[300:313, 0]  # 13 self-loops
        np.savez(p, edges=e)
        secret += ["13", "300"]
    elif kind == "duplicates":
        e[300:317] = e[100:117][:, ::-1]  # 17 reversed duplicates
        np.savez(p, edges=e)
        secret += ["17", "300", "100"]
    elif kind == "empty_npz":
        np.savez(p, edges=np.zeros((0, 2), dtype=np.int64))
    elif kind == "empty_csv":
        p = tmp_path / "g.csv"
        p.write_text("u,v\n")
    elif kind == "csv_3_fields":
        p = tmp_path / "g.csv"
        lines = [f"{u},{v}" for u, v in e]
        lines[311] += ",1"
        p.write_text("u,v\n" + "\n".join(lines) + "\n")
        secret += ["311", "312", "313"]
    elif kind == "csv_not_number":
        p = tmp_path / "g.csv"
        lines = [f"{u} {v}" for u, v in e]
        lines[311] = "12 x"
        p.write_text("\n".join(lines) + "\n")
        secret += ["311", "312"]
    elif kind == "csv_duplicates":
        p = tmp_path / "g.csv"
        e[300:317] = e[100:117][:, ::-1]
        p.write_text("\n".join(f"{u},{v}" for u, v in e) + "\n")
        secret += ["17", "300", "100"]
    elif kind == "extension":
        p = tmp_path / "g.json"
        p.write_text("[[0, 1]]")
    else:
        raise AssertionError(kind)
    return p, secret


BAD = {  # kind -> words the message must contain
    "missing": "no such file", "folder": "is a folder", "corrupt": "cannot read it as .npz",
    "npy_as_npz": "not an .npz archive", "no_edges_key": "no array 'edges'", "shape3": "shape (m, 2)",
    "shape1d": "shape (m, 2)", "transposed": "edges.T", "strings": "holds strings", "nonint": "non-integer",
    "nan": "NaN", "negative": "0..399", "too_big": "0..399", "self_loops": "self-loops",
    "duplicates": "duplicate edges", "empty_npz": "no edges", "empty_csv": "no edges",
    "csv_3_fields": "exactly two item indices", "csv_not_number": "not a number",
    "csv_duplicates": "duplicate edges", "extension": "unknown extension",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_graph_file_exit_2(tmp_path, capsys, kind):
    ds, _ = _dataset(tmp_path / "items.npz", labels=True)
    path, secret = _bad(kind, tmp_path)
    out = tmp_path / "runs"
    assert dmpmh.main(["--dataset", ds, "--graph-file", str(path), "--out-dir", str(out)] + FAST) == 2
    full = capsys.readouterr().err
    assert "Traceback" not in full
    (err,) = [line for line in full.splitlines() if line.startswith("error:")]
    assert err.startswith("error: --graph-file " + str(path)), err
    assert BAD[kind] in err, err
    assert "Traceback" not in err
    rest = _msg_without(err, path)
    for s in secret:  # no statistic of the private part: counts, offending rows, offending values
        assert s not in rest, (s, rest)
    assert not out.exists() or os.listdir(out) == []  # nothing half-written


def test_graph_file_with_graph_kind_is_refused(tmp_path, capsys):
    ds, cluster = _dataset(tmp_path / "items.npz", labels=True)
    np.savez(tmp_path / "g.npz", edges=_cluster_edges(cluster))
    assert dmpmh.main(["--dataset", ds, "--graph-file", str(tmp_path / "g.npz"), "--graph", "knn",
                       "--out-dir", str(tmp_path / "runs")]) == 2
    assert "use one of the two" in capsys.readouterr().err


def test_npz_without_labels_needs_graph_file(tmp_path, capsys):
    ds, _ = _dataset(tmp_path / "items.npz", labels=False)
    assert dmpmh.main(["--dataset", ds, "--out-dir", str(tmp_path / "runs")] + FAST) == 2
    err = capsys.readouterr().err
    assert "must hold 'labels'" in err and "--graph-file" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # refused before anything was created


# ---------------------------------------------------------------------------
# which edges are private
# ---------------------------------------------------------------------------

def test_graph_from_edges_keeps_exactly_train_train_edges():
    train = np.array([1, 4, 6, 9])            # node 0 = item 1, 1 = item 4, 2 = item 6, 3 = item 9
    edges = np.array([[1, 4], [6, 9], [1, 9],  # train-train
                      [0, 1], [4, 5], [2, 3], [0, 8], [6, 7]])  # touching query / database items
    g = data.graph_from_edges(edges, train)
    want = np.zeros((4, 4), dtype=bool)
    for u, v in [(0, 1), (2, 3), (0, 3)]:
        want[u, v] = want[v, u] = True
    assert g.kind == "file" and g.n == 4
    np.testing.assert_array_equal(g.dense(), want)
    np.testing.assert_array_equal(g.rows(1, 3), want[1:3])
    assert g.rows(0, 4).dtype == bool
    np.testing.assert_array_equal(g.has_edge(np.array([0, 0, 1, 2]), np.array([1, 2, 3, 3])),
                                  [True, False, False, True])
    assert repr(g) == "PrivateGraph(n=4, kind='file')"  # no statistic in the repr


def test_graph_from_edges_random_against_brute_force():
    rng = np.random.default_rng(3)
    n = 120
    e = np.unique(np.sort(rng.integers(0, n, (900, 2)), 1), axis=0)
    e = e[e[:, 0] != e[:, 1]]
    split = data.make_split(n, n_query=12, n_train=60, protocol="inductive", seed=0)
    g = data.graph_from_edges(e, split.train)
    full = np.zeros((n, n), dtype=bool)
    full[e[:, 0], e[:, 1]] = full[e[:, 1], e[:, 0]] = True
    np.testing.assert_array_equal(g.dense(), full[np.ix_(split.train, split.train)])
    # query and database edges never reach the training graph
    others = np.setdiff1d(np.arange(n), split.train)
    assert full[np.ix_(others, np.arange(n))].any()     # the file has such edges ...
    assert g.dense().sum() == full[np.ix_(split.train, split.train)].sum()  # ... and none of them is kept
    pos, neg = data.attack_pairs(g, 40, seed=0)          # the link attack works on the sparse kind
    assert g.has_edge(pos[:, 0], pos[:, 1]).all() and not g.has_edge(neg[:, 0], neg[:, 1]).any()


def test_graph_relevance_is_the_one_hot_trick():
    query, database = np.array([0, 3, 7]), np.array([1, 2, 5, 8])
    edges = np.array([[0, 2], [8, 0], [3, 7], [1, 5], [2, 5]])  # 0-2, 0-8: links; 3-7 query-query; rest db-db
    keep, ql, dl = data.graph_relevance(edges, query, database, required=True)
    np.testing.assert_array_equal(keep, [0])                 # queries 3 and 7 link to no database item
    rel = (ql.astype(int) @ dl.T.astype(int)) > 0            # "shares a label"
    np.testing.assert_array_equal(rel, [[False, True, False, True]])
    with pytest.raises(data.DataError, match="links no query"):
        data.graph_relevance(np.array([[1, 2]]), query, database, required=True, path="g.csv")
    keep, _, _ = data.graph_relevance(np.array([[1, 2]]), query, database, required=False)
    assert len(keep) == 0


# ---------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------

def test_end_to_end_without_labels(tmp_path, capsys):
    ds, cluster = _dataset(tmp_path / "items.npz", labels=False)
    g = tmp_path / "g.csv"
    np.savetxt(g, _cluster_edges(cluster), fmt="%d", delimiter=",", header="u,v", comments="")
    out = tmp_path / "runs"
    assert dmpmh.main(["--dataset", ds, "--graph-file", str(g), "--out-dir", str(out)] + FAST) == 0
    text = capsys.readouterr().out
    (run_dir,) = os.listdir(out)
    m = json.load(open(out / run_dir / "metrics.json"))
    assert m["relevance"] == "graph"
    assert set(m["retrieval"]) == {"I->I", "I->T", "T->I", "T->T"} and m["retrieval"] == m["retrieval_graph"]
    for r in m["retrieval"].values():
        assert 0.0 < r["map"] <= 1.0
    assert 0 < m["graph_queries"]["evaluated"] <= m["graph_queries"]["total"] == 40
    assert m["chance_map"] == m["chance_map_graph"] and 0 < m["chance_map"] < 1
    assert "linked in --graph-file" in text and "| T->I |" in text
    assert "linked in --graph-file" in open(out / run_dir / "metrics.md").read()


def test_labels_and_graph_file_report_both_and_training_labels_are_not_read(tmp_path, monkeypatch):
    stores = []
    original = data.LabelStore

    class Spy(original):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            stores.append(self)

    monkeypatch.setattr(data, "LabelStore", Spy)
    ds, cluster = _dataset(tmp_path / "items.npz", labels=True)
    np.savez(tmp_path / "g.npz", edges=_cluster_edges(cluster))
    m = dmpmh.run(dmpmh.parse_config(["--dataset", ds, "--graph-file", str(tmp_path / "g.npz"),
                                      "--out-dir", str(tmp_path / "runs")] + FAST))
    (store,) = stores
    assert store.has_labels
    assert [r for r in store.reads if r[0] == "graph"] == []          # the graph came from the file
    assert all(n_private == 0 for p, n_private in store.reads if p == "evaluation")
    assert m["relevance"] == "labels"
    assert set(m["retrieval"]) == set(m["retrieval_graph"]) == {"I->I", "I->T", "T->I", "T->T"}
    assert m["retrieval"] != m["retrieval_graph"]
    assert 0 < m["chance_map_graph"] < 1 and 0 < m["chance_map"] < 1
    md = open(os.path.join(m["run_dir"], "metrics.md")).read()
    assert "relevance: shares a label" in md and "graph relevance: linked in --graph-file" in md
