"""``sparsebench compare RUN_DIR...``: the same cells side by side across hardware targets.

A **target** is one run directory's machine (``hardware.json``) with one kernel variant and one
thread count; a run whose matrix sweeps ``threads`` or ``kernel_variant`` yields one target per
value. Rows are joined across targets on the cell's configuration *without* those two axes (the
"recipe": task, pruner, accelerator, batch, sequence): ``cell_id`` hashes threads and kernel
variant too, so it is identical across machines running one config but differs between the
targets of one machine. Savings factors stay within each target (its own dense torch-fp32
baseline, :func:`reports.frame.add_savings`); cross-target ratios divide the first target's value
for the same recipe. No energy ratio ever mixes energy methods (measured vs estimated) unless
``allow_mixed_energy`` is set, and then it is marked.

Only results files are read (``results.jsonl``, ``hardware.json``, ``manifest.json``): copying run
directories from several machines into one place is all this needs.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from reports.frame import BASELINE_ACCELERATOR, BASELINE_PRUNER, add_savings, load_json, load_rows
from reports.html import badge, esc, figure, fmt, page, table

#: accuracy kept (cell metric ÷ dense fp32 metric) a configuration needs to count as a winner
MIN_KEPT = 0.99
TARGET_AXES = ("threads", "kernel_variant")
MIXED = "mixed"

EXTRA_CSS = """<style>
td.gap{color:#999;font-style:italic;background:#f6f6f6} tr.diff td{background:#fff8e1}
td.win{background:#e8f5e9;font-weight:600} .tag{font-size:11px;color:#555}
.flag{background:#fde2e1;border:1px solid #f5b5b0;padding:8px;margin:8px 0}
.targets{font-size:14px} .targets li{margin:2px 0}
</style>"""


def _hash(obj: Any, n: int = 12) -> str:
    """Short sha256 of canonical JSON (the same recipe as the profiler's ``stable_hash``)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def _dict(v: Any) -> Any:
    return v if isinstance(v, dict) else None


def recipe_of(row: dict | pd.Series) -> dict[str, Any]:
    """The cell's canonical config minus the target axes (threads, kernel variant)."""
    return {
        "task": {"name": row["task"], "params": _dict(row.get("task_params"))},
        "pruner": {"name": row["pruner"], "params": _dict(row.get("pruner_params"))},
        "accelerator": {"name": row["accelerator"], "params": _dict(row.get("accelerator_params"))},
        "batch_size": int(row["batch_size"]), "seq_len": int(row["seq_len"]),
    }


def recipe_id(row: dict | pd.Series) -> str:
    return _hash(recipe_of(row), 12)


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
    ratio computed across methods because mixing was allowed), and ``latency_vs_ref`` /
    ``energy_vs_ref`` (first target's value ÷ this target's, for the same recipe)."""

    targets: list[Target]
    joined: pd.DataFrame
    best: pd.DataFrame
    allow_mixed_energy: bool
    energy_methods_differ: bool
    versions_differ: bool
    flags: list[str]


# ---- loading --------------------------------------------------------------------------------------

def _short_cpu(model: str | None) -> str:
    s = re.sub(r"\((R|TM|tm|r)\)|\bCPU\b|\bProcessor\b|@.*$|\d+-Core", "", model or "?")
    return re.sub(r"\s+", " ", s).strip() or (model or "?")


def _hw_name(hw: dict) -> str:
    if not hw:
        return "unknown hardware (no hardware.json)"
    gpus = hw.get("gpus") or []
    cpu = _short_cpu(hw.get("cpu_model"))
    return f"{cpu} + {gpus[0].get('name', 'GPU')}" if gpus else cpu


def _variant_text(t: Target) -> str:
    if t.kernel_variant == "auto" and t.kernel_variant_used and "," not in t.kernel_variant_used:
        return f"auto→{t.kernel_variant_used}"
    return t.kernel_variant


def _label_targets(targets: list[Target]) -> None:
    """Readable, unique labels: 'avx2 · 1 thread' when the hardware is the same everywhere,
    prefixed by the machine's short name when it differs; the run directory breaks ties."""
    same_hw = len({t.hardware_id for t in targets}) <= 1
    names = {t.hardware_id: _hw_name(t.hardware) for t in targets}
    clash = len(set(names.values())) < len(names)
    for t in targets:
        parts = []
        if not same_hw:
            parts.append(names[t.hardware_id] + (f" [{t.hardware_id}]" if clash else ""))
        parts.append(_variant_text(t))
        if t.threads is not None:
            parts.append(f"{t.threads} thread{'s' if t.threads != 1 else ''}")
        t.label = " · ".join(parts)
    seen: dict[str, int] = {}
    for t in targets:
        seen[t.label] = seen.get(t.label, 0) + 1
    for t in targets:
        if seen[t.label] > 1:
            t.label += f" ({t.run_dir.name})"


def _load_targets(run_dirs: Sequence[Path]) -> tuple[list[Target], list[pd.DataFrame]]:
    targets, frames = [], []
    for run_dir in map(Path, run_dirs):
        df, damaged = load_rows(run_dir)
        hw, manifest = load_json(run_dir / "hardware.json"), load_json(run_dir / "manifest.json")
        groups = [((None, None), df)] if df.empty else list(df.groupby(["kernel_variant", "threads"], sort=True))
        for (kv, th), g in groups:
            t = Target(key=f"T{len(targets) + 1}", run_dir=run_dir, kernel_variant=kv or "auto",
                       threads=None if th is None else int(th), hardware=hw, manifest=manifest, damaged_lines=damaged)
            if not g.empty:
                used = g["kernel_variant_used"].dropna().unique() if "kernel_variant_used" in g else []
                t.kernel_variant_used = ", ".join(sorted(map(str, used))) or None
                ok = g[g["status"] == "ok"]
                t.energy_methods = sorted(ok["energy_method"].dropna().unique()) if "energy_method" in ok else []
                t.devices = sorted(g["device"].dropna().unique()) if "device" in g else ["cpu"]
                t.status_counts = {str(k): int(v) for k, v in g["status"].value_counts().items()}
                t.noisy_cells = sum(_noisy(v) for v in ok.get("latency_spread_flag", pd.Series(dtype=object)))
                g = add_savings(g).assign(target=t.key)
            targets.append(t)
            frames.append(g)
    _label_targets(targets)
    return targets, frames


# ---- the join --------------------------------------------------------------------------------------

RECIPE_COLS = ["task", "pruner", "pruner_label", "accelerator", "accelerator_label", "batch_size", "seq_len", "sparsity"]


def _pruner_text(r: pd.Series) -> str:
    """The pruner's label plus its structure when not unstructured (2:4 and 1x4 differ from it)."""
    params = r.get("pruner_params") if isinstance(r.get("pruner_params"), dict) else {}
    structure = params.get("structure")
    label = str(r["pruner_label"])
    return f"{label} {structure}" if structure and structure != "unstructured" and str(structure) not in label else label


def _recipe_label(r: pd.Series, many_tasks: bool) -> str:
    lab = f"{r['pruner_label']} + {r['accelerator_label']} · b{int(r['batch_size'])} s{int(r['seq_len'])}"
    return f"{r['task']}: {lab}" if many_tasks else lab


def _mixed_energy_factor(joined: pd.DataFrame) -> None:
    """With mixing allowed, fill energy savings factors whose baseline has another method."""
    base = joined[(joined["status"] == "ok") & (joined["pruner"] == BASELINE_PRUNER) & (joined["accelerator"] == BASELINE_ACCELERATOR)]
    base = base.set_index(["target", "task", "batch_size", "seq_len"])
    for i, r in joined[(joined["status"] == "ok") & joined["energy_savings_factor"].isna()].iterrows():
        key = (r["target"], r["task"], r["batch_size"], r["seq_len"])
        if key not in base.index or not _pos(r.get("energy_j_per_inference")):
            continue
        b = base.loc[key]
        b = b.iloc[0] if isinstance(b, pd.DataFrame) else b
        if _pos(b.get("energy_j_per_inference")) and b.get("energy_method") != r.get("energy_method"):
            joined.at[i, "energy_savings_factor"] = b["energy_j_per_inference"] / r["energy_j_per_inference"]
            joined.at[i, "energy_mixed"] = True


def _pos(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v) and v > 0


def _vs_reference(joined: pd.DataFrame, ref: str, allow_mixed: bool) -> None:
    refs = joined[(joined["target"] == ref) & (joined["status"] == "ok")].set_index("recipe_id")
    for i, r in joined.iterrows():
        if r["status"] != "ok" or r["recipe_id"] not in refs.index:
            continue
        b = refs.loc[r["recipe_id"]]
        if _pos(b.get("latency_p50_s")) and _pos(r.get("latency_p50_s")):
            joined.at[i, "latency_vs_ref"] = b["latency_p50_s"] / r["latency_p50_s"]
        if _pos(b.get("energy_j_per_inference")) and _pos(r.get("energy_j_per_inference")):
            same = b.get("energy_method") == r.get("energy_method")
            if same or allow_mixed:
                joined.at[i, "energy_vs_ref"] = b["energy_j_per_inference"] / r["energy_j_per_inference"]
                joined.at[i, "energy_vs_ref_mixed"] = not same
            else:
                joined.at[i, "energy_vs_ref_refused"] = f"{b.get('energy_method')} vs {r.get('energy_method')}"


def _noisy(v: Any) -> bool:
    """A latency spread flag as stored (True/False, or NaN/None where the cell has none)."""
    return isinstance(v, (bool, np.bool_)) and bool(v)


def best_per_target(joined: pd.DataFrame, min_kept: float = MIN_KEPT) -> pd.DataFrame:
    """Per target and shape (task, batch, seq): the configuration with the highest latency savings
    factor among cells keeping at least ``min_kept`` of the dense fp32 metric (energy factor breaks
    ties). The dense baseline itself qualifies, so a shape with a baseline always has a winner.

    Cells whose latency spread is flagged (IQR/median > 10 %) do not win while a steady cell
    qualifies; ``noisy_skipped`` names those that would have, ``noisy`` marks a winner that is
    itself noisy or whose baseline is."""
    ok = joined[(joined["status"] == "ok") & joined["latency_savings_factor"].notna() & (joined["accuracy_kept"] >= min_kept)]
    spread = joined["latency_spread_flag"] if "latency_spread_flag" in joined else pd.Series(False, index=joined.index)
    rows = []
    for (tgt, task, bs, sl), g in ok.groupby(["target", "task", "batch_size", "seq_len"], sort=False):
        g = g.assign(_e=g["energy_savings_factor"].fillna(-1.0), _noisy=[_noisy(v) for v in spread.loc[g.index]])
        g = g.sort_values(["latency_savings_factor", "_e"], ascending=False)
        steady = g[~g["_noisy"]]
        w = (steady if not steady.empty else g).iloc[0]
        base = g[(g["pruner"] == BASELINE_PRUNER) & (g["accelerator"] == BASELINE_ACCELERATOR)]
        skipped = g[g["_noisy"] & (g["latency_savings_factor"] > w["latency_savings_factor"])]
        out = {k: w.get(k) for k in ("target", "target_label", "task", "batch_size", "seq_len", "recipe_id", "recipe",
                                     "pruner_label", "accelerator_label", "latency_savings_factor",
                                     "energy_savings_factor", "energy_method", "accuracy", "accuracy_kept",
                                     "latency_p50_s", "energy_j_per_inference")}
        out["noisy"] = bool(w["_noisy"]) or bool(base["_noisy"].any())
        out["noisy_skipped"] = "; ".join(f"{r['pruner_label']} + {r['accelerator_label']} ({fmt(r['latency_savings_factor'], 3)}×)"
                                         for _, r in skipped.iterrows())
        rows.append(out)
    return pd.DataFrame(rows)


def build_compare(run_dirs: Sequence[Path], allow_mixed_energy: bool = False) -> Comparison:
    """Load every run directory and join them (pure: reads files, writes nothing)."""
    if not run_dirs:
        raise ValueError("compare needs at least one run directory")
    targets, frames = _load_targets(run_dirs)
    long = pd.concat([f for f in frames if not f.empty], ignore_index=True) if any(not f.empty for f in frames) else pd.DataFrame()
    flags: list[str] = []
    if long.empty:
        joined = pd.DataFrame(columns=["target", "recipe_id", "status"])
    else:
        long["recipe_id"] = [recipe_id(r) for _, r in long.iterrows()]
        long["pruner_label"] = [_pruner_text(r) for _, r in long.iterrows()]
        long = long.drop_duplicates(["target", "recipe_id"], keep="last")
        many_tasks = long["task"].nunique() > 1
        recipes = long.drop_duplicates("recipe_id").set_index("recipe_id")[RECIPE_COLS]
        recipes["recipe"] = [_recipe_label(r, many_tasks) for _, r in recipes.iterrows()]
        dup = recipes["recipe"].duplicated(keep=False)  # configurations differing in a parameter the labels omit
        recipes.loc[dup, "recipe"] = recipes.loc[dup, "recipe"] + " [" + recipes.index[dup].str[:6] + "]"
        recipes["_base"] = ~((recipes["pruner"] == BASELINE_PRUNER) & (recipes["accelerator"] == BASELINE_ACCELERATOR))
        recipes["_acc"] = recipes["accelerator"] != BASELINE_ACCELERATOR
        recipes = recipes.sort_values(["task", "batch_size", "seq_len", "_base", "sparsity", "pruner_label", "_acc", "accelerator"])
        recipes = recipes.drop(columns=["_base", "_acc"])
        grid = pd.MultiIndex.from_product([[t.key for t in targets], recipes.index], names=["target", "recipe_id"])
        joined = long.set_index(["target", "recipe_id"]).drop(columns=[c for c in RECIPE_COLS if c in long], errors="ignore")
        joined = joined.reindex(grid).reset_index()
        joined = joined.join(recipes, on="recipe_id")
        joined["status"] = joined["status"].fillna("missing")
    labels = {t.key: t.label for t in targets}
    joined["target_label"] = joined["target"].map(labels)
    for col in ("latency_savings_factor", "energy_savings_factor", "accuracy_kept", "latency_vs_ref", "energy_vs_ref"):
        if col not in joined:
            joined[col] = float("nan")
        joined[col] = joined[col].astype(float)
    joined["energy_mixed"] = False
    joined["energy_vs_ref_mixed"] = False
    joined["energy_vs_ref_refused"] = None
    joined["energy_vs_ref_refused"] = joined["energy_vs_ref_refused"].astype(object)

    method_sets = {t.key: tuple(t.energy_methods) for t in targets if t.energy_methods}
    energy_differ = len(set(method_sets.values())) > 1 or any(len(ms) > 1 for ms in method_sets.values())
    if not joined.empty and targets:
        if allow_mixed_energy:
            _mixed_energy_factor(joined)
        _vs_reference(joined, targets[0].key, allow_mixed_energy)
    if energy_differ:
        per = "; ".join(f"{labels[k]}: {', '.join(v)}" for k, v in method_sets.items())
        where = "between targets" if len(set(method_sets.values())) > 1 else "within a target"
        flags.append(
            f"Energy methods differ {where} ({per}). "
            + ("Energy ratios across methods are shown because --allow-mixed-energy was given, and are marked ⚠ mixed."
               if allow_mixed_energy else
               "No energy ratio mixes methods: those are left out (shown as 'mixed'); pass --allow-mixed-energy to show them, marked.")
        )
    versions = {t.key: t.sparsebench_version for t in targets}
    row_versions = set(joined["sparsebench_version"].dropna().unique()) if "sparsebench_version" in joined else set()
    versions_differ = len(set(versions.values()) | row_versions) > 1
    if versions_differ:
        flags.append("Runs made by different sparsebench versions: " + "; ".join(f"{labels[k]}: {v or 'unknown'}" for k, v in versions.items())
                     + (f" (rows: {', '.join(sorted(map(str, row_versions)))})" if row_versions - set(versions.values()) else "")
                     + ". Cell definitions and measurement rules may differ between them.")
    measures = {json.dumps((t.manifest.get("config") or {}).get("measure"), sort_keys=True) for t in targets if t.manifest}
    if len(measures) > 1:
        flags.append("The runs used different [measure] settings (warm-up, iterations, windows); latency and energy are less comparable.")
    best = best_per_target(joined) if not joined.empty and "accuracy_kept" in joined else pd.DataFrame()
    return Comparison(targets, joined, best, allow_mixed_energy, energy_differ, versions_differ, flags)


def joined_frame(run_dirs: Sequence[Path], allow_mixed_energy: bool = False) -> pd.DataFrame:
    """The joined DataFrame alone (see :class:`Comparison`)."""
    return build_compare(run_dirs, allow_mixed_energy).joined


# ---- HTML ------------------------------------------------------------------------------------------

def _gb(b: Any) -> str:
    return f"{b / 2**30:.0f} GB" if isinstance(b, (int, float)) and b else "?"


def _gpu_text(hw: dict) -> str:
    gpus = hw.get("gpus") or []
    if not gpus:
        return "none"
    return "; ".join(f"{g.get('name', '?')} ({_gb(g.get('memory_bytes'))}, driver {g.get('driver') or '?'}, cc {g.get('compute_capability') or '?'})" for g in gpus)


def _variant_cell(t: Target) -> str:
    """The axis value, what the C-kernel cells report they ran, or that none of them ran."""
    text = f"{t.kernel_variant} (forced)" if t.kernel_variant != "auto" else f"auto (import-time choice: {t.hardware.get('kernel_variant') or '?'})"
    return text + (f"; cells ran {t.kernel_variant_used}" if t.kernel_variant_used else "; no cell used the sparse C kernels")


def _hardware_table(targets: list[Target]) -> str:
    def v(hw: dict, *keys: str) -> Any:
        return (hw.get("versions") or {}).get(keys[0])

    fields: list[tuple[str, Any]] = [
        ("run directory", lambda t: t.run_dir.name),
        ("hardware_id", lambda t: t.hardware_id or "?"),
        ("CPU", lambda t: t.hardware.get("cpu_model", "?")),
        ("vendor", lambda t: t.hardware.get("cpu_vendor") or "?"),
        ("cores / logical CPUs", lambda t: f"{t.hardware.get('physical_cores', '?')} / {t.hardware.get('logical_cpus', '?')}"),
        ("caches", lambda t: " ".join(f"{k} {s}" for k, s in (t.hardware.get("caches") or {}).items()) or "?"),
        ("ISA", lambda t: " ".join(t.hardware.get("isa_flags") or []) or "?"),
        ("memory", lambda t: f"{t.hardware.get('memory_gb', '?')} GB"),
        ("GPU", lambda t: _gpu_text(t.hardware)),
        ("OS", lambda t: t.hardware.get("os", "?")),
        ("kernel variant", _variant_cell),
        ("variants supported", lambda t: " ".join(t.hardware.get("kernel_variants_supported") or []) or t.hardware.get("kernel_note", "?")),
        ("threads", lambda t: t.threads if t.threads is not None else "?"),
        ("devices", lambda t: ", ".join(t.devices) or "?"),
        ("energy methods", lambda t: (" ".join(badge(m) for m in t.energy_methods) or badge("unavailable", "none"), None)),
        ("sparsebench", lambda t: t.sparsebench_version or "?"),
        ("git commit", lambda t: (t.manifest.get("git_commit") or "?")[:10]),
        ("python / torch", lambda t: f"{v(t.hardware, 'python')} / {v(t.hardware, 'torch')}"),
        ("transformers / numpy", lambda t: f"{v(t.hardware, 'transformers')} / {v(t.hardware, 'numpy')}"),
        ("CUDA (torch build)", lambda t: v(t.hardware, "torch_cuda") or "none"),
        ("cells", lambda t: (" ".join(badge(k, f"{k} {n}") for k, n in sorted(t.status_counts.items())) or "no complete rows", None)),
        ("noisy latency (spread > 10 %)", lambda t: f"{t.noisy_cells} cell{'s' if t.noisy_cells != 1 else ''}"),
        ("damaged results lines", lambda t: (badge("failed", ", ".join(map(str, t.damaged_lines))) if t.damaged_lines else "none", None)),
        ("run created", lambda t: (t.manifest.get("created") or "?")[:19]),
    ]
    head = "<tr><th class='l'>target</th>" + "".join(f"<th class='l'>{esc(t.key)} · {esc(t.label)}</th>" for t in targets) + "</tr>"
    body = []
    for name, get in fields:
        vals = [get(t) for t in targets]
        shown = [x[0] if isinstance(x, tuple) else esc(fmt(x)) for x in vals]
        differ = len(set(shown)) > 1 and name not in ("run directory", "run created")
        cls = " class='diff'" if differ else ""
        body.append(f"<tr{cls}><td class='l'><b>{esc(name)}</b></td>" + "".join(f"<td class='l' style='white-space:normal;max-width:420px'>{s}</td>" for s in shown) + "</tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table><p class='note'>Shaded rows differ between targets.</p>"


def _ms(v: Any) -> Any:
    return v * 1e3 if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)) else None


def _cell(r: pd.Series, value: Any, digits: int = 3, suffix: str = "") -> Any:
    """A table cell: the value, or why there is none (missing cell, failed, skipped)."""
    st = r["status"]
    if st == "missing":
        return ("<span class='tag'>missing</span>", None)
    if st != "ok":
        return (badge(st) + f" <span class='tag'>{esc(((r.get('reason') or '') if isinstance(r.get('reason'), str) else '')[:60].splitlines()[0] if isinstance(r.get('reason'), str) and r.get('reason') else '')}</span>", None)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ("—", None)
    return (esc(fmt(value, digits)) + suffix, value)


def _wide_tables(c: Comparison) -> str:
    j = c.joined
    recipes = j.drop_duplicates("recipe_id")[["recipe_id", "recipe"]]
    by = {(r["target"], r["recipe_id"]): r for _, r in j.iterrows()}
    T = c.targets
    # savings
    heads = ["configuration"] + [f"{t.key} {m}" for t in T for m in ("latency ×", "energy ×", "acc. kept")]
    rows = []
    for _, rc in recipes.iterrows():
        line: list[Any] = [rc["recipe"]]
        for t in T:
            r = by[(t.key, rc["recipe_id"])]
            e = r.get("energy_savings_factor")
            mixed = bool(r.get("energy_mixed"))
            line += [_cell(r, r.get("latency_savings_factor"), 3, "×"),
                     _cell(r, e, 3, "×" + (" ⚠ mixed" if mixed else "")),
                     _cell(r, r.get("accuracy_kept") * 100 if pd.notna(r.get("accuracy_kept")) else None, 4, " %")]
        rows.append(line)
    savings = table(heads, rows, left=1)
    # measurements
    heads = ["configuration"] + [f"{t.key} {m}" for t in T for m in ("p50 ms", "p90 ms", "J/inference", "method", "accuracy")]
    rows = []
    for _, rc in recipes.iterrows():
        line = [rc["recipe"]]
        for t in T:
            r = by[(t.key, rc["recipe_id"])]
            method = r.get("energy_method") if isinstance(r.get("energy_method"), str) else None
            spread = " ⚠" if r.get("latency_spread_flag") is True else ""
            line += [_cell(r, _ms(r.get("latency_p50_s")), 3, spread), _cell(r, _ms(r.get("latency_p90_s"))),
                     _cell(r, r.get("energy_j_per_inference")),
                     (badge(method), method) if r["status"] == "ok" and method else _cell(r, None),
                     _cell(r, r.get("accuracy"), 4)]
        rows.append(line)
    measured = ("<p class='note'>⚠ after p50: latency spread (IQR/median) above 10 % — a noisy measurement "
                "(shared or throttled cores); rerun before trusting that factor.</p>" + table(heads, rows, left=1))
    # cross-target
    cross = ""
    if len(T) > 1:
        ref = T[0]
        heads = ["configuration"] + [f"{t.key} {m}" for t in T[1:] for m in (f"latency vs {ref.key}", f"energy vs {ref.key}")]
        rows = []
        for _, rc in recipes.iterrows():
            line = [rc["recipe"]]
            for t in T[1:]:
                r = by[(t.key, rc["recipe_id"])]
                refused = r.get("energy_vs_ref_refused")
                if r["status"] == "ok" and isinstance(refused, str):
                    ecell: Any = (f"<span class='badge estimated' title='{esc(refused)}'>mixed: {esc(refused)}</span>", None)
                else:
                    ecell = _cell(r, r.get("energy_vs_ref"), 3, "×" + (" ⚠ mixed" if r.get("energy_vs_ref_mixed") else ""))
                rref = by[(ref.key, rc["recipe_id"])]
                line += [_cell(r, r.get("latency_vs_ref"), 3, "×") if rref["status"] == "ok" else (f"<span class='tag'>{esc(ref.key)} {esc(rref['status'])}</span>", None), ecell]
            rows.append(line)
        cross = (f"<h2>Across targets (reference {esc(ref.key)} · {esc(ref.label)})</h2><p class='note'>{esc(ref.key)}'s value ÷ this "
                 "target's, for the same configuration: above 1 means this target is faster / uses less energy. "
                 "Energy ratios only between one energy method unless --allow-mixed-energy.</p>" + table(heads, rows, left=1))
    return ("<h2>Savings factors per target</h2><p class='note'>Within each target: its dense (pruner none) torch-fp32 cell of the "
            "same task, batch and sequence ÷ the cell (higher is better); accuracy kept = cell metric ÷ dense metric. "
            "'missing': the target has no such cell. Click a header to sort.</p>" + savings
            + "<h2>Latency, energy and accuracy per target</h2>" + measured + cross)


def _best_section(c: Comparison) -> str:
    if c.best.empty:
        return "<h2>Best configuration per target</h2><p class='note'>No target has a dense torch-fp32 baseline with accuracy: no winner can be named.</p>"
    items = []
    for t in c.targets:
        b = c.best[c.best["target"] == t.key]
        if b.empty:
            items.append(f"<li><b>{esc(t.key)} · {esc(t.label)}</b>: no configuration qualifies (no baseline?)</li>")
            continue
        w = b.sort_values("latency_savings_factor", ascending=False).iloc[0]
        e = w.get("energy_savings_factor")
        items.append(f"<li><b>{esc(t.key)} · {esc(t.label)}</b>: <b>{esc(w['recipe'])}</b> — {fmt(w['latency_savings_factor'], 3)}× latency"
                     + (f", {fmt(e, 3)}× energy ({esc(w['energy_method'])})" if pd.notna(e) else "")
                     + f", {fmt(w['accuracy_kept'] * 100, 4)} % of dense accuracy"
                     + (" <span class='badge estimated'>⚠ noisy latency: rerun</span>" if w["noisy"] else "")
                     + (f" <span class='tag'>(noisy cells not counted: {esc(w['noisy_skipped'])})</span>" if w["noisy_skipped"] else "")
                     + "</li>")
    shapes = c.best.drop_duplicates(["task", "batch_size", "seq_len"])[["task", "batch_size", "seq_len"]]
    heads = ["task", "batch", "seq"] + [f"{t.key} · {t.label}" for t in c.targets]
    rows = []
    for _, s in shapes.iterrows():
        line: list[Any] = [s["task"], s["batch_size"], s["seq_len"]]
        for t in c.targets:
            m = c.best[(c.best["target"] == t.key) & (c.best["task"] == s["task"]) & (c.best["batch_size"] == s["batch_size"]) & (c.best["seq_len"] == s["seq_len"])]
            if m.empty:
                line.append(("<span class='tag'>—</span>", None))
            else:
                w = m.iloc[0]
                line.append((f"{esc(w['pruner_label'])} + {esc(w['accelerator_label'])}<br><b>{fmt(w['latency_savings_factor'], 3)}×</b> "
                             f"<span class='tag'>kept {fmt(w['accuracy_kept'] * 100, 4)} %</span>" + (" ⚠" if w["noisy"] else "")
                             + (f"<br><span class='tag'>not counted (noisy): {esc(w['noisy_skipped'])}</span>" if w["noisy_skipped"] else ""),
                             w["latency_savings_factor"]))
        rows.append(line)
    return (f"<h2>Best configuration per target (≥ {MIN_KEPT:.0%} of dense accuracy)</h2>"
            "<p class='note'>Highest latency savings factor among cells keeping at least 99 % of the dense fp32 metric; "
            "cells with a latency spread above 10 % do not win while a steady one qualifies (⚠: the winner or its baseline is noisy). "
            "The headline is the best shape of each target.</p><ul class='targets'>" + "".join(items) + "</ul>"
            + table(heads, rows, left=3, sortable=False))


def _bars(c: Comparison, col: str, title: str, xtitle: str, hline: float | None = None) -> str:
    """Horizontal grouped bars: one bar per target for every configuration (readable long labels)."""
    j = c.joined[(c.joined["status"] == "ok")].dropna(subset=[col])
    if j.empty:
        return f"<p class='note'>{esc(title)}: no data.</p>"
    order = [r for r in c.joined.drop_duplicates("recipe_id")["recipe"] if r in set(j["recipe"])]
    fig = go.Figure()
    for i, t in reversed(list(enumerate(c.targets))):  # horizontal groups stack bottom-up: T1 ends on top
        g = j[j["target"] == t.key]
        if g.empty:
            continue
        name = f"{t.key} · {t.label}"
        if col == "energy_savings_factor":
            name += f" ({', '.join(t.energy_methods)})"
        noisy = [_noisy(v) for v in g.get("latency_spread_flag", pd.Series(False, index=g.index))]
        timed = col != "accuracy"  # every other bar here rests on a timed loop
        fig.add_trace(go.Bar(y=g["recipe"], x=g[col], name=name, orientation="h", marker_color=_COLORS[i % len(_COLORS)],
                             marker_pattern_shape=["/" if n and timed else "" for n in noisy],
                             text=[fmt(v, 3) + (" ⚠ noisy" if n and timed else "") for v, n in zip(g[col], noisy)],
                             textposition="outside", cliponaxis=False,
                             hovertemplate="%{y}<br>%{x:.4g}<extra>" + esc(t.key) + "</extra>"))
    if hline is not None:
        fig.add_vline(x=hline, line_dash="dash", line_color="#888")
    if col != "accuracy":
        title += " — hatched ⚠: latency spread above 10 %, rerun before quoting"
    n_bars = len(order) * max(1, len(fig.data))
    fig.update_layout(title=title, barmode="group", xaxis_title=xtitle, bargap=0.25,
                      yaxis=dict(categoryorder="array", categoryarray=order[::-1], automargin=True),
                      legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0, traceorder="reversed"))
    # the house style of reports.html.figure, but a height that follows the number of bars
    fig.update_layout(template="plotly_white", height=max(320, 140 + 16 * n_bars), margin=dict(l=20, r=60, t=80, b=50))
    return fig.to_html(full_html=False, include_plotlyjs=False)


def _scatter(c: Comparison) -> str:
    j = c.joined[(c.joined["status"] == "ok")].dropna(subset=["latency_p50_s", "accuracy"])
    if j.empty:
        return "<p class='note'>Accuracy vs latency: no data.</p>"
    fig = go.Figure()
    symbols = ["circle", "square", "diamond", "triangle-up", "x", "star"]
    for i, t in enumerate(c.targets):
        for k, (bs, g) in enumerate(j[j["target"] == t.key].groupby("batch_size")):
            fig.add_trace(go.Scatter(
                x=g["latency_p50_s"] * 1e3, y=g["accuracy"], mode="markers", name=f"{t.key} · {t.label} · batch {bs}",
                text=g["recipe"], legendgroup=t.key,
                marker=dict(size=11, symbol=symbols[k % len(symbols)], color=_COLORS[i % len(_COLORS)], line=dict(width=1, color="#333")),
                hovertemplate="%{text}<br>p50 %{x:.4g} ms<br>accuracy %{y:.4f}<extra>" + esc(t.key) + "</extra>",
            ))
    fig.update_layout(title="Accuracy vs p50 latency, per target (colour) and batch size (symbol)", xaxis_title="p50 latency per batch (ms, log)",
                      yaxis_title="accuracy", xaxis_type="log")
    return figure(fig)


_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def build_compare_html(run_dirs: Sequence[Path], allow_mixed_energy: bool = False) -> str:
    c = build_compare(run_dirs, allow_mixed_energy)
    title = f"sparsebench compare — {len(c.targets)} target{'s' if len(c.targets) != 1 else ''}"
    head = [EXTRA_CSS, f"<h1>{esc(title)}</h1>",
            "<ul class='targets'>" + "".join(
                f"<li><b>{esc(t.key)}</b> · {esc(t.label)} — <span class='tag'>{esc(str(t.run_dir))}, hardware_id {esc(t.hardware_id or '?')}, "
                f"energy {' '.join(badge(m) for m in t.energy_methods) or 'none'}</span></li>" for t in c.targets) + "</ul>"]
    for f in c.flags:
        head.append(f"<div class='flag'>⚠ {esc(f)}</div>")
    for t in c.targets:
        if t.damaged_lines and t is next(x for x in c.targets if x.run_dir == t.run_dir):
            head.append(f"<div class='warn'>{esc(t.run_dir.name)}/results.jsonl: damaged line(s) {esc(', '.join(map(str, t.damaged_lines)))} "
                        "could not be read (a run killed mid-write?) and are left out; every complete row is used.</div>")
    if c.joined.empty or (c.joined["status"] == "missing").all():
        return page(title, head + ["<h2>Hardware</h2>", _hardware_table(c.targets), "<p>No results to compare.</p>"])
    gaps = {t.key: int(((c.joined["target"] == t.key) & (c.joined["status"] == "missing")).sum()) for t in c.targets}
    if any(gaps.values()):
        head.append("<p class='note'>Gaps (configurations a target lacks): " + ", ".join(f"{k}: {v}" for k, v in gaps.items()) + ".</p>")
    sections = head + [
        _best_section(c),
        "<h2>Hardware targets</h2>", _hardware_table(c.targets),
        "<h2>Latency savings per target</h2>", _bars(c, "latency_savings_factor", "Latency savings factor vs each target's dense fp32 (higher is better)", "× (dense p50 ÷ cell p50)", hline=1.0),
        "<h2>Accuracy per target</h2>", _bars(c, "accuracy", "Accuracy per configuration and target", "accuracy"),
    ]
    if c.joined["energy_savings_factor"].notna().any():
        sections += ["<h2>Energy savings per target</h2>",
                     _bars(c, "energy_savings_factor", "Energy savings factor vs each target's dense fp32 (method in legend)", "× (dense J ÷ cell J)", hline=1.0)]
    sections += ["<h2>Accuracy vs latency</h2>", _scatter(c), _wide_tables(c)]
    return page(title, sections)


def write_compare(run_dirs: Sequence[Path], out: Path, allow_mixed_energy: bool = False) -> Path:
    """Write the compare page to ``out`` and return its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_compare_html([Path(d) for d in run_dirs], allow_mixed_energy), encoding="utf-8")
    return out
