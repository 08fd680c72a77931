"""The driver of ``sparsebench run CONFIG --executor ray``: the same matrix on every hardware target
of a Ray cluster, one target per node label, rows in ``RUN_DIR/targets/<target>/results.jsonl``.

Checks first (each failure a ConfigError; nothing is written): Ray installed, the cluster reachable
(:mod:`profiler.executors.ray_cluster`), every target's label carried by some node
(:mod:`profiler.targets`), and a probe on each target with a live node: its fingerprint, the
energy meter the config names (an explicit meter a target lacks fails the run) and its idle power.

Then the work:

- **Models** are built once, here on the driver, before any unit starts (fine-tuning and pruning,
  from the driver's model cache when there), so no build competes with a timing on a node that
  shares this machine; each goes into Ray's object store once and every node fetches it from
  there. Rows record where (``model_built_on*``, ``model_shipped_via``).
- **Placement**: a unit of work (:mod:`profiler.executors.ray_node`: one interleave group, or one
  (task, pruner) under the sequential schedule) is a Ray task with the target's
  ``label_selector`` that reserves a whole node of the target (all its CPUs and GPUs), so Ray
  runs one timed unit per node at a time and never two measurements on one machine. A unit is
  what the local runner times together, so same-round savings factors hold per target.
- **Rows** stream back as each cell finishes (a Ray streaming generator) and are appended here,
  flushed and fsync'ed, to the target's ``results.jsonl``; a row for a cell already written (from
  a unit Ray re-ran) is dropped, so no cell is written twice.

Faults: a node that dies mid-unit makes Ray re-run the unit on another node of the same target
(``[ray] max_retries``); past that, the unit's unwritten cells are recorded ``failed`` with Ray's
reason. A unit that lands on a node whose hardware is not the target's ``hardware.json`` (written
from the probe's node) times nothing and fails its cells with the reason: a target's idle power,
harness overhead and savings factors belong to one machine, as a local run's do. A target with
no live node for ``[ray] target_timeout_s`` gets its unwritten cells recorded ``skipped`` with the
reason and ``executor_outcome = "no-live-node"``. ``--resume`` re-submits only the cells without a
row, and those ``no-live-node`` rows (removed first, with one atomic rewrite of the file, so every
cell keeps exactly one row); ``--retry-failed`` does the same for failed rows. A driver killed
mid-run loses nothing written: Ray ends the units it owned.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from profiler.config import Cell, Config, PluginSpec, expand
from profiler.errors import ConfigError, SetupError
from profiler.executors import ray_node
from profiler.executors.ray_cluster import cluster_nodes, connect
from profiler.hardware import cpu_display_name, hardware_summary, same_hardware, software_versions
from profiler.identity import stable_hash
from profiler.results import NO_LIVE_NODE, Result, append_result, cells_to_run, read_results, repair_tail, rewrite_without
from profiler.rundir import RESULTS, target_dir
from profiler.runner import (HARDWARE, IDLE_POWER, MANIFEST, Reporter, Runner, RunDirLock, base_row,
                             check_inputs_unchanged, interleave_key, known_metrics, manifest_base, read_idle_power,
                             read_run_json, references_to_retime, task_records, write_run_file)
from profiler.targets import (TARGET_LABEL, Target, TargetWatch, dead_only_targets, default_targets, live_targets,
                              resolve_targets)

#: seconds between the notes of a probe still waiting for a free node of its target
PROBE_NOTE_S = 60.0


@dataclass
class Unit:
    """One unit of work of a target: its cells, in order, and its Ray generator once submitted."""

    target: str
    cells: list[Cell]
    ref: Any = None


@dataclass
class TargetRun:
    """A target's state on the driver: its folder, the cells written (``done``) and still to run."""

    target: Target
    dir: Path
    done: set[str] = field(default_factory=set)
    todo: list[Cell] = field(default_factory=list)
    probe: dict[str, Any] | None = None
    probe_ref: Any = None
    units: list[Unit] = field(default_factory=list)
    #: finished cells timed again beside the unfinished ones of their group (resume; not recorded)
    references: list[Cell] = field(default_factory=list)
    hardware_id: str | None = None
    given_up: bool = False

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def busy(self) -> bool:
        return not self.given_up and (self.probe_ref is not None or bool(self.units))


