"""Runs a profiling matrix: prune once per (task, pruner), then time, meter and evaluate every
accelerator × kernel variant × threads × batch × sequence cell, appending one row per cell."""
from __future__ import annotations

import contextlib
import copy
import datetime as dt
import io
import json
import math
import subprocess
import sys
import traceback
import uuid
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from accelerators.base import Prepared, PrepareSettings, logits_of
from profiler import __version__
from profiler.cache import partial_checkpoint
from profiler.config import Cell, Config, PluginSpec, check_matrix_fits_tasks, expand, parse_config
from profiler.contention import BUSY_LIMIT_CPUS, other_busy_cpus, snapshot
from profiler.contracts import (cached_model_problem, check_pruned_model, counted_report, model_digest, num_labels,
                                param_shapes, plugin_fields)
from profiler.energy import IdlePower, close_quietly, measure_idle_power, safe_availability
from profiler.errors import ConfigError, SetupError, SparsebenchWarning, plugin_exit
from profiler.hardware import (GENERATION_FIELDS, cpu_affinity, cpu_display_name, cpu_list_text, fingerprint,
                               kernel_variant_info, legacy_fingerprint, same_hardware, thread_fields)
from profiler.identity import BASELINE_ACCELERATOR, ids_of_row, is_dense_fp32, stable_hash
from profiler.labels import cell_text
from profiler.plugins import ACCELERATORS, METERS, PRUNERS, TASKS
from profiler.registry import BUILT_IN
from profiler.results import (Result, append_result, cells_to_run, read_results, repair_tail,
                              rewrite_without)
from profiler.rundir import RESULTS, check_resumable, check_writable, write_atomic
from profiler.tasks.base import Task, default_cache_dir, load_cached, move_aside, publish_cached, seed_everything
from profiler.measure import (SAVINGS_KEYS, THREAD_SCALING_KEY, CallFailed, Timed, fill_measurements, harness_overhead_s,
                              make_call, measure_group, measure_one, savings_fields)
from pruners.base import PruneReport
from pruners.training import discard_checkpoint

MANIFEST = "manifest.json"
HARDWARE = "hardware.json"
IDLE_POWER = "idle_power.json"


class Reporter:
    """Progress callbacks; the CLI supplies a rich-based one, tests a silent one."""

    def start(self, total_cells: int, done: int) -> None: ...
    def cell_done(self, result: Result) -> None: ...
    def message(self, text: str) -> None: ...
    def training(self, label: str) -> Callable[[int, int, float], None] | None:
        return None
    def training_done(self) -> None: ...


