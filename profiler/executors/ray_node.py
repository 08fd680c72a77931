"""The node side of the Ray executor: what runs on a target's node. Ray is imported only to ask
the node's id and labels, so this module also runs (and is tested) without a cluster.

- :func:`probe_node`: the target's ``hardware.json`` fingerprint, whether the configured energy
  meter works there, its idle power and harness overhead, taken while the probe holds the node.
- :func:`run_unit`: one **unit of work**, a Ray streaming generator that yields one result row
  per cell, in the unit's cell order, as cells finish. A unit is what the local runner times
  together, so same-round savings factors keep their meaning per target: with
  ``measure.schedule = "interleaved"`` one interleave group (every pruner, accelerator and
  thread count of a task at one batch, sequence and kernel variant, timed side by side by
  :meth:`Runner._run_group`); with ``"sequential"`` the cells of one (task, pruner), timed one
  after the other by :meth:`Runner._run_cell`. Measuring is the runner's code; :class:`NodeRunner`
  only sends each recorded row to the driver instead of appending it to a file. A unit that lands
  on a node whose hardware is not its target's (:func:`other_hardware`) times nothing: each of
  its cells gets a failed row saying why.

Models are built once, on the driver, and reach the node through Ray's object store as
:class:`ModelPayload` (the ``save_pretrained`` files). A worker process keeps the models, the
task and the accuracy of each ``model_id`` it has seen, so a node prepares each model once per
run however many units it runs (Ray reuses a job's worker processes).
"""
from __future__ import annotations

import hashlib
import os
import platform
import queue
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from profiler.hardware import cpu_display_name, same_hardware
from profiler.identity import stable_hash
from profiler.runner import Runner, base_row
from profiler.targets import TARGET_LABEL

#: rows of a Ray run carry these fields besides the runner's
STAMP_FIELDS = ("target", "executor", "label_selector", "ray_node_id", "node_labels", "worker_niceness",
                "model_built_on", "model_built_on_host", "model_built_on_node", "model_built_on_hardware_id",
                "model_shipped_via")


@dataclass
class ModelPayload:
    """A built model on its way to the nodes. ``pruner_key``: :func:`pruner_key` of the pruner
    whose cells use it; ``files``: the ``save_pretrained`` folder (relative path → bytes);
    ``report``: the :class:`pruners.base.PruneReport` as a dict; ``built_on``: row fields saying
    where it was built (``model_built_on`` and friends); ``dense_finetune``: how the task's dense
    model was fine-tuned (the rows' ``dense_finetune``), None when loaded as given; ``digest``: sha256 of the files' names and
    bytes, computed once where the payload is made."""

    pruner_key: str
    files: dict[str, bytes]
    report: dict[str, Any]
    built_on: dict[str, Any] = field(default_factory=dict)
    digest: str = ""
    dense_finetune: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.digest:
            h = hashlib.sha256()
            for name in sorted(self.files):
                h.update(name.encode() + b"\0" + len(self.files[name]).to_bytes(8, "little"))
                h.update(self.files[name])
            self.digest = h.hexdigest()

    @property
    def key(self) -> str:
        """Identity of the model (a worker keeps one copy per key): its files' content digest, so two
        tasks whose models share a pruner config and file sizes never share a copy."""
        return stable_hash([self.pruner_key, self.digest, self.built_on])


def pruner_key(canonical_pruner: dict[str, Any]) -> str:
    """Key of a pruner config (``PluginSpec.canonical()`` or a row's name and params)."""
    return stable_hash(canonical_pruner)


