"""The Ray executor's parts that need no cluster: a unit of work run as a plain generator (the node
side), the bad-input errors of ``run --executor ray`` (before any work), and ``report`` /
``compare`` reading a multi-target run directory."""
from __future__ import annotations

import contextlib
import json
import queue
import shutil
import socket
import sys

import pytest

from profiler.cli import main
from profiler.config import expand, parse_config
from profiler.executors import ray_node
from profiler.hardware import cpu_display_name
from profiler.plugins import TASKS
from profiler.rundir import expand_run_dirs, target_dirs
from profiler.runner import Runner, interleave_key
from tests.conftest import tiny_config
from tests.faults_util import write_config
from tests.ray_cluster_util import require_ray


@pytest.fixture()
def fresh_process(monkeypatch):
    """A worker process's caches (tasks, models, accuracy), empty for this test."""
    monkeypatch.setattr(ray_node, "_PROCESS", {"configs": {}, "tasks": {}, "models": {}, "accuracy": {}, "metrics": {},
                                               "hardware": None})


def _payloads(cfg, tmp_path):
    """The models of every pruner, built and packed as the driver does."""
    spec = cfg.tasks[0]
    task = TASKS.build(spec.name, spec.params, spec.key)
    runner = Runner(cfg, tmp_path / "unused")
    dense = task.load_finetuned(runner.cache_dir)
    built_on = ray_node.driver_built_on("driver-node", "hw0")
    return [ray_node.pack_model(*runner.pruned(task, dense, p), ray_node.pruner_key(p.canonical()), built_on,
                                task.finetune_report) for p in cfg.pruners]


def test_a_unit_yields_one_row_per_cell_in_its_order(tmp_path, fresh_process):
    cfg = parse_config(tiny_config())
    cells = [c for c in expand(cfg) if interleave_key(c) == interleave_key(expand(cfg)[0])]
    order = [c.cell_id for c in reversed(cells)]  # the unit's order, not the matrix's
    known = {cells[0].model_id: {"accuracy": 0.123, "metric_accuracy": 0.123, "collapsed": False}}
    spec = ray_node.UnitSpec(config=cfg.raw, cell_ids=order, stamp={"target": "t1", "executor": "ray"},
                             known_metrics=known)
    payloads = _payloads(cfg, tmp_path)
    rows = list(ray_node.run_unit(spec, *payloads))
    assert [r["cell_id"] for r in rows] == order
    assert payloads[0].dense_finetune["steps"] == 60  # the tiny task fine-tunes 60 steps
    assert all(r["dense_finetune"] == payloads[0].dense_finetune for r in rows)  # as a local run's rows say
    for r in rows:
        assert r["status"] == "ok", r["reason"]
        assert r["target"] == "t1" and r["executor"] == "ray" and r["ray_node_id"] is None  # not inside Ray here
        assert r["model_built_on"] == "driver" and r["model_built_on_node"] == "driver-node"
        assert r["latency_p50_s"] > 0 and r["latency_rounds"] >= 3 and r["baseline_cell_id"] in order
        assert r["hardware_id"] == ray_node.node_hardware()["hardware_id"]
    by_model = {r["model_id"]: r["accuracy"] for r in rows}
    assert by_model[cells[0].model_id] == 0.123  # a metric measured before is reused, not measured again
    assert all(0.0 <= a <= 1.0 for a in by_model.values())


def test_a_resumed_unit_times_its_finished_reference_again_without_a_row(tmp_path, fresh_process):
    cfg = parse_config(tiny_config())
    cells = [c for c in expand(cfg) if interleave_key(c) == interleave_key(expand(cfg)[0])]
    base = next(c for c in cells if c.pruner.name == "none" and c.accelerator.name == "torch-fp32")
    rest = [c.cell_id for c in cells if c is not base]
    spec = ray_node.UnitSpec(config=cfg.raw, cell_ids=rest, stamp={"target": "t1", "executor": "ray"},
                             reference_ids=[base.cell_id])
    rows = list(ray_node.run_unit(spec, *_payloads(cfg, tmp_path)))
    assert [r["cell_id"] for r in rows] == rest  # no row for the reference
    for r in rows:
        assert r["status"] == "ok", r["reason"]
        assert r["baseline_cell_id"] == base.cell_id and r["latency_savings_factor"] is not None


