"""Where ``report`` / ``compare`` may write (``-o``) and what ``results.jsonl`` lines they read.

The page replaces its file through a renamed temporary file: pointed at a run's own data it would
destroy them, at a FIFO or a device node it would replace the node. Such paths are refused (exit
2, one line); a link is followed. Lines other tools write (an integral float count, a BOM, a
number that overflows to inf) are read or refused as the schema says."""
from __future__ import annotations

import json
import os

import pytest

from profiler.cli import main
from profiler.results import read_results
from tests.test_report_collapsed import result, write_run


@pytest.fixture
def run(tmp_path):
    return write_run(tmp_path / "run", [result("b", "none", "torch-fp32", 0.010, 0.9),
                                        result("s", "magnitude", "sparse-cpu", 0.006, 0.85)])


@pytest.mark.parametrize("command", ["report", "compare"])
@pytest.mark.parametrize("name", ["results.jsonl", "manifest.json", "hardware.json"])
def test_a_page_never_overwrites_a_runs_data(run, capsys, command, name):
    before = (run / name).read_bytes()
    assert main([command, str(run), "-o", str(run / name)]) == 2
    err = capsys.readouterr().err
    assert "is not an HTML page" in err and len(err.strip().splitlines()) == 1
    assert (run / name).read_bytes() == before


def test_a_fifo_is_refused_and_left_a_fifo(run, tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert main(["report", str(run), "-o", str(fifo)]) == 2
    assert "not a regular file" in capsys.readouterr().err and fifo.is_fifo()


def test_a_folder_path_with_a_slash_is_refused(run, tmp_path, capsys):
    assert main(["report", str(run), "-o", str(tmp_path / "new") + "/"]) == 2
    assert "is a folder" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_a_link_is_followed_and_kept(run, tmp_path):
    real, link = tmp_path / "real.html", tmp_path / "link.html"
    real.write_text("old")
    link.symlink_to(real)
    assert main(["report", str(run), "-o", str(link)]) == 0
    assert link.is_symlink() and real.read_text().startswith("<!DOCTYPE html")


def test_one_folder_with_two_thread_counts_is_two_targets_not_one(tmp_path, capsys):
    rows = [{**result(f"b{t}", "none", "torch-fp32", 0.01 / t, 0.9), "threads": t} for t in (1, 2)]
    run = write_run(tmp_path / "run", rows)
    assert main(["compare", str(run), "-o", str(tmp_path / "c.html")]) == 0
    assert "one run directory" not in capsys.readouterr().err
    single = write_run(tmp_path / "one", rows[:1])
    assert main(["compare", str(single), "-o", str(tmp_path / "d.html")]) == 0
    assert "one run directory" in capsys.readouterr().err


def test_lines_other_tools_write_are_read_or_refused(tmp_path):
    good = result("b", "none", "torch-fp32", 0.010, 0.9)
    as_pandas = {**good, "latency_n": 545.0}  # an int column holding a null: pandas writes floats
    overflow = json.dumps({**good, "cell_id": "o"}).replace('"latency_p50_s": 0.01', '"latency_p50_s": 1e999')
    path = tmp_path / "results.jsonl"
    path.write_text("\ufeff" + json.dumps(as_pandas) + "\n" + overflow + "\n", encoding="utf-8")
    got = read_results(path)
    assert [r["cell_id"] for r in got.rows] == ["b"] and got.rows[0]["latency_n"] == 545
    assert isinstance(got.rows[0]["latency_n"], int)
    assert len(got.damaged) == 1 and "non-finite number 1e999" in got.damaged[0].why
