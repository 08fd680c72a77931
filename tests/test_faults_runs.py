"""Fault class 3: runs that race or repeat. Run directories are claimed atomically (a suffix when
taken, within one second and across processes); --resume --retry-failed reruns failed cells;
duplicate rows collapse on read with a warning; flags that do not apply to --resume are refused;
compare warns on a directory given twice or without rows; a resume is refused on another machine
(hardware.json or, when that is gone, the manifest's hardware_id) and under [measure] settings the
current code derives differently; a run in which no cell measured anything exits 1."""
from __future__ import annotations

import datetime as dt
import multiprocessing
import types
from pathlib import Path

import pytest

from profiler.cli import main
from profiler.config import expand, parse_config
from profiler.errors import ConfigError
from profiler.results import Result, append_result, read_results
from profiler.runner import Runner, new_run_dir
from tests.conftest import tiny_config
from tests.faults_util import write_config
from tests.test_compare import make_run, standard

FIXED = dt.datetime(2026, 1, 2, 3, 4, 5)


def fixed_clock() -> dt.datetime:
    return FIXED


def _claim(output_dir: str) -> str:
    return str(new_run_dir(types.SimpleNamespace(output_dir=output_dir, name="race"), now=fixed_clock))


def test_same_second_gets_a_suffix_and_every_dir_is_new(tmp_path):
    cfg = types.SimpleNamespace(output_dir=str(tmp_path), name="r")
    dirs = [new_run_dir(cfg, now=fixed_clock) for _ in range(3)]
    assert [d.name for d in dirs] == ["r-20260102-030405", "r-20260102-030405-2", "r-20260102-030405-3"]
    assert all(d.is_dir() for d in dirs)


def test_processes_racing_for_one_second_never_share_a_dir(tmp_path):
    with multiprocessing.get_context("fork").Pool(4) as pool:
        dirs = pool.map(_claim, [str(tmp_path)] * 16)
    assert len(set(dirs)) == 16


def test_unwritable_output_dir_is_a_config_error(tmp_path):
    from profiler.errors import ConfigError

    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match="run.output_dir"):
        new_run_dir(types.SimpleNamespace(output_dir=str(tmp_path / "f"), name="r"), now=fixed_clock)


def row(cell_id: str, status: str = "ok", p50: float | None = 0.01) -> Result:
    return Result(cell_id=cell_id, task="t", pruner="none", pruner_params={}, accelerator="torch-fp32",
                  accelerator_params={}, batch_size=1, seq_len=16, threads=1, status=status, latency_p50_s=p50)


def test_duplicate_rows_collapse_to_the_last_with_a_warning(tmp_path):
    path = tmp_path / "results.jsonl"
    append_result(path, row("a", "failed", None))
    append_result(path, row("b"))
    append_result(path, row("a", "ok", 0.02))
    rf = read_results(path)
    assert [(r["cell_id"], r["status"]) for r in rf.rows] == [("a", "ok"), ("b", "ok")]
    assert rf.duplicates == ["a"] and any("more than one row" in w for w in rf.warnings())


ONE_CELL = dict(pruners=[{"name": "none"}], accelerators=[{"name": "torch-fp32"}],
                matrix={"batch_size": [1], "seq_len": [16], "threads": [1]})


def test_resume_keeps_failed_cells_unless_retry_failed(tmp_path, monkeypatch):
    """Which cells a resumed run redoes; the cells themselves are faked (no model work)."""
    cfg = parse_config(tiny_config(**ONE_CELL, measure={"idle_seconds": 0}))
    (cell,) = expand(cfg)
    redone = []

    def fake_task(self, spec, cells, meter, idle, references=()):
        for c in cells:
            redone.append(c.cell_id)
            self._record(self._base_row(c, None), "ok", None)

    monkeypatch.setattr(Runner, "_run_task", fake_task)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    append_result(run_dir / "results.jsonl", row(cell.cell_id, "failed", None))
    Runner(cfg, run_dir).run()
    assert redone == [] and [r["status"] for r in read_results(run_dir / "results.jsonl").rows] == ["failed"]
    Runner(cfg, run_dir, retry_failed=True).run()
    rf = read_results(run_dir / "results.jsonl")
    assert redone == [cell.cell_id]
    assert [r["status"] for r in rf.rows] == ["ok"] and rf.duplicates == []  # replaced: no duplicate warnings
    Runner(cfg, run_dir, retry_failed=True).run()  # nothing failed any more: nothing to redo
    assert redone == [cell.cell_id]