def test_a_sequential_unit_and_a_failing_unit(tmp_path, fresh_process):
    doc = tiny_config(pruners=[{"name": "none"}], matrix={"batch_size": [1, 2], "seq_len": [16], "threads": [1]})
    doc["measure"]["schedule"] = "sequential"
    cfg = parse_config(doc)
    ids = [c.cell_id for c in expand(cfg)]
    payloads = _payloads(cfg, tmp_path)
    rows = list(ray_node.run_unit(ray_node.UnitSpec(config=cfg.raw, cell_ids=ids, stamp={"target": "t"}), *payloads))
    assert [r["cell_id"] for r in rows] == ids and all(r["status"] == "ok" and "latency_rounds" not in r for r in rows)
    with pytest.raises(KeyError):  # a unit without its model raises, and Ray hands the error to the driver
        list(ray_node.run_unit(ray_node.UnitSpec(config=cfg.raw, cell_ids=ids, stamp={})))


def test_a_cell_the_runner_left_without_a_row_still_gets_one_in_order(monkeypatch, fresh_process):
    from profiler.runner import base_row

    cfg = parse_config(tiny_config())
    cells = expand(cfg)[:3]

    def last_only(spec, payloads, sink):  # a runner that records the third cell and forgets the others
        row = base_row(cells[2], None, "hw")
        sink(row)

    monkeypatch.setattr(ray_node, "_work", last_only)
    rows = list(ray_node.run_unit(ray_node.UnitSpec(config=cfg.raw, cell_ids=[c.cell_id for c in cells],
                                                    stamp={"target": "t"})))
    assert [r["cell_id"] for r in rows] == [c.cell_id for c in cells]
    assert [r["status"] for r in rows] == ["failed", "failed", "ok"] and "recorded no row" in rows[0]["reason"]
    assert rows[0]["target"] == "t" and "worker_niceness" in rows[0]


def test_a_unit_on_a_node_of_other_hardware_fails_its_cells_without_timing(monkeypatch, fresh_process):
    """A target's idle power, harness overhead and savings factors belong to the machine of its
    hardware.json: a unit that lands on a node of other hardware (a target whose nodes differ, or
    Ray's re-run on another node) times nothing and fails each cell, naming both machines and how
    to give them their own targets. On a node of the same hardware the same unit runs."""
    cfg = parse_config(tiny_config())
    cells = expand(cfg)[:3]
    ran = []
    monkeypatch.setattr(ray_node, "_work", lambda spec, payloads, sink: ran.append(spec))
    here = ray_node.node_hardware()
    theirs = {"hardware_id": "other-hw", "cpu_model": "Other CPU 9000"}
    spec = ray_node.UnitSpec(config=cfg.raw, cell_ids=[c.cell_id for c in cells], stamp={"target": "spr"},
                             hardware=theirs)
    rows = list(ray_node.run_unit(spec))
    assert not ran and [r["cell_id"] for r in rows] == spec.cell_ids
    for r in rows:
        assert r["status"] == "failed" and r["target"] == "spr" and r["hardware_id"] == here["hardware_id"]
        assert "Other CPU 9000" in r["reason"] and repr(cpu_display_name(here)) in r["reason"]
        assert "other-hw" in r["reason"] and "--labels=sparsebench.target=" in r["reason"]
        assert "--retry-failed" in r["reason"]
    same = {"hardware_id": here["hardware_id"], "cpu_model": here["cpu_model"]}
    rows = list(ray_node.run_unit(ray_node.UnitSpec(config=cfg.raw, cell_ids=spec.cell_ids, stamp={}, hardware=same)))
    assert len(ran) == 1 and all("recorded no row" in r["reason"] for r in rows)  # it ran (the stub records none)


def test_a_unit_of_a_target_begun_before_the_cpu_family_keeps_the_targets_hardware_id(monkeypatch, fresh_process):
    """A target whose hardware.json predates the x86 family in the id, on its own machine: the node
    accepts it, and every row it makes carries the target's (old) id, not the node's new one, so that
    the target's rows, manifest and hardware.json keep one id."""
    from profiler.hardware import hardware_summary, legacy_fingerprint

    cfg = parse_config(tiny_config())
    cells = expand(cfg)[:2]
    seen = []
    monkeypatch.setattr(ray_node, "_work", lambda spec, payloads, sink: seen.append(ray_node._row_hardware_id(spec)))
    old = hardware_summary(legacy_fingerprint(ray_node.node_hardware()))
    rows = list(ray_node.run_unit(ray_node.UnitSpec(config=cfg.raw, cell_ids=[c.cell_id for c in cells], stamp={},
                                                    hardware=old)))
    assert seen == [old["hardware_id"]]  # what _work hands its runner for every timed row
    assert [r["hardware_id"] for r in rows] == [old["hardware_id"]] * 2 and all("recorded no row" in r["reason"] for r in rows)