def plan_units(cells: list[Cell], schedule: str, threads_share_rounds: bool = True) -> list[list[Cell]]:
    """Cells cut into units of work, in matrix order: per task, one interleave group each
    (``interleaved``: :func:`profiler.runner.interleave_key`) or one (task, pruner) each
    (``sequential``)."""
    groups: dict[tuple, list[Cell]] = defaultdict(list)
    for c in cells:
        key = interleave_key(c, threads_share_rounds) if schedule != "sequential" else (c.pruner,)
        groups[(c.task, *key)].append(c)
    return list(groups.values())


class RayExecutor:
    """Runs ``cfg`` on a Ray cluster (see the module docstring). Use :meth:`prepare` (the checks),
    then :meth:`run`, and :meth:`close` in any case."""

    def __init__(self, cfg: Config, cache_dir: Path | None = None, reporter: Reporter | None = None,
                 address: str | None = None, retry_failed: bool = False, poll_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg, self.cache_dir, self.address = cfg, cache_dir, address
        self.reporter = reporter or Reporter()
        self.retry_failed, self.poll_s, self.clock = retry_failed, poll_s, clock
        self.ray: Any = None
        self.runs: dict[str, TargetRun] = {}
        self.cells = expand(cfg)
        self.watch = TargetWatch(cfg.ray.target_timeout_s, clock)
        self._payloads: dict[tuple[str, str], Any] = {}
        # the runner's model building (tasks, cache, pruning) on the driver; it runs no cells, writes no run files
        self.builder = Runner(cfg, Path(), cache_dir=cache_dir, reporter=self.reporter)

    # ---- checks: nothing written ------------------------------------------------------------------
    def prepare(self, resume_dir: Path | None = None) -> None:
        """Connect, resolve the targets and probe them. Raises ConfigError before any work."""
        if resume_dir is not None:
            check_inputs_unchanged(self.cfg, Path(resume_dir), "--resume", self.builder.task)
        self.ray = connect(self.address)
        nodes = cluster_nodes(self.ray)
        if resume_dir is not None:
            declared = read_run_json(Path(resume_dir) / MANIFEST).get("targets") or {}
            if not declared:
                raise ConfigError(f"--resume: {resume_dir} has no targets in its manifest (not a Ray run directory)")
        else:
            declared = self.cfg.targets or default_targets(nodes)
            for value in [] if self.cfg.targets else dead_only_targets(nodes):
                self.reporter.message(f"warning: label {TARGET_LABEL}={value} is carried by dead nodes only: not a "
                                      f"target of this run (list [targets] {value} = \"{value}\" to wait for it and "
                                      "run its cells when it is back, with --resume)")
        pending = {}
        for name, sel in declared.items():
            tr = TargetRun(Target(name, sel), target_dir(resume_dir, name) if resume_dir else Path())
            if resume_dir is not None:
                rows = read_results(tr.dir / RESULTS).rows
                tr.done, tr.todo, redo = cells_to_run(rows, self.cells, self.retry_failed)
                tr.references = references_to_retime(self.cells, tr.todo, [r for r in rows if r["cell_id"] not in redo],
                                                     self.cfg.measure.schedule, self.cfg.measure.interleave_threads)
            else:
                tr.todo = list(self.cells)
            self.runs[name] = tr
            if tr.todo:
                pending[name] = sel
        for name, t in resolve_targets(pending, nodes).items():
            self.runs[name].target = t
        self._probe_first({n: self.runs[n] for n in pending}, resume_dir)

    def _probe_first(self, runs: dict[str, TargetRun], resume_dir: Path | None) -> None:
        """Probe the targets that have a live node now; wait for each until it answers or has had no
        live node for ``target_timeout_s`` (it is then probed again during the run). A probe waits
        for a whole node of its target to be free, without a limit (a live node busy with other
        Ray work frees up in time), and says every :data:`PROBE_NOTE_S` seconds what it waits for."""
        live = live_targets({n: tr.target for n, tr in runs.items()}, cluster_nodes(self.ray))
        for name, tr in runs.items():
            if live[name]:
                has_idle = resume_dir is not None and read_idle_power(tr.dir) is not None  # a damaged file: ConfigError now
                tr.probe_ref = self._submit_probe(tr, 0.0 if has_idle else self.cfg.measure.idle_seconds)
        started = note_at = self.clock()
        while True:
            waiting = [tr for tr in runs.values() if tr.probe_ref is not None]
            if not waiting:
                break
            ready, _ = self.ray.wait([tr.probe_ref for tr in waiting], num_returns=len(waiting), timeout=self.poll_s)
            for tr in waiting:
                if any(r == tr.probe_ref for r in ready):
                    tr.probe = self._probe_result(tr)
            still = [tr for tr in waiting if tr.probe_ref is not None]
            live = live_targets({tr.name: tr.target for tr in still}, cluster_nodes(self.ray))
            if still and self.clock() >= note_at + PROBE_NOTE_S:
                note_at = self.clock()
                for tr in (tr for tr in still if live[tr.name]):  # one without a live node: the watch speaks
                    self._probe_note(tr, note_at - started)
            if [tr for tr in still if self.watch.update(tr.name, live[tr.name])]:
                break  # a target lost its nodes: the run loop records its cells, the others go on
        lacking = [f"{tr.name}: {tr.probe['meter_why']}" for tr in runs.values() if tr.probe and not tr.probe["meter_ok"]]
        if lacking:
            raise SetupError(f"meter.name: {self.cfg.meter.name!r} is unavailable on target(s) {'; '.join(lacking)}. "
                              "Use 'auto' (picks the best meter on each node and says why) or 'estimate'")

    def _probe_note(self, tr: TargetRun, waited_s: float) -> None:
        """Say that ``tr``'s probe has waited ``waited_s`` seconds, and for what."""
        t = tr.target
        sel = ", ".join(f"{k}={v}" for k, v in t.selector.items())
        self.reporter.message(
            f"[{t.name}] waiting {waited_s:.0f} s for the probe (fingerprint, and idle power for up to "
            f"{self.cfg.measure.idle_seconds:g} s): it needs a node matching {sel} with all its {t.cpus} CPU(s) and "
            f"{t.gpus} GPU(s) free; a live one exists, so other Ray work may hold them (it starts once they are "
            "free; Ctrl-C stops, nothing written)")

    def _submit_probe(self, tr: TargetRun, idle_seconds: float) -> Any:
        t = tr.target
        remote = self.ray.remote(ray_node.probe_node).options(
            label_selector=t.selector, num_cpus=t.cpus, num_gpus=t.gpus, max_retries=self.cfg.ray.max_retries)
        return remote.remote({"name": self.cfg.meter.name, "params": self.cfg.meter.params}, idle_seconds)

    def _probe_result(self, tr: TargetRun) -> dict[str, Any]:
        """The probe's answer. A probe that raised on the node (e.g. sparsebench missing there) is
        a ConfigError naming the target: nothing could run on it."""
        ref, tr.probe_ref = tr.probe_ref, None
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            raise ConfigError(f"targets.{tr.name}: the probe failed on its node ({_first_line(exc)}); is the same "
                              "sparsebench installed on every node?") from None

    def _late_probe(self, tr: TargetRun) -> None:
        """A probe answered during the run: start the target, or record why its cells cannot run."""
        try:
            tr.probe = self._probe_result(tr)
        except ConfigError as exc:
            self._record_cells(tr, tr.todo, "failed", str(exc))
            return
        self._start_target(tr)

    # ---- the run ----------------------------------------------------------------------------------
    def run(self, run_dir: Path) -> Path:
        """Run every cell still to run on every target, into ``run_dir``. Raises ConfigError if
        another process holds the run directory."""
        run_dir = Path(run_dir)
        with RunDirLock(run_dir):
            self._write_manifest(run_dir)
            for tr in self.runs.values():
                tr.dir = target_dir(run_dir, tr.name)
                self._open_target(tr)
            total = len(self.cells) * len(self.runs)
            self.reporter.start(total, sum(len(tr.done) for tr in self.runs.values()))
            if any(tr.todo for tr in self.runs.values()):
                self._warn_threads()
                self._build_models()
                for tr in self.runs.values():
                    if tr.todo and tr.probe is not None:
                        self._start_target(tr)
                    elif tr.todo and tr.probe_ref is None:
                        tr.probe_ref = self._submit_probe(tr, self.cfg.measure.idle_seconds)
                try:
                    self._loop()
                except BaseException:
                    self._cancel_all()
                    raise
        return run_dir

    def close(self) -> None:
        """Disconnect from the cluster (the cluster itself keeps running)."""
        if self.ray is not None and self.ray.is_initialized():
            self.ray.shutdown()

    def _write_manifest(self, run_dir: Path) -> None:
        path = run_dir / MANIFEST
        if path.exists():
            return
        manifest = manifest_base(self.cfg, software_versions())
        manifest.update({"executor": "ray", "ray_version": self.ray.__version__,
                         "targets": {name: tr.target.selector for name, tr in self.runs.items()},
                         # the models are built here, on the driver: a resume reuses this cache
                         "cache_dir": str(self.builder.cache_dir.resolve()),
                         **task_records(self.cfg, self.builder.task)})
        write_run_file(path, manifest)

    def _open_target(self, tr: TargetRun) -> None:
        """Create the target's folder; on resume, remove the rows to run again (one atomic rewrite)."""
        tr.dir.mkdir(parents=True, exist_ok=True)
        path = tr.dir / RESULTS
        if repair_tail(path):
            self.reporter.message(f"[{tr.name}] cut a partial last line from results.jsonl (killed mid-write)")
        rf = read_results(path)
        for line in rf.warnings():
            self.reporter.message(f"[{tr.name}] warning: {line}")
        tr.done, tr.todo, redo = cells_to_run(rf.rows, self.cells, self.retry_failed)
        if rewrite_without(path, redo):
            self.reporter.message(f"[{tr.name}] {len(redo)} cell(s) that did not run (or failed) will run again")
        if (tr.dir / HARDWARE).exists():
            tr.hardware_id = read_run_json(tr.dir / HARDWARE).get("hardware_id")
        if tr.probe is not None:
            self._write_target_files(tr)

    def _write_target_files(self, tr: TargetRun) -> None:
        """The target's manifest, hardware.json and idle_power.json from its probe (kept if there).
        A probe whose node is not the hardware of an existing hardware.json (a resume) gives a
        warning, and neither its idle power nor its harness overhead: they belong to that node."""
        p = tr.probe
        hw_path, idle_path, man_path = tr.dir / HARDWARE, tr.dir / IDLE_POWER, tr.dir / MANIFEST
        if not hw_path.exists():
            write_run_file(hw_path, p["hardware"])
            tr.hardware_id = p["hardware"]["hardware_id"]
        hw = read_run_json(hw_path)
        same = same_hardware(hw, p["hardware"])
        if not same:
            self.reporter.message(
                f"[{tr.name}] warning: the node that answered the probe is {cpu_display_name(p['hardware'])!r} "
                f"(hardware_id {p['hardware']['hardware_id']}), not the target's {cpu_display_name(hw)!r} "
                f"({tr.hardware_id}, its hardware.json): units that land on such a node fail their cells, saying "
                "why (one target's rows belong to one machine)")
        if same and p.get("idle") and not idle_path.exists():
            write_run_file(idle_path, p["idle"])
        if not man_path.exists():
            manifest = read_run_json(tr.dir.parent.parent / MANIFEST)
            manifest.update({"target": tr.name, "label_selector": tr.target.selector, "hardware_id": tr.hardware_id,
                             "harness_overhead_s": p["harness_overhead_s"] if same else None,
                             "probe_node_id": p["node_id"]})
            write_run_file(man_path, manifest)

    def _warn_threads(self) -> None:
        for tr in self.runs.values():
            for note in tr.target.notes:
                self.reporter.message(f"warning: {note}")
            for th in self.cfg.threads:
                if tr.todo and th > tr.target.cpus:
                    self.reporter.message(f"warning: threads={th} exceeds the {tr.target.cpus} CPU(s) of target "
                                          f"{tr.name}'s nodes; latency will suffer")

    # ---- models -----------------------------------------------------------------------------------
    def _build_models(self) -> None:
        """Build each (task, pruner) model some target still needs, once, and put it in the object
        store. A task or pruner that fails fails its cells on every target, as in a local run."""
        from transformers.utils import logging as hf_logging

        from profiler.hardware import fingerprint
        from profiler.tasks.base import seed_everything

        hf_logging.disable_progress_bar()  # our own bars cover loading and saving
        seed_everything(self.cfg.seed)
        needed: dict[PluginSpec, dict[PluginSpec, None]] = defaultdict(dict)
        for tr in self.runs.values():
            for c in [*tr.todo, *tr.references]:
                needed[c.task][c.pruner] = None
        built_on = ray_node.driver_built_on(self.ray.get_runtime_context().get_node_id(), fingerprint()["hardware_id"])
        for task_spec, pruners in needed.items():
            def fail(task: Any, pruner: PluginSpec | None, reason: str, task_spec: PluginSpec = task_spec) -> None:
                self._fail_cells(lambda c: c.task == task_spec and (pruner is None or c.pruner == pruner), reason)

            built = self.builder.build_models(task_spec, pruners, fail)
            if built is None:
                continue
            task, models = built
            for p_spec, (model, report) in models.items():
                key = ray_node.pruner_key(p_spec.canonical())
                try:
                    payload = ray_node.pack_model(model, report, key, built_on, task.finetune_report)
                except Exception as exc:
                    fail(task, p_spec, f"pruner: {type(exc).__name__}: {exc}")
                    continue
                self._payloads[(stable_hash(task_spec.canonical()), key)] = self.ray.put(payload)

    # ---- units ------------------------------------------------------------------------------------
    def _start_target(self, tr: TargetRun) -> None:
        """Write the probe's files and submit the target's units (its cells whose models exist)."""
        self._write_target_files(tr)
        if not tr.probe["meter_ok"]:  # a late probe: the run has started, so the cells say why
            self._record_cells(tr, tr.todo, "skipped", f"meter {self.cfg.meter.name!r} unavailable on target "
                                                       f"{tr.name}: {tr.probe['meter_why']}")
            return
        known = known_metrics(read_results(tr.dir / RESULTS).rows)  # the node takes what its cells' keys match
        idle = self._idle(tr)
        hw = read_run_json(tr.dir / HARDWARE)
        for cells in plan_units([c for c in tr.todo if c.cell_id not in tr.done], self.cfg.measure.schedule,
                                self.cfg.measure.interleave_threads):
            shared = self.cfg.measure.interleave_threads
            group = (cells[0].task, interleave_key(cells[0], shared))
            again = [r for r in tr.references if (r.task, interleave_key(r, shared)) == group]
            cells, again, refs = self._unit_models(tr, cells, again)
            if not cells:
                continue  # every cell of the unit has its failed row
            spec = ray_node.UnitSpec(
                config=self.cfg.raw, cell_ids=[c.cell_id for c in cells], idle=idle,
                stamp={"target": tr.name, "executor": "ray", "label_selector": tr.target.selector},
                known_metrics=known, reference_ids=[r.cell_id for r in again],
                hardware=hardware_summary(hw))
            t = tr.target
            remote = self.ray.remote(ray_node.run_unit).options(
                label_selector=t.selector, num_cpus=t.cpus, num_gpus=t.gpus, max_retries=self.cfg.ray.max_retries)
            tr.units.append(Unit(tr.name, cells, remote.remote(spec, *refs)))
        kind = "interleave group" if self.cfg.measure.schedule != "sequential" else "(task, pruner)"
        self.reporter.message(f"[{tr.name}] {len(tr.units)} unit(s) of work submitted, one per {kind}, each "
                              f"reserving a whole node ({tr.target.cpus} CPU(s), {tr.target.gpus} GPU(s)); rows "
                              "arrive as its cells finish")

    def _unit_models(self, tr: TargetRun, cells: list[Cell], references: list[Cell],
                     ) -> tuple[list[Cell], list[Cell], list[Any]]:
        """(cells, references, object refs of their models, one per pruner) of a unit of ``tr``, kept
        to those whose model is in the object store, as a local run keeps a group to the models it
        built. A reference without one is left out: the unit's factors divide by the references
        that remain (none: no factor). A cell without one gets a failed row here, so no cell is
        dropped without a row (a model that failed to build has written its cells' rows already)."""
        task = stable_hash(cells[0].task.canonical())
        key = lambda c: (task, ray_node.pruner_key(c.pruner.canonical()))  # noqa: E731
        for c in cells:
            if key(c) not in self._payloads:
                self._record_cells(tr, [c], "failed", f"no model was built for pruner {c.pruner.label()} of task "
                                                      f"{c.task.label()} (a bug if no earlier row says why)")
        cells = [c for c in cells if key(c) in self._payloads]
        references = [r for r in references if key(r) in self._payloads]
        return cells, references, [self._payloads[k] for k in dict.fromkeys(map(key, [*cells, *references]))]

    def _idle(self, tr: TargetRun) -> dict[str, Any] | None:
        idle = read_idle_power(tr.dir)
        return idle.to_dict() if idle is not None else None

    def _loop(self) -> None:
        """Wait for rows, units and probes until every target is finished or given up."""
        next_watch = self.clock()
        while any(tr.busy for tr in self.runs.values()):
            waiting: list[tuple[TargetRun, Unit | None, Any]] = []
            for tr in (t for t in self.runs.values() if t.busy):
                if tr.probe_ref is not None:
                    waiting.append((tr, None, tr.probe_ref))
                waiting += [(tr, u, u.ref) for u in tr.units]
            ready, _ = self.ray.wait([w[2] for w in waiting], num_returns=1, timeout=self.poll_s)
            for tr, unit, ref in (w for w in waiting if any(r is w[2] for r in ready)):
                if unit is None:
                    self._late_probe(tr)
                else:
                    self._next_row(tr, unit)
            if self.clock() >= next_watch:
                self._watch_targets()
                next_watch = self.clock() + self.poll_s

    def _next_row(self, tr: TargetRun, unit: Unit) -> None:
        """Take the next row of a ready unit: write it, or finish the unit (its cells without a row
        are recorded failed, with Ray's reason when the unit failed)."""
        try:
            ref = next(unit.ref)
        except StopIteration:
            tr.units.remove(unit)
            self._record_cells(tr, unit.cells, "failed", "the unit ended without a row for this cell (lost when Ray "
                                                         "re-ran the unit on another node)")
            return
        try:
            row = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            tr.units.remove(unit)
            retried = f" (Ray re-ran units up to {self.cfg.ray.max_retries} time(s) on the target's nodes)"
            self._record_cells(tr, unit.cells, "failed", f"{_first_line(exc)}{retried}")
            return
        self._write_row(tr, Result.from_dict(row))

    def _write_row(self, tr: TargetRun, row: Result) -> None:
        if row.cell_id in tr.done:
            self.reporter.message(f"[{tr.name}] dropped a second row for cell {row.cell_id} (a re-run unit)")
            return
        append_result(tr.dir / RESULTS, row)
        tr.done.add(row.cell_id)
        self.reporter.cell_done(row)

    def _record_cells(self, tr: TargetRun, cells: list[Cell], status: str, reason: str,
                      extra: dict[str, Any] | None = None) -> None:
        """A driver-written row for each of ``cells`` not yet written on ``tr``."""
        for c in cells:
            if c.cell_id in tr.done:
                continue
            row = base_row(c, None, tr.hardware_id)
            row.set_outcome(status, reason)
            row.extra.update({"target": tr.name, "executor": "ray", "label_selector": tr.target.selector, **(extra or {})})
            self._write_row(tr, row)

    def _fail_cells(self, which: Callable[[Cell], bool], reason: str) -> None:
        for tr in self.runs.values():
            self._record_cells(tr, [c for c in tr.todo if which(c)], "failed", reason)

    def _watch_targets(self) -> None:
        """Give up on a busy target that has had no live node for ``target_timeout_s``."""
        busy = {n: tr for n, tr in self.runs.items() if tr.busy}
        if not busy:
            return
        nodes = cluster_nodes(self.ray)
        live = live_targets({n: tr.target for n, tr in busy.items()}, nodes)
        for name, tr in busy.items():
            if self.watch.update(name, live[name]):
                self._give_up(tr)

    def _give_up(self, tr: TargetRun) -> None:
        self._cancel(tr)
        sel = ", ".join(f"{k}={v}" for k, v in tr.target.selector.items())
        reason = (f"target {tr.name}: no live node matching {sel} for {self.watch.waited_s(tr.name):.0f} s "
                  f"(target_timeout_s {self.cfg.ray.target_timeout_s:g}); `sparsebench run --resume` runs it later")
        self._record_cells(tr, tr.todo, "skipped", reason, {"executor_outcome": NO_LIVE_NODE})
        tr.given_up = True
        self.reporter.message(f"[{tr.name}] {reason}")

    def _cancel(self, tr: TargetRun) -> None:
        for ref in [tr.probe_ref] + [u.ref for u in tr.units]:
            if ref is not None:
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:  # already finished or its node gone: nothing left to stop
                    pass
        tr.probe_ref, tr.units = None, []

    def _cancel_all(self) -> None:
        for tr in self.runs.values():
            self._cancel(tr)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0][:400] if lines else ''}"
