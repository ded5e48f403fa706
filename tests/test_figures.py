"""Every figure can be identified: its title region is not blank, and the title names what it shows."""
import json
import math
import os

import numpy as np
from PIL import Image

import dmpmh


def title_region_is_drawn(path, size=(720, 480)):
    img = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    assert img.shape == (size[1], size[0])
    top = img[:34]  # above the axes frame (it starts at row 40) and the legend: only the title is drawn here
    return top.var() > 1.0 and (top < 128).sum() > 50


class FakeRunDir:
    def __init__(self, path):
        self.path = str(path)

    def file(self, name):
        return os.path.join(self.path, name)


def test_run_figures_have_titles(tmp_path):
    bits = 16
    rep = {"ks": [1, 10, 100], "p_at_k": [0.9, 0.7, 0.5],
           "pr_recall": list(np.linspace(0, 1, bits + 1)), "pr_precision": list(np.linspace(0.0, 0.4, bits + 1))}
    metrics = {"retrieval": {"I->T": rep, "T->I": rep}}
    cfg = dmpmh.Config(dataset="some/where/flickr.npz", method="dmpmh", epsilon=0.5, bits=bits, seed=3)
    dmpmh.plot_curves(FakeRunDir(tmp_path), metrics, cfg)
    for name in ("precision_at_k.png", "pr_curve.png"):
        assert title_region_is_drawn(tmp_path / name), name
    title = dmpmh.figure_title(cfg, "precision@k")
    for words in ("flickr", "dmpmh", "epsilon 0.5", "16 bits", "seed 3"):
        assert words in title


def test_sweep_figure_has_title_and_a_fixed_range(tmp_path):
    cells = tmp_path / "cells"
    cells.mkdir()
    k = 0

    def cell(method, eps, seed, value, **more):
        nonlocal k
        k += 1
        rec = {"method": method, "epsilon": eps, "bits": 32, "seed": seed, "dataset": "synthetic",
               "retrieval": {"I->T": value}, "chance_map": 0.2, **more}
        (cells / f"c{k}.json").write_text(json.dumps(rec))

    for s in (0, 1):
        for e in (0.5, 2.0):
            cell("dmpmh", e, s, 0.4 + 0.05 * e + 0.01 * s)
            cell("naive", e, s, 0.3 + 0.01 * s)
        cell("nonprivate", math.inf, s, 0.7)
        cell("public", 0.0, s, 0.35, variant="knn")
    dmpmh.write_sweep_tables(str(tmp_path))
    assert dmpmh.sweep_subject([json.loads(p.read_text()) for p in cells.iterdir()]) == "synthetic"  # no graph recorded
    png = tmp_path / "privacy_utility_I2T_32bits.png"
    assert title_region_is_drawn(png)
    series = {"dmpmh": ([0.5, 2.0], [0.43, 0.51])}
    lo, hi = dmpmh.sweep_ylim(series, {"dmpmh": [0.01, 0.01]}, {"chance": 0.2, "best non-private": 0.7})
    assert 0.15 <= lo < 0.2 and 0.7 < hi <= 0.75  # chance to the best reference, a small margin


def test_sweep_subject_names_the_graph():
    cells = [{"dataset": "../shared/data/mirflickr25k/mirflickr25k_tags_labels.npz", "graph": "interact"},
             {"dataset": "../shared/data/mirflickr25k/mirflickr25k_tags_labels.npz", "graph": "interact"}]
    assert dmpmh.sweep_subject(cells) == "mirflickr25k_tags_labels, interact graph"
    cells.append({"dataset": "synthetic", "graph": "file sessions.npz"})
    assert dmpmh.sweep_subject(cells) == "mirflickr25k_tags_labels, synthetic, file sessions.npz / interact graph"
