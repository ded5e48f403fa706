"""The command line explains itself: subcommands listed, every option with what it does and its default."""
import os
import re
import subprocess
import sys

import pytest

import dmpmh

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def help_text(argv, capsys):
    with pytest.raises(SystemExit) as e:
        dmpmh.main(argv + ["--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_lists_every_subcommand():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "dmpmh.py"), "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    for name in ("run", "encode", "sweep", "ablation", "audit", "bench", "convert"):
        assert re.search(rf"^\s+{name}\s+\S", r.stdout, re.M), name
    assert set(dmpmh.SUBCOMMANDS) == {"run", "encode", "sweep", "ablation", "audit", "bench", "convert"}


@pytest.mark.parametrize("sub", [[], ["run"], ["encode"], ["sweep"], ["ablation"], ["audit"], ["bench"], ["convert"]])
def test_every_option_says_what_it_does_and_its_default(sub, capsys):
    out = help_text(sub, capsys)
    assert "DESIGN.md" not in out
    # one entry per option: the flag line plus its indented continuation
    entries = re.split(r"\n  (?=--)", out.split("options:", 1)[1])[1:]
    assert entries
    for e in entries:
        flag = e.split()[0]
        body = " ".join(e.split()[1:])
        assert "(default:" in body, flag
        words = re.sub(r"\(default:.*?\)$", "", body).split()
        described = [w for w in words if not re.fullmatch(r"[A-Z_]+|\{true,false\}", w)]
        assert len(described) >= 3 and described[0] not in ("float", "int", "str", "bool"), (flag, body)