def test_resume_on_other_hardware_is_refused_before_any_work(tmp_path, monkeypatch):
    """A run's rows, savings factors and idle power belong to one machine: a resume elsewhere would mix two."""
    import json

    from profiler.errors import ConfigError

    cfg = parse_config(tiny_config(**ONE_CELL, measure={"idle_seconds": 0}))
    monkeypatch.setattr(Runner, "_run_task", lambda *a: pytest.fail("no cell may run"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "hardware.json").write_text(json.dumps({"hardware_id": "0123456789", "cpu_model": "Other CPU"}))
    with pytest.raises(ConfigError, match="started on other hardware \\('Other CPU', hardware_id 0123456789\\)"):
        Runner(cfg, run_dir).run()
    assert not (run_dir / "results.jsonl").exists()


def test_a_resume_goes_on_with_the_model_cache_the_run_used(tmp_path, monkeypatch, capsys):
    """A resume without --cache-dir (or under another SPARSEBENCH_CACHE) used to fine-tune into that
    other cache and finish with a possibly different dense model: it now takes the cache the run
    recorded while that exists (an older run's: its command line's --cache-dir), and an explicit
    other --cache-dir is used with a warning naming both."""
    import json

    used = []
    monkeypatch.setattr(Runner, "_run_task", lambda self, *a, **k: used.append(self.cache_dir))
    first, other = tmp_path / "first-cache", tmp_path / "other-cache"
    first.mkdir()
    cfg = write_config(tmp_path / "c.toml", tiny_config(**ONE_CELL, measure={"idle_seconds": 0}))
    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(first)]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "manifest.json").read_text())["cache_dir"] == str(first.resolve())
    capsys.readouterr()

    assert main(["run", "--resume", str(run)]) == 0  # SPARSEBENCH_CACHE names the tests' own cache
    assert used[-1] == first.resolve()
    assert f"note: resuming with the model cache {run} was run with, {first.resolve()}" in capsys.readouterr().err
    assert main(["run", "--resume", str(run), "--cache-dir", str(other)]) == 0
    assert used[-1] == other
    assert (f"warning: --cache-dir {other}: {run} was run with the model cache {first.resolve()}; its remaining "
            f"cells use {other}") in capsys.readouterr().err
    manifest = json.loads((run / "manifest.json").read_text())  # a run written before the manifest kept it
    del manifest["cache_dir"]
    manifest["argv"] = ["sparsebench", "run", str(cfg), f"--cache-dir={first}"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run", "--resume", str(run)]) == 0
    assert used[-1] == first
    first.rmdir()
    assert main(["run", "--resume", str(run)]) == 0
    assert used[-1] not in (first, first.resolve())
    assert f"the model cache {run} was run with, {first}, is gone" in capsys.readouterr().err


@pytest.mark.parametrize("argv, needle", [
    (["--resume", "{run}", "--output-dir", "{tmp}"], "--output-dir does not apply to --resume"),
    (["{cfg}", "--retry-failed"], "--retry-failed applies to --resume"),
    (["{cfg}", "--resume", "{run}"], "either CONFIG or --resume"),
])
def test_flags_that_do_not_apply_to_resume_are_refused(tmp_path, capsys, argv, needle):
    cfg = write_config(tmp_path / "c.toml", tiny_config(**ONE_CELL))
    argv = [a.format(run=tmp_path / "run", tmp=tmp_path, cfg=cfg) for a in argv]
    assert main(["run", *argv]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_compare_warns_on_the_same_dir_twice_and_on_an_empty_one(tmp_path, capsys):
    a = make_run(tmp_path / "a", standard())
    empty = make_run(tmp_path / "e", [])
    assert main(["compare", str(a), str(tmp_path / "." / "a"), str(empty), "-o", str(tmp_path / "c.html")]) == 0
    err = capsys.readouterr().err
    assert "is given twice" in err and f"{empty} has no valid result rows" in err


@pytest.mark.parametrize("accelerator, noted", [("null", True), ("torch-fp32", False)])
def test_a_matrix_without_the_baseline_cell_is_noted(tmp_path, capsys, accelerator, noted):
    """Without pruner none + torch-fp32 no row gets a savings factor or accuracy kept: the run says so."""
    cfg = write_config(tmp_path / "c.toml", tiny_config(
        **{**ONE_CELL, "accelerators": [{"name": accelerator}]},
        measure={"warmup_iters": 1, "min_iters": 2, "min_seconds": 0.01, "max_seconds": 0.5, "idle_seconds": 0}))
    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "out")]) == 0
    assert ("note: no pruner 'none' with accelerator 'torch-fp32'" in capsys.readouterr().err) is noted


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ctrl_c_dropped_by_a_finalizer_still_stops_the_run(tmp_path, monkeypatch, capsys):
    """Python prints and drops a KeyboardInterrupt raised in __del__; the run stops at its next report."""
    import profiler.cli as cli

    real = cli._prepare_run

    class Finalized:
        def __del__(self):
            cli._Sigint.handler(2, None)  # Ctrl-C arriving while a library's finalizer runs

    def prepare_with_a_dropped_interrupt(args):
        out = real(args)
        obj = Finalized()
        del obj  # "Exception ignored in ...": the KeyboardInterrupt goes no further
        return out

    monkeypatch.setattr(cli, "_prepare_run", prepare_with_a_dropped_interrupt)
    cfg = write_config(tmp_path / "c.toml", tiny_config())
    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "runs")]) == 130
    err = capsys.readouterr().err
    assert "interrupted before the run started: nothing to resume" in err  # stopped before its manifest
    (run,) = (tmp_path / "runs").iterdir()
    results = run / "results.jsonl"
    assert not results.exists() or not read_results(results).rows  # stopped before its first cell


