"""Progress output when stderr is not a terminal (CI logs, nohup): plain lines instead of live bars."""
from __future__ import annotations

from types import SimpleNamespace

from profiler.cli import RichReporter


def test_plain_progress_lines_when_not_a_terminal(capsys):
    rep = RichReporter()
    assert rep.plain  # pytest captures stderr: not a terminal
    rep.PLAIN_EVERY_S = 0.0
    with rep:
        rep.start(total=3, done=1)
        cb = rep.training("gmp 0.9")
        for step in (1, 2):
            cb(step, 2, 0.5, 0.9)
        rep.training_done()
        rep.cell_done(SimpleNamespace(pruner="gmp", pruner_params={"sparsity": 0.9}, accelerator="sparse-int8",
                                      batch_size=8, status="ok", latency_p50_s=0.0261, reason=None, seq_len=128,
                                      threads=2))
    err = capsys.readouterr().err
    assert "gmp 0.9: step 2/2 loss 0.5000 sparsity 0.900" in err
    assert "cell 2/3: gmp 0.9 + sparse-int8 b8 s128 t2: ok p50 26.1 ms" in err


def test_a_failed_cell_line_survives_an_empty_reason_and_markup_in_it(capsys):
    rep = RichReporter()
    cell = dict(pruner="none", pruner_params={}, accelerator="mine", batch_size=1, latency_p50_s=None, seq_len=16, threads=1)
    with rep:
        rep.start(total=2, done=0)
        rep.cell_done(SimpleNamespace(**cell, status="skipped", reason=""))  # a plugin's availability() said (False, "")
        rep.cell_done(SimpleNamespace(**cell, status="failed", reason="ValueError: [/bold] shape [1, 2]\ntraceback"))
    err = capsys.readouterr().err
    assert "skipped: none + mine b1 s16 t1:" in err
    assert "failed: none + mine b1 s16 t1: ValueError: [/bold] shape [1, 2]" in err and "traceback" not in err


def test_progress_and_failure_lines_tell_swept_cells_apart(capsys):
    """A sweep over a parameter the plain label does not show (sparse-cpu's min_speedup, a plugin's
    mode): each cell's progress and failure line carries the distinct label its row and the final
    table carry (``min_speedup=2.0``), not the same ``none sparse-cpu`` twice."""
    from profiler.config import expand, parse_config
    from profiler.runner import base_row
    from tests.conftest import tiny_config

    cfg = parse_config(tiny_config(pruners=[{"name": "none"}],
                                   accelerators=[{"name": "sparse-cpu", "min_speedup": [1.05, 2.0]}],
                                   matrix={"batch_size": [1], "seq_len": [32], "threads": [1]}))
    rows = [base_row(c, None, "hw") for c in expand(cfg)]
    rep = RichReporter()
    with rep:
        rep.start(total=len(rows), done=0)
        for r in rows:
            r.set_outcome("failed", "RuntimeError: no kernel")
            rep.cell_done(r)
    lines = capsys.readouterr().err.splitlines()
    for speedup in ("1.05", "2.0"):
        cell = f"none + sparse-cpu min_speedup={speedup} b1 s32 t1"
        assert f"failed: {cell}: RuntimeError: no kernel" in lines
        assert any(line.startswith("cell ") and f": {cell}: failed" in line for line in lines)


def test_sigterm_stops_like_ctrl_c_with_the_resume_hint(tmp_path):
    """A scheduler's SIGTERM mid-run: status 143, finished cells kept, the hint to resume; the
    resumed run adds the rest without repeating a cell."""
    import json
    import signal
    import subprocess
    import sys
    import time

    cfg = tmp_path / "t.toml"
    cfg.write_text('[run]\nname = "t"\n[measure]\nwarmup_iters = 1\nmin_iters = 3\nmin_seconds = 0.3\nidle_seconds = 0\n'
                   '[meter]\nname = "estimate"\n[[tasks]]\nname = "tiny-synthetic"\n[[pruners]]\nname = "none"\n'
                   '[[pruners]]\nname = "magnitude"\nsparsity = [0.3, 0.5, 0.7, 0.9]\n[[accelerators]]\nname = "torch-fp32"\n'
                   '[matrix]\nbatch_size = [1, 2]\nseq_len = [16]\nthreads = [1]\n')
    cmd = [sys.executable, "-m", "profiler.cli", "run", str(cfg), "--output-dir", str(tmp_path / "runs"),
           "--cache-dir", str(tmp_path / "cache")]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 900  # the fine-tune before the first row takes minutes on a busy machine
    results = None
    while time.monotonic() < deadline:
        found = list((tmp_path / "runs").glob("t-*/results.jsonl"))
        if found and found[0].read_text().count("\n") >= 1:
            results = found[0]
            break
        assert p.poll() is None, p.communicate()
        time.sleep(0.05)
    assert results is not None
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    assert "terminated; finished cells are saved. Continue with: sparsebench run --resume" in err
    assert f"--cache-dir {tmp_path / 'cache'}" in err  # where the checkpoints are, said in full
    done = [json.loads(line)["cell_id"] for line in results.read_text().splitlines()]
    assert 1 <= len(done) < 10
    r = subprocess.run([sys.executable, "-m", "profiler.cli", "run", "--resume", str(results.parent), "--cache-dir",
                        str(tmp_path / "cache")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ids = [json.loads(line)["cell_id"] for line in results.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 10 and ids[:len(done)] == done


def test_an_interrupt_before_the_run_files_exist_offers_no_resume(tmp_path, monkeypatch, capsys):
    """Ctrl-C in the first seconds (imports, fingerprints) leaves a folder without a manifest: a
    --resume of it would fail, so the message says to run again instead."""
    from profiler import runner
    from profiler.cli import main

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.Runner, "run", interrupted)
    cfg = tmp_path / "t.toml"
    cfg.write_text('[run]\nname = "t"\n[meter]\nname = "estimate"\n[[tasks]]\nname = "tiny-synthetic"\n'
                   '[[pruners]]\nname = "none"\n[[accelerators]]\nname = "torch-fp32"\n'
                   '[matrix]\nbatch_size = [1]\nseq_len = [16]\nthreads = [1]\n')
    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "c")]) == 130
    err = capsys.readouterr().err
    assert "nothing to resume" in err and "--resume" not in err


def test_a_resume_refused_inside_the_run_is_worded_as_the_checks_before_it(tmp_path, monkeypatch, capsys):
    from profiler import runner
    from profiler.cli import main
    from profiler.errors import ConfigError

    def refused(self):
        raise ConfigError("--resume: the inputs changed")

    cfg = tmp_path / "t.toml"
    cfg.write_text('[run]\nname = "t"\n[meter]\nname = "estimate"\n[[tasks]]\nname = "tiny-synthetic"\n'
                   '[[pruners]]\nname = "none"\n[[accelerators]]\nname = "torch-fp32"\n'
                   '[matrix]\nbatch_size = [1]\nseq_len = [16]\nthreads = [1]\n')
    monkeypatch.setattr(runner.Runner, "run", refused)
    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "c")]) == 2
    assert "sparsebench: cannot resume: the inputs changed" in capsys.readouterr().err
