"""Fault class 2: damaged or foreign files fail cleanly. Configs that are not UTF-8 or are a
directory; results rows of the wrong types, non-UTF-8 bytes or non-finite numbers are reported
(file, line, why) and skipped by report, compare and --resume; rows are written finite only."""
from __future__ import annotations

import json
import math

import pytest

from profiler.cli import main
from profiler.config import load_config
from profiler.errors import ConfigError, ResultsReadError
from profiler.results import Result, append_result, read_results, row_problem
from reports.frame import load_json, load_rows
from tests.conftest import tiny_config
from tests.faults_util import toml_text
from tests.test_compare import make_run, standard


def good(cell_id="a", **kw) -> Result:
    base = dict(cell_id=cell_id, task="t", pruner="none", pruner_params={}, accelerator="torch-fp32",
                accelerator_params={}, batch_size=1, seq_len=16, threads=1, status="ok", latency_p50_s=0.01)
    return Result(**{**base, **kw})


def test_config_not_utf8_names_file_and_byte_offset(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes(toml_text(tiny_config()).encode()[:10] + b"\xff\xfe" + b"rest")
    with pytest.raises(ConfigError, match=r"c\.toml: not UTF-8 text \(byte 10"):
        load_config(path)


def test_config_directory_is_not_called_missing(tmp_path):
    with pytest.raises(ConfigError, match="is a directory, not a file"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_cli_bad_config_file_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_bytes(b"\x80\x81")
    assert main(["run", str(path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["run", str(tmp_path)]) == 2
    assert "directory" in capsys.readouterr().err


@pytest.mark.parametrize("line, why", [
    (b'{"cell_id": 5}', "cell_id"),
    (b'[1, 2]', "not a JSON object"),
    (b'{"cell_id": "x", "task": "t"', "not JSON"),
    (b'\xff\xfe{}', "not UTF-8"),
    (b'{"latency_p50_s": NaN}', "non-finite"),
    (b'"just a string"', "not a JSON object"),
])
def test_bad_rows_are_reported_with_file_line_and_why_and_skipped(tmp_path, line, why):
    path = tmp_path / "results.jsonl"
    append_result(path, good("a"))
    with open(path, "ab") as f:
        f.write(line + b"\n")
    append_result(path, good("b"))
    rf = read_results(path)
    assert [r["cell_id"] for r in rf.rows] == ["a", "b"] and rf.damaged_lines == [2]
    d = rf.damaged[0]
    assert d.file == str(path) and d.line == 2 and why in d.why, d
    assert str(d).startswith(f"{path}:2: ")


@pytest.mark.parametrize("change, why", [
    ({"batch_size": "8"}, "batch_size"), ({"threads": 0}, "threads"), ({"status": "great"}, "status"),
    ({"pruner_params": [1]}, "pruner_params"), ({"latency_p50_s": "fast"}, "latency_p50_s"),
    ({"latency_spread_flag": 1.5}, "latency_spread_flag"), ({"cell_id": ""}, "cell_id"),
])
def test_row_schema(change, why):
    row = {**good().to_dict(), **change}
    assert why in row_problem(row)
    assert row_problem(good().to_dict()) is None


def test_nonfinite_measurements_are_written_as_null_with_a_reason(tmp_path):
    path = tmp_path / "results.jsonl"
    append_result(path, good(latency_p99_s=math.inf, energy_j_per_inference=math.nan, extra={"x": {"y": -math.inf}}))
    row = read_results(path).rows[0]
    assert row["latency_p99_s"] is None and row["energy_j_per_inference"] is None and row["x"] == {"y": None}
    assert row["null_reasons"] == {"latency_p99_s": "measured inf", "energy_j_per_inference": "measured nan",
                                   "x.y": "measured -inf"}


def test_report_and_compare_skip_damaged_rows_and_warn(tmp_path, capsys):
    a = make_run(tmp_path / "a", standard(), tail='{"cell_id": 5}\n\xff\n')
    b = make_run(tmp_path / "b", standard(speed=2.0))
    df, damaged = load_rows(a)
    assert len(df) == len(standard()) and damaged == [len(standard()) + 1, len(standard()) + 2]
    assert main(["report", str(a)]) == 0
    err = capsys.readouterr().err
    assert f"results.jsonl:{len(standard()) + 1}: field 'cell_id'" in err
    assert main(["compare", str(a), str(b), "-o", str(tmp_path / "c.html")]) == 0
    assert "damaged row skipped" in capsys.readouterr().err


def test_unwritable_report_output_is_one_line_exit_2(tmp_path, capsys):
    a = make_run(tmp_path / "a", standard())
    assert main(["report", str(a), "-o", str(tmp_path)]) == 2  # a directory
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write" in err
    assert main(["report", str(a), "-o", str(tmp_path / "new" / "dir" / "r.html")]) == 0  # as compare: folders made
    assert (tmp_path / "new" / "dir" / "r.html").is_file()
    (tmp_path / "afile").write_text("")
    assert main(["report", str(a), "-o", str(tmp_path / "afile" / "r.html")]) == 2  # a file in the way


def test_report_and_compare_say_what_is_wrong_with_a_path(tmp_path, capsys):
    a = make_run(tmp_path / "a", standard())
    (tmp_path / "f").write_text("")
    for path, why in ((tmp_path / "nowhere", "does not exist"), (tmp_path / "f", "is a file")):
        assert main(["report", str(path)]) == 2
        assert why in capsys.readouterr().err
        assert main(["compare", str(a), str(path)]) == 2
        assert "missing, or a file" in capsys.readouterr().err and not (tmp_path / "compare.html").exists()


def test_damaged_run_json_files_do_not_crash_the_reader(tmp_path):
    (tmp_path / "h.json").write_bytes(b"\xff")
    (tmp_path / "l.json").write_text("[1, 2]")
    assert load_json(tmp_path / "h.json") == {} and load_json(tmp_path / "l.json") == {}


def test_resume_of_a_damaged_manifest_is_one_line_exit_2(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "manifest.json").write_bytes(b"\xff\xfe")
    assert main(["run", "--resume", str(run)]) == 2
    assert "damaged" in capsys.readouterr().err
    (run / "manifest.json").write_text(json.dumps({"config": 5}))
    assert main(["run", "--resume", str(run)]) == 2
    (run / "manifest.json").write_text(json.dumps({"config": tiny_config(), "executor": "spark"}))
    assert main(["run", "--resume", str(run)]) == 2
    assert "executor 'spark' is not one of local, ray" in capsys.readouterr().err
    assert not (run / "results.jsonl").exists()


@pytest.mark.parametrize("argv", [["run", "{cfg}", "--output-dir", ""], ["run", "{cfg}", "--cache-dir", " "],
                                  ["run", "--resume", ""], ["report", ""], ["report", "{run}", "-o", ""],
                                  ["compare", "{run}", ""], ["compare", "{run}", "-o", ""],
                                  ["export", "{run}", "--cell", "x", "--out", ""]])
def test_an_empty_path_argument_is_an_error_not_a_default(tmp_path, capsys, argv):
    run = make_run(tmp_path / "a", standard())
    cfg = tmp_path / "c.toml"
    cfg.write_text("")
    with pytest.raises(SystemExit) as exc:
        main([a.format(cfg=cfg, run=run) for a in argv])
    assert exc.value.code == 2 and "empty path" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c.toml"] and not (run / "report.html").exists()


def test_report_warns_and_compare_refuses_when_no_row_is_valid(tmp_path, capsys):
    empty = make_run(tmp_path / "e", [], tail="{not json\n")
    assert main(["report", str(empty)]) == 0  # a run that has not finished a cell yet still gets its page
    assert "has no valid result rows yet" in capsys.readouterr().err
    assert main(["compare", str(empty), str(empty), "-o", str(tmp_path / "c.html")]) == 2
    assert "nothing to compare" in capsys.readouterr().err and not (tmp_path / "c.html").exists()


@pytest.mark.parametrize("blocker", [".lock", "results.jsonl", "targets/a/results.jsonl"])
def test_resume_into_a_run_directory_it_cannot_append_to_fails_before_any_work(tmp_path, monkeypatch, capsys, blocker):
    from profiler.runner import Runner

    run = tmp_path / "r"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"config": tiny_config(), "executor": "local"}))
    (run / blocker).mkdir(parents=True)  # a file the run appends to, that no open() can append to
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Runner, "run", lambda self: pytest.fail("the run started"))
    assert main(["run", "--resume", str(run), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert f"RUN_DIR: {run / blocker} is not writable" in err and "Traceback" not in err
    # a resume writes in RUN_DIR only: the config's own output folder (runs/) is not created
    assert not (tmp_path / "runs").exists()


def test_resume_of_one_targets_folder_names_the_run_to_resume(tmp_path, monkeypatch, capsys):
    """A target's folder reads like a run directory (its own manifest), but resuming it alone would run
    every target again inside it."""
    from profiler.runner import Runner

    run = tmp_path / "r"
    one = run / "targets" / "a"
    one.mkdir(parents=True)
    manifest = {"config": tiny_config(), "executor": "ray", "targets": {"a": "a"}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    (one / "manifest.json").write_text(json.dumps(manifest | {"target": "a"}))
    monkeypatch.setattr(Runner, "run", lambda self: pytest.fail("the run started"))
    assert main(["run", "--resume", str(one), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert "one target's folder of the multi-target run" in err and f"--resume {run}" in err
    assert sorted(p.name for p in one.iterdir()) == ["manifest.json"]


def test_an_empty_cache_variable_is_the_default_cache(monkeypatch, tmp_path):
    from profiler.tasks.base import default_cache_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SPARSEBENCH_CACHE", "")
    assert default_cache_dir() == tmp_path / ".cache" / "sparsebench"
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"


def test_a_damaged_cache_entry_is_moved_aside_with_a_one_line_warning(tmp_path):
    from profiler.errors import SparsebenchWarning
    from profiler.tasks.base import load_cached

    entry = tmp_path / "finetuned" / "sst2-abc"
    entry.mkdir(parents=True)
    (entry / "config.json").write_bytes(b"\xff")
    with pytest.warns(SparsebenchWarning, match="could not be loaded .*and rebuilding"):
        assert load_cached(entry, lambda p: json.loads((p / "config.json").read_text()), "config.json") is None
    aside = [p.name for p in entry.parent.iterdir()]
    assert len(aside) == 1 and aside[0].startswith("sst2-abc.damaged-")


def test_a_cache_entry_without_its_marker_is_moved_aside_so_a_rebuild_can_be_published(tmp_path):
    """Entries are published whole; one whose marker file went missing was counted as absent, so
    every run rebuilt the model and the rebuild's rename onto the existing folder failed silently."""
    from profiler.errors import SparsebenchWarning
    from profiler.tasks.base import load_cached, publish_cached

    entry = tmp_path / "finetuned" / "sst2-abc"
    entry.mkdir(parents=True)
    (entry / "model.safetensors").write_bytes(b"x")
    with pytest.warns(SparsebenchWarning, match="config.json is missing; moved to .*and rebuilding"):
        assert load_cached(entry, lambda p: "loaded", "config.json") is None
    publish_cached(entry, lambda folder: (folder.mkdir(), (folder / "config.json").write_text("{}")))
    assert load_cached(entry, lambda p: "loaded", "config.json") == "loaded"
    assert load_cached(tmp_path / "finetuned" / "absent", lambda p: "loaded", "config.json") is None  # no warning


def test_report_names_a_results_folder_and_a_file_in_the_output_path(tmp_path, capsys):
    run = make_run(tmp_path / "a", standard())
    (tmp_path / "afile").write_text("")
    assert main(["report", str(run), "-o", str(tmp_path / "afile" / "x.html")]) == 2
    assert f"{tmp_path / 'afile'} is a file, not a folder" in capsys.readouterr().err
    odd = tmp_path / "b"
    (odd / "results.jsonl").mkdir(parents=True)
    assert main(["report", str(odd)]) == 2
    assert f"{odd / 'results.jsonl'} is not a file" in capsys.readouterr().err
    dangling = tmp_path / "c"
    dangling.mkdir()
    (dangling / "manifest.json").write_text("{}")  # a run, whose results file links nowhere: not "no cell finished"
    (dangling / "results.jsonl").symlink_to(tmp_path / "gone.jsonl")
    assert main(["report", str(dangling)]) == 2
    assert f"{dangling / 'results.jsonl'} is a link to {tmp_path / 'gone.jsonl'}, which does not exist" in capsys.readouterr().err


def test_results_file_that_is_a_directory_is_an_error(tmp_path):
    (tmp_path / "results.jsonl").mkdir()
    with pytest.raises(ResultsReadError, match=r"cannot read .*results\.jsonl: Is a directory"):
        read_results(tmp_path / "results.jsonl")


def test_an_unreadable_results_file_is_an_error_not_an_empty_run(tmp_path, monkeypatch, capsys):
    """Permission denied on results.jsonl used to be one "damaged row skipped" warning, then an empty
    report and exit status 0: report and compare (which read rows through read_results) now stop with
    status 2, naming the file and the reason, and write no page."""
    from pathlib import Path

    run = make_run(tmp_path / "a", standard())
    other = make_run(tmp_path / "b", standard())
    locked = run / "results.jsonl"
    read_bytes = Path.read_bytes

    def denied(self):  # chmod 000 does not stop root, who may run the tests
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    for args in (["report", str(run)], ["compare", str(run), str(other), "-o", str(tmp_path / "c.html")]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"sparsebench: cannot read {locked}: Permission denied" in err and "damaged row" not in err
    assert not (run / "report.html").exists() and not (tmp_path / "c.html").exists()


def test_resume_skips_damaged_rows_with_a_warning(tmp_path, monkeypatch):
    from profiler.config import expand, parse_config
    from profiler.runner import Reporter, Runner

    cfg = parse_config(tiny_config(pruners=[{"name": "none"}], accelerators=[{"name": "torch-fp32"}],
                                   matrix={"batch_size": [1], "seq_len": [16], "threads": [1]}, measure={"idle_seconds": 0}))
    redone, messages = [], []
    monkeypatch.setattr(Runner, "_run_task", lambda self, spec, cells, meter, idle, references=(): redone.extend(cells))
    rep = Reporter()
    rep.message = messages.append
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.jsonl").write_bytes(b'{"cell_id": 5}\n\xff\n')
    Runner(cfg, run_dir, reporter=rep).run()
    assert [c.cell_id for c in redone] == [c.cell_id for c in expand(cfg)]
    assert any("results.jsonl:1: field 'cell_id'" in m for m in messages)
    assert any("results.jsonl:2: not UTF-8" in m for m in messages)


def test_output_dir_with_nul_is_a_config_error():
    from profiler.config import parse_config

    with pytest.raises(ConfigError, match="run.output_dir"):
        parse_config(tiny_config(run={"name": "t", "output_dir": "a\0b"}))


def test_help_describes_run_dir_and_says_where_outputs_go_only_where_something_is_written(capsys):
    """``RUN_DIR`` of report, compare and export has a description (report's and export's had none);
    "Outputs go to runs/..." ends the help of the commands that write a run, not that of plugins."""
    def help_of(*argv) -> str:
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--help"])
        assert exc.value.code == 0
        return " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width

    for command in ("report", "compare", "export"):
        text = help_of(command)
        assert "positional arguments: RUN_DIR " in text and "positional arguments: RUN_DIR options:" not in text, text
    assert "Outputs go to runs/" not in help_of("plugins")
    assert help_of("run").endswith("Outputs go to runs/<name>-<timestamp>/.")


@pytest.mark.parametrize("argv, usage", [(["plugins", "gmp", "magnitude"], "usage: sparsebench plugins"),
                                         (["doctor", "--bogus"], "usage: sparsebench doctor")])
def test_a_stray_argument_shows_its_subcommands_usage(capsys, argv, usage):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and usage in err and f"unrecognized arguments: {argv[-1]}" in err


def test_a_cache_entry_published_by_another_process_first_is_kept(tmp_path):
    """Two processes building one cache entry: each writes a private folder, the first rename wins,
    the loser's copy is dropped and nothing half-written is ever at the entry's path."""
    from profiler.tasks.base import publish_cached

    entry = tmp_path / "finetuned" / "x"
    entry.parent.mkdir()

    def write(tag):
        def w(folder):
            folder.mkdir()
            assert not entry.exists() or (entry / "who").read_text() == "first"
            (folder / "who").write_text(tag)
        return w

    publish_cached(entry, write("first"))
    publish_cached(entry, write("second"))
    assert (entry / "who").read_text() == "first"
    assert sorted(p.name for p in entry.parent.iterdir()) == ["x"]  # no private folder left behind


@pytest.mark.parametrize("content", ['{"watts": 5}', '{"watts": {"cpu": "hot"}, "duration_s": 1}', '{"watts": {}}', "[1]"])
def test_a_damaged_idle_power_file_is_one_clear_error(tmp_path, content):
    from profiler.energy import IdlePower
    from profiler.errors import ConfigError
    from profiler.runner import read_idle_power

    assert read_idle_power(tmp_path) is None
    (tmp_path / "idle_power.json").write_text(content)
    with pytest.raises(ConfigError, match="idle_power.json is damaged .*start a new run"):
        read_idle_power(tmp_path)
    good = IdlePower(watts={"cpu": 3.5, "dram": None}, duration_s=2.0, flags=["short"])
    (tmp_path / "idle_power.json").write_text(json.dumps(good.to_dict()))
    assert read_idle_power(tmp_path) == good


def test_a_full_disk_while_writing_the_run_files_is_one_line_and_leaves_no_empty_file(tmp_path, monkeypatch):
    """hardware.json, the manifest and idle_power.json go through an atomic write: ENOSPC is a
    SetupError naming the file, and no empty file is left for a resume to trip on."""
    import errno

    from profiler import runner
    from profiler.errors import SetupError

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(runner, "write_atomic", full)
    with pytest.raises(SetupError, match=r"cannot write .*hardware\.json: No space left on device"):
        runner.write_run_file(tmp_path / "hardware.json", {"x": 1})
    assert not (tmp_path / "hardware.json").exists()


def test_a_damaged_idle_power_file_is_named_once(tmp_path):
    from profiler.errors import ConfigError
    from profiler.runner import read_idle_power

    (tmp_path / "idle_power.json").write_text("")
    with pytest.raises(ConfigError) as info:
        read_idle_power(tmp_path)
    assert str(info.value).count("is damaged") == 1


def test_a_cached_pruned_model_whose_weights_changed_is_rebuilt_not_used(tmp_path):
    """A cache entry whose safetensors were overwritten (header intact) loads, but its weights
    are not the ones stored: NaN, or zeros other than the sparsity counted when it was stored."""
    import torch

    from pruners.base import ALL_ROLES, sparsity_report
    from profiler.contracts import cached_model_problem
    from tests.tiny_family import tiny_bert

    model = tiny_bert(0.5)
    stored = sparsity_report(model, ALL_ROLES)
    assert cached_model_problem(model, stored, object()) is None
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "encoder" in n and p.dim() == 2).fill_(1.0)
    assert "stored with it as" in cached_model_problem(model, stored, object())
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("nan")
    assert cached_model_problem(model, stored, object()) == "its weights hold NaN or inf"


def test_a_cache_entry_that_cannot_be_written_names_the_cache(tmp_path):
    """A full disk or a file-size limit while saving a model: the reason names the entry and the
    way out, whatever the writer's own error type (safetensors raises its own)."""
    from profiler.tasks.base import publish_cached

    class SafetensorError(Exception):
        pass

    def write(folder):
        folder.mkdir()
        raise SafetensorError("File too large (os error 27)")

    entry = tmp_path / "pruned" / "tiny-abc"
    entry.parent.mkdir()
    with pytest.raises(RuntimeError, match=r"cannot write the model cache entry .*tiny-abc \(SafetensorError: File too "
                                           r"large .*\); make room there or choose another cache \(--cache-dir"):
        publish_cached(entry, write)
    assert list(entry.parent.iterdir()) == []  # the private folder is gone
