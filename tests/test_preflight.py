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


def _two_accelerator_config(tmp_path, batch_sizes=(1,)):
    return write_config(tmp_path / "c.toml", tiny_config(
        measure={**tiny_config()["measure"], "idle_seconds": 0}, pruners=[{"name": "none"}],
        accelerators=[{"name": "torch-fp32"}, {"name": "int8-dynamic"}],
        matrix={"batch_size": list(batch_sizes), "seq_len": [16], "threads": [1]}))


def test_a_matrix_no_cell_of_which_runs_here_stops_before_any_work(tmp_path, monkeypatch, capsys):
    """Every accelerator unavailable (one says no, one's probe raises): exit 2 naming each with its
    reason, before the dense model is fine-tuned: no model cache, no run directory. availability
    was asked with the settings the cell's prepare would get."""
    from accelerators.int8_dynamic import Int8Dynamic
    from accelerators.torch_fp32 import TorchFP32
    from profiler.cli import main

    asked = []

    def no(self, settings=None):
        asked.append(settings)
        return False, "no fp32 here (test)"

    def raises(self, settings=None):
        raise RuntimeError("probe bug")

    monkeypatch.setattr(TorchFP32, "availability", no)
    monkeypatch.setattr(Int8Dynamic, "availability", raises)
    cfg = _two_accelerator_config(tmp_path)
    cache = tmp_path / "cache"
    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err
    assert "sparsebench: cannot run: no cell of the matrix can run here: accelerators[0] (torch-fp32): no fp32 here (test); " \
           "accelerators[1] (int8-dynamic x86): availability() raised RuntimeError('probe bug')" in err
    assert "fine-tuning" not in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]
    (s,) = asked
    assert (s.threads, s.batch_size, s.seq_len, s.kernel_variant, s.cache_dir) == (1, 1, 16, "auto", str(cache))
    assert s.calibration is not None  # the task's calibration data, as each cell passes it


def test_cells_that_cannot_run_here_are_named_once_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    """One accelerator unavailable: one warning before any work names it and why; the other cell
    runs, and the unavailable one is still recorded skipped with its reason."""
    from accelerators.int8_dynamic import Int8Dynamic
    from profiler.cli import main
    from profiler.results import read_results

    monkeypatch.setattr(Int8Dynamic, "availability", lambda self, settings=None: (False, "no int8 engine (test)"))
    cfg = _two_accelerator_config(tmp_path)
    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")]) == 0
    err = capsys.readouterr().err
    note = ("sparsebench: warning: 1 of the matrix's 2 cells cannot run here and will be skipped: "
            "accelerators[1] (int8-dynamic x86): no int8 engine (test)")
    assert err.count(note) == 1 and err.index(note) < err.index("fine-tuning")
    (run,) = (tmp_path / "runs").iterdir()
    rows = {r["accelerator"]: r for r in read_results(run / "results.jsonl").rows}
    assert rows["torch-fp32"]["status"] == "ok"
    assert rows["int8-dynamic"]["status"] == "skipped" and rows["int8-dynamic"]["reason"] == "no int8 engine (test)"


def test_the_note_names_the_cells_of_an_accelerator_that_runs_some_settings_only(tmp_path, monkeypatch):
    """Unavailable at batch 4 only: the warning names those cells; a Ray run (check_meter False)
    leaves the question to each node."""
    import warnings

    from accelerators.torch_fp32 import TorchFP32
    from profiler.errors import SparsebenchWarning
    from profiler.runner import preflight

    monkeypatch.setattr(TorchFP32, "availability",
                        lambda self, settings=None: (settings.batch_size < 4, "batch 4 too big (test)"))
    cfg = parse_config(tiny_config(pruners=[{"name": "none"}, {"name": "magnitude", "sparsity": 0.5}],
                                   run={"name": "t", "output_dir": str(tmp_path / "runs")},
                                   matrix={"batch_size": [1, 4], "seq_len": [16], "threads": [1]}))
    with pytest.warns(SparsebenchWarning) as seen:
        preflight(cfg, tmp_path / "cache")
    (w,) = seen
    assert str(w.message) == ("2 of the matrix's 8 cells cannot run here and will be skipped: accelerators[0] "
                              "(torch-fp32) in none + torch-fp32 b4 s16 t1, magnitude 0.5 + torch-fp32 b4 s16 t1: "
                              "batch 4 too big (test)")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preflight(cfg, tmp_path / "cache", check_meter=False)


def test_one_value_of_a_swept_accelerator_table_unavailable_is_named(tmp_path, monkeypatch):
    """A sweep in one table (engine = ["x86", "qnnpack"]) gives specs that share the table's key:
    each is asked on its own, so the unavailable one is named, not hidden behind its sibling."""
    from accelerators.int8_dynamic import Int8Dynamic
    from profiler.errors import SparsebenchWarning
    from profiler.runner import preflight

    monkeypatch.setattr(Int8Dynamic, "availability",
                        lambda self, settings=None: (self.engine != "qnnpack", "no qnnpack here (test)"))
    for engines in (["qnnpack", "x86"], ["x86", "qnnpack"]):  # whichever comes last in the table
        cfg = parse_config(tiny_config(pruners=[{"name": "none"}], run={"name": "t", "output_dir": str(tmp_path / "runs")},
                                       accelerators=[{"name": "torch-fp32"}, {"name": "int8-dynamic", "engine": engines}],
                                       matrix={"batch_size": [1], "seq_len": [16], "threads": [1]}))
        with pytest.warns(SparsebenchWarning) as seen:
            preflight(cfg, tmp_path / "cache")
        (w,) = seen
        assert str(w.message) == ("1 of the matrix's 3 cells cannot run here and will be skipped: accelerators[1] "
                                  "(int8-dynamic qnnpack): no qnnpack here (test)")


def test_preflight_and_export_print_no_transformers_loading_bars(tmp_path, capfd):
    """The block-shape check loads the model before the run starts: transformers' own bar is not the
    run's output (the run's lines say what happens)."""
    from transformers.utils import logging as hf_logging

    from profiler.runner import preflight
    from tests.tiny_family import save_tiny_model

    hf_logging.enable_progress_bar()
    model = save_tiny_model(tmp_path / "m")
    (tmp_path / "d.jsonl").write_text('{"text": "good movie", "label": 1}\n{"text": "bad plot", "label": 0}\n')
    cfg = parse_config(tiny_config(
        tasks=[{"name": "text-classification", "model": str(model), "eval_file": str(tmp_path / "d.jsonl")}],
        pruners=[{"name": "magnitude", "sparsity": 0.5, "structure": "1x4"}],
        run={"name": "t", "output_dir": str(tmp_path / "runs")}, matrix={"batch_size": [1], "seq_len": [16], "threads": [1]}))
    preflight(cfg, tmp_path / "cache")
    assert "Loading weights" not in capfd.readouterr().err