def git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def new_run_dir(cfg: Config, now: Callable[[], dt.datetime] = dt.datetime.now) -> Path:
    """Create and return a new, empty run directory ``<output_dir>/<name>-<YYYYmmdd-HHMMSS>``.

    Creation is the claim (``mkdir`` fails if the folder exists), so two runs started in the
    same second, in one process or several, never share a folder: the later one gets the next
    free suffix ``-2``, ``-3``, …. Raises ConfigError when the output folder cannot be written.
    """
    stamp = now().strftime("%Y%m%d-%H%M%S")
    parent = Path(cfg.output_dir)
    for n in range(1, 10_000):
        path = parent / (f"{cfg.name}-{stamp}" if n == 1 else f"{cfg.name}-{stamp}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise ConfigError(f"run.output_dir: cannot create {path}: {exc.strerror or exc}") from None
    raise ConfigError(f"run.output_dir: {parent} already has 9999 runs named {cfg.name}-{stamp}")


#: manifest key: the ``[measure]`` settings the run was timed with, defaults filled in (the stored
#: ``config`` holds only what the user wrote, and a resume parses it with the code's own defaults)
EFFECTIVE_MEASURE = "effective_measure"


def manifest_base(cfg: Config, versions: dict[str, Any] | None) -> dict[str, Any]:
    """The fields of ``manifest.json`` every executor writes: version, creation time (ISO 8601 UTC),
    git commit, command line, the validated config, the effective ``[measure]`` settings
    (:data:`EFFECTIVE_MEASURE`), seed and software versions."""
    return {"sparsebench_version": __version__, "created": dt.datetime.now(dt.timezone.utc).isoformat(),
            "git_commit": git_commit(), "argv": sys.argv, "config": cfg.raw, EFFECTIVE_MEASURE: asdict(cfg.measure),
            "seed": cfg.seed, "versions": versions}


def check_measure_unchanged(cfg: Config, run_dir: Path, what: str = "--resume") -> None:
    """Raise ConfigError when ``cfg``'s ``[measure]`` settings (the run's stored config as this code
    parses it, defaults filled in) differ from those ``run_dir`` was timed with
    (:data:`EFFECTIVE_MEASURE` in its manifest), naming each changed setting with its old and new
    value: after an upgrade that changed a default, the resumed cells would be timed under another
    protocol than the finished ones. A run whose manifest lacks the record (written before it was
    kept) passes, as does a setting only one side knows (one added or removed since)."""
    manifest = read_run_json(Path(run_dir) / MANIFEST)
    stored = manifest.get(EFFECTIVE_MEASURE) if isinstance(manifest, dict) else None
    if not isinstance(stored, dict):
        return
    now = asdict(cfg.measure)
    changed = [f"{k} {stored[k]!r} -> {now[k]!r}" for k in now if k in stored and stored[k] != now[k]]
    if changed:
        then = manifest.get("sparsebench_version") or "unknown"
        raise ConfigError(f"{what}: {run_dir} was timed with other [measure] settings (sparsebench {then}) than this "
                          f"sparsebench ({__version__}) derives from its stored config: {', '.join(changed)}; its "
                          "remaining cells would be timed under another protocol. Start a new run (pin these values in "
                          "its config's [measure] table to keep the old protocol)")


def read_idle_power(folder: Path) -> IdlePower | None:
    """The idle power a run (or a target's folder) measured, from ``folder/idle_power.json``; None
    when there is none. Raises ConfigError when the file is damaged."""
    path = Path(folder) / IDLE_POWER
    if not path.exists():
        return None
    data = read_run_json(path)  # ConfigError naming the file when it is no JSON
    try:
        return IdlePower.from_dict(data)
    except ValueError as exc:
        raise ConfigError(f"{path} is damaged ({exc}); start a new run") from None


def write_run_file(path: Path, data: Any) -> None:
    """Write run file ``path`` as JSON, atomically (a full disk leaves no empty file behind).
    Raises SetupError naming the file when it cannot be written."""
    try:
        write_atomic(path, json.dumps(data, indent=1, default=str).encode())
    except OSError as exc:
        raise SetupError(f"cannot write {path}: {exc.strerror or exc}; make room or fix the folder, then run "
                         "again") from None


def read_run_json(path: Path) -> dict[str, Any]:
    """The JSON object in run file ``path`` (every run file holds one). Raises ConfigError naming the
    file when it is not UTF-8 JSON, or JSON of another kind (a damaged run directory: start a new run)."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ConfigError(f"{path} is damaged ({type(exc).__name__}: {str(exc)[:120]}); start a new run") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is damaged (a JSON {type(data).__name__}, not an object); start a new run")
    return data


#: manifest key: task key -> hash of the task's fingerprint (model files, data files, parameters)
#: when the run started, so that a resume or an export notices inputs changed since
TASK_FINGERPRINTS = "task_fingerprints"
#: manifest key: task key -> the fingerprint itself (file names -> digests, parameters), so that a
#: refused resume can say which input changed
TASK_INPUTS = "task_inputs"
#: prefix of those hashes since model folders are fingerprinted by content: a run recorded before
#: (by file sizes and times) cannot be compared, and is told so rather than that its inputs changed
FINGERPRINT_FORMAT = "content"


def build_task(spec: PluginSpec) -> Task:
    """The task of ``spec`` (its data read on first use). Raises ConfigError or the task's error."""
    return TASKS.build(spec.name, spec.params, spec.key)


def _task_inputs(cfg: Config, build: Callable[[PluginSpec], Task]) -> dict[str, Any]:
    """Task key -> ``Task.fingerprint()`` made JSON, of the task ``build`` gives; a task that
    cannot be built is left out (its cells fail with the reason)."""
    out = {}
    for spec in cfg.tasks:
        try:
            out[spec.key] = json.loads(json.dumps(build(spec).fingerprint(), sort_keys=True, default=str))
        except Exception:
            continue
    return out


def task_records(cfg: Config, build: Callable[[PluginSpec], Task] = build_task) -> dict[str, Any]:
    """The manifest's record of the tasks' inputs: :data:`TASK_FINGERPRINTS` (task key -> ``content:``
    + :func:`~profiler.identity.stable_hash` of the fingerprint: model folder's and data files'
    sha256, parameters; compared on resume and export) and :data:`TASK_INPUTS` (the fingerprints
    themselves: what a refusal names)."""
    inputs = _task_inputs(cfg, build)
    return {TASK_FINGERPRINTS: {k: f"{FINGERPRINT_FORMAT}:{stable_hash(f)}" for k, f in inputs.items()},
            TASK_INPUTS: inputs}


def changed_inputs(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the entries that differ between two fingerprints (``model_files.config.json``,
    ``data.eval``, ``steps``), added and removed ones included."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [name for k in sorted(set(old) | set(new), key=str)
                for name in changed_inputs(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".") or "(all)"]


def check_inputs_unchanged(cfg: Config, run_dir: Path, what: str,
                           build: Callable[[PluginSpec], Task] = build_task) -> None:
    """Raise ConfigError when a task's model folder or data files differ from those ``run_dir``
    started on (:data:`TASK_FINGERPRINTS` in its manifest; runs without the record pass): its rows
    were measured on the old inputs, and new cells or an export would mix in others."""
    manifest = read_run_json(Path(run_dir) / MANIFEST)
    stored = manifest.get(TASK_FINGERPRINTS) if isinstance(manifest, dict) else None
    if not isinstance(stored, dict):
        return
    labels = {spec.key: f"{spec.key} ({spec.label()})" for spec in cfg.tasks}
    now = task_records(cfg, build)  # every task built once
    changed = [labels[k] for k, h in now[TASK_FINGERPRINTS].items() if k in stored and stored[k] != h]
    if changed and not all(str(stored[k]).startswith(f"{FINGERPRINT_FORMAT}:") for k in stored):
        raise ConfigError(f"{what}: {run_dir} recorded its tasks' inputs as an older sparsebench did (model folders by "
                          "file sizes and times, not content), which cannot be compared with today's record: start "
                          "a new run")
    if changed:
        recorded, inputs = manifest.get(TASK_INPUTS), now[TASK_INPUTS]
        which = ""
        if isinstance(recorded, dict):
            names = [n for k in sorted(inputs) if k in recorded for n in changed_inputs(recorded[k], inputs[k])]
            which = f" ({', '.join(names[:6])}{', …' if len(names) > 6 else ''})" if names else ""
        raise ConfigError(f"{what}: the model folder, data files or parameters of task {', '.join(changed)} changed{which} "
                          f"since {run_dir} started (its rows were measured on the old ones): restore them, or start a "
                          "new run")


def recorded_cache_dir(manifest: Any) -> Path | None:
    """The model cache a run was started with: its manifest's ``cache_dir`` (absolute), else, for a
    run whose manifest lacks it, the ``--cache-dir`` of its recorded command line (``argv``; a
    relative one taken from here); None when neither says."""
    if not isinstance(manifest, dict):
        return None
    if isinstance(manifest.get("cache_dir"), str) and manifest["cache_dir"]:
        return Path(manifest["cache_dir"])
    argv = manifest.get("argv")
    argv = [a for a in argv if isinstance(a, str)] if isinstance(argv, list) else []
    for i, arg in enumerate(argv):
        if arg == "--cache-dir" and i + 1 < len(argv) and argv[i + 1]:
            return Path(argv[i + 1])
        if arg.startswith("--cache-dir=") and arg.removeprefix("--cache-dir="):
            return Path(arg.removeprefix("--cache-dir="))
    return None


def load_run_config(run_dir: Path, what: str = "--resume") -> Config:
    """The validated config stored in ``run_dir/manifest.json`` (for ``--resume``; ``what`` names the
    argument that gave ``run_dir`` in the messages). Raises ConfigError."""
    path = Path(run_dir) / MANIFEST
    if not Path(run_dir).exists():
        raise ConfigError(f"{what}: {run_dir} does not exist")
    if not Path(run_dir).is_dir():
        raise ConfigError(f"{what}: {run_dir} is a file, not a run directory")
    if not path.exists():
        raise ConfigError(f"{what}: {run_dir} is not a run directory (no {MANIFEST})")
    manifest = read_run_json(path)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict):
        raise ConfigError(f"{what}: {path} is damaged (no 'config' table); start a new run")
    return parse_config(manifest["config"])


