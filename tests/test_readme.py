"""The README works from a fresh clone: every `python dmpmh.py ...` command in its fenced bash blocks runs.

Each command is run from a temporary copy of the repository (the five modules, README.md and
requirements.txt; no data, no ../shared/data beside it), as `python dmpmh.py ARGS` in that folder, with
small sizes substituted or appended (`small`): a run gets `--synthetic-items 400 --epochs 1 ...`, a sweep
or an ablation the first value of each list option and the same small sizes in `--extra`, `bench` and
`audit` small sizes of their own. A command that runs must exit 0. A command that needs data a fresh
clone lacks (a named dataset, an .npz, a split or graph file, `--source mirflickr|nuswide`, anything
under ../shared/data; `external_files`) must exit 2 with exactly one `error:` line naming the missing
file. The results commands quoted in "## Results" that read ../shared/data are checked the same way.
Commands too expensive even at small sizes are in SKIP, each with its reason.

Speed: the copy's modules (and torch) are imported once by a driver process, which forks one child
per command; the child runs dmpmh.py as `__main__` with the command's argv, its stdout and stderr going
to files, so each command still gets its own process, exit code and output. Where os.fork is missing,
each command is a plain subprocess. The commands are also parsed in-process (`test_readme_command_parses`).
The `pip install -r requirements.txt` in front of the first command is not run: the test uses what is
installed."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

import data
import dmpmh

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARSERS = {"encode": dmpmh.EncodeConfig, "sweep": dmpmh.SweepConfig, "ablation": dmpmh.AblationConfig,
           "audit": dmpmh.AuditConfig, "bench": dmpmh.BenchConfig, "convert": dmpmh.ConvertConfig}
COPIED = ("dmpmh.py", "data.py", "privacy.py", "hashing.py", "evaluate.py", "README.md", "requirements.txt")

# the small sizes appended to every run (argparse keeps the last value of an option given twice)
RUN_SMALL = ["--synthetic-items", "400", "--epochs", "1", "--proj-dim", "16", "--hidden", "32", "--support-k", "8",
             "--max-degree", "8", "--batch-size", "64", "--dpsgd-steps", "5"]
BENCH_SMALL = ["--n-train", "400", "--sizes", "400", "--repeats", "1", "--proj-dim", "16", "--support-k", "8"]
AUDIT_SMALL = ["--trials", "100", "--n-nodes", "40"]
LIST_OPTIONS = ("--methods", "--epsilons", "--bits", "--seeds")  # sweep/ablation: the first value only

# command (as written in the README, comment stripped) -> why it is not run
SKIP = {
    "bench --what map": "fixed sizes (2,100 queries x 184,000 random 64-bit codes, evaluate.benchmark_map): about "
                        "10 s on one busy core even with --repeats 1; tests/test_evaluate.py runs benchmark_map small",
}


def readme_commands() -> list[str]:
    """The argument strings of every `python dmpmh.py` line in the README's fenced bash blocks."""
    text = open(os.path.join(ROOT, "README.md")).read()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if "python dmpmh.py" in line:
                out.append(line.split("python dmpmh.py", 1)[1])
    return out


def results_commands() -> list[str]:
    """The commands quoted inline in "## Results" that read the shared data folder, which a fresh clone lacks."""
    text = open(os.path.join(ROOT, "README.md")).read()
    start = text.index("\n## Results")
    end = text.find("\n## ", start + 1)
    out = []
    for cmd in re.findall(r"`python dmpmh\.py([^`]*)`", text[start:end if end > 0 else None]):
        cmd = " ".join(cmd.split())
        if "../shared/data" in cmd or re.search(r"--source (mirflickr|nuswide)", cmd):
            out.append(cmd)
    return out


def ids(commands: list[str]) -> list[str]:
    return [key_of(argv_of(c)) or "(no options)" for c in commands]


def argv_of(command: str) -> list[str]:
    return shlex.split(command, comments=True)


def key_of(argv: list[str]) -> str:
    return shlex.join(argv)


def _value(argv: list[str], flag: str, default=None):
    """The value of the last `flag VALUE` in argv (argparse keeps the last), else default."""
    values = [argv[i + 1] for i, t in enumerate(argv[:-1]) if t == flag]
    return values[-1] if values else default


def _set(argv: list[str], flag: str, value: str) -> list[str]:
    return [value if i and argv[i - 1] == flag else t for i, t in enumerate(argv)]


def external_files(argv: list[str]) -> list[str]:
    """The files or folders outside a fresh clone that the command reads (empty: it runs on the synthetic data)."""
    sub = argv[0] if argv and argv[0] in PARSERS else "run"
    tokens = argv + shlex.split(_value(argv, "--extra", "") or "")
    out = []
    dataset = _value(tokens, "--dataset")
    if dataset in data.KNOWN:
        out.append(_value(tokens, "--data-dir") or os.path.join("data", dataset))
    elif dataset not in (None, "", "synthetic"):
        out.append(dataset)
    out += [v for f in ("--split-file", "--graph-file") if (v := _value(tokens, f))]
    if sub == "convert":
        out += [v for f in ("--labels", "--text", "--image") if (v := _value(argv, f))]
    if sub == "bench" and _value(argv, "--source", "synthetic") != "synthetic":
        out.append(_value(argv, "--shared-dir", os.path.join("..", "shared", "data")))
    return out


