"""The Ray executor on a real local Ray cluster: a head and worker processes on loopback, each
node with its own ``sparsebench.target`` label and 1 CPU, in namespaces of the test's own
(:mod:`tests.ray_cluster_util`). The tiny config runs on every target; nodes and the driver are
killed mid-run; ``--resume`` completes the run with every cell exactly once per target."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from profiler.cli import main
from profiler.config import expand, parse_config
from profiler.executors import ray_node
from profiler.rundir import expand_run_dirs, target_dirs
from reports.compare import build_compare
from tests.conftest import tiny_config
from tests.faults_util import write_config
from tests.ray_cluster_util import local_cluster, private_network, result_lines, wait_until

TARGETS = ("a", "b")


def _config(tmp_path: Path, **extra) -> tuple[Path, list]:
    doc = tiny_config(**extra)
    doc["run"] = {"name": "ray", "output_dir": str(tmp_path / "runs")}
    path = write_config(tmp_path / f"c{len(list(tmp_path.glob('c*.toml')))}.toml", doc)
    return path, [c.cell_id for c in expand(parse_config(doc))]


def _slow_cells(**ray_settings) -> dict:
    """Settings for the fault tests: cells timed one after the other, each for at least a second,
    so a unit (one pruner's 4 cells) still has seconds of work left after its first row arrives,
    and a node killed then dies mid-unit."""
    measure = {**tiny_config()["measure"], "schedule": "sequential", "min_seconds": 1.0}
    return {"measure": measure, "ray": ray_settings}


def _run_dir(tmp_path: Path) -> Path | None:
    runs = sorted((tmp_path / "runs").glob("ray-*")) if (tmp_path / "runs").exists() else []
    return runs[0] if runs else None


def _driver(cfg: Path, address: str, tmp_path: Path) -> subprocess.Popen:
    """The CLI as its own process (so the test can kill it, and nodes, mid-run)."""
    log = open(tmp_path / "driver.log", "w")
    return subprocess.Popen([sys.executable, "-m", "profiler.cli", "run", str(cfg), "--executor", "ray",
                             "--address", address], stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())


def _rows_of(run_dir: Path, target: str) -> list[dict]:
    return result_lines(run_dir / "targets" / target / "results.jsonl")


def _assert_complete(run_dir: Path, cell_ids: list[str]) -> None:
    """Every cell exactly once per target (counted over the file's lines), all ok, each row from a
    node that carries its target's label."""
    for t in TARGETS:
        rows = _rows_of(run_dir, t)
        assert sorted(r["cell_id"] for r in rows) == sorted(cell_ids), t
        bad = [(r["cell_id"], r["status"], r["reason"]) for r in rows if r["status"] != "ok"]
        assert not bad, bad
        assert {r["node_labels"]["sparsebench.target"] for r in rows} == {t}
        assert {r["target"] for r in rows} == {t}


@private_network()
def test_every_cell_runs_once_on_each_target_and_compare_reads_the_run(tmp_path, capsys):
    with local_cluster(*TARGETS) as (cluster, (worker,)):
        bad, _ = _config(tmp_path, targets={"a": "a", "x": "nosuch"})
        assert main(["run", str(bad), "--executor", "ray", "--address", cluster.address]) == 2
        err = capsys.readouterr().err
        assert "targets.x: no node of the cluster matches sparsebench.target=nosuch" in err
        assert "sparsebench.target: a, b" in err and _run_dir(tmp_path) is None  # no run directory

        cfg, cell_ids = _config(tmp_path)  # no [targets]: one per label value, a and b
        assert main(["run", str(cfg), "--executor", "ray", "--address", cluster.address]) == 0
        run_dir = _run_dir(tmp_path)
        _assert_complete(run_dir, cell_ids)
        node_of = {"a": cluster.head_node.node_id, "b": worker.node_id}
        accuracy = {}
        for t in TARGETS:
            hw = json.loads((run_dir / "targets" / t / "hardware.json").read_text())
            manifest = json.loads((run_dir / "targets" / t / "manifest.json").read_text())
            assert manifest["target"] == t and manifest["label_selector"] == {"sparsebench.target": t}
            for r in _rows_of(run_dir, t):
                assert r["ray_node_id"] == node_of[t] and r["hardware_id"] == hw["hardware_id"]
                assert r["model_built_on"] == "driver" and r["model_shipped_via"] == "ray object store"
                assert set(ray_node.STAMP_FIELDS) <= set(r) and r["worker_niceness"] == 0  # not Ray's 15
                assert r["latency_rounds"] >= 3 and r["baseline_cell_id"] in cell_ids  # interleaved per target
                accuracy.setdefault(r["model_id"], set()).add(r["accuracy"])
            assert (run_dir / "targets" / t / "report.html").is_file()
        # one model per (task, pruner), built once: the dense fp32 model scores the same everywhere
        dense = {r["model_id"] for r in _rows_of(run_dir, "a") if r["pruner"] == "none" and r["accelerator"] == "torch-fp32"}
        assert all(len(accuracy[m]) == 1 for m in dense)

    assert (run_dir / "compare.html").unlink() is None  # written by `run`; `compare RUN_DIR` writes it again
    assert main(["compare", str(run_dir)]) == 0
    html = (run_dir / "compare.html").read_text()
    assert all(f"{t} · " in html for t in TARGETS)
    comparison = build_compare(expand_run_dirs([run_dir]))
    assert [t.manifest["target"] for t in comparison.targets] == list(TARGETS)
    assert (comparison.joined["status"] == "ok").all() and len(comparison.joined) == 2 * len(cell_ids)
    assert main(["report", str(run_dir)]) == 0 and len(target_dirs(run_dir)) == 2


@private_network()
def test_worker_killed_mid_run_then_resume_loses_and_repeats_nothing(tmp_path):
    with local_cluster(*TARGETS) as (cluster, (worker,)):
        cfg, cell_ids = _config(tmp_path, **_slow_cells(max_retries=1, target_timeout_s=3))
        driver = _driver(cfg, cluster.address, tmp_path)
        try:
            run_dir = wait_until("a row of target b", lambda: (d := _run_dir(tmp_path)) and _rows_of(d, "b") and d, driver)
            cluster.remove_node(worker, allow_graceful=False)  # mid-run: b has cells left
            assert driver.wait(timeout=300) == 0, (tmp_path / "driver.log").read_text()[-3000:]
        finally:
            driver.kill()
        first = _rows_of(run_dir, "b")
        skipped = [r for r in first if r["status"] == "skipped"]
        assert skipped and all(r["executor_outcome"] == "no-live-node" and "no live node" in r["reason"] for r in skipped)
        assert sorted(r["cell_id"] for r in first) == sorted(cell_ids)  # a row per cell, none twice
        kept = [line for line in (run_dir / "targets" / "b" / "results.jsonl").read_text().splitlines()
                if json.loads(line)["status"] == "ok"]
        a_before = (run_dir / "targets" / "a" / "results.jsonl").read_bytes()

        new = cluster.add_node(num_cpus=1, object_store_memory=200 * 2**20, labels={"sparsebench.target": "b"})
        cluster.wait_for_nodes()
        assert main(["run", "--resume", str(run_dir), "--address", cluster.address]) == 0
        _assert_complete(run_dir, cell_ids)
        lines = (run_dir / "targets" / "b" / "results.jsonl").read_text().splitlines()
        assert lines[:len(kept)] == kept  # rows written before the kill are untouched
        assert {json.loads(x)["ray_node_id"] for x in lines[len(kept):]} == {new.node_id}
        assert (run_dir / "targets" / "a" / "results.jsonl").read_bytes() == a_before


@private_network()
def test_dead_node_is_retried_on_the_targets_other_node_and_a_killed_driver_resumes(tmp_path):
    with local_cluster("a", "b", "b") as (cluster, workers):
        cfg, cell_ids = _config(tmp_path, **_slow_cells(max_retries=2, target_timeout_s=300))
        driver = _driver(cfg, cluster.address, tmp_path)
        try:
            run_dir = wait_until("a row of target b", lambda: (d := _run_dir(tmp_path)) and _rows_of(d, "b") and d, driver)
            first = _rows_of(run_dir, "b")[0]
            victim, pruner = first["ray_node_id"], first["pruner_label"]
            cluster.remove_node(next(w for w in workers if w.node_id == victim), allow_graceful=False)
            survivor = next(w for w in workers if w.node_id != victim).node_id
            delivered = {r["cell_id"] for r in _rows_of(run_dir, "b")}
            # the unit that was on the dead node (one pruner's cells) goes on on the other node of b
            wait_until("the dead node's unit re-run on the other node of target b",
                       lambda: any(r["ray_node_id"] == survivor and r["pruner_label"] == pruner
                                   and r["cell_id"] not in delivered for r in _rows_of(run_dir, "b")), driver)
        finally:
            driver.send_signal(signal.SIGKILL)  # the driver dies mid-run too
            driver.wait()
        # on a loaded machine the survivor may finish every cell before the kill lands: then the
        # resume has nothing left to run and must still leave each cell exactly once
        assert main(["run", "--resume", str(run_dir), "--address", cluster.address]) == 0
        _assert_complete(run_dir, cell_ids)
        after = [r for r in _rows_of(run_dir, "b") if r["cell_id"] not in delivered]
        # rows the victim finished before it died may still arrive after the snapshot above; every
        # later row comes from the survivor
        nodes = {r["ray_node_id"] for r in after}
        assert after and survivor in nodes and nodes <= {survivor, victim}