def preflight(cfg: Config, cache_dir: Path | None, check_meter: bool = True, resume_dir: Path | None = None) -> None:
    """Checks that need this machine, done before any work: an explicitly chosen energy meter
    must be available, and the model cache writable, and the output folder — or, resuming, the run
    directory ``resume_dir`` with its results files — and some cell of the matrix must have its
    accelerator available (:func:`check_accelerators_available`: a warning names the cells that
    will be skipped). With ``check_meter`` False (a Ray run, whose cells run on the targets' nodes)
    neither the meter nor the accelerators are asked here: each node asks them. Creates nothing: a
    run rejected here or later in its checks leaves no folder behind (the run creates them as it
    writes). Raises ConfigError (SetupError for what this machine cannot do)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the shape checks load the model: the run's own lines say what happens
    meter = METERS.build(cfg.meter.name, cfg.meter.params, "meter")
    try:  # a probe may start a tracker thread (codecarbon): it must not sample through the run's timing
        if check_meter and cfg.meter.name != "auto":
            ok, why = safe_availability(meter)
            if not ok:
                raise ConfigError(f"meter.name: {cfg.meter.name!r} is unavailable here: {why}. Use 'auto' (picks the "
                                  "best available meter and says why) or 'estimate'; `sparsebench doctor` lists what "
                                  "works here")
    finally:
        close_quietly(meter)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    check_writable(cache, "model cache (--cache-dir / SPARSEBENCH_CACHE)", create=False)
    kernels = kernel_variant_info()
    if kernels.get("kernel_status") == "unavailable":  # a process-wide choice: every sparse cell would be skipped
        raise SetupError(f"{kernels['kernel_note']}. Unset it (the kernels then pick the best variant this CPU "
                          "runs), or sweep variants per cell with [matrix] kernel_variant")
    tasks = check_matrix_fits_tasks(cfg)
    if resume_dir is not None:
        check_resumable(Path(resume_dir))
    else:
        check_writable(Path(cfg.output_dir), "output folder (--output-dir / run.output_dir)", create=False)
    if check_meter:  # last: its note is for a run that goes ahead
        check_accelerators_available(cfg, cache, tasks)


def timed_in_another_group(variants: list[str], variant: str) -> str | None:
    """Why a cell whose accelerator is available is still skipped in kernel variant ``variant``'s
    group: this CPU cannot run that forced variant, so no cell of the group runs the kernels, and the
    same cell is timed (without kernels) in the group of the first variant of the sweep ``variants``
    it can run ("auto" or a supported one). None when the cell is timed in its own group."""
    if variant == "auto":
        return None
    supported = kernel_variant_info()["kernel_variants_supported"]
    if variant in supported:
        return None
    other = next((v for v in variants if v == "auto" or v in supported), None)
    if other is None:
        return None
    return (f"kernel variant {variant!r} is unavailable on this CPU, so no cell of its group runs it; this cell is "
            f"timed under kernel_variant {other!r}")


def check_accelerators_available(cfg: Config, cache_dir: Path, tasks: dict[PluginSpec, Task] | None = None) -> None:
    """Ask each accelerator's ``availability`` with the settings each cell of the matrix will give its
    ``prepare`` (shape, threads, kernel variant, the task's calibration data, ``cache_dir``), before
    any fine-tuning or pruning; a cell the runner skips although its accelerator is available
    (:func:`timed_in_another_group`) counts as skipped too. Raises SetupError listing every
    accelerator and its reason when no cell can run here; when only some cannot, warns
    (:class:`SparsebenchWarning`) once, naming them and why. Each cell asks again when it runs (with
    the same settings), and one that cannot run is recorded ``skipped`` with its reason then."""
    if tasks is None:  # preflight hands over those check_matrix_fits_tasks built
        tasks = {spec: build_task(spec) for spec in cfg.tasks}
    # by spec, not by key: a table's sweep (precision = ["fp32", "bf16"]) gives specs that share its key
    accs = {spec: ACCELERATORS.build(spec.name, spec.params, spec.key) for spec in cfg.accelerators}
    asked: dict[tuple, tuple[bool, str]] = {}  # the pruner changes no setting: one question per setting
    cells = expand(cfg)
    down: dict[tuple[PluginSpec, str], list[Cell]] = defaultdict(list)
    for c in cells:
        key = (c.task, c.accelerator, c.kernel_variant, c.threads, c.batch_size, c.seq_len)
        if key not in asked:
            settings = PrepareSettings(threads=c.threads, kernel_variant=c.kernel_variant, batch_size=c.batch_size,
                                       seq_len=c.seq_len, calibration=tasks[c.task].calibration_inputs,
                                       cache_dir=str(cache_dir))
            ok, why = safe_availability(accs[c.accelerator], settings)
            elsewhere = timed_in_another_group(cfg.kernel_variants, c.kernel_variant) if ok else None
            asked[key] = (False, elsewhere) if elsewhere else (ok, why)
        ok, why = asked[key]
        if not ok:
            down[(c.accelerator, why)].append(c)
    if not down:
        return
    per_acc = Counter(c.accelerator for c in cells)
    parts = [f"{spec.key} ({spec.label()}){_cells_where(group, per_acc[spec] == len(group))}: "
             f"{why or 'no reason given'}" for (spec, why), group in down.items()]
    skipped = sum(len(g) for g in down.values())
    if skipped == len(cells):
        raise SetupError(f"no cell of the matrix can run here: {'; '.join(parts)}. "
                         "Run it where one of them is available, or add an accelerator that runs here (e.g. torch-fp32)")
    warnings.warn(f"{skipped} of the matrix's {len(cells)} cells cannot run here and will be skipped: {'; '.join(parts)}",
                  SparsebenchWarning)


def _cells_where(group: list[Cell], every: bool) -> str:
    """Which of an accelerator's cells ``group`` is, for :func:`check_accelerators_available`'s
    messages: nothing when ``every`` one, else the cells (at most 3, then a count)."""
    if every:
        return ""
    shown = [cell_text(base_row(c, None, None)) for c in group[:3]]  # as the run's progress lines name them
    more = f" and {len(group) - 3} more" if len(group) > 3 else ""
    return f" in {', '.join(shown)}{more}"


class RunDirLock:
    """An exclusive lock on a run directory, so two processes never append to one results file."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._f = None

    def __enter__(self) -> "RunDirLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "w")
        try:
            fcntl.flock(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._f.close()
            raise ConfigError(f"{self.path.parent}: another sparsebench process is running this run directory") from None
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


@contextlib.contextmanager
def plugin_code(who: str) -> Iterator[None]:
    """Run a plugin's code inside a cell (``who``: ``accelerator 'x' prepare()``): a ``sys.exit()``
    there becomes :func:`profiler.errors.plugin_exit`'s RuntimeError, so that only this cell (or this
    pruner's cells) fails and the matrix goes on. Ctrl-C and SIGTERM still stop the run."""
    try:
        yield
    except SystemExit as exc:
        raise plugin_exit(exc, who) from exc


#: how :meth:`profiler.tasks.base.Task.evaluate_metrics` pads the accuracy pass
ACCURACY_PADDING = "dynamic: length-sorted batches padded to their longest example, padding masked"


def padding_fields(acc: Any, c: Cell, eval_batch_size: int) -> dict[str, Any]:
    """Row fields stating the padding of the accuracy pass (``accuracy_padding``) against the
    timing's (``timing_padding``), and ``padding_flag`` (why the accuracy may not match what was
    timed) for an accelerator whose outputs depend on padding."""
    out: dict[str, Any] = {"accuracy_padding": f"{ACCURACY_PADDING} (batches of {eval_batch_size})",
                           "timing_padding": f"every example padded or truncated to seq_len {c.seq_len}"}
    if getattr(acc, "padding_sensitive", False):
        out["padding_flag"] = ("outputs depend on padding and on the batch's other sequences (activations "
                               "quantized with one scale per call, pad positions included): the accuracy was "
                               f"measured with dynamic padding in its own batches, not at seq_len {c.seq_len} as timed")
    return out


def base_row(c: Cell, task: Task | None, hardware_id: str | None) -> Result:
    """A cell's row before anything is measured: its identity, plugins and shape (status ok)."""
    return Result(
        cell_id=c.cell_id, recipe_id=c.recipe_id, model_id=c.model_id, task=c.task.name, pruner=c.pruner.name, pruner_params=c.pruner.params,
        accelerator=c.accelerator.name, accelerator_params=c.accelerator.params, batch_size=c.batch_size,
        seq_len=c.seq_len, threads=c.threads, status="ok", kernel_variant=c.kernel_variant,
        metric_name=task.metric_name if task else None, hardware_id=hardware_id,
        sparsebench_version=__version__,
        extra={"task_params": c.task.params, "pruner_label": c.pruner.label(), "accelerator_label": c.accelerator.label()},
    )


def accuracy_key(model_id: str, numerics: str | None) -> str:
    """Key of one accuracy pass: the cell's ``model_id`` and, for an accelerator whose prepared module
    depends on the cell's shape or threads (choices timed at prepare), the ``numerics_key`` it reported."""
    return f"{model_id}/{numerics}" if numerics else model_id


def known_metrics(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """:func:`accuracy_key` → ``accuracy`` and the metric fields (``metric_<name>``, ``collapsed``,
    ``collapse_reason``) of the first ok row with an accuracy: what a resumed run reuses instead
    of evaluating the same model again."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.get("status") == "ok" and r.get("accuracy") is not None:
            mid = accuracy_key(r.get("model_id") or ids_of_row(r)["model_id"], r.get("numerics_key"))
            out.setdefault(mid, {"accuracy": r["accuracy"], **{
                k: v for k, v in r.items()
                if (k.startswith("metric_") and k != "metric_name") or k in ("collapsed", "collapse_reason")}})
    return out


def interleave_key(c: Cell, threads_share_rounds: bool = True) -> tuple:
    """Cells of one task with equal keys are timed side by side (``measure.schedule = "interleaved"``):
    every model, accelerator and thread count at one batch, sequence and kernel variant (with
    ``threads_share_rounds`` False, ``measure.interleave_threads = false``: one group per thread
    count). Savings factors divide cells of one thread count; across thread counts the same rounds
    give the thread scaling (:data:`THREAD_SCALING_KEY`)."""
    return (c.batch_size, c.seq_len, c.kernel_variant) if threads_share_rounds else \
        (c.batch_size, c.seq_len, c.threads, c.kernel_variant)


#: same-round factor of a cell against the same recipe and accelerator at the matrix's fewest threads,
#: timed in the same rounds: that cell's latency ÷ this one's (> 1: the extra threads pay)


def references_to_retime(cells: list[Cell], todo: list[Cell], rows: list[dict[str, Any]], schedule: str,
                         threads_share_rounds: bool = True) -> list[Cell]:
    """Finished cells (ok rows of ``rows``) of the interleaved groups where ``todo`` still has
    cells that those cells' factors divide by: the dense fp32 cells (the baseline and the "best
    dense" candidates) and, where thread counts share rounds, each open recipe's cell at the fewest
    threads of the matrix (the thread-scaling reference). A resumed run times them again beside
    the missing cells, so that the new rows' factors stay same-round ratios; their own rows are not
    written again. Empty for ``schedule = "sequential"``."""
    if schedule == "sequential":
        return []
    finished = {r["cell_id"]: r for r in rows if r.get("status") == "ok"}
    key = lambda c: (c.task, interleave_key(c, threads_share_rounds))  # noqa: E731
    open_groups = {key(c) for c in todo}
    open_recipes = {(*key(c), c.recipe_id) for c in todo} if threads_share_rounds else set()
    fewest = min((c.threads for c in cells), default=0)
    todo_ids = {c.cell_id for c in todo}
    out = []
    for c in cells:
        r = finished.get(c.cell_id)
        if r is None or c.cell_id in todo_ids or key(c) not in open_groups:
            continue
        if (is_dense_fp32(r.get("pruner"), r.get("accelerator"), r.get("compute_precision"))
                or (c.threads == fewest and (*key(c), c.recipe_id) in open_recipes)):
            out.append(c)
    return out


def thread_scaling(cells: dict[str, tuple[Cell, Timed]], reference_threads: int, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per cell id of one interleaved group, the fields :data:`THREAD_SCALING_KEY` (with ``_low``,
    ``_high``, ``_rounds``) and ``thread_scaling_reference_threads``: the same-round median of (the
    latency of the same recipe and kernel variant at ``reference_threads`` ÷ this cell's latency),
    :func:`profiler.measure.savings_fields`; 1.0 at ``reference_threads`` itself. ``None`` and 0
    rounds where the group has no such cell, or no other thread count of the recipe."""
    cell_ids = {(c.recipe_id, c.kernel_variant, c.threads): k for k, (c, _) in cells.items()}
    counts = Counter((c.recipe_id, c.kernel_variant) for c, _ in cells.values())
    out = {}
    for k, (c, t) in cells.items():
        ref = cell_ids.get((c.recipe_id, c.kernel_variant, reference_threads))
        ref = ref if counts[(c.recipe_id, c.kernel_variant)] > 1 else None
        out[k] = {**savings_fields(t, cells[ref][1] if ref is not None else None, THREAD_SCALING_KEY, seed),
                  "thread_scaling_reference_threads": reference_threads if ref is not None else None}
    return out


def model_bytes(module: nn.Module) -> int:
    """Bytes of the module's serialized state_dict (packed INT8 and sparse buffers included)."""
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.tell()


class Runner:
    """Executes ``cfg`` into ``run_dir``; cells already in ``results.jsonl`` are skipped, except
    failed ones when ``retry_failed`` (their rows are removed first, in one atomic rewrite, so the
    new row replaces the old one)."""

    def __init__(self, cfg: Config, run_dir: Path, cache_dir: Path | None = None, reporter: Reporter | None = None,
                 retry_failed: bool = False) -> None:
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.retry_failed = retry_failed
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.reporter = reporter or Reporter()
        self.results_path = self.run_dir / RESULTS
        #: accuracy by model_id: cells with the same model share one accuracy pass
        self._accuracy: dict[str, float] = {}
        #: every metric the task reports, as row fields ``metric_<name>``, by model_id
        self._metrics: dict[str, dict[str, float]] = {}
        #: torch threads of fine-tuning and pruning; the timed cells set their own, so this is fixed
        #: before the first of them (without it a second task would train at the last cell's count)
        self.training_threads = cfg.training_threads or torch.get_num_threads()
        #: each task built once per run: the inputs' fingerprint and the cache key read the same
        #: tokenized data (SST-2's fingerprint tokenizes the training set)
        self._tasks: dict[PluginSpec, Task] = {}
        #: id of a model an accelerator's prepare changed and that could not be restored → why; its
        #: later cells fail instead of running on it
        self._damaged: dict[int, str] = {}
        #: id of a model the cells prepare from → its :func:`model_digest` before the first prepare
        self._digests: dict[int, list[tuple]] = {}

    def task(self, spec: PluginSpec) -> Task:
        """The task of ``spec``, built once per runner (:func:`build_task`)."""
        if spec not in self._tasks:
            self._tasks[spec] = build_task(spec)
        return self._tasks[spec]

    # ---- run-level files ----------------------------------------------------------------------
    def _write_run_files(self) -> dict[str, Any]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # the manifest names the cache: a resume looks for it there (preflight created nothing)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        hw_path, man_path = self.run_dir / HARDWARE, self.run_dir / MANIFEST
        here = fingerprint()
        hw = self._check_same_hardware(hw_path, man_path, here)
        if hw is None:  # a new run, or a resumed one whose hardware.json is gone (the manifest's id matched)
            hw = self._hardware_to_write(man_path, here)
            write_run_file(hw_path, hw)
        if not man_path.exists():
            manifest = manifest_base(self.cfg, hw.get("versions"))
            manifest.update({"hardware_id": hw["hardware_id"], "harness_overhead_s": harness_overhead_s(),
                             **task_records(self.cfg, self.task),
                             # absolute, as --cache-dir or SPARSEBENCH_CACHE gave it: --resume goes on with it
                             "cache_dir": str(self.cache_dir.resolve())})
            write_run_file(man_path, manifest)
        else:
            check_measure_unchanged(self.cfg, self.run_dir)
            check_inputs_unchanged(self.cfg, self.run_dir, "--resume", self.task)
        return hw

    def _check_same_hardware(self, hw_path: Path, man_path: Path, here: dict[str, Any]) -> dict[str, Any] | None:
        """The run directory's ``hardware.json`` (None when it has none yet). Raises ConfigError when
        that file is damaged (valid JSON that is no object included), or when it or the manifest's
        ``hardware_id`` names other hardware than ``here`` (:func:`profiler.hardware.same_hardware`):
        one run's rows, savings factors and idle power all belong to one machine, and a missing
        ``hardware.json`` must not let a resume on another one through."""
        hw = read_run_json(hw_path) if hw_path.exists() else None
        manifest = read_run_json(man_path) if man_path.exists() else None
        recorded = [hw] if hw is not None else []
        if manifest is not None and "hardware_id" in manifest:
            recorded.append(self._manifest_hardware(manifest["hardware_id"], hw))
        elif manifest is not None and hw is None:
            raise ConfigError(f"{self.run_dir} has neither a {HARDWARE} nor a hardware_id in its {MANIFEST}: which "
                              "machine its rows were measured on cannot be told; start a new run")
        for rec in recorded:
            if not same_hardware(rec, here):
                cpu = repr(cpu_display_name(rec)) if rec.get("cpu_model") is not None else "its CPU not recorded"
                raise ConfigError(
                    f"{self.run_dir} was started on other hardware ({cpu}, hardware_id {rec.get('hardware_id')}) than "
                    f"this machine ({cpu_display_name(here)!r}, {here['hardware_id']}): resume it there, or run the "
                    "config here as a new run and put the two side by side with sparsebench compare")
        if hw is None and manifest is not None:
            self.reporter.message(f"{hw_path} was missing; written again from this machine, the one the run's manifest names")
        return hw

    @staticmethod
    def _hardware_to_write(man_path: Path, here: dict[str, Any]) -> dict[str, Any]:
        """The ``hardware.json`` to write: ``here``, or, where the manifest (already checked against
        this machine) holds another id, ``here`` as the code that began the run wrote it
        (:func:`profiler.hardware.legacy_fingerprint`): the run's manifest, rows and hardware.json keep
        the one id it began with, and the next resume matches them."""
        manifest_id = read_run_json(man_path).get("hardware_id") if man_path.exists() else None
        return here if manifest_id in (None, here["hardware_id"]) else legacy_fingerprint(here)

    @staticmethod
    def _manifest_hardware(manifest_id: str, hw: dict[str, Any] | None) -> dict[str, Any]:
        """The manifest's ``hardware_id`` as a recorded fingerprint for
        :func:`profiler.hardware.same_hardware`. The manifest keeps neither the CPU name nor its family:
        the name is hardware.json's when that names the same machine, and the family fields are
        hardware.json's whatever its id (the two files are written by one run, so a hardware.json
        without a family, or none at all, leaves the manifest's id an old-style one)."""
        rec: dict[str, Any] = {"hardware_id": manifest_id}
        if hw is not None:
            rec.update({f: hw[f] for f in GENERATION_FIELDS if f in hw})
            if hw.get("hardware_id") == manifest_id:
                rec["cpu_model"] = hw.get("cpu_model")
        return rec

    def _idle(self, meter) -> IdlePower | None:
        idle = read_idle_power(self.run_dir)
        if idle is not None or self.cfg.measure.idle_seconds <= 0:
            return idle
        self.reporter.message(f"measuring idle power for {self.cfg.measure.idle_seconds:g} s")
        idle = measure_idle_power(meter, self.cfg.measure.idle_seconds)
        write_run_file(self.run_dir / IDLE_POWER, idle.to_dict())
        return idle

    # ---- the matrix ----------------------------------------------------------------------------
    def run(self) -> Path:
        """Run every cell not yet in ``results.jsonl``. Raises ConfigError if another process holds the run directory."""
        with RunDirLock(self.run_dir):
            return self._run()

    def _run(self) -> Path:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own bars cover loading and saving
        seed_everything(self.cfg.seed)
        hw = self._write_run_files()
        self.hw = hw
        if repair_tail(self.results_path):
            self.reporter.message("cut a partial last line from results.jsonl (killed mid-write)")
        rf = read_results(self.results_path)
        for line in rf.warnings():
            self.reporter.message(f"warning: {line}")
        cells = expand(self.cfg)
        _, todo, redo = cells_to_run(rf.rows, cells, self.retry_failed)
        if rewrite_without(self.results_path, redo):  # the new row replaces the failed one, not beside it
            self.reporter.message(f"{len(redo)} failed cell(s) will run again")
        rows = [r for r in rf.rows if r["cell_id"] not in redo]
        self.reuse_metrics(known_metrics(rows))
        self.reporter.start(len(cells), len(cells) - len(todo))
        if not todo:
            return self.run_dir
        references = references_to_retime(cells, todo, rows, self.cfg.measure.schedule, self.cfg.measure.interleave_threads)
        self._warn_oversubscription()
        meter = METERS.build(self.cfg.meter.name, self.cfg.meter.params, "meter")
        idle = self._idle(meter)
        meter.start()
        try:
            by_task: dict[PluginSpec, list[Cell]] = defaultdict(list)
            for c in todo:
                by_task[c.task].append(c)
            for task_spec, task_cells in by_task.items():
                self._run_task(task_spec, task_cells, meter, idle, [r for r in references if r.task == task_spec])
        finally:
            meter.stop()
            close_quietly(meter)  # a codecarbon tracker samples until closed
        return self.run_dir

    def _warn_oversubscription(self) -> None:
        """Warn for a thread count above the CPUs this process may use (its affinity mask, which
        ``taskset`` and cgroup cpusets narrow below ``os.cpu_count()``)."""
        cpus = cpu_affinity()
        for th in self.cfg.threads:
            if th > len(cpus):
                self.reporter.message(f"warning: threads={th} exceeds the {len(cpus)} CPUs this process may use "
                                      f"(affinity {cpu_list_text(cpus)}); latency will suffer")

    def build_models(self, spec: PluginSpec, pruners: Iterable[PluginSpec],
                     fail: Callable[[Task | None, PluginSpec | None, str], None],
                     ) -> tuple[Task, dict[PluginSpec, tuple[nn.Module, PruneReport]]] | None:
        """The task of ``spec`` and each pruner's model of its fine-tuned dense model, built (fine-tuning
        and pruning at :attr:`training_threads`) or loaded from the model cache. What cannot be built
        is handed to ``fail(task, pruner, reason)``: ``(None, None, reason)`` for the task (then None
        is returned), ``(task, pruner, reason)`` for a pruner (left out of the models)."""
        torch.set_num_threads(self.training_threads)
        try:
            task = self.task(spec)
            with plugin_code(f"task {spec.name!r} load_finetuned()"):
                dense = task.load_finetuned(self.cache_dir, self.reporter.training(f"fine-tuning {spec.name}"))
            self.reporter.training_done()
        except Exception as exc:  # a task that cannot build fails its cells, the matrix goes on
            fail(None, None, f"task: {type(exc).__name__}: {exc}")
            return None
        models: dict[PluginSpec, tuple[nn.Module, PruneReport]] = {}
        for p_spec in dict.fromkeys(pruners):
            try:
                models[p_spec] = self.pruned(task, dense, p_spec)
            except Exception as exc:
                fail(task, p_spec, f"pruner: {type(exc).__name__}: {exc}\n{_tb()}")
        return task, models

    def _run_task(self, spec: PluginSpec, cells: list[Cell], meter, idle, references: list[Cell] = ()) -> None:
        """Run ``cells`` of one task; ``references``: finished cells timed again beside them, not recorded."""
        def fail(task: Task | None, pruner: PluginSpec | None, reason: str) -> None:
            for c in cells:
                if pruner is None or c.pruner == pruner:
                    self._record(self._base_row(c, task), "failed", reason)

        built = self.build_models(spec, (c.pruner for c in [*cells, *references]), fail)
        if built is None:
            return
        task, models = built
        cells = [c for c in cells if c.pruner in models]
        if self.cfg.measure.schedule == "sequential":
            for c in cells:
                self._run_cell(c, task, *models[c.pruner], meter, idle)
            return
        groups: dict[tuple, list[Cell]] = defaultdict(list)
        for c in cells:  # side by side: every model and accelerator of this task at one shape
            groups[interleave_key(c, self.cfg.measure.interleave_threads)].append(c)
        refs: dict[tuple, list[Cell]] = defaultdict(list)
        for c in references:
            if c.pruner in models:
                refs[interleave_key(c, self.cfg.measure.interleave_threads)].append(c)
        for key, group in groups.items():
            self._run_group(group, task, models, meter, idle, refs.get(key, []))

    def pruned(self, task: Task, dense: nn.Module, spec: PluginSpec) -> tuple[nn.Module, PruneReport]:
        """The pruned model, from the cache (keyed by the task's model fingerprint + pruner config) or pruned now;
        a resumable pruner (``Pruner.resumable``) checkpoints its training beside the cache entry
        (``<key>.partial.pt``, deleted once the model is stored) and goes on from there after a kill."""
        pruner = PRUNERS.build(spec.name, spec.params, spec.key)
        if spec.name == "none":
            return dense, pruner.prune(dense, task)
        # the dense model's key: editing what only evaluation reads (eval file, metric) prunes nothing again
        what = {"task": task.model_fingerprint(), "pruner": spec.canonical()}
        if pruner.cache_version:
            what["pruner_version"] = pruner.cache_version
        data = pruner.data_fingerprint()
        if data:
            what["pruner_data"] = data
        resolved = pruner.resolved_settings()
        if resolved:
            what["pruner_resolved"] = resolved
        key = stable_hash(what)
        path = self.cache_dir / "pruned" / f"{task.name}-{spec.name}-{key}"
        cached = load_cached(
            path, lambda p: (task.load_saved(p), PruneReport.from_dict(json.loads((p / "prune_report.json").read_text()))),
            "prune_report.json",
        )
        checkpoint = partial_checkpoint(path)  # a killed training goes on from here
        if cached is not None:
            # the report stored with it was counted from its zeros when it was stored
            problem = cached_model_problem(*cached, pruner)
            if problem is None:
                discard_checkpoint(checkpoint)  # left by a kill between storing the model and deleting it
                return cached
            move_aside(path, problem)
        model = copy.deepcopy(dense)
        shapes = param_shapes(model)
        model.train(pruner.needs_training)
        progress = self.reporter.training(f"pruning {spec.label()}") if pruner.needs_training else None
        pruner.cache_dir = self.cache_dir
        if pruner.resumable:
            pruner.checkpoint = checkpoint
        with plugin_code(f"pruner {spec.name!r} prune()"):
            report = pruner.prune(model, task, progress=progress)
        if not isinstance(report, PruneReport):  # a third-party pruner's mistake, named as such
            raise TypeError(f"pruner {spec.name!r}: prune() returned {type(report).__name__}; it must prune the model "
                            "in place and return a PruneReport (pruners.base.sparsity_report(model) builds one)")
        self.reporter.training_done()
        # before anything is cached: a model the runner cannot save and load back strictly, or whose
        # prepare would deepcopy torch's pruning hooks, fails its cells here with the contract it broke
        check_pruned_model(model, shapes, spec)
        report = counted_report(model, report, pruner, spec)
        model.eval()
        def write(folder: Path) -> None:
            model.save_pretrained(folder, safe_serialization=True)
            (folder / "prune_report.json").write_text(json.dumps(report.to_dict(), indent=1, default=str))

        publish_cached(path, write)
        if pruner.resumable:
            discard_checkpoint(checkpoint)
        return model, report

    def reuse_metrics(self, known: dict[str, dict[str, Any]]) -> None:
        """Take accuracy and metric fields already measured (:func:`accuracy_key` → fields, as
        :func:`known_metrics` gives them) instead of measuring them again."""
        for mid, fields in known.items():
            self._accuracy.setdefault(mid, fields["accuracy"])
            self._metrics.setdefault(mid, {k: v for k, v in fields.items() if k != "accuracy"})

    def _base_row(self, c: Cell, task: Task | None) -> Result:
        return base_row(c, task, self.hw["hardware_id"])

    def _record(self, row: Result, status: str, reason: str | None) -> None:
        if status != "ok":  # a factor only for a cell measured and evaluated: a failed one's would be read as a result
            for key in (*SAVINGS_KEYS, THREAD_SCALING_KEY):
                if key in row.extra:
                    row.extra.update({key: None, f"{key}_low": None, f"{key}_high": None, f"{key}_rounds": 0})
        row.set_outcome(status, reason)
        append_result(self.results_path, row)
        self.reporter.cell_done(row)

    def _prepare_cell(self, c: Cell, task: Task, model: nn.Module, report: PruneReport,
                      record: bool = True) -> tuple[Result, Any] | None:
        """The cell's row and prepared module; None when the cell was recorded skipped or failed
        (with ``record=False``, not recorded: a finished cell timed again as a reference)."""
        row = self._base_row(c, task)
        row.sparsity_prunable, row.sparsity_all_params = report.sparsity_prunable, report.sparsity_all_params
        if report.notes.get("sparsity_claim_mismatch"):
            row.extra["sparsity_flag"] = report.notes["sparsity_claim_mismatch"]
        if report.notes.get("training_speed"):
            row.extra["pruner_training"] = report.notes["training_speed"]
        if report.notes.get("weight_average"):
            row.extra["pruner_weight_average"] = report.notes["weight_average"]
        if task.finetune_report:
            row.extra["dense_finetune"] = task.finetune_report
        acc = ACCELERATORS.build(c.accelerator.name, c.accelerator.params, c.accelerator.key)
        settings = PrepareSettings(threads=c.threads, kernel_variant=c.kernel_variant, batch_size=c.batch_size,
                                   seq_len=c.seq_len, calibration=task.calibration_inputs, cache_dir=str(self.cache_dir))
        ok, why = safe_availability(acc, settings)
        if ok and (elsewhere := timed_in_another_group(self.cfg.kernel_variants, c.kernel_variant)):
            ok, why = False, elsewhere
        if not ok:
            if record:
                self._record(row, "skipped", why)
            return None
        row.device = acc.device
        row.extra["compute_precision"] = acc.compute_precision
        row.extra.update(padding_fields(acc, c, self.cfg.measure.eval_batch_size))
        try:
            torch.set_num_threads(c.threads)
            example = task.example_inputs(c.batch_size, c.seq_len)
            if id(model) in self._damaged:
                raise RuntimeError(self._damaged[id(model)])
            if id(model) not in self._digests:  # once per model: it must be unchanged by every prepare after
                self._digests[id(model)] = model_digest(model)
            digest = self._digests[id(model)]
            with warnings.catch_warnings(), plugin_code(f"accelerator {acc.name!r} prepare()"):
                warnings.simplefilter("ignore")
                prepared = acc.prepare(model, example, settings)
            if model_digest(model) != digest:  # later cells of this model would run on what it left
                raise RuntimeError(f"accelerator {acc.name!r}: prepare changed the model it was given (its parameters "
                                   "or buffers); it must build a new module (copy.deepcopy(model)) and leave `model` "
                                   f"as it is. {self._restore(task, c.pruner, model, digest)}")
            if not isinstance(prepared, Prepared):  # a third-party accelerator's mistake, named as such
                raise TypeError(f"accelerator {acc.name!r}: prepare() returned {type(prepared).__name__}; it must "
                                "return accelerators.base.Prepared(module, fields)")
            if not isinstance(prepared.module, nn.Module):
                raise TypeError(f"accelerator {acc.name!r}: prepare() returned Prepared whose module is "
                                f"{type(prepared.module).__name__}; it must be the runnable torch.nn.Module")
            if not isinstance(prepared.fields, dict):
                raise TypeError(f"accelerator {acc.name!r}: prepare() returned Prepared whose fields are "
                                f"{type(prepared.fields).__name__}; they must be a dict of flat JSON row fields")
            row.extra.update(plugin_fields(prepared.fields, acc.name, ACCELERATORS.source(c.accelerator.name) == BUILT_IN))
            row.model_bytes = model_bytes(prepared.module)
            call = make_call(prepared.module, example, acc.device, expect_logits=(c.batch_size, num_labels(model, task)),
                             who=f"accelerator {acc.name!r}: the prepared module")
            return row, (prepared.module, call)
        except Exception as exc:
            if record:
                self._record(row, "failed", f"{type(exc).__name__}: {exc}\n{_tb()}")
            return None

    def _restore(self, task: Task, spec: PluginSpec, model: nn.Module, digest: list[tuple]) -> str:
        """Put back, in place, the weights of ``model`` (pruner ``spec``'s model, whose
        :func:`model_digest` was ``digest``) that an accelerator's prepare changed, from the model
        cache, so that the later cells (and modules already prepared from it) get it intact. Returns
        what happened, for the failing cell's reason; when it cannot be restored, the later cells of
        this model fail saying so."""
        try:
            dense = task.load_finetuned(self.cache_dir)
            fresh = dense if spec.name == "none" else self.pruned(task, dense, spec)[0]
            with torch.no_grad():
                model.load_state_dict(fresh.state_dict())
            if model_digest(model) == digest:
                return "The model was reloaded from the cache for the later cells."
            why = "the reloaded weights differ from those it had"
        except Exception as exc:
            why = f"{type(exc).__name__}: {str(exc)[:200]}"
        self._damaged[id(model)] = (f"an earlier cell's prepare changed this model and it could not be reloaded ({why}); "
                                    "not run on a changed model")
        return f"It could not be reloaded ({why}); the later cells of this model fail."

    def _evaluate(self, c: Cell, task: Task, row: Result, module: nn.Module | None) -> str | None:
        """``row``'s accuracy and metric fields (one pass per :func:`accuracy_key`; with ``module``
        None only what is already known); the failure's text, or None."""
        try:
            key = accuracy_key(c.model_id, row.extra.get("numerics_key"))
            if key not in self._accuracy:
                if module is None:
                    return "accuracy not measured"
                counter = PredictionCounter(module)
                torch.set_num_threads(c.threads)  # the cell's own rounding (timing may have left another count)
                with torch.inference_mode():
                    metrics = task.evaluate_metrics(counter, self.cfg.measure.eval_batch_size)
                self._accuracy[key] = metrics[task.metric_name]
                self._metrics[key] = {f"metric_{k}": v for k, v in metrics.items()}
                self._metrics[key].update(counter.collapse_fields(task, metrics[task.metric_name]))
            row.accuracy = self._accuracy[key]
            row.extra.update(self._metrics.get(key, {}))
            return None
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}\n{_tb()}"

    def _finish_cell(self, c: Cell, task: Task, row: Result, module: nn.Module) -> None:
        """Accuracy (one pass per :func:`accuracy_key`), then the row is appended."""
        self._record_evaluated(row, self._evaluate(c, task, row, module))

    def _record_evaluated(self, row: Result, failure: str | None) -> None:
        if failure is None:
            self._record(row, "ok", row.extra.get("collapse_reason"))
        else:
            self._record(row, "failed", failure)

    def _run_cell(self, c: Cell, task: Task, model: nn.Module, report: PruneReport, meter, idle) -> None:
        prepared = self._prepare_cell(c, task, model, report)
        if prepared is None:
            return
        row, (module, call) = prepared
        try:
            torch.set_num_threads(c.threads)
            row.extra.update(thread_fields(torch.get_num_threads()))
            before = snapshot()
            timed = measure_one(call, self.cfg.measure, meter, idle, c.batch_size)
            self._contention([row], other_busy_cpus(before, snapshot()))
            fill_measurements(row, timed)
            # every row carries the same keys: a cell timed on its own has no same-round factor
            for key in (*SAVINGS_KEYS, THREAD_SCALING_KEY):
                row.extra.update(savings_fields(timed, None, key))
            row.extra["thread_scaling_reference_threads"] = None
        except Exception as exc:
            return self._record(row, "failed", f"{type(exc).__name__}: {exc}\n{_tb()}")
        self._finish_cell(c, task, row, module)

    def _run_group(self, group: list[Cell], task: Task, models: dict, meter, idle, references: list[Cell] = ()) -> None:
        """Prepare every cell of one shape, time them side by side in rounds, then evaluate.
        ``references`` (finished cells of the shape, on resume) are timed with them for the same-round
        factors, and neither evaluated nor recorded. Every row gets the group's ``interleave_group_id``."""
        live: dict[str, tuple[Cell, Result, nn.Module, Callable]] = {}
        for c in group:
            prepared = self._prepare_cell(c, task, *models[c.pruner])
            if prepared is not None:
                row, (module, call) = prepared
                live[c.cell_id] = (c, row, module, call)
        if not live:
            return
        reference_ids = set()
        for c in references:
            prepared = self._prepare_cell(c, task, *models[c.pruner], record=False)
            if prepared is not None:
                row, (module, call) = prepared
                live[c.cell_id] = (c, row, module, call)
                reference_ids.add(c.cell_id)
        group_id = uuid.uuid4().hex[:12]
        c0 = group[0]
        again = f" (with {len(reference_ids)} finished reference cell(s) again)" if reference_ids else ""
        threads = ", ".join(map(str, sorted({v[0].threads for v in live.values()})))
        self.reporter.message(f"timing {len(live) - len(reference_ids)} cells side by side{again}: b{c0.batch_size} "
                              f"seq {c0.seq_len} {threads} thread(s)")
        timed = self._time_group(live, reference_ids, meter, idle)
        if timed is None:
            return
        for k, (c, row, _, _) in live.items():
            fill_measurements(row, timed[k])
            row.extra["interleave_group_id"] = group_id
        # the dense fp32 cells' accuracy first: a collapsed or failed one is no "best dense" reference
        failures = {k: self._evaluate(c, task, row, None if k in reference_ids else module)
                    for k, (c, row, module, _) in live.items()
                    if is_dense_fp32(row.pruner, row.accelerator, row.extra.get("compute_precision"))}
        unusable = {k for k, f in failures.items() if f is not None or live[k][1].extra.get("collapsed")}
        for th in {c.threads for c, _, _, _ in live.values()}:
            # a reference's row is ok (references_to_retime); its "accuracy not measured" is no failure
            self._group_savings({k: (v[1], timed[k]) for k, v in live.items() if v[0].threads == th}, unusable,
                                {k for k, f in failures.items() if f is not None and k not in reference_ids})
        scaling = thread_scaling({k: (v[0], timed[k]) for k, v in live.items()}, min(self.cfg.threads), self.cfg.seed)
        for k, (_, row, _, _) in live.items():
            row.extra.update(scaling[k])
        for k, (c, row, module, _) in live.items():  # each recorded as soon as it is evaluated: a kill loses one
            if k in reference_ids:
                continue
            self._record_evaluated(row, failures[k] if k in failures else self._evaluate(c, task, row, module))

    def _time_group(self, live: dict[str, tuple[Cell, Result, nn.Module, Callable]], reference_ids: set[str], meter,
                    idle) -> dict[str, Timed] | None:
        """:func:`measure_group` over ``live``; a cell whose call raises is recorded failed with its
        own error (a reference cell is dropped) and the others are timed again without it. None
        when no cell of the group is left to record (every one failed, or the group failed as a
        whole: each then recorded with that error). ``live`` and ``reference_ids`` lose the cells
        that failed."""
        c0 = next(iter(live.values()))[0]
        while True:
            try:
                for c, row, _, _ in live.values():
                    torch.set_num_threads(c.threads)
                    row.extra.update(thread_fields(torch.get_num_threads()))
                before = snapshot()
                timed = measure_group({k: v[3] for k, v in live.items()}, c0.batch_size, self.cfg.measure, meter,
                                      idle, seed=self.cfg.seed, threads={k: v[0].threads for k, v in live.items()})
                self._contention([v[1] for v in live.values()], other_busy_cpus(before, snapshot()))
                return timed
            except CallFailed as exc:
                _, row, _, _ = live.pop(exc.key)
                if exc.key in reference_ids:
                    reference_ids.discard(exc.key)
                else:
                    self._record(row, "failed", f"{exc}\n{_tb()}")
                if not set(live) - reference_ids:
                    return None
                self.reporter.message(f"{cell_text(row)} failed: {exc}; timing the other "
                                      f"{len(live)} cell(s) again without it")
            except Exception as exc:
                for k, (c, row, _, _) in live.items():
                    if k not in reference_ids:
                        self._record(row, "failed", f"timing group: {type(exc).__name__}: {exc}\n{_tb()}")
                return None

    def _group_savings(self, cells: dict[str, tuple[Result, Timed]], unusable: set[str] = frozenset(),
                       failed: set[str] = frozenset()) -> None:
        """Same-round factors against the dense torch-fp32 cell (unless it ``failed`` its evaluation:
        then none) and the fastest dense fp32 cell that is not in ``unusable`` (collapsed, or
        failed); ``cells``: one thread count."""
        dense = {k: v for k, v in cells.items()
                 if is_dense_fp32(v[0].pruner, v[0].accelerator, v[0].extra.get("compute_precision"))}
        base = next((k for k, v in dense.items() if v[0].accelerator == BASELINE_ACCELERATOR and k not in failed), None)
        best = min((k for k in dense if k not in unusable), key=lambda k: cells[k][0].latency_p50_s or float("inf"),
                   default=None)
        for k, (row, t) in cells.items():
            if base is not None:
                row.extra.update(savings_fields(t, cells[base][1], SAVINGS_KEYS[0], self.cfg.seed))
                row.extra["baseline_cell_id"] = base
            if best is not None:
                row.extra.update(savings_fields(t, cells[best][1], SAVINGS_KEYS[1], self.cfg.seed))
                row.extra["best_dense_cell_id"] = best
                row.extra["best_dense_label"] = cells[best][0].extra.get("accelerator_label")

    def _contention(self, rows: list[Result], others: float | None) -> None:
        for row in rows:
            row.extra["other_busy_cpus"] = None if others is None else round(others, 3)
            if others is not None and others > BUSY_LIMIT_CPUS:
                row.extra["contention_flag"] = True
        if others is not None and others > BUSY_LIMIT_CPUS:
            r = rows[0]
            what = cell_text(r) if len(rows) == 1 else f"{len(rows)} cells b{r.batch_size}"
            self.reporter.message(f"warning: other processes kept {others:.2f} CPUs busy while {what} "
                                  "was timed; its latency and energy are inflated")


class PredictionCounter(nn.Module):
    """Passes calls through to ``module`` and counts its argmax predictions (classification heads),
    so that a collapsed model is named: one that predicts one class for every evaluation example,
    or whose headline metric is no better than always answering the majority class (its metric is
    then the majority-class rate, not a result of the pruning recipe)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.classes: dict[int, int] = {}
        self.num_classes = 0

    def forward(self, **inputs):
        try:
            out = self.module(**inputs)
        except SystemExit as exc:  # the prepared module is plugin code
            raise plugin_exit(exc, "the prepared module's forward (accuracy pass)") from exc
        logits = logits_of(out)
        if logits.dim() == 2 and logits.shape[-1] > 1:
            self.num_classes = int(logits.shape[-1])
            for c in logits.argmax(-1).tolist():
                self.classes[c] = self.classes.get(c, 0) + 1
        return out

    def collapse_fields(self, task: Task | None = None, metric: float | None = None) -> dict[str, Any]:
        """``collapsed`` (bool; None for regression heads) and, when collapsed, ``collapse_reason``.

        Collapsed: one predicted class for every example, or (given ``task`` and its headline
        ``metric`` on the evaluation split) ``metric`` <= the metric of the constant predictor of
        the evaluation split's majority class (accuracy: the majority-class rate; F1: the F1 of
        always answering that class; higher-is-better metrics)."""
        if not self.classes:
            return {"collapsed": None}
        if len(self.classes) == 1:
            (c, n), = self.classes.items()
            return {"collapsed": True, "collapse_reason": f"collapsed: predicts class {c} for all {n} evaluation examples"}
        if task is not None and metric is not None and not math.isnan(metric):
            base = majority_class_metric(task, self.num_classes)
            if base is not None and metric <= base[1] + 1e-12:
                return {"collapsed": True, "collapse_reason": (
                    f"collapsed: {task.metric_name} {metric:.4f} is no better than always answering the majority "
                    f"class {base[0]} ({base[1]:.4f})")}
        return {"collapsed": False}


def majority_class_metric(task: Task, num_classes: int) -> tuple[int, float] | None:
    """``(c, m)``: the evaluation split's most frequent label ``c`` and the task's headline metric
    ``m`` of the constant predictor that always answers ``c`` (for accuracy, the majority-class
    rate); None when the labels are not class ids below ``num_classes``."""
    labels = torch.tensor([e.label for e in task.eval_examples()])
    if labels.numel() == 0 or labels.is_floating_point() and not bool((labels == labels.round()).all()):
        return None
    labels = labels.long()
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        return None
    c = int(torch.bincount(labels, minlength=num_classes).argmax())
    const = torch.zeros(labels.numel(), num_classes)
    const[:, c] = 1.0
    return c, float(task.metrics(const, labels)[task.metric_name])


def _tb() -> str:
    return "".join(traceback.format_exc(limit=-3)).strip()[-1500:]