def test_ctrl_c_while_the_config_is_checked_is_one_line(tmp_path, monkeypatch, capsys):
    import profiler.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_prepare_run", interrupted)
    cfg = write_config(tmp_path / "c.toml", tiny_config())
    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "runs")]) == 130
    err = capsys.readouterr().err
    assert "interrupted before the first cell" in err and "Traceback" not in err


def test_a_results_file_that_stops_taking_rows_stops_the_run_with_one_clear_error(tmp_path, monkeypatch, capsys):
    """A full disk or a folder gone mid-run: the run stops at that cell (no later row could be saved),
    says which cell and how to go on, and the resumed run measures only the cells not saved."""
    cfg = write_config(tmp_path / "c.toml", tiny_config(
        pruners=[{"name": "none"}], accelerators=[{"name": "torch-fp32"}], measure={"idle_seconds": 0},
        matrix={"batch_size": [1, 2, 4], "seq_len": [16], "threads": [1]}))
    measured = []

    def fake_task(self, spec, cells, meter, idle, references=()):
        for c in cells:
            measured.append(c.cell_id)
            r = self._base_row(c, None)
            r.latency_p50_s = 0.01
            self._record(r, "ok", None)
            if len(measured) == 1:  # the file goes away after the first row: a directory takes its name
                self.results_path.rename(self.results_path.with_name("kept.jsonl"))
                self.results_path.mkdir()

    monkeypatch.setattr(Runner, "_run_task", fake_task)
    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err
    (run,) = (tmp_path / "runs").iterdir()
    assert f"cannot append to {run / 'results.jsonl'} (IsADirectoryError" in err
    assert f"cell {measured[1]} (none / torch-fp32, b2, 1 thread(s)) was measured but not saved" in err
    assert f"sparsebench run --resume {run}" in err and "Traceback" not in err
    assert len(measured) == 2  # stopped at the first row it could not save
    (run / "results.jsonl").rmdir()
    (run / "kept.jsonl").rename(run / "results.jsonl")
    assert main(["run", "--resume", str(run)]) == 0
    assert len(measured) == 4 and measured[2] == measured[1]  # the unsaved cell again, then the one not reached
    assert [r["cell_id"] for r in read_results(run / "results.jsonl").rows] == [measured[0], *measured[2:]]


