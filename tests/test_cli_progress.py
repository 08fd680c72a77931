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
    assert "cell 2/3: gmp 0.9 sparse-int8 b8: ok p50 26.1 ms" in err
