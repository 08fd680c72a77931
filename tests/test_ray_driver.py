"""The Ray driver's fault handling against a stand-in for the ``ray`` module (no cluster, a fake
clock): a unit whose node died past its retries, a unit that ended without some rows, a row that
comes twice, and a target that has had no live node for ``target_timeout_s``."""
from __future__ import annotations

from pathlib import Path

import pytest

from profiler.config import expand, parse_config
from profiler.executors.ray_driver import NO_LIVE_NODE, RayExecutor, TargetRun, Unit
from profiler.results import read_results
from profiler.runner import base_row
from profiler.targets import Target
from tests.conftest import tiny_config


class FakeRayError(Exception):
    pass


class FakeRay:
    """What the driver uses of ``ray``: ``get``, ``cancel``, ``nodes`` and ``exceptions.RayError``."""

    class exceptions:
        RayError = FakeRayError

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self.alive = True
        self.cancelled: list[object] = []

    def get(self, ref: str) -> object:
        value = self.values[ref]
        if isinstance(value, Exception):
            raise value
        return value

    def cancel(self, ref: object, force: bool = False) -> None:
        self.cancelled.append(ref)

    def nodes(self) -> list[dict]:
        return [{"NodeID": "n1", "Alive": self.alive, "Labels": {"sparsebench.target": "b"}, "Resources": {"CPU": 1.0}}]


@pytest.fixture()
def driver(tmp_path):
    cfg = parse_config(tiny_config(ray={"max_retries": 2, "target_timeout_s": 30}))
    now = [0.0]
    ex = RayExecutor(cfg, clock=lambda: now[0])
    ex.ray = FakeRay()
    tr = TargetRun(Target("b", {"sparsebench.target": "b"}), tmp_path / "targets" / "b", todo=expand(cfg))
    tr.dir.mkdir(parents=True)
    tr.hardware_id = "hw-b"
    ex.runs = {"b": tr}
    return ex, tr, now


def _rows(tr: TargetRun) -> list[dict]:
    return read_results(Path(tr.dir) / "results.jsonl").rows


def _node_row(cell) -> dict:
    row = base_row(cell, None, "hw-b")
    row.extra["target"] = "b"
    return row.to_dict()


def test_a_unit_whose_node_died_past_its_retries_fails_its_unwritten_cells(driver):
    ex, tr, _ = driver
    cells = tr.todo[:3]
    ex.ray.values = {"r0": _node_row(cells[0]), "r1": FakeRayError("Task failed because the node it was running on is dead")}
    unit = Unit("b", cells, iter(["r0", "r1"]))
    tr.units = [unit]
    ex._next_row(tr, unit)
    ex._next_row(tr, unit)
    rows = _rows(tr)
    assert [r["cell_id"] for r in rows] == [c.cell_id for c in cells] and tr.units == []
    assert rows[0]["status"] == "ok"
    for r in rows[1:]:
        assert r["status"] == "failed" and r["target"] == "b" and r["hardware_id"] == "hw-b"
        assert r["reason"].startswith("FakeRayError: Task failed because the node it was running on is dead")
        assert "up to 2 time(s)" in r["reason"]


def test_a_unit_that_ends_short_fails_the_missing_cells_and_a_second_row_is_dropped(driver):
    ex, tr, _ = driver
    cells = tr.todo[:2]
    ex.ray.values = {"r0": _node_row(cells[0]), "again": _node_row(cells[0])}
    unit = Unit("b", cells, iter(["r0", "again"]))
    tr.units = [unit]
    for _ in range(3):  # two rows (the second for the same cell), then the end of the unit
        ex._next_row(tr, unit)
    lines = (tr.dir / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2  # the repeated cell was not written twice
    rows = _rows(tr)
    assert rows[1]["cell_id"] == cells[1].cell_id and rows[1]["status"] == "failed"
    assert "ended without a row" in rows[1]["reason"]


def test_a_target_without_a_live_node_is_given_up_after_its_timeout(driver):
    ex, tr, now = driver
    tr.units = [Unit("b", tr.todo, "gen")]
    ex.ray.alive = False
    ex._watch_targets()  # the clock starts
    now[0] = 30.0
    ex._watch_targets()
    assert tr.busy and not _rows(tr)  # exactly the timeout: still waiting
    now[0] = 31.0
    ex._watch_targets()
    assert not tr.busy and ex.ray.cancelled == ["gen"]
    rows = _rows(tr)
    assert len(rows) == len(tr.todo) and all(r["status"] == "skipped" and r["executor_outcome"] == NO_LIVE_NODE
                                             for r in rows)
    assert "no live node matching sparsebench.target=b for 31 s (target_timeout_s 30)" in rows[0]["reason"]


def test_a_node_that_comes_back_restarts_the_clock(driver):
    ex, tr, now = driver
    tr.units = [Unit("b", tr.todo, "gen")]
    ex.ray.alive = False
    ex._watch_targets()
    now[0] = 25.0
    ex.ray.alive = True
    ex._watch_targets()
    ex.ray.alive = False
    now[0] = 50.0
    ex._watch_targets()
    assert tr.busy and not _rows(tr)  # 25 s without a node since it left again, not 50


def test_a_resume_refuses_a_task_whose_data_changed_since_the_run_started(tmp_path, monkeypatch):
    """The driver's manifest keeps each task's input fingerprint, as a local run's does, so a
    resume of a Ray run refuses, before connecting, when the model folder or data files changed."""
    import json

    from profiler.errors import ConfigError
    from profiler.executors import ray_driver
    from tests.tiny_family import save_tiny_model

    data = tmp_path / "dev.csv"
    data.write_text("text,label\n" + "".join(f"sentence number {i},{i % 2}\n" for i in range(12)))
    model = save_tiny_model(tmp_path / "model", "bert", num_labels=2)
    task = {"name": "text-classification", "model": str(model), "eval_file": str(data), "finetune_steps": 0}
    cfg = parse_config(tiny_config(tasks=[task]))
    ex = RayExecutor(cfg)
    ex.ray = FakeRay()
    ex.ray.__version__ = "fake"
    ex.runs = {"b": TargetRun(Target("b", {"sparsebench.target": "b"}), tmp_path / "run" / "targets" / "b")}
    (tmp_path / "run").mkdir()
    ex._write_manifest(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["task_fingerprints"]

    def no_cluster(address):
        raise AssertionError("connected to a cluster before the inputs were checked")

    monkeypatch.setattr(ray_driver, "connect", no_cluster)
    data.write_text(data.read_text().replace(",1\n", ",0\n"))
    with pytest.raises(ConfigError, match="--resume: the model folder, data files or parameters of task .* changed since"):
        RayExecutor(cfg).prepare(resume_dir=tmp_path / "run")