def test_a_report_that_cannot_be_written_after_the_run_is_one_line_and_leaves_no_partial_page(tmp_path, monkeypatch,
                                                                                              capsys):
    cfg = write_config(tmp_path / "c.toml", tiny_config(**ONE_CELL, measure={"idle_seconds": 0}))

    def fake_task(self, spec, cells, meter, idle, references=()):
        for c in cells:
            r = self._base_row(c, None)
            r.latency_p50_s = 0.01
            self._record(r, "ok", None)
        (self.results_path.parent / "report.html" / "blocked").mkdir(parents=True)  # no page can take that name

    monkeypatch.setattr(Runner, "_run_task", fake_task)
    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err
    (run,) = (tmp_path / "runs").iterdir()
    assert f"cannot write the report {run / 'report.html'}" in err and f"sparsebench report {run}" in err
    assert "Traceback" not in err and len(read_results(run / "results.jsonl").rows) == 1
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_a_kernel_variant_variable_this_cpu_cannot_run_stops_the_run_before_any_work(tmp_path):
    """SPARSEBENCH_KERNEL_VARIANT is read when the extension loads (a fresh process): junk, or a
    variant this CPU lacks, exits 2 naming the variable, with a sparse-int8 config too (whose
    checks need no extension), and writes no run directory; sparse-cpu's availability says why
    without advising a reinstall."""
    import json
    import os
    import subprocess
    import sys

    from accelerators import _sparse_kernels as k

    cfg = tmp_path / "c.toml"
    cfg.write_text('[[tasks]]\nname = "tiny-synthetic"\n[[pruners]]\nname = "none"\n'
                   '[[accelerators]]\nname = "sparse-int8"\n[matrix]\nbatch_size = [1]\nseq_len = [16]\n')
    lacking = [v for v in k.compiled_variants() if v not in k.supported_variants()]
    for value in ["junk", *lacking[:1]]:
        env = dict(os.environ, SPARSEBENCH_KERNEL_VARIANT=value)
        out = subprocess.run([sys.executable, "-m", "profiler.cli", "run", str(cfg), "--output-dir", str(tmp_path / "runs")],
                             env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 2, out.stderr
        assert f"SPARSEBENCH_KERNEL_VARIANT={value}:" in out.stderr and "Traceback" not in out.stderr
        assert not (tmp_path / "runs").exists()
    code = ("import json; from accelerators.sparse_cpu import SparseCPU; print(json.dumps(SparseCPU().availability()))")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, SPARSEBENCH_KERNEL_VARIANT="junk"),
                         capture_output=True, text=True, check=True)
    ok, why = json.loads(out.stdout)
    assert not ok and why.startswith("SPARSEBENCH_KERNEL_VARIANT=junk: unknown kernel variant") and "pip install" not in why


