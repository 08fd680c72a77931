"""The Ray driver's fault handling against a stand-in for the ``ray`` module (no cluster, a fake
clock): a unit whose node died past its retries, a unit that ended without some rows, a row that
comes twice, a target that has had no live node for ``target_timeout_s``, a resume whose
references lack a model, a probe that waits for a busy node, and the CLI's warnings before a run."""
from __future__ import annotations

from pathlib import Path

import pytest

from profiler.config import expand, parse_config
from profiler.executors import ray_driver, ray_node
from profiler.executors.ray_driver import NO_LIVE_NODE, RayExecutor, TargetRun, Unit
from profiler.identity import stable_hash
from profiler.results import read_results
from profiler.runner import Reporter, base_row, references_to_retime
from profiler.targets import Target
from tests.conftest import tiny_config


class FakeRayError(Exception):
    pass


class FakeRay:
    """What the driver uses of ``ray``: ``get``, ``cancel``, ``nodes``, ``remote`` (each submission
    recorded in ``submitted`` as (function name, options, arguments)), ``wait`` (nothing ready until
    ``ready_after`` calls, each advancing ``now`` by its timeout) and ``exceptions.RayError``."""

    class exceptions:
        RayError = FakeRayError

    def __init__(self, now: list[float] | None = None) -> None:
        self.values: dict[str, object] = {}
        self.alive = True
        self.cancelled: list[object] = []
        self.submitted: list[tuple[str, dict, tuple]] = []
        self.now = now if now is not None else [0.0]
        self.ready_after = 0

    def remote(self, fn):
        ray = self

        class Remote:
            def options(self, **options):
                self.opts = options
                return self

            def remote(self, *args):
                ray.submitted.append((fn.__name__, self.opts, args))
                return f"ref{len(ray.submitted)}"

        return Remote()

    def wait(self, refs: list, num_returns: int, timeout: float) -> tuple[list, list]:
        self.now[0] += timeout
        if self.ready_after > 0:
            self.ready_after -= 1
            return [], list(refs)
        return list(refs), []

    def is_initialized(self) -> bool:
        return False

    def get(self, ref: str) -> object:
        value = self.values[ref]
        if isinstance(value, Exception):
            raise value
        return value

    def cancel(self, ref: object, force: bool = False) -> None:
        self.cancelled.append(ref)

    def nodes(self) -> list[dict]:
        return [{"NodeID": "n1", "Alive": self.alive, "Labels": {"sparsebench.target": "b"}, "Resources": {"CPU": 1.0}}]


class Notes(Reporter):
    """A reporter that keeps its messages."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)


@pytest.fixture()
def driver(tmp_path):
    cfg = parse_config(tiny_config(ray={"max_retries": 2, "target_timeout_s": 30}))
    now = [0.0]
    ex = RayExecutor(cfg, clock=lambda: now[0], reporter=Notes())
    ex.ray = FakeRay(now)
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
    from tests.tiny_family import save_tiny_model

    data = tmp_path / "dev.csv"
    data.write_text("text,label\n" + "".join(f"sentence number {i},{i % 2}\n" for i in range(12)))
    model = save_tiny_model(tmp_path / "model", "bert", num_labels=2)
    task = {"name": "text-classification", "model": str(model), "eval_file": str(data), "finetune_steps": 0}
    cfg = parse_config(tiny_config(tasks=[task]))
    ex = RayExecutor(cfg, cache_dir=tmp_path / "cache")
    ex.ray = FakeRay()
    ex.ray.__version__ = "fake"
    ex.runs = {"b": TargetRun(Target("b", {"sparsebench.target": "b"}), tmp_path / "run" / "targets" / "b")}
    (tmp_path / "run").mkdir()
    ex._write_manifest(tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["task_fingerprints"]
    assert manifest["cache_dir"] == str((tmp_path / "cache").resolve())  # a resume reuses the driver's models

    def no_cluster(address):
        raise AssertionError("connected to a cluster before the inputs were checked")

    monkeypatch.setattr(ray_driver, "connect", no_cluster)
    data.write_text(data.read_text().replace(",1\n", ",0\n"))
    with pytest.raises(ConfigError, match=r"--resume: the model folder, data files or parameters of task .* changed \(data\.eval\) since"):
        RayExecutor(cfg).prepare(resume_dir=tmp_path / "run")


def _probed(tr: TargetRun, cpu: str = "Test CPU") -> None:
    """``tr`` as after its probe: the probe's answer, and the run's manifest its files start from."""
    (tr.dir.parent.parent / "manifest.json").write_text("{}")
    tr.probe = {"hardware": {"hardware_id": "hw-b", "cpu_model": cpu}, "idle": None, "harness_overhead_s": 0.0,
                "node_id": "n1", "labels": {}, "meter_ok": True, "meter_why": None}


def _built(ex: RayExecutor, pruners) -> None:
    """Payloads in the object store for these pruners' models only (the others failed to build)."""
    for p in pruners:
        key = ray_node.pruner_key(p.canonical())
        ex._payloads[(stable_hash(ex.cfg.tasks[0].canonical()), key)] = f"payload-{key}"