def small(argv: list[str]) -> list[str]:
    """The command with small sizes substituted or appended (see the module docstring)."""
    sub = argv[0] if argv and argv[0] in PARSERS else "run"
    if "--help" in argv or external_files(argv):
        return argv
    if sub == "run":
        return argv + RUN_SMALL
    if sub in ("sweep", "ablation"):
        for flag in LIST_OPTIONS:
            if flag in argv:
                argv = _set(argv, flag, _value(argv, flag).split(",")[0])
        extra = shlex.join(shlex.split(_value(argv, "--extra", "")) + RUN_SMALL)
        return _set(argv, "--extra", extra) if "--extra" in argv else argv + ["--extra", extra]
    if sub == "bench":
        if _value(argv, "--what") == "pipeline":
            return _set(argv, "--extra", shlex.join(shlex.split(_value(argv, "--extra", "")) + RUN_SMALL))
        return argv + BENCH_SMALL
    if sub == "audit":
        return argv + AUDIT_SMALL
    return argv


DRIVER = r'''
import json, os, runpy, signal, sys, traceback
repo = os.getcwd()
sys.path.insert(0, repo)
import numpy, scipy.io, torch, PIL.Image  # noqa: F401  imported once, before the forks
import torch._dynamo  # noqa: F401  torch.optim.Adam imports it on first use: 2-3 s per process
import data, evaluate, privacy, hashing, dmpmh  # noqa: F401
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            for fd, path in ((1, req["out"]), (2, req["err"])):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
            signal.alarm(req["timeout"])
            sys.argv = ["dmpmh.py"] + req["argv"]
            try:
                runpy.run_path(os.path.join(repo, "dmpmh.py"), run_name="__main__")
                code = 0
            except SystemExit as e:
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)
'''


class Clone:
    """A fresh copy of the repository and a way to run `python dmpmh.py ARGV` in it (cached by argv)."""

    def __init__(self, folder):
        self.repo = os.path.join(folder, "repo")  # nothing beside it: no ../shared/data
        os.makedirs(self.repo)
        for name in COPIED:
            shutil.copy(os.path.join(ROOT, name), self.repo)
        self.logs = os.path.join(folder, "logs")
        os.makedirs(self.logs)
        self.env = {k: v for k, v in os.environ.items() if k != "DMPMH_TRACEBACK"}
        self.env["OMP_NUM_THREADS"] = "1"
        self.results: dict[str, tuple[int, str, str]] = {}
        self.driver = None
        if hasattr(os, "fork"):
            script = os.path.join(folder, "driver.py")
            with open(script, "w") as f:
                f.write(DRIVER)
            self.driver = subprocess.Popen([sys.executable, script], cwd=self.repo, env=self.env, text=True,
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def run(self, argv: list[str], timeout: int = 300) -> tuple[int, str, str]:
        key = key_of(argv)
        if key not in self.results:
            out, err = (os.path.join(self.logs, f"{len(self.results)}.{s}") for s in ("out", "err"))
            if self.driver is not None:
                self.driver.stdin.write(json.dumps({"argv": argv, "out": out, "err": err, "timeout": timeout}) + "\n")
                self.driver.stdin.flush()
                rc = json.loads(self.driver.stdout.readline())["rc"]
            else:
                with open(out, "w") as fo, open(err, "w") as fe:
                    rc = subprocess.run([sys.executable, "dmpmh.py", *argv], cwd=self.repo, env=self.env,
                                        stdout=fo, stderr=fe, timeout=timeout).returncode
            self.results[key] = (rc, open(out).read(), open(err).read())
        return self.results[key]

    def close(self):
        if self.driver is not None:
            self.driver.stdin.close()
            self.driver.wait(timeout=60)


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    c = Clone(str(tmp_path_factory.mktemp("fresh_clone")))
    yield c
    c.close()


def trained_run(clone) -> str:
    """The run directory made by the README's training command (`python dmpmh.py --out-dir runs`)."""
    rc, out, err = clone.run(small(["--out-dir", "runs"]))
    assert rc == 0, err
    return re.findall(r"^run directory: (\S+)", out, re.M)[-1]


def check(clone, argv: list[str]) -> None:
    needs = external_files(argv)
    if "runs/<run-dir>" in argv:
        argv = [t.replace("runs/<run-dir>", trained_run(clone)) for t in argv]
    rc, out, err = clone.run(small(argv))
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    if needs:  # a fresh clone lacks the file: one clear line that names it, exit 2
        assert rc == 2, (argv, rc, err[-2000:])
        assert len(errors) == 1, (argv, err[-2000:])
        assert any(path in errors[0] for path in needs), (needs, errors[0])
    else:
        assert rc == 0, (small(argv), rc, err[-3000:])
        assert not errors, err[-2000:]
        if argv[:1] == ["encode"] and "--help" not in argv:
            assert os.path.exists(os.path.join(clone.repo, _value(argv, "--out")))


def test_the_readme_has_commands():
    assert len(readme_commands()) >= 20
    assert len(results_commands()) >= 3


def test_every_skip_names_a_readme_command():
    written = {key_of(argv_of(c)) for c in readme_commands()}
    assert set(SKIP) <= written, set(SKIP) - written


@pytest.mark.parametrize("command", readme_commands(), ids=ids(readme_commands()))
def test_readme_command_runs_from_a_fresh_clone(clone, command):
    argv = argv_of(command)
    if key_of(argv) in SKIP:
        pytest.skip(SKIP[key_of(argv)])
    check(clone, argv)


@pytest.mark.parametrize("command", results_commands(), ids=ids(results_commands()))
def test_results_command_names_the_missing_shared_data(clone, command):
    argv = argv_of(command)
    assert external_files(argv), command
    check(clone, argv)


@pytest.mark.parametrize("command", readme_commands(), ids=ids(readme_commands()))
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
