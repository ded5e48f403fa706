"""Every `python dmpmh.py ...` command in the README's fenced bash blocks names real subcommands and options.

The commands are parsed, not run (several train for minutes or read data outside the repository);
tests/test_pipeline.py checks that a missing dataset stops with a message naming the files to get."""
import os
import re
import shlex

import pytest

import dmpmh

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARSERS = {"encode": dmpmh.EncodeConfig, "sweep": dmpmh.SweepConfig, "ablation": dmpmh.AblationConfig,
           "audit": dmpmh.AuditConfig, "bench": dmpmh.BenchConfig}


def readme_commands():
    text = open(os.path.join(ROOT, "README.md")).read()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if "python dmpmh.py" in line:
                out.append(line.split("python dmpmh.py", 1)[1])
    return out


def test_the_readme_has_commands():
    assert len(readme_commands()) >= 20


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command):
    argv = shlex.split(command, comments=True)
    if "--help" in argv:
        return  # tests/test_cli.py
    if argv and argv[0] in PARSERS:
        cfg = dmpmh._parse_dataclass(PARSERS[argv[0]], argv[1:], f"dmpmh.py {argv[0]}")
        extra = getattr(cfg, "extra", "").split()
        dmpmh.parse_config(extra)
        if argv[0] in ("sweep", "ablation"):
            dmpmh.refuse_extra_options(argv[0], extra, dmpmh.SWEEP_SETS if argv[0] == "sweep" else dmpmh.ABLATION_SETS)
    else:
        dmpmh.parse_config(argv[1:] if argv[:1] == ["run"] else argv)