def _units(ex: RayExecutor) -> list[ray_node.UnitSpec]:
    return [args[0] for name, _, args in ex.ray.submitted if name == "run_unit"]


def test_a_resume_whose_reference_has_no_model_runs_its_missing_cells_without_it(driver):
    """The dense cells are done; the resumed run would time the dense fp32 references again beside the
    magnitude cells, but the dense model failed to build: the magnitude cells run, without that
    reference (as a local run does), instead of their whole units being dropped without a row."""
    ex, tr, _ = driver
    dense = [c for c in tr.todo if c.pruner.name == "none"]
    done_rows = [_node_row(c) for c in dense]
    tr.done = {c.cell_id for c in dense}
    tr.todo = [c for c in tr.todo if c.cell_id not in tr.done]
    tr.references = references_to_retime(ex.cells, tr.todo, done_rows, "interleaved")
    assert len(tr.todo) == 8 and len(tr.references) == 2
    _probed(tr)
    _built(ex, [p for p in ex.cfg.pruners if p.name != "none"])
    ex._start_target(tr)
    units = _units(ex)
    assert sorted(i for u in units for i in u.cell_ids) == sorted(c.cell_id for c in tr.todo)
    assert all(u.reference_ids == [] for u in units) and tr.busy and not _rows(tr)
    assert all(u.hardware == {"hardware_id": "hw-b", "cpu_model": "Test CPU"} for u in units)  # checked on the node


def test_a_unit_cell_without_a_model_gets_a_failed_row_and_the_others_run(driver):
    """Never a unit dropped without a row: a cell whose model is not in the object store (and that has
    no row yet) is recorded failed with the reason; the rest of its unit is submitted."""
    ex, tr, _ = driver
    _probed(tr)
    _built(ex, [p for p in ex.cfg.pruners if p.name != "none"])
    ex._start_target(tr)
    rows = _rows(tr)
    assert sorted(r["cell_id"] for r in rows) == sorted(c.cell_id for c in tr.todo if c.pruner.name == "none")
    assert all(r["status"] == "failed" and "no model was built" in r["reason"] for r in rows)
    ran = sorted(i for u in _units(ex) for i in u.cell_ids)
    assert ran == sorted(c.cell_id for c in tr.todo if c.pruner.name != "none")


def test_a_probe_that_waits_for_a_busy_node_says_what_it_waits_for(driver):
    """A live node whose CPUs another job holds: the probe waits, and says so every minute."""
    ex, tr, now = driver
    ex.ray.ready_after = 150  # 150 polls of 1 s without an answer
    ex.ray.values = {"ref1": {"hardware": {"hardware_id": "hw-b"}, "meter_ok": True}}
    ex._probe_first({"b": tr}, None)
    assert tr.probe == ex.ray.values["ref1"]
    waits = [line for line in ex.reporter.lines if "waiting" in line]
    assert len(waits) == 2, ex.reporter.lines  # at 60 s and 120 s
    assert waits[0].startswith("[b] waiting 60 s for the probe") and "1 CPU(s)" in waits[0]
    assert "sparsebench.target=b" in waits[0]


