"""Bad inputs and faults (issue 17): one clear line, exit 2 (130 for Ctrl-C), nothing left behind.

Each bad-input case runs the CLI as a subprocess with small sizes, so that it fails fast, before any
training: exit code 2, exactly one line with 'error:' on stderr, no traceback, and no new folder (nor
.partial folder) under --out-dir.
"""
import errno
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import dmpmh

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--synthetic-items", "200", "--epochs", "1", "--proj-dim", "8", "--hidden", "16", "--support-k", "4",
        "--max-degree", "4", "--batch-size", "32", "--insecure-seed", "3", "--bits", "8"]


def _good(tmp, name="good.npz", **over):
    rng = np.random.default_rng(0)
    arrays = {"text": rng.random((120, 12)).astype(np.float32),
              "labels": (rng.random((120, 3)) < 0.5).astype(np.uint8)}
    arrays["labels"][:, 0] |= arrays["labels"].sum(1) == 0
    arrays.update(over)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = tmp / name
    np.savez(path, **arrays)
    return str(path)


def _write(tmp, name, content: bytes):
    path = tmp / name
    path.write_bytes(content)
    return str(path)


def _corrupt_member(tmp):
    """A valid zip whose 'text' member is damaged in the middle (CRC mismatch)."""
    good = _good(tmp, "src.npz")
    out = tmp / "corrupt.npz"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    raw = bytearray(out.read_bytes())
    i = raw.find(b"\x93NUMPY", raw.find(b"text.npy")) + 400  # inside the text array's data
    raw[i:i + 64] = bytes(64)
    out.write_bytes(bytes(raw))
    return str(out)