def pack_model(model: Any, report: Any, key: str, built_on: dict[str, Any],
               dense_finetune: dict[str, Any] | None = None) -> ModelPayload:
    """The payload of ``model`` (saved with ``save_pretrained``, safetensors), its PruneReport and
    the fine-tuning record of the dense model it came from."""
    with tempfile.TemporaryDirectory(prefix="sparsebench-pack-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        files = {str(p.relative_to(tmp)): p.read_bytes() for p in sorted(Path(tmp).rglob("*")) if p.is_file()}
    return ModelPayload(key, files, report.to_dict(), built_on, dense_finetune=dense_finetune)


@dataclass
class UnitSpec:
    """What a unit needs besides its model payloads (which Ray passes as separate arguments, so
    that it fetches them to the node before the unit starts). ``config``: the raw validated
    config; ``cell_ids``: the unit's cells in order; ``stamp``: fields every row gets (target,
    executor); ``idle``: the target's idle power (``IdlePower.to_dict()``) or None;
    ``known_metrics``: :func:`profiler.runner.accuracy_key` → accuracy and metric fields already measured on this target
    (rows of an earlier, resumed attempt); ``hardware``: ``hardware_id``, ``cpu_model`` and the x86
    family and model number where recorded (:func:`profiler.hardware.hardware_summary`) of the
    target's ``hardware.json``, the only machine the unit may time on (None: not checked)."""

    config: dict[str, Any]
    cell_ids: list[str]
    stamp: dict[str, Any]
    idle: dict[str, Any] | None = None
    known_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: finished cells of the unit's interleave group, timed again beside its cells and not recorded
    reference_ids: list[str] = field(default_factory=list)
    hardware: dict[str, Any] | None = None


#: per worker process: parsed configs, built tasks, unpacked models, accuracy per model_id, the
#: node's fingerprint (a job's worker processes serve many of its units)
_PROCESS: dict[str, Any] = {"configs": {}, "tasks": {}, "models": {}, "accuracy": {}, "metrics": {}, "hardware": None}


def node_identity() -> tuple[str | None, dict[str, str]]:
    """(Ray node id, node labels without Ray's own ``ray.io/`` ones) of this process; (None, {})
    outside a Ray worker."""
    try:
        import ray
    except ImportError:
        return None, {}
    if not ray.is_initialized():
        return None, {}
    ctx = ray.get_runtime_context()
    labels = {k: v for k, v in (ctx.get_node_labels() or {}).items() if not k.startswith("ray.io/")}
    return ctx.get_node_id(), labels


def node_hardware() -> dict[str, Any]:
    """This node's ``hardware.json`` fingerprint (taken once per worker process)."""
    from profiler.hardware import fingerprint

    if _PROCESS["hardware"] is None:
        _PROCESS["hardware"] = fingerprint()
    return _PROCESS["hardware"]


def probe_node(meter: dict[str, Any], idle_seconds: float) -> dict[str, Any]:
    """Fingerprint, meter availability, idle power (when ``idle_seconds`` > 0 and the meter works)
    and harness overhead of the node this runs on. ``meter``: ``{"name", "params"}`` of the config.

    Returns a dict: ``hardware``, ``node_id``, ``labels``, ``meter_ok`` (bool), ``meter_why``,
    ``idle`` (``IdlePower.to_dict()`` or None), ``harness_overhead_s`` (seconds per call)."""
    from profiler.energy import close_quietly, measure_idle_power
    from profiler.measure import harness_overhead_s
    from profiler.plugins import METERS

    node_id, labels = node_identity()
    m = METERS.build(meter["name"], meter["params"], "meter")
    try:
        ok, why = (True, None) if meter["name"] == "auto" else m.availability()
        idle = measure_idle_power(m, idle_seconds).to_dict() if ok and idle_seconds > 0 else None
    finally:
        close_quietly(m)  # the units build their own meter: a probe's codecarbon tracker must not sample on
    return {"hardware": node_hardware(), "node_id": node_id, "labels": labels, "meter_ok": ok, "meter_why": why,
            "idle": idle, "harness_overhead_s": harness_overhead_s()}


def other_hardware(expected: dict[str, Any] | None, here: dict[str, Any], target: str | None) -> str | None:
    """Why a unit of ``target`` must not time on this node (None when it may): its fingerprint
    ``here`` is not the target's ``expected`` one (:func:`profiler.hardware.hardware_summary` of its
    hardware.json; compared by :func:`profiler.hardware.same_hardware`). A target's idle power,
    harness overhead and same-round savings factors were measured on one machine, so, as a local
    run refuses to resume on other hardware, its rows never mix machines."""
    if expected is None or same_hardware(expected, here):
        return None
    return (f"this node's hardware ({cpu_display_name(here)!r}, hardware_id {here.get('hardware_id')}) is not "
            f"target {target}'s ({cpu_display_name(expected)!r}, hardware_id {expected.get('hardware_id')}, in its "
            "hardware.json), whose idle power and savings factors these cells would use: nothing was timed here. "
            f"Give each kind of machine its own target (`ray start --labels={TARGET_LABEL}=NAME` on its nodes, or a "
            "narrower selector in [targets]), then `sparsebench run --resume RUN_DIR --retry-failed` runs these "
            "cells again")


def normal_priority() -> int | None:
    """Ray starts worker processes at niceness 15 (``RAY_worker_niceness``), so any other process on
    the node would preempt a timing. Set every thread of this process back to 0 where that is
    allowed (root, or CAP_SYS_NICE) and return the niceness the timing runs at (None where the
    platform has no priorities); threads started later (torch's pool) inherit it."""
    if not hasattr(os, "setpriority"):
        return None
    try:
        for tid in os.listdir("/proc/self/task"):
            os.setpriority(os.PRIO_PROCESS, int(tid), 0)
    except OSError:  # not allowed to lower it: the row records the niceness instead
        pass
    return os.getpriority(os.PRIO_PROCESS, 0)


def _config_cells(raw: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(Config, cells by id) of a raw config, parsed once per worker process."""
    from profiler.config import expand, parse_config

    key = stable_hash(raw)
    if key not in _PROCESS["configs"]:
        cfg = parse_config(raw)
        _PROCESS["configs"][key] = (cfg, {c.cell_id: c for c in expand(cfg)})
    return _PROCESS["configs"][key]


def _node_task(spec: Any) -> Any:
    """The task of ``spec`` (a PluginSpec), built once per worker process."""
    from profiler.plugins import TASKS

    key = stable_hash(spec.canonical())
    if key not in _PROCESS["tasks"]:
        _PROCESS["tasks"][key] = TASKS.build(spec.name, spec.params, spec.key)
    return _PROCESS["tasks"][key]


def _unpack(payload: ModelPayload, task: Any) -> tuple[Any, Any]:
    """(model, PruneReport) of a payload, loaded once per worker process from a private folder."""
    from transformers.utils import logging as hf_logging

    from pruners.base import PruneReport

    hf_logging.disable_progress_bar()  # a worker's output goes to Ray's log files, not to a terminal
    if payload.key not in _PROCESS["models"]:
        with tempfile.TemporaryDirectory(prefix="sparsebench-model-") as tmp:
            for name, data in payload.files.items():
                path = Path(tmp) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            model = task.load_saved(Path(tmp))
        _PROCESS["models"][payload.key] = (model, PruneReport.from_dict(payload.report))
    return _PROCESS["models"][payload.key]


class NodeRunner(Runner):
    """The runner's own cell functions, with every recorded row handed to ``sink`` (the row
    stamped with the target, the node and where its model was built) instead of a file."""

    def __init__(self, cfg: Any, hw: dict, stamp: dict[str, Any], built_on: dict[str, dict],
                 sink: Callable[[Any], None]) -> None:
        # run_dir is never written: _record is replaced below and the run files are the driver's
        super().__init__(cfg, Path(tempfile.gettempdir()))
        self.hw, self.stamp, self.built_on, self.sink = hw, stamp, built_on, sink
        self._accuracy, self._metrics = _PROCESS["accuracy"], _PROCESS["metrics"]

    def _record(self, row: Any, status: str, reason: str | None) -> None:
        row.set_outcome(status, reason)
        row.extra.update(self.stamp)
        row.extra.update(self.built_on.get(pruner_key({"name": row.pruner, "params": row.pruner_params}), {}))
        self.sink(row)


def _work(spec: UnitSpec, payloads: tuple[ModelPayload, ...], sink: Callable[[Any], None]) -> None:
    """Run the unit's cells with the runner's cell functions; every row goes to ``sink``."""
    from profiler.energy import IdlePower, close_quietly
    from profiler.plugins import METERS
    from profiler.tasks.base import seed_everything

    cfg, by_id = _config_cells(spec.config)
    cells = [by_id[i] for i in spec.cell_ids]
    references = [by_id[i] for i in spec.reference_ids]
    seed_everything(cfg.seed)
    task = _node_task(cells[0].task)
    task.finetune_report = next((p.dense_finetune for p in payloads if p.dense_finetune), None)
    loaded = {p.pruner_key: _unpack(p, task) for p in payloads}
    models = {c.pruner: loaded[pruner_key(c.pruner.canonical())] for c in [*cells, *references]}
    node_id, labels = node_identity()
    stamp = {**spec.stamp, "ray_node_id": node_id, "node_labels": labels}
    runner = NodeRunner(cfg, {**node_hardware(), "hardware_id": _row_hardware_id(spec)}, stamp,
                        {p.pruner_key: p.built_on for p in payloads}, sink)
    runner.reuse_metrics(spec.known_metrics)
    idle = IdlePower.from_dict(spec.idle) if spec.idle else None
    meter = METERS.build(cfg.meter.name, cfg.meter.params, "meter")
    meter.start()
    try:
        if cfg.measure.schedule == "sequential":
            for c in cells:
                runner._run_cell(c, task, *models[c.pruner], meter, idle)
        else:
            runner._run_group(cells, task, models, meter, idle, references)
    finally:
        meter.stop()
        close_quietly(meter)  # a codecarbon tracker samples until closed


def run_unit(spec: UnitSpec, *payloads: ModelPayload) -> Iterator[dict[str, Any]]:
    """One unit of work (see the module docstring): yields exactly one row dict per cell of
    ``spec.cell_ids``, in that order, each as soon as it and the cells before it are recorded.

    The order is fixed so that when Ray re-runs a unit whose node died, the rows it had already
    delivered (Ray skips that many items of the re-run) are the same cells. The cells run in a
    worker thread; this generator only waits for their rows, so it costs no CPU while timing. On a
    node whose hardware is not the target's (:func:`other_hardware`; checked on every attempt, so a
    re-run on a node of the target's hardware times as usual) every row is a failed one."""
    rows: queue.Queue = queue.Queue()
    spec.stamp = {**spec.stamp, "worker_niceness": normal_priority()}  # before the work thread starts
    refused = other_hardware(spec.hardware, node_hardware(), spec.stamp.get("target"))
    if refused:
        for cid in spec.cell_ids:
            yield _failed_row(spec, cid, refused, node_hardware()["hardware_id"])
        return

    def target() -> None:
        try:
            _work(spec, payloads, lambda row: rows.put(("row", row.to_dict())))
            rows.put(("done", None))
        except BaseException as exc:  # handed to the generator, which raises it to Ray
            rows.put(("error", exc))

    thread = threading.Thread(target=target, name="sparsebench-unit", daemon=True)
    thread.start()
    ready: dict[str, dict[str, Any]] = {}
    order = list(spec.cell_ids)
    while order:
        kind, item = rows.get()
        if kind == "error":
            raise item
        if kind == "row":
            ready[item["cell_id"]] = item
        while order and (order[0] in ready or kind == "done"):
            cid = order.pop(0)
            yield ready.pop(cid) if cid in ready else _failed_row(spec, cid, UNRECORDED, _row_hardware_id(spec))
    thread.join()


#: the reason of a cell the runner recorded nothing for (a bug: the row says so)
UNRECORDED = "the runner recorded no row for this cell on the node (a bug; please report)"


def _row_hardware_id(spec: UnitSpec) -> str:
    """The ``hardware_id`` the rows of ``spec`` carry on a node :func:`other_hardware` accepted: the
    target's, as its hardware.json, manifest and earlier rows have it. The two differ only for a
    target begun before the x86 family entered the id (:func:`profiler.hardware.same_hardware`'s
    legacy branch), whose rows must keep the one id the target began with."""
    return (spec.hardware or {}).get("hardware_id") or node_hardware()["hardware_id"]


def _failed_row(spec: UnitSpec, cell_id: str, reason: str, hardware_id: str) -> dict[str, Any]:
    """A failed row, made on the node, for a cell of ``spec`` that was not timed; ``hardware_id``:
    the node's own where it was refused, the target's (:func:`_row_hardware_id`) where not."""
    row = base_row(_config_cells(spec.config)[1][cell_id], None, hardware_id)
    row.set_outcome("failed", reason)
    row.extra.update(spec.stamp)
    return row.to_dict()


def driver_built_on(node_id: str | None, hardware_id: str | None) -> dict[str, Any]:
    """Row fields for models built by this process, the driver: where, and how they travel."""
    return {"model_built_on": "driver", "model_built_on_host": stable_hash(platform.node(), 8),
            "model_built_on_node": node_id, "model_built_on_hardware_id": hardware_id,
            "model_shipped_via": "ray object store"}