def test_a_label_that_only_dead_nodes_carry_is_named_on_the_cli_before_the_run(tmp_path, monkeypatch, capsys):
    """The warning prepare() gives reaches the user: the CLI hands its reporter in before prepare()."""
    from profiler.cli import main
    from profiler.errors import SetupError
    from tests.faults_util import write_config

    class TwoNodes(FakeRay):
        def nodes(self):
            return [{"NodeID": "n1", "Alive": True, "Labels": {"sparsebench.target": "a"}, "Resources": {"CPU": 1.0}},
                    {"NodeID": "n2", "Alive": False, "Labels": {"sparsebench.target": "gone"}, "Resources": {"CPU": 1.0}}]

    def stop(self, runs, resume_dir):  # the probes are other tests' business
        raise SetupError("stopped after the targets were resolved")

    monkeypatch.setattr(ray_driver, "connect", lambda address: TwoNodes())
    monkeypatch.setattr(RayExecutor, "_probe_first", stop)
    doc = tiny_config()
    doc["run"] = {"name": "w", "output_dir": str(tmp_path / "runs")}
    cfg = write_config(tmp_path / "c.toml", doc)
    assert main(["run", str(cfg), "--executor", "ray", "--address", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "warning: label sparsebench.target=gone is carried by dead nodes only" in err, err
    assert "stopped after the targets were resolved" in err


def test_a_resume_probed_on_other_hardware_keeps_that_nodes_idle_power_out(driver):
    """hardware.json names the target's machine; a probe answered by a node of other hardware warns,
    names both CPUs, and its idle power is not written for the target's units to use."""
    import json

    ex, tr, _ = driver
    _probed(tr, cpu="Other CPU")
    tr.probe["hardware"]["hardware_id"] = "hw-other"
    tr.probe["idle"] = {"watts": {"package": 5.0}}
    (tr.dir / "hardware.json").write_text(json.dumps({"hardware_id": "hw-b", "cpu_model": "Test CPU"}))
    ex._write_target_files(tr)
    assert not (tr.dir / "idle_power.json").exists()
    assert json.loads((tr.dir / "manifest.json").read_text())["harness_overhead_s"] is None
    (warning,) = ex.reporter.lines
    assert "'Other CPU' (hardware_id hw-other), not the target's 'Test CPU' (hw-b" in warning


def test_a_probe_tells_cpu_generations_of_one_name_apart(driver):
    """A target recorded on family 6 model 143: a probe answered by a model-207 node of the same name
    and flags warns naming both generations, and its idle power stays out; the units carry the
    family so that the node checks it too."""
    import json

    from tests.test_hardware import x86_fp

    ex, tr, _ = driver
    _probed(tr)
    tr.probe["hardware"] = x86_fp(207)
    tr.probe["idle"] = {"watts": {"package": 5.0}}
    recorded = x86_fp(143)
    (tr.dir / "hardware.json").write_text(json.dumps(recorded))
    tr.hardware_id = recorded["hardware_id"]
    ex._write_target_files(tr)
    assert not (tr.dir / "idle_power.json").exists()
    (warning,) = ex.reporter.lines
    assert ("'Intel(R) Xeon(R) Processor (family 6 model 207)' (hardware_id e968f101f2), not the target's "
            "'Intel(R) Xeon(R) Processor (family 6 model 143)' (de46cbd6bd") in warning
    _built(ex, ex.cfg.pruners)
    ex._start_target(tr)
    assert all(u.hardware == {"hardware_id": "de46cbd6bd", "cpu_model": "Intel(R) Xeon(R) Processor", "cpu_family": 6,
                              "cpu_model_number": 143} for u in _units(ex))


def test_a_probe_of_the_machine_of_a_target_recorded_before_the_cpu_family_takes_its_idle_power(driver):
    """The target's hardware.json predates the family (its id the old one of the probe's node): the
    same machine, so no warning and the probe's idle power and harness overhead are the target's."""
    import json

    from tests.test_hardware import old_style, x86_fp

    ex, tr, _ = driver
    _probed(tr)
    tr.probe["hardware"] = x86_fp(207)
    tr.probe["idle"] = {"watts": {"package": 5.0}}
    recorded = old_style(x86_fp(207))
    (tr.dir / "hardware.json").write_text(json.dumps(recorded))
    tr.hardware_id = recorded["hardware_id"]
    ex._write_target_files(tr)
    assert ex.reporter.lines == [] and (tr.dir / "idle_power.json").exists()
    assert json.loads((tr.dir / "manifest.json").read_text())["hardware_id"] == recorded["hardware_id"]