# (case id, function tmp_path -> extra argv). --out-dir is appended by the test.
CASES = [
    # --- numbers: finiteness, sign, range, meaning ---------------------------------------------
    ("lr-nan", lambda t: ["--lr", "nan"]),
    ("lr-zero", lambda t: ["--lr", "0"]),
    ("lr-inf", lambda t: ["--lr", "inf"]),
    ("hidden-0", lambda t: ["--hidden", "0"]),
    ("w-first-order-nan", lambda t: ["--w-first-order", "nan"]),
    ("w-triangle-negative", lambda t: ["--w-triangle", "-1"]),
    ("nmd-prior-nan", lambda t: ["--nmd-prior", "nan"]),
    ("noise-ridge-negative", lambda t: ["--noise-ridge", "-1"]),
    ("share-bilinear-nan", lambda t: ["--share-bilinear", "nan"]),
    ("shares-all-zero", lambda t: ["--share-degrees", "0", "--share-triangles", "0", "--share-edges", "0",
                                   "--share-bilinear", "0"]),
    ("epsilon-nan", lambda t: ["--epsilon", "nan"]),
    ("epsilon-negative", lambda t: ["--epsilon", "-1"]),
    ("delta-one", lambda t: ["--delta", "1"]),
    ("delta-nan", lambda t: ["--delta", "nan"]),
    ("n-query-0", lambda t: ["--n-query", "0"]),
    ("n-train-negative", lambda t: ["--n-train", "-5"]),
    ("attack-pairs-0", lambda t: ["--attack-pairs", "0"]),
    ("attack-pairs-2", lambda t: ["--attack-pairs", "2", "--attack-eval-not-private", "true"]),
    ("max-degree-0", lambda t: ["--max-degree", "0"]),
    ("batch-size-1", lambda t: ["--batch-size", "1"]),
    ("epochs-0", lambda t: ["--epochs", "0"]),
    ("bits-12", lambda t: ["--bits", "12"]),
    ("dpsgd-clip-0", lambda t: ["--method", "dpsgd", "--dpsgd-clip", "0"]),
    ("dpsgd-clip-word", lambda t: ["--method", "dpsgd", "--dpsgd-clip", "large"]),
    ("dpsgd-clip-inf", lambda t: ["--method", "dpsgd", "--dpsgd-clip", "inf"]),
    ("dpsgd-lr-nan", lambda t: ["--method", "dpsgd", "--dpsgd-lr", "nan"]),
    ("fit-rank-above-proj-dim", lambda t: ["--fit-rank", "9"]),
    ("seed-negative", lambda t: ["--seed", "-1"]),
    ("synthetic-items-10", lambda t: ["--synthetic-items", "10"]),
    ("nmd-iters-negative", lambda t: ["--nmd-iters", "-1"]),
    ("lr-not-a-number", lambda t: ["--lr", "fast"]),          # argparse's own error: one line, exit 2
    ("unknown-option", lambda t: ["--no-such-option", "1"]),
    ("unknown-method", lambda t: ["--method", "magic"]),
    ("unknown-device", lambda t: ["--device", "tpu"]),
    ("unknown-protocol", lambda t: ["--protocol", "transductive"]),
    # --- input files ------------------------------------------------------------------------------
    ("npz-missing", lambda t: ["--dataset", str(t / "nope.npz")]),
    ("npz-truncated", lambda t: ["--dataset", _write(t, "trunc.npz", open(_good(t), "rb").read()[:3000])]),
    ("npz-empty-file", lambda t: ["--dataset", _write(t, "empty.npz", b"")]),
    ("npz-is-text", lambda t: ["--dataset", _write(t, "text.npz", b"text,labels\n1,0\n2,1\n")]),
    ("npz-is-binary-junk", lambda t: ["--dataset", _write(t, "junk.npz", bytes(range(256)) * 8)]),
    ("npz-is-npy", lambda t: ["--dataset", (np.save(t / "arr.npy", np.zeros(3)),
                                            os.replace(t / "arr.npy", t / "arr.npz"), str(t / "arr.npz"))[2]]),
    ("npz-is-folder", lambda t: ["--dataset", ((t / "dir.npz").mkdir(), str(t / "dir.npz"))[1]]),
    ("npz-wrong-names", lambda t: ["--dataset", _good(t, text=None, labels=None, feats=np.zeros((5, 2)))]),
    ("npz-no-labels", lambda t: ["--dataset", _good(t, labels=None)]),
    ("npz-labels-1d", lambda t: ["--dataset", _good(t, labels=np.ones(120, dtype=np.uint8))]),
    ("npz-rows-disagree", lambda t: ["--dataset", _good(t, image=np.zeros((50, 4), np.float32))]),
    ("npz-text-nan", lambda t: ["--dataset", _good(t, text=np.full((120, 12), np.nan, np.float32))]),
    ("npz-text-strings", lambda t: ["--dataset", _good(t, text=np.array([["a"] * 12] * 120))]),
    ("npz-image-3d", lambda t: ["--dataset", _good(t, image=np.zeros((120, 4, 4), np.float32))]),
    ("npz-labels-not-01", lambda t: ["--dataset", _good(t, labels=np.full((120, 3), 2, np.uint8))]),
    ("npz-corrupt-member", lambda t: ["--dataset", _corrupt_member(t)]),
    ("graph-file-missing", lambda t: ["--graph-file", str(t / "g.npz")]),
    ("graph-file-truncated", lambda t: ["--graph-file", _write(t, "g.npz", open(_good(t), "rb").read()[:3000])]),
    ("graph-file-folder", lambda t: ["--graph-file", ((t / "g.csv").mkdir(), str(t / "g.csv"))[1]]),
    ("data-dir-corrupt-mat", lambda t: ["--dataset", "mirflickr", "--data-dir",
                                        ((t / "mf").mkdir(), _write(t, "mf/mirflickr25k-lall.mat", b"MATLAB junk"),
                                         str(t / "mf"))[2]]),
    ("data-dir-nuswide-bad-text", lambda t: ["--dataset", "nuswide", "--data-dir",
                                             ((t / "nw").mkdir(), _write(t, "nw/AllTags1k.txt", b"0 1\n1 0\n"),
                                              _write(t, "nw/Labels_sky.txt", b"yes\nno\n"), str(t / "nw"))[3]]),
    ("unknown-dataset-name", lambda t: ["--dataset", "cifar"]),
    ("edgerr-epsilon-inf", lambda t: ["--method", "edgerr", "--epsilon", "inf"]),
    ("dpsgd-accountant-bad", lambda t: ["--method", "dpsgd", "--dpsgd-accountant", "moments"]),
    ("dpsgd-public-pairs-0", lambda t: ["--method", "dpsgd", "--dpsgd-public-pairs", "0"]),
    ("dpsgd-public-clip-maybe", lambda t: ["--method", "dpsgd", "--dpsgd-public-clip", "maybe"]),
    ("dpsgd-optimizer-bad", lambda t: ["--method", "dpsgd", "--dpsgd-optimizer", "rmsprop"]),
    ("dpsgd-optimizer-empty", lambda t: ["--method", "dpsgd", "--dpsgd-optimizer", ""]),
    ("dpsgd-lr-negative", lambda t: ["--method", "dpsgd", "--dpsgd-lr", "-1e-3"]),
    ("dpsgd-sampling-bad", lambda t: ["--method", "dpsgd", "--dpsgd-sampling", "nodes"]),
    ("dpsgd-edges-per-step-0", lambda t: ["--method", "dpsgd", "--dpsgd-edges-per-step", "0"]),
    ("dpsgd-edges-without-public-clip", lambda t: ["--method", "dpsgd", "--dpsgd-public-clip", "false"]),
]

