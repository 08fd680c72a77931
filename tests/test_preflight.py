"""preflight: the checks before a run is accepted leave nothing on disk."""
from __future__ import annotations

import pytest

from profiler.config import parse_config
from profiler.errors import ConfigError
from profiler.tasks.tiny_synthetic import TinySynthetic
from tests.conftest import tiny_config
from tests.faults_util import write_config


def test_a_run_rejected_in_preflight_creates_no_folder(tmp_path, monkeypatch, capsys):
    """seq_len longer than the model takes: exit 2, and neither the new model cache (``--cache-dir
    NEW/sub``) nor the output folder exists afterwards."""
    from profiler.cli import main

    monkeypatch.setattr(TinySynthetic, "max_positions", 32)
    cfg = write_config(tmp_path / "c.toml", tiny_config(matrix={"batch_size": [1], "seq_len": [64], "threads": [1]}))
    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "new" / "sub")]) == 2
    assert "matrix.seq_len: 64 is longer than" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


def test_preflight_checks_the_folders_without_creating_them(tmp_path):
    cfg = parse_config(tiny_config(run={"name": "t", "output_dir": str(tmp_path / "out" / "runs")}))
    from profiler.runner import preflight

    preflight(cfg, tmp_path / "new" / "sub")
    assert list(tmp_path.iterdir()) == []
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"model cache \(--cache-dir / SPARSEBENCH_CACHE\): .*a-file/x/cache cannot be "
                                          r"created: .*a-file is a file, not a folder"):
        preflight(cfg, blocker / "x" / "cache")
    with pytest.raises(ConfigError, match=r"model cache .*a-file is a file, not a folder"):
        preflight(cfg, blocker)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_an_accepted_run_creates_the_cache_its_manifest_names(tmp_path, monkeypatch):
    """preflight leaves the cache folder to the run: a resume looks for it where the manifest says."""
    import json

    from profiler.cli import main
    from profiler.runner import Runner

    monkeypatch.setattr(Runner, "_run_task", lambda self, *a, **k: None)
    cfg = write_config(tmp_path / "c.toml", tiny_config(measure={"idle_seconds": 0}, pruners=[{"name": "none"}],
                                                        accelerators=[{"name": "torch-fp32"}],
                                                        matrix={"batch_size": [1], "seq_len": [16], "threads": [1]}))
    cache = tmp_path / "new" / "sub"
    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(cache)]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert cache.is_dir() and json.loads((run / "manifest.json").read_text())["cache_dir"] == str(cache.resolve())
