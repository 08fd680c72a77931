"""TOML config → validated :class:`Config` → list of :class:`Cell` (the profiling matrix).

Everything is checked before any work starts: an unknown section, key, plugin name or
parameter, or a value a plugin rejects, raises :class:`ConfigError` naming the key and the
valid choices.

A list value for a scalar plugin parameter is a sweep: ``sparsity = [0.5, 0.7, 0.9]`` expands
into three pruners. ``[targets]`` and ``[ray]`` (where a run on a Ray cluster puts its cells) are
checked by :mod:`profiler.targets`; they leave the cells and their ids unchanged.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
import typing
from typing import Annotated, Any

from accelerators.base import KERNEL_VARIANTS
from accelerators.params import Range, number_problem
from profiler import identity
from profiler.energy import ENERGY_METHODS
from profiler.errors import ConfigError
from profiler.identity import BASELINE_ACCELERATOR, BASELINE_PRUNER, stable_hash
from profiler.labels import distinct_labels, plugin_label
from profiler.plugins import ACCELERATORS, METERS, PRUNERS, TASKS
from profiler.registry import Registry
from profiler.targets import RaySettings, parse_ray, parse_targets

#: values of ``matrix.kernel_variant``: "auto" (the best this CPU has, short of the opt-in "amx") or a forced variant
MATRIX_KERNEL_VARIANTS = ("auto",) + KERNEL_VARIANTS
SCHEDULES = ("interleaved", "sequential")
MAX_THREADS = 256  # torch.set_num_threads crashes the interpreter far above any real core count
MAX_SEQ_LEN = 512  # position embeddings of BERT-family models
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: a file name has at most 255 bytes; the run directory adds "-YYYYmmdd-HHMMSS" and maybe "-N"
MAX_NAME_CHARS = 200
MAX_SEED = 2**32 - 1  # numpy's seed limit; torch and random accept it too
DAY_S = 86_400.0  # no timed loop or idle window of one cell should need longer


@dataclass(frozen=True)
class PluginSpec:
    """A plugin chosen by the config: registry ``kind``, ``name``, full params (defaults filled)."""

    kind: str
    name: str
    params: dict[str, Any]
    key: str
    #: the label when :func:`~profiler.labels.plugin_label` alone would not tell it from another spec
    shown: str | None = field(default=None, compare=False)

    def canonical(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params}

    def label(self) -> str:
        return self.shown or plugin_label(self.name, self.params)

    def __hash__(self) -> int:
        return hash(stable_hash(self.canonical()))


@dataclass
class MeasureSpec:
    """Measurement protocol. Seconds throughout.

    warmup_iters: untimed calls before timing. min_iters / min_seconds: the timed loop runs until
    both are reached (and the energy window is at least 10× the meter's resolution);
    max_seconds: interleaved, a group stops once any of its cells has this many timed seconds (and
    min_iters), so a slow cell does not hold the others at min_seconds; sequential cells stop at
    min_iters and min_seconds (config validation keeps max_seconds >= min_seconds). idle_seconds: idle-power window before the matrix.
    eval_batch_size: batch size of the (untimed) accuracy pass.
    schedule: ``"interleaved"`` (default: cells of one task and shape are timed side by side in
    rounds, :mod:`profiler.interleave`; min/max bounds apply per cell, summed over its visits) or
    ``"sequential"`` (one cell after the other). visit_seconds: timed seconds per visit;
    min_rounds: rounds at least (the savings factors' medians and intervals are over rounds).
    interleave_threads: interleaved, every thread count of a shape shares the rounds (thread
    scaling is then a same-round factor); ``False``: one group per thread count, which holds fewer
    prepared models in memory at once.
    Each number's range is declared next to it and checked by :func:`parse_config`, as are
    ``min_seconds <= max_seconds`` and ``visit_seconds <= max_seconds``.
    """

    warmup_iters: Annotated[int, Range(0, 1_000_000)] = 5
    min_iters: Annotated[int, Range(1, 100_000_000)] = 20
    min_seconds: Annotated[float, Range(0.0, DAY_S)] = 2.0
    max_seconds: Annotated[float, Range(0.0, DAY_S, lo_open=True)] = 60.0
    idle_seconds: Annotated[float, Range(0.0, 3600.0)] = 2.0
    eval_batch_size: Annotated[int, Range(1, 65536)] = 64
    schedule: str = "interleaved"
    visit_seconds: Annotated[float, Range(0.0, 3600.0, lo_open=True)] = 0.2
    min_rounds: Annotated[int, Range(1, 100_000)] = 7
    interleave_threads: bool = True


@dataclass
class Config:
    name: str
    seed: int
    output_dir: str
    tasks: list[PluginSpec]
    pruners: list[PluginSpec]
    accelerators: list[PluginSpec]
    meter: PluginSpec
    batch_sizes: list[int]
    seq_lens: list[int]
    threads: list[int]
    kernel_variants: list[str]
    measure: MeasureSpec
    #: ``[targets]``: target name -> Ray label selector (None: one per value of the node label
    #: ``sparsebench.target``); read by the Ray executor only (:mod:`profiler.targets`)
    targets: dict[str, dict[str, str]] | None = None
    #: ``[ray]``: fault settings of the Ray executor
    ray: RaySettings = field(default_factory=RaySettings)
    raw: dict[str, Any] = field(default_factory=dict)
    #: ``run.training_threads``: torch threads of fine-tuning and training-time pruning (None: the
    #: count torch had when the run started, i.e. its default or ``OMP_NUM_THREADS``), apart from the
    #: matrix's ``threads``, which only the timed cells use
    training_threads: int | None = None


@dataclass(frozen=True)
class Cell:
    """One point of the matrix. Its ids (:mod:`profiler.identity`) are short hashes of its config,
    stable across runs and machines: ``cell_id`` of every axis (resume is exact), ``recipe_id``
    without threads and kernel variant (cross-target joins), ``model_id`` of what the predictions
    depend on (accuracy reuse)."""

    task: PluginSpec
    pruner: PluginSpec
    accelerator: PluginSpec
    batch_size: int
    seq_len: int
    threads: int
    kernel_variant: str = "auto"

    def canonical(self) -> dict[str, Any]:
        return {
            "task": self.task.canonical(), "pruner": self.pruner.canonical(),
            "accelerator": self.accelerator.canonical(), "batch_size": self.batch_size,
            "seq_len": self.seq_len, "threads": self.threads, "kernel_variant": self.kernel_variant,
        }

    @property
    def cell_id(self) -> str:
        return identity.cell_id(self.canonical())

    @property
    def recipe_id(self) -> str:
        return identity.recipe_id(self.task.canonical(), self.pruner.canonical(), self.accelerator.canonical(),
                                  self.batch_size, self.seq_len)

    @property
    def model_id(self) -> str:
        return identity.model_id(self.task.canonical(), self.pruner.canonical(), self.accelerator.canonical(),
                                 self.kernel_variant)


SECTIONS = {"run", "measure", "meter", "tasks", "pruners", "accelerators", "matrix", "targets", "ray"}
RUN_KEYS = {"name", "seed", "output_dir", "training_threads"}
MATRIX_KEYS = {"batch_size", "seq_len", "threads", "kernel_variant"}


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v


#: pruner parameters whose list is a set: its order changes nothing that is pruned (a role picks
#: layers, :func:`pruners.base.validate_roles`), so two cells apart only in it are one cell
UNORDERED_PRUNER_PARAMS = ("roles",)


def _comparable(v: Any) -> Any:
    """``v`` in a form where values that set a plugin up the same way compare equal: ``0`` and ``0.0``
    (TOML reads a number without a point as an integer), a table's keys in any order; ``True``
    stays apart from ``1``. Only for refusing duplicates: ids and cache keys hash ``v`` as written."""
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, dict):
        return tuple(sorted((k, _comparable(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_comparable(x) for x in v)
    try:
        hash(v)
    except TypeError:  # an API caller's object (an array ...): told apart as the cell id tells it, by str()
        return ("str", str(v))
    return v


def _sameness(spec: PluginSpec) -> Any:
    """What tells ``spec`` from another spec of its section (:func:`_comparable` of its params, a
    pruner's :data:`UNORDERED_PRUNER_PARAMS` as sets)."""
    params = dict(spec.params)
    if spec.kind == PRUNERS.kind:
        for p in UNORDERED_PRUNER_PARAMS:
            if isinstance(params.get(p), list):
                params[p] = sorted(params[p], key=repr)
    return spec.name, _comparable(params)


def _is_list_param(registry: Registry, name: str, param: str) -> bool:
    ann = str(registry.params(name)[param].annotation)
    return any(t in ann.lower() for t in ("list", "tuple", "sequence"))


def _plugins(registry: Registry, raw: Any, key: str) -> list[PluginSpec]:
    """Expand one table (or array of tables) of plugin entries, with sweeps, into PluginSpecs."""
    entries = raw if isinstance(raw, list) else [raw]
    if key == "meter" and isinstance(raw, list):
        raise ConfigError("meter: give one [meter] table, not an array of tables")
    if not entries:
        raise ConfigError(f"{key}: at least one entry is needed; valid choices: {', '.join(registry.names())}")
    specs: list[PluginSpec] = []
    for i, entry in enumerate(entries):
        k = f"{key}[{i}]" if isinstance(raw, list) else key
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"{k}: needs a 'name'; valid choices: {', '.join(registry.names())}")
        name = entry["name"]
        registry.get(name, f"{k}.name")
        params = {p: v for p, v in entry.items() if p != "name"}
        valid = registry.params(name)
        for p in params:
            if p not in valid:
                raise ConfigError(f"{k}.{p}: unknown parameter for {registry.kind} {name!r}; valid parameters: {', '.join(sorted(valid)) or '(none)'}")
        sweep_keys = [p for p, v in params.items() if isinstance(v, list) and not _is_list_param(registry, name, p)]
        if key == "meter" and sweep_keys:  # one meter measures every cell: a sweep would be dropped silently
            raise ConfigError(f"{k}.{sweep_keys[0]}: the meter takes one value, not a list (one meter measures every cell)")
        for p in sweep_keys:
            if not params[p]:
                raise ConfigError(f"{k}.{p}: an empty sweep; give a value or a non-empty list")
            values = [_comparable(v) for v in params[p]]
            twice = next(((a, b) for i, (a, cmp_a) in enumerate(zip(params[p], values))
                          for b, cmp_b in zip(params[p][i + 1:], values[i + 1:]) if cmp_a == cmp_b), None)
            if twice:  # 0 and 0.0 too: one model, pruned (or trained) twice under two cell ids
                raise ConfigError(f"{k}.{p}: the sweep lists the same value twice ({twice[0]!r} and {twice[1]!r}); "
                                  "each cell must be unique")
        for values in itertools.product(*(params[p] for p in sweep_keys)) if sweep_keys else [()]:
            concrete = {**params, **dict(zip(sweep_keys, values))}
            registry.build(name, concrete, k)  # validates every value now, before any work
            full = {p: _jsonable(v.default) for p, v in valid.items() if v.default is not v.empty}
            full.update({p: _jsonable(v) for p, v in concrete.items()})
            for p in getattr(registry.get(name), "late_params", ()):
                # added after cells and models were keyed: at its default it stays out of the keys
                if p in full and full[p] == _jsonable(valid[p].default):
                    del full[p]
            specs.append(PluginSpec(registry.kind, name, full, k))
    return specs


def _check_meter(spec: PluginSpec) -> PluginSpec:
    """``spec`` once its meter's class attributes keep the meter contract: ``method`` one of
    :data:`~profiler.energy.ENERGY_METHODS`, ``resolution_s`` a finite number of seconds > 0 and
    ``max_safe_window_s`` None or one. A third-party meter's mistake there would otherwise label
    every row's energy wrongly or stretch every timing window; raises ConfigError naming the
    meter and the valid values, before any work."""
    meter = METERS.build(spec.name, spec.params, spec.key)
    who = f"{spec.key}.name: energy meter {spec.name!r} ({METERS.source(spec.name)})"
    method = getattr(meter, "method", None)
    if not isinstance(method, str) or method not in ENERGY_METHODS:
        raise ConfigError(f"{who} has method {method!r}; valid methods: {', '.join(ENERGY_METHODS)}")
    for attr, optional in (("resolution_s", False), ("max_safe_window_s", True)):
        v = getattr(meter, attr, None)
        if v is None and optional:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ConfigError(f"{who} has {attr} {v!r}; it must be a finite number of seconds > 0"
                              + (" (or None)" if optional else ""))
    return spec


def _int_list(raw: dict, key: str, default: list[int], minimum: int = 1, maximum: int = 1 << 20) -> list[int]:
    v = raw.get(key, default)
    v = v if isinstance(v, list) else [v]
    if not v or any(isinstance(x, bool) or not isinstance(x, int) or not minimum <= x <= maximum for x in v):
        raise ConfigError(f"matrix.{key}: must be an integer in [{minimum}, {maximum}] or a non-empty list of them, got {raw.get(key)!r}")
    if len(set(v)) != len(v):
        raise ConfigError(f"matrix.{key}: duplicate values in {v!r}")
    return v


def _table(raw: dict, key: str) -> dict:
    v = raw.get(key, {})
    if not isinstance(v, dict):
        raise ConfigError(f"{key}: must be a table ([{key}]), got {v!r}")
    return v


def _measure(m: dict[str, Any]) -> MeasureSpec:
    """The ``[measure]`` table as a MeasureSpec: every number of its type, finite, inside the
    range declared on its field, and consistent with its siblings. Raises ConfigError naming the key."""
    hints = typing.get_type_hints(MeasureSpec, include_extras=True)
    for k, v in m.items():
        if k not in hints:
            raise ConfigError(f"measure.{k}: unknown key; valid keys: {', '.join(hints)}")
        if k == "schedule":
            if v not in SCHEDULES:
                raise ConfigError(f"measure.schedule: must be one of {', '.join(SCHEDULES)}, got {v!r}")
            continue
        if hints[k] is bool:
            if not isinstance(v, bool):
                raise ConfigError(f"measure.{k}: must be true or false, got {v!r}")
            continue
        base, rng = hints[k].__origin__, hints[k].__metadata__[0]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (base is int and not isinstance(v, int)):
            raise ConfigError(f"measure.{k}: must be {'an integer' if base is int else 'a number'} in {rng}, got {v!r}")
        problem = number_problem(v, rng)
        if problem:
            raise ConfigError(f"measure.{k}: {problem}")
    spec = MeasureSpec(**m)
    for k in ("min_seconds", "visit_seconds"):
        if getattr(spec, k) > spec.max_seconds:
            raise ConfigError(f"measure.{k}: must be <= measure.max_seconds ({spec.max_seconds}), got {getattr(spec, k)!r}")
    return spec


def parse_config(raw: dict[str, Any]) -> Config:
    """Validate a config dict (as read from TOML). Raises ConfigError before any work starts."""
    unknown = set(raw) - SECTIONS
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown section; valid sections: {', '.join(sorted(SECTIONS))}")
    run = _table(raw, "run")
    for k in run:
        if k not in RUN_KEYS:
            raise ConfigError(f"run.{k}: unknown key; valid keys: {', '.join(sorted(RUN_KEYS))}")
    if not isinstance(run.get("name", "run"), str) or not NAME_PATTERN.match(run.get("name", "run")):
        raise ConfigError(f"run.name: letters, digits, '.', '_' and '-' only (it names the run directory), got {run.get('name')!r}")
    if len(run.get("name", "run")) > MAX_NAME_CHARS:
        raise ConfigError(f"run.name: at most {MAX_NAME_CHARS} characters (with its time stamp it names the run "
                          f"directory), got {len(run['name'])}")
    seed = run.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"run.seed: must be an integer in [0, {MAX_SEED}], got {seed!r}")
    output_dir = run.get("output_dir", "runs")
    if not isinstance(output_dir, str) or "\0" in output_dir or not output_dir.strip():
        raise ConfigError(f"run.output_dir: must be a folder path (a non-empty string without NUL), got {output_dir!r}")
    training_threads = run.get("training_threads")
    if training_threads is not None and (isinstance(training_threads, bool) or not isinstance(training_threads, int)
                                         or not 1 <= training_threads <= MAX_THREADS):
        raise ConfigError(f"run.training_threads: must be an integer in [1, {MAX_THREADS}], got {training_threads!r}")
    measure = _measure(_table(raw, "measure"))
    matrix = _table(raw, "matrix")
    for k in matrix:
        if k not in MATRIX_KEYS:
            raise ConfigError(f"matrix.{k}: unknown key; valid keys: {', '.join(sorted(MATRIX_KEYS))}")
    variants = matrix.get("kernel_variant", ["auto"])
    variants = variants if isinstance(variants, list) else [variants]
    if not variants or len(set(map(str, variants))) != len(variants):
        raise ConfigError(f"matrix.kernel_variant: a non-empty list without duplicates; valid choices: {', '.join(MATRIX_KERNEL_VARIANTS)}")
    for v in variants:
        if v not in MATRIX_KERNEL_VARIANTS:
            raise ConfigError(f"matrix.kernel_variant: unknown variant {v!r}; valid choices: {', '.join(MATRIX_KERNEL_VARIANTS)}")
    for section in ("tasks", "pruners", "accelerators"):
        if section not in raw:
            raise ConfigError(f"{section}: missing section ([[{section}]] tables)")
        if not isinstance(raw[section], (list, dict)):
            raise ConfigError(f"{section}: must be [[{section}]] tables, got {raw[section]!r}")
    cfg = Config(
        name=str(run.get("name", "run")),
        seed=int(run.get("seed", 0)),
        output_dir=str(run.get("output_dir", "runs")),
        tasks=_plugins(TASKS, raw["tasks"], "tasks"),
        pruners=_told_apart(_plugins(PRUNERS, raw["pruners"], "pruners")),
        accelerators=_told_apart(_plugins(ACCELERATORS, raw["accelerators"], "accelerators")),
        meter=_check_meter(_plugins(METERS, raw.get("meter", {"name": "auto"}), "meter")[0]),
        batch_sizes=_int_list(matrix, "batch_size", [1], maximum=65536),
        seq_lens=_int_list(matrix, "seq_len", [128], minimum=2, maximum=MAX_SEQ_LEN),
        threads=_int_list(matrix, "threads", [1], maximum=MAX_THREADS),
        kernel_variants=variants,
        measure=measure,
        targets=parse_targets(raw["targets"]) if "targets" in raw else None,
        ray=parse_ray(raw.get("ray", {})),
        raw=raw,
        training_threads=training_threads,
    )
    for section in ("tasks", "pruners", "accelerators"):
        seen: dict[Any, PluginSpec] = {}
        for spec in getattr(cfg, section):
            h = _sameness(spec)
            if h in seen and seen[h].key == spec.key:  # one table's sweep expanded to the same values twice
                raise ConfigError(f"{spec.key}: a swept parameter lists the same value twice ({spec.label()}); "
                                  "each cell must be unique")
            if h in seen:
                same = seen[h]
                how = "" if stable_hash(same.canonical()) == stable_hash(spec.canonical()) else (
                    f" is {same.label()} written another way: 0 and 0.0 are one value, roles one set in any order")
                raise ConfigError(f"{spec.key}: duplicates {same.key} ({spec.label()}{how}); each cell must be unique")
            seen[h] = spec
    _check_text_sources(cfg)
    return cfg


def _check_text_sources(cfg: Config) -> None:
    """Read every pruner's text sources (:meth:`pruners.base.Pruner.text_sources`) with every task,
    as the pruner will when it prunes: a single-sentence set for a sentence-pair task, or a bad line
    of a .txt source, is a ConfigError naming the pruner and the task before any work. Tasks are
    built (their data read) only when a pruner has text sources."""
    pruners = [(spec, PRUNERS.build(spec.name, spec.params, spec.key)) for spec in cfg.pruners]
    # a third-party pruner need not derive from Pruner: no text_sources, no text read
    readers = [(spec, tuple(p.text_sources())) for spec, p in pruners if hasattr(p, "text_sources")]
    readers = [(spec, sources) for spec, sources in readers if sources]
    if not readers:
        return
    for task_spec in cfg.tasks:
        task = TASKS.build(task_spec.name, task_spec.params, task_spec.key)
        for spec, sources in readers:
            if not hasattr(task, "unlabeled_texts"):
                raise ConfigError(f"{spec.key}: reads text sources ({', '.join(sources)}) and {task_spec.key} "
                                  f"({task_spec.label()}) cannot read them (no unlabeled_texts)")
            for source in sources:
                try:
                    task.unlabeled_texts(source)
                except ValueError as exc:
                    raise ConfigError(f"{spec.key}: {exc} ({task_spec.key}: {task_spec.label()})") from None


def _told_apart(specs: list[PluginSpec]) -> list[PluginSpec]:
    """``specs`` with :attr:`PluginSpec.shown` set where their plain labels would coincide
    (:func:`~profiler.labels.distinct_labels`), so rows, progress lines and reports tell them apart."""
    labels = distinct_labels([(s.name, s.params) for s in specs])
    return [s if label == plugin_label(s.name, s.params) else dataclasses.replace(s, shown=label)
            for s, label in zip(specs, labels)]


def check_matrix_fits_tasks(cfg: Config) -> dict[PluginSpec, Any]:
    """The matrix against every task, before any work: ``matrix.seq_len`` and the task's
    ``max_length`` within the model's position embeddings (:attr:`~profiler.tasks.base.Task.max_positions`, where the task knows
    them), a pruner that trains (or, like OBS, takes gradients) given the task's training data, and
    a block or N:M structure that tiles every weight it prunes of the task's model (its shapes: the
    model is built, not fine-tuned). Returns the tasks it built, by spec (the next checks reuse
    them). Raises ConfigError naming the key and the task."""
    from pruners.base import ALL_ROLES, prunable_linears

    pruners = [(spec, PRUNERS.build(spec.name, spec.params, spec.key)) for spec in cfg.pruners]
    trains = [(spec, p) for spec, p in pruners if getattr(p, "needs_training", False)]
    shaped = [(spec, p) for spec, p in pruners
              if getattr(getattr(p, "structure", None), "kind", "unstructured") != "unstructured"]
    built: dict[PluginSpec, Any] = {}
    for task_spec in cfg.tasks:
        task = built[task_spec] = TASKS.build(task_spec.name, task_spec.params, task_spec.key)
        where = f"{task_spec.key} ({task_spec.label()})"
        try:  # the run's task key and the dense model's cache key: a task plugin must give both before any work
            task.fingerprint()
            task.model_fingerprint()
        except NotImplementedError:
            raise ConfigError(f"{where}: the task's fingerprint() is not implemented; a task returns what "
                              "determines its rows (the dense model and its evaluation data)") from None
        except (ValueError, OSError) as exc:  # e.g. a model or data file that cannot be read
            raise ConfigError(f"{where}: {exc}") from None
        positions = getattr(task, "max_positions", None)
        if positions and max(cfg.seq_lens) > positions:
            raise ConfigError(f"matrix.seq_len: {max(cfg.seq_lens)} is longer than {where}'s model takes "
                              f"({positions} positions); use seq_len <= {positions}")
        length = getattr(task, "max_length", None)  # the tokenizer's cut for evaluation and fine-tuning
        if positions and length and length > positions:
            raise ConfigError(f"{task_spec.key}.max_length: {length} is longer than its model takes ({positions} "
                              f"positions); set max_length <= {positions}")
        if trains and not task.has_training_data():
            spec = trains[0][0]
            raise ConfigError(f"{spec.key} ({spec.label()}) trains on the task's training data and {where} has "
                              "none: give the task a train_file, or use a pruner that does not train (magnitude)")
        if not shaped:
            continue
        model = task.base_model()
        for spec, p in shaped:
            layers = prunable_linears(model, getattr(p, "roles", ALL_ROLES))
            try:
                for name, lin in layers.items():
                    p.structure.check_shape(name, lin.weight.shape)
            except ValueError as exc:
                raise ConfigError(f"{spec.key}: {exc} ({where}); choose a structure that divides the model's "
                                  "weight shapes") from None
    return built


def missing_baseline_note(cfg: Config) -> str | None:
    """What a matrix without the seed's baseline cell (pruner ``none`` under ``torch-fp32``, the
    dense model every savings factor and accuracy kept divides by) goes without; None when it has it."""
    if (any(p.name == BASELINE_PRUNER for p in cfg.pruners)
            and any(a.name == BASELINE_ACCELERATOR for a in cfg.accelerators)):
        return None
    return (f"no pruner {BASELINE_PRUNER!r} with accelerator {BASELINE_ACCELERATOR!r} in this matrix: its rows get no "
            "savings factor against the dense torch model and no accuracy kept; add both to have them")


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a TOML config; ``None`` → the packaged quickstart."""
    if path is None:
        text = (resources.files("profiler") / "data" / "quickstart.toml").read_text()
        source = "quickstart.toml (packaged)"
    else:
        text, source = read_text_file(Path(path), "config file"), str(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return parse_config(absolute_paths(raw))


# task and pruner parameters that name local files or folders (a ``model`` may also be a hub id)
PATH_PARAMS = ("model", "train_file", "eval_file", "data_dir", "distill_text")


def absolute_paths(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with every relative local path of :data:`PATH_PARAMS` in its task and pruner tables
    made absolute against the working directory (what it was read against), so that the run's
    manifest, its cell ids and ``--resume`` from another folder name the same files. A leading
    ``~`` (``~user``) is expanded first, whether or not the path exists: the stored path names one
    folder, whoever's ``$HOME`` a resume runs under, and a missing file is reported by its full path. Any other
    value that names nothing on disk (a hub id, a packaged GLUE set, a missing file for the checks
    to report) stays as written; sweeps (lists) are handled value by value."""
    from os.path import expanduser

    def fix(key: str, value: Any) -> Any:
        if isinstance(value, list):
            return [fix(key, v) for v in value]
        if isinstance(value, str) and value.startswith("~"):
            value = expanduser(value)  # unchanged for an unknown ~user: left to the checks to report
        if key == "distill_text" and isinstance(value, str) and not value.lower().endswith(".txt"):
            return value  # a packaged set's name, even where a folder of that name exists
        if isinstance(value, str) and value and not Path(value).is_absolute() and Path(value).exists():
            return str(Path(value).resolve())
        return value

    out = dict(raw)
    for section in ("tasks", "pruners"):
        tables = raw.get(section)
        if isinstance(tables, (list, dict)):  # [[tasks]] tables, or one [tasks] table
            fixed = [{k: fix(k, v) if k in PATH_PARAMS else v for k, v in t.items()} if isinstance(t, dict) else t
                     for t in (tables if isinstance(tables, list) else [tables])]
            out[section] = fixed if isinstance(tables, list) else fixed[0]
    return out


def read_text_file(path: Path, what: str) -> str:
    """The UTF-8 text of ``path`` (a leading byte-order mark dropped). Raises ConfigError naming the file: missing, a directory,
    unreadable, or not UTF-8 (with the byte offset of the first bad byte)."""
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory, not a file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} not found") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")  # a byte-order mark (Windows editors) is not part of the text
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path}: not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r})") from None


def expand(cfg: Config) -> list[Cell]:
    """All cells, grouped task → pruner → accelerator → kernel variant → threads → batch → seq."""
    return [
        Cell(t, p, a, b, s, th, kv)
        for t in cfg.tasks
        for p in cfg.pruners
        for a in cfg.accelerators
        for kv in cfg.kernel_variants
        for th in cfg.threads
        for b in cfg.batch_sizes
        for s in cfg.seq_lens
    ]