OUT_CASES = [  # --out-dir itself is bad: it is given instead of the default
    ("out-dir-is-a-file", lambda t: _write(t, "afile", b"x")),
    ("out-dir-under-a-file", lambda t: os.path.join(_write(t, "afile2", b"x"), "runs")),
]


def _run_cli(args, cwd, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    env.pop("DMPMH_TRACEBACK", None)
    return subprocess.run([sys.executable, os.path.join(ROOT, "dmpmh.py"), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def _assert_one_error(p, out_listing_before, out):
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    errors = [line for line in p.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, p.stderr
    after = sorted(os.listdir(out)) if os.path.isdir(out) else None
    assert after == out_listing_before, after  # no new run folder, no .partial


def test_at_least_thirty_cases():
    assert len(CASES) + len(OUT_CASES) >= 30
    assert len({c[0] for c in CASES + OUT_CASES}) == len(CASES) + len(OUT_CASES)


@pytest.mark.parametrize("case, make", CASES, ids=[c[0] for c in CASES])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, case, make):
    out = tmp_path / "runs"
    out.mkdir()
    args = make(tmp_path)
    p = _run_cli(TINY + args + ["--out-dir", str(out)], cwd=tmp_path)
    _assert_one_error(p, [], str(out))
    if case.startswith(("npz-", "graph-file", "data-dir")) and case != "npz-missing":
        line = next(line for line in p.stderr.splitlines() if "error:" in line)
        assert str(tmp_path) in line  # the line names the file


@pytest.mark.parametrize("case, make", OUT_CASES, ids=[c[0] for c in OUT_CASES])
def test_bad_out_dir_one_line_exit_2(tmp_path, case, make):
    out = make(tmp_path)
    before = sorted(os.listdir(tmp_path))
    p = _run_cli(TINY + ["--out-dir", out], cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert [line for line in p.stderr.splitlines() if "error:" in line] == [p.stderr.strip()]
    assert out in p.stderr and "expected a folder" in p.stderr
    assert sorted(os.listdir(tmp_path)) == before


def test_npz_permission_denied_is_one_line(tmp_path, monkeypatch, capsys):
    """Root reads any file, so the denial is simulated where the file is opened."""
    path = _good(tmp_path)
    real_open = open

    def deny(p, *a, **k):
        if str(p) == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(p))
        return real_open(p, *a, **k)

    monkeypatch.setattr("builtins.open", deny)
    out = tmp_path / "runs"
    out.mkdir()
    assert dmpmh.main(TINY + ["--dataset", path, "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: permission denied") and err.count("\n") == 1
    assert os.listdir(out) == []


def test_graph_file_permission_denied_is_one_line(tmp_path, monkeypatch, capsys):
    good = _good(tmp_path)
    g = tmp_path / "g.npz"
    np.savez(g, edges=np.array([[0, 1], [2, 3]]))
    real_open = open

    def deny(p, *a, **k):
        if str(p) == str(g):
            raise PermissionError(errno.EACCES, "Permission denied", str(p))
        return real_open(p, *a, **k)

    monkeypatch.setattr("builtins.open", deny)
    out = tmp_path / "runs"
    out.mkdir()
    assert dmpmh.main(TINY + ["--dataset", good, "--graph-file", str(g), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1 and "Traceback" not in err
    assert str(g) in err and "permission denied" in err and os.listdir(out) == []


# ---------------------------------------------------------------------------
# Faults: a failed write, Ctrl-C, stale .partial folders
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("failing", ["metrics.json", "model.pt"])
def test_disk_full_while_writing_names_the_path_and_leaves_nothing(tmp_path, monkeypatch, capsys, failing):
    real = dmpmh.write_atomic
    written = []

    def full(path, content, mode="w"):
        if os.path.basename(path) == failing:
            raise OSError(errno.ENOSPC, "No space left on device", path + ".tmp")
        written.append(os.path.basename(path))
        return real(path, content, mode)

    monkeypatch.setattr(dmpmh, "write_atomic", full)
    out = tmp_path / "runs"
    assert dmpmh.main(TINY + ["--out-dir", str(out)]) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(errors) == 1 and failing in errors[0] and "No space left on device" in errors[0]
    assert os.listdir(out) == []  # no half-written run, no .partial
    # the small files come first, model.pt last; the statement was printed before any write
    assert written[:4] == ["owner.pid", "privacy.txt", "config.json", "metrics.json"][:4 if failing == "model.pt" else 3]
    assert "differential privacy" in captured.out


def test_ctrl_c_prints_one_line_removes_partial_exits_130(tmp_path):
    out = tmp_path / "runs"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    args = ["--synthetic-items", "400", "--epochs", "10000", "--proj-dim", "8", "--hidden", "16", "--support-k", "4",
            "--max-degree", "4", "--batch-size", "32", "--insecure-seed", "3", "--bits", "8", "--out-dir", str(out)]
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "dmpmh.py"), *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    try:
        deadline = time.time() + 120
        for line in p.stdout:  # wait until training runs (the .partial folder exists by then)
            if "distill" in line or time.time() > deadline:
                break
        assert any(n.endswith(".partial") for n in os.listdir(out))
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err[-2000:]
    assert "Traceback" not in err and len([line for line in err.splitlines() if "interrupted" in line]) == 1
    assert os.listdir(out) == []


def test_stale_partials_removed_only_when_owner_is_gone(tmp_path, capsys):
    out = tmp_path / "runs"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = dmpmh.socket.gethostname()
    for name, owner in [(".a-dead.partial", f"{dead.pid} {host}"), (".b-live.partial", f"{os.getpid()} {host}"),
                        (".c-other-host.partial", f"{dead.pid} elsewhere"), (".d-no-owner.partial", None)]:
        (out / name).mkdir()
        if owner:
            (out / name / dmpmh.OWNER_FILE).write_text(owner + "\n")
    cfg = dmpmh.parse_config(["--out-dir", str(out)])
    rd = dmpmh.RunDir(cfg)
    err = capsys.readouterr().err
    left = sorted(os.listdir(out))
    assert ".a-dead.partial" not in left  # its owner is gone: removed, and said so
    assert ".b-live.partial" in left and ".c-other-host.partial" in left and ".d-no-owner.partial" in left
    assert "removed" in err and ".a-dead.partial" in err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and ".c-other-host.partial" in notes[0] and ".d-no-owner.partial" in notes[0]
    # this run's own folder records its owner, and the record is gone once committed
    assert open(rd.file(dmpmh.OWNER_FILE)).read().split()[0] == str(os.getpid())
    final = rd.commit()
    assert dmpmh.OWNER_FILE not in os.listdir(final)


# ---------------------------------------------------------------------------
# Statements of runs that are not private
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("extra, reason", [
    (["--insecure-seed", "3"], "--insecure-seed"),
    (["--epsilon", "inf"], "epsilon = infinity"),
    (["--method", "edgerr", "--insecure-seed", "3"], "--insecure-seed"),
    (["--method", "dpsgd", "--insecure-seed", "3", "--dpsgd-steps", "2", "--dpsgd-batch-pairs", "256"],
     "--insecure-seed"),
    (["--method", "naive", "--epsilon", "inf"], "epsilon = infinity"),
    (["--method", "dpsgd", "--epsilon", "inf", "--dpsgd-steps", "2", "--dpsgd-batch-pairs", "256"],
     "DP-SGD adds no noise"),
    (["--attack-eval-not-private", "true"], "--attack-eval-not-private"),
    (["--timings-not-private", "true"], "--timings-not-private"),
    (["--protocol", "standard"], "--protocol standard"),
    (["--method", "nonprivate"], "method 'nonprivate'"),
])
def test_not_private_runs_never_claim_privacy(tmp_path, extra, reason):
    base = [a for a in TINY if a not in ("--insecure-seed", "3")]
    m = dmpmh.run(dmpmh.parse_config(base + extra + ["--out-dir", str(tmp_path)]))
    text = open(os.path.join(m["run_dir"], "privacy.txt")).read()
    assert text.startswith("NOT PRIVATE: ") and reason in text.splitlines()[0]
    assert "satisfies" not in text and "differential privacy, i," not in text
    assert m["run_dir"].endswith("-NOT-PRIVATE")
    assert "NOT PRIVATE" in open(os.path.join(m["run_dir"], "metrics.md")).readline()
    saved = json.load(open(os.path.join(m["run_dir"], "metrics.json")))
    assert any(reason in r for r in saved["not_private"]["reasons"])


def test_private_run_claims_and_is_not_tagged(tmp_path):
    base = [a for a in TINY if a not in ("--insecure-seed", "3")]
    m = dmpmh.run(dmpmh.parse_config(base + ["--out-dir", str(tmp_path)]))
    text = open(os.path.join(m["run_dir"], "privacy.txt")).read()
    assert text.startswith("This run satisfies (1, 1e-06)-differential privacy") and "NOT-PRIVATE" not in m["run_dir"]
    assert "NOT PRIVATE" not in open(os.path.join(m["run_dir"], "metrics.md")).readline()


@pytest.mark.parametrize("argv", [
    ["audit", "--epsilon", "nan"], ["audit", "--n-nodes", "2"], ["audit", "--alpha", "0"], ["audit", "--seed", "-1"],
    ["audit", "--understate", "0.5"], ["bench", "--epsilon", "nan"], ["bench", "--max-degree", "0"],
    ["sweep", "--extra", "--lr nan"], ["ablation", "--extra", "--hidden 0"],
])
def test_subcommands_refuse_bad_numbers_in_one_line(tmp_path, capsys, argv):
    out = tmp_path / "o"
    extra = ["--out", str(out)] if argv[0] in ("sweep", "ablation") else []
    assert dmpmh.main(argv + extra) == 2
    captured = capsys.readouterr()
    assert len([line for line in captured.err.splitlines() if "error:" in line]) == 1
    assert captured.out == "" and not out.exists()


def test_sweep_out_that_is_a_file_is_one_line(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert dmpmh.main(["sweep", "--out", str(f), "--methods", "dmpmh", "--epsilons", "1", "--bits", "8",
                       "--seeds", "0", "--extra", " ".join(TINY[:-2])]) == 2
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1 and str(f) in err
    assert sorted(os.listdir(tmp_path)) == ["afile"]
