"""The join behind ``sparsebench compare RUN_DIR...``: the same cells side by side across hardware
targets, as pandas frames (the page is :mod:`reports.compare_page`).

A **target** is one run directory's machine (``hardware.json``) with one kernel variant and one
thread count; a run whose matrix sweeps ``threads`` or ``kernel_variant`` yields one target per
value. Rows are joined across targets on their ``recipe_id`` (the cell without those two axes:
task, pruner, accelerator, batch, sequence; see :mod:`profiler.identity`), whereas ``cell_id``
also hashes threads and kernel variant. Savings factors stay within each target (its own dense
torch-fp32 baseline, :func:`reports.frame.add_savings`); cross-target ratios divide the
reference target's value for the same recipe: the first target with a cell that ran (an empty
run directory given first is no reference). No energy ratio mixes energy methods (measured vs
estimated) unless ``allow_mixed_energy`` is set, and then it is marked.

Only results files are read (``results.jsonl``, ``hardware.json``, ``manifest.json``): copying run
directories from several machines into one place is all this needs. A run on a Ray cluster
(``--executor ray``) already holds one such folder per target (:mod:`profiler.rundir`).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from profiler.hardware import cpu_display_name, has_generation, machine_keys
from reports.frame import (BASELINE_ACCELERATOR, MIN_KEPT, add_savings, collapsed_mask, is_baseline, is_flagged,
                           folder_name, kernel_variant_text, load_rows, load_run_file, positive, task_names)
from reports.html import fmt

#: the columns that describe a recipe (one value per recipe_id, whatever the target)
RECIPE_COLS = ["task", "task_key", "task_shown", "pruner", "pruner_label", "accelerator", "accelerator_label",
               "batch_size", "seq_len", "sparsity"]
#: a shape: one task (name and parameters: two text-classification data sets are two tasks), batch, seq
SHAPE_KEYS = ["task_key", "batch_size", "seq_len"]


@dataclass
class Target:
    """One hardware target: a run directory at one (kernel variant, threads)."""

    key: str
    run_dir: Path
    kernel_variant: str
    threads: int | None
    hardware: dict[str, Any]
    manifest: dict[str, Any]
    damaged_lines: list[int]
    label: str = ""
    #: fields of hardware.json / manifest.json of the wrong type, per file (:func:`reports.frame.load_run_file`)
    file_problems: dict[str, list[str]] = field(default_factory=dict)
    kernel_variant_used: str | None = None
    energy_methods: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    status_counts: dict[str, int] = field(default_factory=dict)
    noisy_cells: int = 0

    @property
    def hardware_id(self) -> str | None:
        return self.hardware.get("hardware_id")

    @property
    def sparsebench_version(self) -> str | None:
        return self.manifest.get("sparsebench_version")


@dataclass
class Comparison:
    """Everything the compare page shows, as data (tests check this, not HTML).

    ``joined``: one row per (target, recipe), every recipe for every target; a recipe a target
    lacks has ``status == "missing"``. Columns include ``target``, ``target_label``, ``recipe_id``,
    ``recipe``, the measurements, the within-target savings factors, ``energy_mixed`` (an energy
    factor computed across methods because mixing was allowed) or ``energy_factor_refused``
    (the methods that kept it from being computed), and ``latency_vs_ref`` / ``energy_vs_ref``
    (the reference target's value ÷ this target's, for the same recipe), with
    ``energy_vs_ref_mixed`` (computed across methods) or ``energy_vs_ref_refused`` ("A vs B":
    the methods that kept it from being computed). ``best``: see :func:`best_per_target`.
    ``reference``: the key of the target the cross-target ratios divide (:func:`reference_target`).
    ``notes``: what a reader should know first (:func:`compare_notes`)."""

    targets: list[Target]
    joined: pd.DataFrame
    best: pd.DataFrame
    allow_mixed_energy: bool
    energy_methods_differ: bool
    versions_differ: bool
    flags: list[str]
    reference: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def reference_target(self) -> Target | None:
        return next((t for t in self.targets if t.key == self.reference), None)


# ---- targets --------------------------------------------------------------------------------------

def _short_cpu(model: str | None) -> str:
    s = re.sub(r"\((R|TM|tm|r)\)|\bCPU\b|\bProcessor\b|@.*$|\d+-Core", "", model or "?")
    return re.sub(r"\s+", " ", s).strip() or (model or "?")


def _hw_name(hw: dict) -> str:
    if not hw:
        return "unknown hardware (no hardware.json)"
    gpus = hw.get("gpus") or []
    cpu = cpu_display_name(hw, shorten=_short_cpu)
    return f"{cpu} + {gpus[0].get('name') or 'GPU'}" if gpus else cpu


def _label_targets(targets: list[Target]) -> None:
    """Readable, unique labels: 'avx2 · 1 thread' when the hardware is the same everywhere,
    prefixed by the machine's short name when it differs, and by the target's name for a target
    folder of a Ray run (its manifest's ``target``). Ties (one machine, one axis value) get the run
    directory's folder name, then its parent's too (``x1/run``, ``x3/run``), then a number (the same
    folder given twice): the flags and the tables key targets by their label. One machine is one
    :func:`profiler.hardware.machine_keys` key, so that a run written before the x86 family entered
    the ``hardware_id`` and a newer one of the same machine read as one machine."""
    keys = dict(zip((t.key for t in targets), machine_keys([t.hardware for t in targets])))
    same_hw = len(set(keys.values())) <= 1
    names: dict[str | None, str] = {}
    # a machine's name from its most informative file: one with the x86 family where any has it
    for t in sorted(targets, key=lambda t: has_generation(t.hardware)):
        names[keys[t.key]] = _hw_name(t.hardware)
    clash = len(set(names.values())) < len(names)
    for t in targets:
        parts = [str(t.manifest["target"])] if t.manifest.get("target") else []
        if not same_hw:
            parts.append(names[keys[t.key]] + (f" [{keys[t.key]}]" if clash else ""))
        parts.append(kernel_variant_text(t.kernel_variant, t.kernel_variant_used))
        if t.threads is not None:
            parts.append(f"{t.threads} thread{'s' if t.threads != 1 else ''}")
        t.label = " · ".join(parts)
    bases = {t.key: t.label for t in targets}
    for tie in (lambda d: d.name, lambda d: f"{d.parent.name}/{d.name}"):
        counts = Counter(t.label for t in targets)
        for t in targets:
            if counts[t.label] > 1:
                t.label = f"{bases[t.key]} ({tie(Path(t.run_dir).resolve()) or folder_name(t.run_dir)})"
    counts, seen = Counter(t.label for t in targets), Counter()
    for t in targets:
        if counts[t.label] > 1:
            seen[t.label] += 1
            t.label += f" #{seen[t.label]}" if seen[t.label] > 1 else ""


def _describe(t: Target, g: pd.DataFrame) -> None:
    """Fill a target's summary fields from its rows."""
    t.kernel_variant_used = ", ".join(sorted(map(str, g["kernel_variant_used"].dropna().unique()))) or None
    ok = g[g["status"] == "ok"]
    t.energy_methods = sorted(ok["energy_method"].dropna().unique()) if "energy_method" in ok else []
    t.devices = sorted(g["device"].dropna().unique()) if "device" in g else ["cpu"]
    t.status_counts = {str(k): int(v) for k, v in g["status"].value_counts().items()}
    t.noisy_cells = sum(is_flagged(v) for v in ok.get("latency_spread_flag", pd.Series(dtype=object)))


def _load_targets(run_dirs: Sequence[Path], allow_mixed_energy: bool) -> tuple[list[Target], list[pd.DataFrame]]:
    """One Target per (run directory, kernel variant, threads) and its rows with savings factors."""
    targets, frames = [], []
    for run_dir in map(Path, run_dirs):
        df, damaged = load_rows(run_dir)
        (hw, hw_problems), (manifest, manifest_problems) = (load_run_file(run_dir, n) for n in ("hardware.json", "manifest.json"))
        groups = [((None, None), df)] if df.empty else list(df.groupby(["kernel_variant", "threads"], sort=True))
        for (kv, th), g in groups:
            t = Target(key=f"T{len(targets) + 1}", run_dir=run_dir, kernel_variant=kv or "auto",
                       threads=None if th is None else int(th), hardware=hw, manifest=manifest, damaged_lines=damaged,
                       file_problems={"hardware.json": hw_problems, "manifest.json": manifest_problems})
            if not g.empty:
                _describe(t, g)
                g = add_savings(g, allow_mixed_energy).assign(target=t.key)
            targets.append(t)
            frames.append(g)
    _label_targets(targets)
    return targets, frames


# ---- the join -------------------------------------------------------------------------------------

def _recipe_label(r: pd.Series, many_tasks: bool) -> str:
    lab = f"{r['pruner_label']} + {r['accelerator_label']} · b{int(r['batch_size'])} s{int(r['seq_len'])}"
    return f"{r['task_shown']}: {lab}" if many_tasks else lab


def _recipes(long: pd.DataFrame) -> pd.DataFrame:
    """One row per recipe_id (index): RECIPE_COLS plus ``recipe``, a unique readable label;
    ordered by shape, the dense baseline first, then sparsity, pruner and accelerator."""
    many_tasks = long["task_key"].nunique() > 1
    recipes = long.drop_duplicates("recipe_id").set_index("recipe_id")[RECIPE_COLS]
    recipes["recipe"] = [_recipe_label(r, many_tasks) for _, r in recipes.iterrows()]
    dup = recipes["recipe"].duplicated(keep=False)  # configurations differing in a parameter the labels omit
    recipes.loc[dup, "recipe"] = recipes.loc[dup, "recipe"] + " [" + recipes.index[dup].str[:6] + "]"
    recipes["_base"] = ~is_baseline(recipes)
    recipes["_acc"] = recipes["accelerator"] != BASELINE_ACCELERATOR
    recipes = recipes.sort_values(["task_shown", "batch_size", "seq_len", "_base", "sparsity", "pruner_label", "_acc", "accelerator"])
    return recipes.drop(columns=["_base", "_acc"])


def _grid(targets: list[Target], frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Every recipe for every target (the last row wins where a target has one twice)."""
    present = [f for f in frames if not f.empty]
    if not present:
        return pd.DataFrame(columns=["target", "recipe_id", "status"])
    long = pd.concat(present, ignore_index=True).drop_duplicates(["target", "recipe_id"], keep="last")
    long["task_shown"] = task_names(long)
    recipes = _recipes(long)
    grid = pd.MultiIndex.from_product([[t.key for t in targets], recipes.index], names=["target", "recipe_id"])
    joined = long.set_index(["target", "recipe_id"]).drop(columns=RECIPE_COLS)
    joined = joined.reindex(grid).reset_index().join(recipes, on="recipe_id")
    joined["status"] = joined["status"].fillna("missing")
    return joined


def _vs_reference(joined: pd.DataFrame, ref: str, allow_mixed: bool) -> None:
    """Fill ``latency_vs_ref`` / ``energy_vs_ref`` (reference target's value ÷ this row's) in place."""
    refs = joined[(joined["target"] == ref) & (joined["status"] == "ok")].set_index("recipe_id")
    for i, r in joined.iterrows():
        if r["status"] != "ok" or r["recipe_id"] not in refs.index:
            continue
        b = refs.loc[r["recipe_id"]]
        if positive(b.get("latency_p50_s")) and positive(r.get("latency_p50_s")):
            joined.at[i, "latency_vs_ref"] = b["latency_p50_s"] / r["latency_p50_s"]
        if positive(b.get("energy_j_per_inference")) and positive(r.get("energy_j_per_inference")):
            same = b.get("energy_method") == r.get("energy_method")
            if same or allow_mixed:
                joined.at[i, "energy_vs_ref"] = b["energy_j_per_inference"] / r["energy_j_per_inference"]
                joined.at[i, "energy_vs_ref_mixed"] = not same
            else:
                joined.at[i, "energy_vs_ref_refused"] = f"{b.get('energy_method')} vs {r.get('energy_method')}"


def reference_target(targets: list[Target]) -> Target | None:
    """The target cross-target ratios divide: the first with a cell that ran (status ok), else
    the first target (None without targets). A run directory without results, given first,
    would leave every ratio missing."""
    return next((t for t in targets if t.status_counts.get("ok")), targets[0] if targets else None)


def _join(targets: list[Target], frames: list[pd.DataFrame], allow_mixed_energy: bool) -> pd.DataFrame:
    joined = _grid(targets, frames)
    joined["target_label"] = joined["target"].map({t.key: t.label for t in targets})
    for col in ("latency_savings_factor", "energy_savings_factor", "accuracy_kept", "latency_vs_ref", "energy_vs_ref"):
        joined[col] = joined[col].astype(float) if col in joined else float("nan")
    joined["energy_mixed"] = joined["energy_mixed"].fillna(False).astype(bool) if "energy_mixed" in joined else False
    joined["energy_vs_ref_mixed"] = False
    joined["energy_vs_ref_refused"] = pd.Series([None] * len(joined), index=joined.index, dtype=object)
    if "energy_factor_refused" not in joined:
        joined["energy_factor_refused"] = None
    if not joined.empty and targets:
        _vs_reference(joined, reference_target(targets).key, allow_mixed_energy)
    return joined


# ---- flags ----------------------------------------------------------------------------------------

def _energy_flag(targets: list[Target], allow_mixed_energy: bool) -> str | None:
    """Why energy ratios are (or would be) across methods; None when every target uses one."""
    method_sets = {t.label: tuple(t.energy_methods) for t in targets if t.energy_methods}
    between = len(set(method_sets.values())) > 1
    if not between and not any(len(ms) > 1 for ms in method_sets.values()):
        return None
    per = "; ".join(f"{label}: {', '.join(v)}" for label, v in method_sets.items())
    return (f"Energy methods differ {'between targets' if between else 'within a target'} ({per}). "
            + ("Energy ratios across methods are shown because --allow-mixed-energy was given, and are marked ⚠ mixed."
               if allow_mixed_energy else
               "No energy ratio mixes methods: those are left out (shown as 'mixed'); pass --allow-mixed-energy to show them, marked."))


def _version_flag(targets: list[Target], joined: pd.DataFrame) -> str | None:
    """Which sparsebench versions wrote the runs (manifests and rows); None when one did."""
    versions = {t.label: t.sparsebench_version for t in targets}
    row_versions = set(joined["sparsebench_version"].dropna().unique()) if "sparsebench_version" in joined else set()
    if len(set(versions.values()) | row_versions) <= 1:
        return None
    return ("Runs made by different sparsebench versions: " + "; ".join(f"{k}: {v or 'unknown'}" for k, v in versions.items())
            + (f" (rows: {', '.join(sorted(map(str, row_versions)))})" if row_versions - set(versions.values()) else "")
            + ". Cell definitions and measurement rules may differ between them.")


def _measure_flag(targets: list[Target]) -> str | None:
    measures = {json.dumps((t.manifest.get("config") or {}).get("measure"), sort_keys=True) for t in targets if t.manifest}
    if len(measures) <= 1:
        return None
    return "The runs used different [measure] settings (warm-up, iterations, windows); latency and energy are less comparable."


# ---- results --------------------------------------------------------------------------------------

def best_per_target(joined: pd.DataFrame, min_kept: float = MIN_KEPT) -> pd.DataFrame:
    """Per target and shape (task, batch, seq): the configuration with the highest latency savings
    factor among cells keeping at least ``min_kept`` of the dense fp32 metric (energy factor breaks
    ties). The dense baseline itself qualifies, so a shape with a baseline always has a winner.

    Cells whose latency spread is flagged (IQR/median > 10 %) do not win while a steady cell
    qualifies; ``noisy_skipped`` names those that would have, ``noisy`` marks a winner that is
    itself noisy or whose baseline is. A collapsed model (``collapsed``: it predicts one class, or
    does no better than the majority class) never wins, whatever its metric."""
    ok = joined[(joined["status"] == "ok") & joined["latency_savings_factor"].notna() & (joined["accuracy_kept"] >= min_kept)
                & ~collapsed_mask(joined)]
    spread = joined["latency_spread_flag"] if "latency_spread_flag" in joined else pd.Series(False, index=joined.index)
    rows = []
    for _, g in ok.groupby(["target"] + SHAPE_KEYS, sort=False):
        g = g.assign(_e=g["energy_savings_factor"].fillna(-1.0), _noisy=[is_flagged(v) for v in spread.loc[g.index]])
        g = g.sort_values(["latency_savings_factor", "_e"], ascending=False)
        steady = g[~g["_noisy"]]
        w = (steady if not steady.empty else g).iloc[0]
        base = g[is_baseline(g)]
        skipped = g[g["_noisy"] & (g["latency_savings_factor"] > w["latency_savings_factor"])]
        out = {k: w.get(k) for k in ("target", "target_label", "task", "task_key", "task_shown", "batch_size", "seq_len",
                                     "recipe_id", "recipe",
                                     "pruner_label", "accelerator_label", "latency_savings_factor",
                                     "energy_savings_factor", "energy_method", "accuracy", "accuracy_kept",
                                     "latency_p50_s", "energy_j_per_inference")}
        out["noisy"] = bool(w["_noisy"]) or bool(base["_noisy"].any())
        out["noisy_skipped"] = "; ".join(f"{r['pruner_label']} + {r['accelerator_label']} ({fmt(r['latency_savings_factor'], 3)}×)"
                                         for _, r in skipped.iterrows())
        rows.append(out)
    return pd.DataFrame(rows)


def build_compare(run_dirs: Sequence[Path], allow_mixed_energy: bool = False) -> Comparison:
    """Load every run directory and join them (pure: reads files, writes nothing).

    Raises ValueError when ``run_dirs`` is empty; a directory without results yields a target
    with no rows."""
    if not run_dirs:
        raise ValueError("compare needs at least one run directory")
    targets, frames = _load_targets(run_dirs, allow_mixed_energy)
    joined = _join(targets, frames, allow_mixed_energy)
    energy, version = _energy_flag(targets, allow_mixed_energy), _version_flag(targets, joined)
    flags = [f for f in (energy, version, _measure_flag(targets)) if f]
    best = best_per_target(joined) if not joined.empty and "accuracy_kept" in joined else pd.DataFrame()
    ref = reference_target(targets)
    return Comparison(targets, joined, best, allow_mixed_energy, energy is not None, version is not None, flags,
                      reference=ref.key if ref else None, notes=compare_notes(targets, frames))


# ---- notes ----------------------------------------------------------------------------------------

def compare_notes(targets: list[Target], frames: list[pd.DataFrame]) -> list[str]:
    """What a reader of the comparison should know first, one sentence each: one target only;
    targets without a result row; a reference target other than the first (the first has no cell
    that ran: :func:`reference_target`); targets that have rows but no cell in
    common (every row of one is missing on the others), with what differs between them: the task
    parameters of a task run under several (``tiny-synthetic [6da2fe] vs [f16d72]: hidden_size 64
    vs 36``), tasks, pruners, accelerators, batch sizes, sequence lengths. ``frames`` are the
    targets' rows, in order (:func:`_load_targets`)."""
    notes = []
    dirs = {Path(t.run_dir).resolve() for t in targets}
    if len(dirs) < 2 and len(targets) < 2:
        return [f"one run directory ({targets[0].run_dir}): the page lists its cells with no second target to compare with"] if targets else []
    empty = [t for t, f in zip(targets, frames) if f.empty]
    if empty:
        notes.append("no result rows in " + ", ".join(f"{t.key} ({t.run_dir})" for t in empty)
                     + ": every configuration is missing there")
    ref = reference_target(targets)
    if ref is not targets[0]:
        notes.append(f"{targets[0].key} has no cell that ran: the ratios across targets divide {ref.key} ({ref.label}), "
                     "the first target with one")
    full = [(t, f) for t, f in zip(targets, frames) if not f.empty]
    if len(full) >= 2 and not set.intersection(*(set(f["recipe_id"]) for _, f in full)):
        notes.append(f"{', '.join(t.key for t, _ in full)} have no cell in common: every row of one target is missing on the others"
                     + (f"; they differ in {'; '.join(why)}" if (why := _differences(full)) else ""))
    return notes


def _differences(full: list[tuple[Target, pd.DataFrame]]) -> list[str]:
    """What keeps targets from sharing a cell: task parameters (per task name run under several
    parameter sets: the keys whose values differ), then each recipe axis whose values differ."""
    rows = pd.concat([f.assign(_target=t.key) for t, f in full], ignore_index=True)
    out = []
    params = rows["task_params"] if "task_params" in rows else pd.Series([None] * len(rows), index=rows.index)
    for task, g in rows.assign(_params=params).groupby("task", sort=True):
        if g["task_key"].nunique() < 2:
            continue
        per_key = {k: (p if isinstance(p, dict) else {}) for k, p in zip(g["task_key"], g["_params"])}
        keys = sorted({name for p in per_key.values() for name in p})
        differ = [name for name in keys if len({json.dumps(p.get(name), sort_keys=True, default=str) for p in per_key.values()}) > 1]
        shown = " vs ".join(f"[{k[:6]}]" for k in per_key)
        values = ", ".join(f"{name} " + " vs ".join(_param_text(p.get(name)) for p in per_key.values()) for name in differ)
        out.append(f"task parameters of {task} {shown}: {values or 'parameters not recorded'}")
    for col, name in (("task", "tasks"), ("pruner_label", "pruners"), ("accelerator_label", "accelerators"),
                      ("batch_size", "batch sizes"), ("seq_len", "sequence lengths")):
        sets = {t: sorted(map(str, set(g[col].dropna()))) for t, g in rows.groupby("_target", sort=False)}
        if len({tuple(v) for v in sets.values()}) > 1:
            out.append(f"{name} (" + "; ".join(f"{t}: {', '.join(v) or '?'}" for t, v in sets.items()) + ")")
    return out


def _param_text(v: Any) -> str:
    """A task parameter's value as the note shows it (a missing one as "unset")."""
    return "unset" if v is None else v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)


def joined_frame(run_dirs: Sequence[Path], allow_mixed_energy: bool = False) -> pd.DataFrame:
    """The joined DataFrame alone (see :class:`Comparison`)."""
    return build_compare(run_dirs, allow_mixed_energy).joined