def test_resume_and_export_refuse_inputs_changed_since_the_run_started(tmp_path, monkeypatch):
    """The manifest keeps a hash of each task's inputs (model files, data files, parameters): after
    the data file changes, new cells would be measured on other inputs than the rows already
    there, so --resume and export refuse, naming the task."""
    import json

    from profiler.errors import ConfigError
    from profiler.export import export_cell

    from tests.tiny_family import save_tiny_model

    data = tmp_path / "dev.csv"
    data.write_text("text,label\n" + "".join(f"sentence number {i},{i % 2}\n" for i in range(12)))
    model = save_tiny_model(tmp_path / "model", "bert", num_labels=2)
    task = {"name": "text-classification", "model": str(model), "eval_file": str(data), "finetune_steps": 0}
    cfg = parse_config(tiny_config(**ONE_CELL, tasks=[task], measure={"idle_seconds": 0}))
    monkeypatch.setattr(Runner, "_run_task", lambda *a, **k: None)
    run_dir = tmp_path / "run"
    Runner(cfg, run_dir).run()
    assert json.loads((run_dir / "manifest.json").read_text())["task_fingerprints"]
    Runner(cfg, run_dir).run()  # unchanged inputs: resumes
    data.write_text(data.read_text().replace(",1\n", ",0\n"))
    with pytest.raises(ConfigError, match=r"data files or parameters of task .* changed \(data\.eval\) since"):
        Runner(cfg, run_dir).run()
    (cell,) = expand(cfg)
    with pytest.raises(ConfigError, match=r"changed \(data\.eval\) since"):
        export_cell(run_dir, cell.cell_id, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # a run recorded by an older sparsebench (model folders by sizes and times) is told so, not "changed"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["task_fingerprints"] = {k: v.split(":")[-1] for k, v in manifest["task_fingerprints"].items()}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="recorded its tasks' inputs as an older sparsebench did"):
        Runner(cfg, run_dir).run()


def test_an_unrunnable_kernel_variant_variable_is_a_setup_problem_not_a_config_error(tmp_path):
    """SPARSEBENCH_KERNEL_VARIANT is the environment's, not the config's: 'cannot run', exit 2."""
    import os
    import subprocess
    import sys

    cfg = write_config(tmp_path / "c.toml", tiny_config())
    env = dict(os.environ, SPARSEBENCH_KERNEL_VARIANT="bogus")
    r = subprocess.run([sys.executable, "-m", "profiler.cli", "run", str(cfg), "--output-dir", str(tmp_path / "runs")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "sparsebench: cannot run: SPARSEBENCH_KERNEL_VARIANT=bogus" in r.stderr, r.stderr


def test_changed_inputs_names_each_entry_that_differs():
    from profiler.runner import changed_inputs

    old = {"model_files": {"config.json": "a", "model.safetensors": "b"}, "data": {"eval": "c"}, "steps": 1}
    new = {"model_files": {"config.json": "a", "model.safetensors": "B", "extra.txt": "x"}, "data": {"eval": "c"},
           "steps": 2}
    assert changed_inputs(old, new) == ["model_files.extra.txt", "model_files.model.safetensors", "steps"]
    assert changed_inputs(old, old) == []


# ---- resume: the run's machine and its [measure] protocol; exit status of a run with nothing measured ----

def _ok_cells(self, spec, cells, meter, idle, references=()):
    for c in cells:
        r = self._base_row(c, None)
        r.latency_p50_s = 0.01
        self._record(r, "ok", None)


def _started_run(tmp_path, monkeypatch, **matrix) -> tuple[Path, Path]:
    """A local run of two cells (batch 1 and 2) with its first cell finished, through the CLI; its
    config file and run directory."""
    import json

    cfg = write_config(tmp_path / "c.toml", tiny_config(
        **{**ONE_CELL, "matrix": {**ONE_CELL["matrix"], "batch_size": [1, 2], **matrix}}, measure={"idle_seconds": 0}))
    monkeypatch.setattr(Runner, "_run_task", _ok_cells)
    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "runs")]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    rows = (run / "results.jsonl").read_text().splitlines()
    (run / "results.jsonl").write_text(rows[0] + "\n")  # as if killed after the first cell
    assert json.loads((run / "manifest.json").read_text())["hardware_id"]
    return cfg, run


def _edit_manifest(run, **fields) -> None:
    import json

    m = json.loads((run / "manifest.json").read_text())
    m.update(fields)
    (run / "manifest.json").write_text(json.dumps({k: v for k, v in m.items() if v is not None}))


def test_a_hardware_file_that_is_no_object_is_a_damaged_run_not_a_traceback(tmp_path, monkeypatch, capsys):
    _, run = _started_run(tmp_path, monkeypatch)
    (run / "hardware.json").write_text("[]")
    assert main(["run", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'hardware.json'} is damaged (a JSON list, not an object); start a new run" in err
    assert "Traceback" not in err and len(read_results(run / "results.jsonl").rows) == 1


def test_a_resume_without_hardware_json_is_checked_against_the_manifest(tmp_path, monkeypatch, capsys):
    """hardware.json gone: the manifest's hardware_id still decides. Another machine's run is refused
    (its rows must not mix with this one's); this machine's gets the file written again and goes on."""
    import json

    from profiler.hardware import cpu_display_name, fingerprint

    _, run = _started_run(tmp_path, monkeypatch)
    here = fingerprint()
    (run / "hardware.json").unlink()
    _edit_manifest(run, hardware_id="ffffffffff")
    assert main(["run", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert (f"was started on other hardware (its CPU not recorded, hardware_id ffffffffff) than this machine "
            f"({cpu_display_name(here)!r}, {here['hardware_id']})") in err
    assert not (run / "hardware.json").exists() and len(read_results(run / "results.jsonl").rows) == 1
    # hardware.json of this machine beside a manifest naming another: refused too
    (run / "hardware.json").write_text(json.dumps(here))
    assert main(["run", "--resume", str(run)]) == 2
    assert "hardware_id ffffffffff) than this machine" in capsys.readouterr().err
    (run / "hardware.json").unlink()
    _edit_manifest(run, hardware_id=here["hardware_id"])
    assert main(["run", "--resume", str(run)]) == 0
    assert json.loads((run / "hardware.json").read_text())["hardware_id"] == here["hardware_id"]
    assert "hardware.json was missing; written again" in capsys.readouterr().err
    assert len(read_results(run / "results.jsonl").rows) == 2
    # nothing names the machine: refused rather than guessed
    (run / "hardware.json").unlink()
    _edit_manifest(run, hardware_id=None)
    assert main(["run", "--resume", str(run)]) == 2
    assert "neither a hardware.json nor a hardware_id in its manifest.json" in capsys.readouterr().err


def test_a_run_written_before_the_memory_rename_and_the_measure_record_resumes_here(tmp_path, monkeypatch):
    """An older run on this machine: hardware.json with memory_gb, no effective_measure in the manifest."""
    import json

    _, run = _started_run(tmp_path, monkeypatch)
    hw = json.loads((run / "hardware.json").read_text())
    hw["memory_gb"] = hw.pop("memory_gib")
    (run / "hardware.json").write_text(json.dumps(hw))
    _edit_manifest(run, effective_measure=None)
    assert main(["run", "--resume", str(run)]) == 0
    assert len(read_results(run / "results.jsonl").rows) == 2


def test_a_resume_refuses_measure_settings_the_current_code_derives_differently(tmp_path, monkeypatch, capsys):
    """The manifest keeps the [measure] settings with defaults filled in; after an upgrade that
    changed a default (simulated: the record says the old default), the resumed cells would be timed
    under another protocol, so the resume is refused naming each setting, old and new value."""
    import json

    from profiler.config import MeasureSpec

    _, run = _started_run(tmp_path, monkeypatch)
    stored = json.loads((run / "manifest.json").read_text())["effective_measure"]
    assert stored["eval_batch_size"] == MeasureSpec.eval_batch_size and stored["schedule"] == "interleaved"  # defaults
    assert stored["idle_seconds"] == 0  # and what the config set
    assert set(stored) == set(MeasureSpec.__dataclass_fields__)
    _edit_manifest(run, effective_measure={**stored, "eval_batch_size": 32, "schedule": "sequential",
                                           "retired_setting": 1}, sparsebench_version="0.0.9")
    assert main(["run", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert ("cannot resume: " f"{run} was timed with other [measure] settings (sparsebench 0.0.9) than this sparsebench"
            in err)
    assert "schedule 'sequential' -> 'interleaved'" in err and "eval_batch_size 32 -> 64" in err
    assert "retired_setting" not in err and "Start a new run" in err
    assert len(read_results(run / "results.jsonl").rows) == 1
    with pytest.raises(ConfigError, match=r"eval_batch_size 32 -> 64"):  # the runner checks it too (API resumes)
        Runner(parse_config(json.loads((run / "manifest.json").read_text())["config"]), run).run()
    _edit_manifest(run, effective_measure={**stored, "min_rounds": float(stored["min_rounds"])})  # 3 == 3.0
    assert main(["run", "--resume", str(run)]) == 0


@pytest.mark.parametrize("statuses, code", [
    (("failed", "skipped"), 1),   # nothing measured: one failed, the other could not run here
    (("skipped", "skipped"), 1),  # nothing in the matrix runs on this hardware
    (("failed", "failed"), 1),
    (("ok", "skipped"), 0),
    (("ok", "failed"), 0),
])
def test_a_run_with_no_ok_cell_exits_1(tmp_path, monkeypatch, capsys, statuses, code):
    cfg = write_config(tmp_path / "c.toml", tiny_config(
        **{**ONE_CELL, "matrix": {**ONE_CELL["matrix"], "batch_size": [1, 2]}}, measure={"idle_seconds": 0}))

    def fake_task(self, spec, cells, meter, idle, references=()):
        for c, status in zip(cells, statuses):
            r = self._base_row(c, None)
            r.latency_p50_s = 0.01 if status == "ok" else None
            self._record(r, status, None if status == "ok" else "why not")

    monkeypatch.setattr(Runner, "_run_task", fake_task)
    assert main(["run", str(cfg), "--output-dir", str(tmp_path / "runs")]) == code
    err = capsys.readouterr().err
    assert ("no cell ran: all 2 were skipped" in err) is (statuses == ("skipped", "skipped"))


def _on_machine(monkeypatch, model: int, flags: str = "fpu sse4_2 avx avx2 avx512f") -> dict:
    """Make the runner see an x86 VM of family 6 and this model number under the generic Xeon name
    (the rest of the fingerprint is this machine's); its fingerprint."""
    import profiler.runner as runner_mod
    from profiler.hardware import fingerprint
    from tests.test_hardware import x86_cpuinfo

    fp = fingerprint(cpuinfo=lambda: x86_cpuinfo(model, flags=flags), gpu_probe=lambda: [])
    monkeypatch.setattr(runner_mod, "fingerprint", lambda: dict(fp))
    return fp


def _as_begun_before_the_cpu_family(run: Path) -> str:
    """Rewrite ``run`` as the code before the x86 family entered the id left it: hardware.json
    without the family, model and stepping, and that code's id in it, the manifest and the rows."""
    import json

    from tests.test_hardware import old_style

    hw = old_style(json.loads((run / "hardware.json").read_text()))
    (run / "hardware.json").write_text(json.dumps(hw))
    _edit_manifest(run, hardware_id=hw["hardware_id"])
    rows = [{**json.loads(line), "hardware_id": hw["hardware_id"]} for line in (run / "results.jsonl").read_text().splitlines()]
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return hw["hardware_id"]


def test_a_run_begun_before_the_cpu_family_was_recorded_resumes_on_its_machine_only(tmp_path, monkeypatch, capsys):
    """Its hardware.json and manifest hold the id without the family: on the same machine that is
    this machine's legacy id, so the resume goes on (keeping that id, in the rows too); on a machine
    with other ISA flags it is refused. With its hardware.json gone, the file is written again the
    old way, so that the next resume still matches."""
    import json

    _on_machine(monkeypatch, 207)
    _, run = _started_run(tmp_path, monkeypatch)
    old_id = _as_begun_before_the_cpu_family(run)
    _on_machine(monkeypatch, 207, flags="fpu sse4_2 avx avx2")
    assert main(["run", "--resume", str(run)]) == 2
    assert f"was started on other hardware ('Intel(R) Xeon(R) Processor', hardware_id {old_id})" in capsys.readouterr().err
    _on_machine(monkeypatch, 207)
    (run / "hardware.json").unlink()
    assert main(["run", "--resume", str(run)]) == 0
    hw = json.loads((run / "hardware.json").read_text())
    assert hw["hardware_id"] == old_id and "cpu_family" not in hw
    assert [r["hardware_id"] for r in read_results(run / "results.jsonl").rows] == [old_id, old_id]
    (run / "results.jsonl").write_text((run / "results.jsonl").read_text().splitlines()[0] + "\n")
    assert main(["run", "--resume", str(run)]) == 0, capsys.readouterr().err  # hardware.json as written again
    assert len(read_results(run / "results.jsonl").rows) == 2


def test_a_run_begun_on_one_cpu_generation_is_refused_on_another_of_the_same_name(tmp_path, monkeypatch, capsys):
    """Sapphire Rapids (family 6 model 143) and Emerald Rapids (model 207) VMs both say "Intel(R)
    Xeon(R) Processor" with the same flags: a run begun on one is refused on the other, naming both
    generations, through hardware.json and, with that gone, through the manifest's id."""
    spr = _on_machine(monkeypatch, 143)
    _, run = _started_run(tmp_path, monkeypatch)
    emr = _on_machine(monkeypatch, 207)
    assert main(["run", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert (f"was started on other hardware ('Intel(R) Xeon(R) Processor (family 6 model 143)', hardware_id "
            f"{spr['hardware_id']}) than this machine ('Intel(R) Xeon(R) Processor (family 6 model 207)', "
            f"{emr['hardware_id']})") in err
    (run / "hardware.json").unlink()
    assert main(["run", "--resume", str(run)]) == 2
    assert f"(its CPU not recorded, hardware_id {spr['hardware_id']}) than this machine" in capsys.readouterr().err
    assert len(read_results(run / "results.jsonl").rows) == 1