def test_a_unit_tells_cpu_generations_of_one_name_apart_and_takes_an_old_target_record():
    """The node compares the target's hardware.json (as the driver sends it: hardware_summary) with
    its own fingerprint: a target recorded on family 6 model 143 refuses a model-207 node of the same
    name and flags, naming both; a target whose hardware.json predates the family (its id the old
    one of this node) is this node's."""
    from profiler.hardware import hardware_summary
    from tests.test_hardware import old_style, x86_fp

    here = x86_fp(207)
    why = ray_node.other_hardware(hardware_summary(x86_fp(143)), here, "spr")
    assert why and "(family 6 model 143)" in why and "'Intel(R) Xeon(R) Processor (family 6 model 207)'" in why
    assert ray_node.other_hardware(hardware_summary(x86_fp(207, stepping=5)), here, "emr") is None
    assert ray_node.other_hardware(hardware_summary(old_style(here)), here, "old") is None
    assert ray_node.other_hardware(hardware_summary(old_style(x86_fp(207, flags="fpu avx2"))), here, "old")


@pytest.fixture()
def config_file(tmp_path):
    doc = tiny_config()
    doc["run"] = {"name": "bad", "output_dir": str(tmp_path / "runs")}
    return write_config(tmp_path / "c.toml", doc)


def _no_run_dir(tmp_path) -> bool:
    return not list((tmp_path / "runs").glob("bad-*"))


