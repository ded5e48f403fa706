"""--graph interact: the seeded co-interaction graph (simulated user sessions)."""
import numpy as np

import data


def _labels(n=1500, c=12, seed=0):
    rng = np.random.default_rng(seed)
    lab = (rng.random((n, c)) < 0.12).astype(np.float32)
    lab[lab.sum(1) == 0, 0] = 1
    return lab


def test_interaction_graph_is_a_seeded_simple_graph(capsys):
    lab = _labels()
    a = data.interaction_graph(lab, seed=4)
    assert a.dtype == bool and a.shape == (1500, 1500)
    assert (a == a.T).all() and not a.diagonal().any()
    assert (data.interaction_graph(lab, seed=4) == a).all()
    assert (data.interaction_graph(lab, seed=5) != a).any()
    assert capsys.readouterr().out == ""  # its statistics are private: nothing is printed


def test_interaction_graph_is_sparse_scale_free_and_tied_to_the_labels():
    lab = _labels()
    a = data.interaction_graph(lab, seed=0)
    deg = a.sum(1)
    assert 0.005 < a.mean() < 0.15                     # sparse (12 frequent labels here: denser than real data)
    assert deg.max() > 4 * np.median(deg)              # popular items are hubs (power-law popularity, shape 2.5)
    heavier = data.interaction_graph(lab, seed=0, popularity_shape=1.2).sum(1)
    assert heavier.max() / np.median(heavier) > deg.max() / np.median(deg)  # the shape sets the tail
    share = (lab @ lab.T) > 0
    # interest sessions link items of one label; nuisance sessions (20%) do not
    assert share[a].mean() > share[~np.eye(1500, dtype=bool)].mean() + 0.3
    # the nuisance share is honoured: with no nuisance, almost every edge shares a label
    clean = data.interaction_graph(lab, seed=0, nuisance=0.0)
    assert share[clean].mean() > 0.99


def test_build_private_graph_interact_reads_labels_once():
    lab = _labels(400)
    store = data.LabelStore(lab.astype(np.uint8), np.arange(300), allow_train_in_evaluation=False)
    g = data.build_private_graph(store, np.arange(300), kind="interact", seed=2)
    assert g.kind == "interact" and g.n == 300 and "edges" not in repr(g)
    assert store.reads == [("graph", 300)]
    assert (g.dense() == data.interaction_graph(lab[:300], seed=2)).all()
