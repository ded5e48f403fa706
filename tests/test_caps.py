"""No silent caps (issue 14): a public cap is printed in one line; nothing says how much clipping removed.

--proj-dim above the public rank (feature widths, training-set size: public facts) is capped, and the run
says so in one line and records both numbers in metrics.json. How many edges degree clipping removed is a
statistic of the private graph: no printed line states it; the statement names D only.
"""
import json
import os
import re

import dmpmh

TINY = ["--synthetic-items", "200", "--epochs", "1", "--hidden", "16", "--support-k", "4", "--max-degree", "4",
        "--batch-size", "32", "--insecure-seed", "3", "--bits", "8"]

# every printed line that mentions clipping, as the statement words it: D and the sensitivities, no counts
CLIP_LINES = (r"^Degree clipping: D = 4, stable mutual top-D under a public order",
              r"^  - \w+ +\((un)?clipped graph, \d+ values\): L2|Frobenius",
              r"clip order", r"\] sanitize: clip, measure, synthesize")


def _run(tmp_path, capsys, *extra):
    m = dmpmh.run(dmpmh.parse_config(TINY + list(extra) + ["--out-dir", str(tmp_path / "runs")]))
    return m, capsys.readouterr().out


def test_projection_cap_is_printed_once_and_recorded(tmp_path, capsys):
    m, out = _run(tmp_path, capsys, "--proj-dim", "512")
    lines = [ln for ln in out.splitlines() if "capped from --proj-dim" in ln]
    # 200 synthetic items: 100 train; image 256 + text 1000 public dimensions -> rank 100
    assert lines == ["  public projection rank r = 100, capped from --proj-dim 512: the public features have 1256 "
                     "dimensions over 100 training items (the bilinear moments are 100 x 100)"]
    assert m["public_projection"] == {"proj_dim": 512, "rank": 100}
    saved = json.load(open(os.path.join(m["run_dir"], "metrics.json")))
    assert saved["public_projection"] == {"proj_dim": 512, "rank": 100}
    assert "bilinear  (unclipped graph, 10000 values)" in out  # the statement uses the effective r
    for ln in out.splitlines():
        if re.search("clip", ln, re.I):
            assert any(re.search(p, ln) for p in CLIP_LINES), ln
        assert not re.search(r"(removed|dropped|kept)\b.*\bedges?|edges?\b.*\b(removed|dropped|kept)", ln, re.I), ln


def test_no_cap_no_line(tmp_path, capsys):
    m, out = _run(tmp_path, capsys, "--proj-dim", "8")
    assert "capped" not in out and m["public_projection"] == {"proj_dim": 8, "rank": 8}