def test_executor_ray_without_ray_installed_fails_before_any_work(config_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert main(["run", str(config_file), "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert "--executor ray: Ray is not installed" in err and "pip install 'sparsebench[ray]'" in err
    assert _no_run_dir(tmp_path)


@pytest.mark.parametrize("address, words", [
    (None, ["--address: cannot reach a Ray cluster at 127.0.0.1:", "ray start --head"]),
    ("ray://127.0.0.1:10001", ["Ray Client address", "--address HEAD_IP:6379"]),
    ("nohost", ["is not HOST:PORT"]),
])
def test_an_unreachable_or_malformed_address_fails_before_any_work(config_file, tmp_path, capsys, address, words):
    require_ray()
    if address is None:  # a loopback port nothing listens on
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            address = f"127.0.0.1:{s.getsockname()[1]}"
    assert main(["run", str(config_file), "--executor", "ray", "--address", address]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err
    assert _no_run_dir(tmp_path)


def test_executor_flags_that_do_not_fit(config_file, tmp_path, capsys):
    assert main(["run", str(config_file), "--address", "127.0.0.1:6379"]) == 2
    assert "--address: applies to --executor ray only" in capsys.readouterr().err
    assert main(["run", str(config_file), "--executor", "ray", "--address="]) == 2
    assert "--address: empty" in capsys.readouterr().err
    ray_run = tmp_path / "ray-run"
    ray_run.mkdir()
    (ray_run / "manifest.json").write_text(json.dumps({"config": tiny_config(), "executor": "ray", "targets": {"a": {}}}))
    assert main(["run", "--resume", str(ray_run), "--executor", "local"]) == 2
    assert "was run with --executor ray; resume it with the same one" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", str(config_file), "--executor", "slurm"])
    assert "invalid choice: 'slurm' (choose from 'local', 'ray')" in capsys.readouterr().err


@pytest.fixture(scope="module")
def multi_target_run(tmp_path_factory):
    """A run directory laid out as a Ray run writes it: two target folders (copies of one small
    local run, each manifest naming its target)."""
    root = tmp_path_factory.mktemp("multi")
    cfg = parse_config(tiny_config(pruners=[{"name": "none"}, {"name": "magnitude", "sparsity": 0.5}],
                                   accelerators=[{"name": "torch-fp32"}], matrix={"batch_size": [1], "seq_len": [16]}))
    local = Runner(cfg, root / "local").run()
    run_dir = root / "ray-run"
    for name in ("spr", "zen5"):
        d = run_dir / "targets" / name
        shutil.copytree(local, d)
        manifest = json.loads((d / "manifest.json").read_text())
        (d / "manifest.json").write_text(json.dumps({**manifest, "target": name, "executor": "ray"}))
    (run_dir / "manifest.json").write_text(json.dumps({"config": cfg.raw, "executor": "ray", "targets": {}}))
    return run_dir


def test_compare_and_report_read_a_multi_target_run_directory(multi_target_run, capsys):
    run_dir = multi_target_run
    assert target_dirs(run_dir) == [run_dir / "targets" / "spr", run_dir / "targets" / "zen5"]
    assert expand_run_dirs([run_dir, run_dir / "targets" / "spr"]) == target_dirs(run_dir) + [run_dir / "targets" / "spr"]
    assert main(["compare", str(run_dir)]) == 0
    html = (run_dir / "compare.html").read_text()
    assert "spr · " in html and "zen5 · " in html
    assert main(["report", str(run_dir)]) == 0
    assert all((d / "report.html").is_file() for d in target_dirs(run_dir))
    assert main(["report", str(run_dir), "-o", "x.html"]) == 2
    assert "multi-target run writes RUN_DIR/targets/<target>/report.html" in capsys.readouterr().err
    assert main(["report", str(run_dir.parent)]) == 2


def test_a_bad_ray_address_from_the_environment_is_named_as_such(config_file, tmp_path, capsys, monkeypatch):
    require_ray()
    monkeypatch.setenv("RAY_ADDRESS", "garbage:xx")
    assert main(["run", str(config_file), "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert "RAY_ADDRESS: 'garbage:xx' is not HOST:PORT" in err and "--address" not in err.split("HOST:PORT")[0], err
    assert _no_run_dir(tmp_path)


def test_a_worker_keeps_models_of_equal_size_but_other_bytes_apart():
    """Two tasks' models of one pruner config have the same file names and sizes (same architecture):
    their payloads must not share a worker's copy."""
    a = ray_node.ModelPayload("p", {"model.safetensors": b"\x00" * 64, "config.json": b"{}"}, {}, {"host": "h"})
    b = ray_node.ModelPayload("p", {"model.safetensors": b"\x01" * 64, "config.json": b"{}"}, {}, {"host": "h"})
    same = ray_node.ModelPayload("p", dict(a.files), {}, {"host": "h"})
    assert a.key != b.key and a.key == same.key
    assert ray_node.ModelPayload("q", dict(a.files), {}, {"host": "h"}).key != a.key


@pytest.mark.parametrize("value, words", [
    ("garbage", ["RAY_ADDRESS: 'garbage' is not HOST:PORT"]),
    ("http://127.0.0.1:8265", ["RAY_ADDRESS: 'http://127.0.0.1:8265' is not HOST:PORT"]),
    ("ray://127.0.0.1:10001", ["RAY_ADDRESS: ray://127.0.0.1:10001 is a Ray Client address"]),
])
def test_a_ray_address_ray_cannot_parse_from_the_environment_fails_cleanly(config_file, tmp_path, capsys, monkeypatch,
                                                                            value, words):
    require_ray()
    monkeypatch.setenv("RAY_ADDRESS", value)
    assert main(["run", str(config_file), "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words) and "Traceback" not in err, err
    assert _no_run_dir(tmp_path)


def _serve_once(reply: bytes, received: "queue.Queue[bytes | None] | None" = None):
    """A loopback TCP server that answers its first connection with ``reply``; its address.
    ``received``: gets the client's first bytes (at most 64; b"" when it closed without a word, None
    when the connection failed), once the server is done."""
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def answer():
        conn, _ = srv.accept()
        got = None
        with conn, contextlib.suppress(OSError):  # a client that closes without a word
            got = conn.recv(64)
            conn.sendall(reply)
        srv.close()
        if received is not None:
            received.put(got)

    threading.Thread(target=answer, daemon=True).start()
    return f"127.0.0.1:{srv.getsockname()[1]}"


def test_a_port_that_is_not_a_ray_head_fails_in_seconds_not_minutes():
    """ray.init would retry a handshake with the dashboard (HTTP/1) or any other service for minutes;
    the GCS speaks gRPC, whose HTTP/2 server answers the preface with a SETTINGS frame."""
    from profiler.errors import ConfigError
    from profiler.executors.ray_cluster import check_reachable

    with pytest.raises(ConfigError, match=r"--address: 127.0.0.1:\d+ answers but is not a Ray head"):
        check_reachable(_serve_once(b"HTTP/1.1 400 Bad Request\r\n\r\n"))
    check_reachable(_serve_once(bytes([0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100])))  # an HTTP/2 SETTINGS frame


def test_a_cluster_with_tls_is_not_sent_a_plaintext_preface(monkeypatch):
    from profiler.executors.ray_cluster import HTTP2_PREFACE, check_reachable

    tls_alert = b"\x15\x03\x03\x00\x02\x02\x46"
    received: queue.Queue[bytes | None] = queue.Queue()
    monkeypatch.setenv("RAY_USE_TLS", "0")  # without TLS the server sees the preface: what is recorded is what was sent
    check_reachable(_serve_once(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]), received))
    assert received.get(timeout=10) == HTTP2_PREFACE
    monkeypatch.setenv("RAY_USE_TLS", "1")
    check_reachable(_serve_once(tls_alert, received))  # a TLS alert: no verdict on it
    assert received.get(timeout=10) == b""  # connected and closed: no plaintext HTTP/2 preface on a TLS port
