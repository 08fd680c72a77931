"""Results rows → pandas DataFrame with savings factors against the dense fp32 baseline.

Shared by ``report`` (one run) and ``compare`` (several): loading, identity fields, the kernel
variant shown for a cell, the savings arithmetic, the Pareto front and the flags stored per cell.
"""
from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from profiler.hardware import current_field_names
from profiler.identity import BASELINE_ACCELERATOR, BASELINE_PRUNER, ids_of_row, is_dense_fp32, stable_hash
from profiler.labels import distinct_labels
from profiler.results import SCHEMA, read_results
from profiler.rundir import RESULTS

# Cells that share these keys are compared with each other (same shape, threads and target).
#: share of the dense model's metric a configuration must keep to be a verdict or a best configuration
MIN_KEPT = 0.99
GROUP_KEYS = ["task_key", "batch_size", "seq_len", "threads", "kernel_variant"]
IDENTITY_FIELDS = ("recipe_id", "model_id")


def load_rows(run_dir: Path) -> tuple[pd.DataFrame, list[int]]:
    """All complete rows of ``run_dir/results.jsonl`` and the (1-based) numbers of damaged lines.

    Every row of the frame has ``kernel_variant`` ("auto" where absent), ``kernel_variant_used``
    (None where no sparse kernel reported one), ``recipe_id`` and ``model_id`` (recomputed by
    :func:`profiler.identity.ids_of_row` where a row lacks them), ``sparsity`` (the pruner's
    target, 0.0 for none) and the labels ``pruner_label``, ``accelerator_label`` and ``label``.
    Every column of the row schema (:data:`profiler.results.SCHEMA`) is there, None where no row
    has it: a row need only hold the required fields, and the pages show the rest as n/a.
    """
    rf = read_results(Path(run_dir) / RESULTS)
    df = pd.DataFrame(rf.rows)
    if df.empty:
        return df, rf.damaged_lines
    for col in SCHEMA:
        if col not in df:
            df[col] = None
    if "kernel_variant" not in df:
        df["kernel_variant"] = "auto"
    df["kernel_variant"] = df["kernel_variant"].fillna("auto")
    if "kernel_variant_used" not in df:
        df["kernel_variant_used"] = None
    for col in ("pruner_params", "accelerator_params"):
        if col not in df:
            df[col] = [{} for _ in range(len(df))]
    _fill_ids(df)
    add_task_key(df)
    df["sparsity"] = df["pruner_params"].map(lambda p: (p or {}).get("sparsity", 0.0) if isinstance(p, dict) else 0.0)
    # labels come from the params, not the stored label, so rows label alike whoever wrote them
    df["pruner_label"] = distinct_labels(list(zip(df["pruner"], df["pruner_params"])))
    df["accelerator_label"] = distinct_labels(list(zip(df["accelerator"], df["accelerator_params"])))
    df["label"] = df["pruner_label"] + " + " + df["accelerator_label"]
    return df, rf.damaged_lines


def shape_labels(df: pd.DataFrame) -> pd.Series:
    """Per row, short text of the group axes (:data:`GROUP_KEYS`) that vary in ``df``, batch always:
    ``"b8"``, ``"b8 t2"``, ``"sst2 b1 s64 t1 avx2"`` (the task as :func:`task_names` shows it), so
    cells of different shapes never share a chart category."""
    def varies(col: str) -> bool:
        return _varies(df, col)

    parts = []
    if varies("task_key"):
        parts.append(task_names(df).astype(str))
    parts.append("b" + df["batch_size"].astype(str))
    for col, prefix in (("seq_len", "s"), ("threads", "t"), ("kernel_variant", "")):
        if varies(col):
            parts.append(prefix + df[col].astype(str))
    out = parts[0]
    for p in parts[1:]:
        out = out + " " + p
    return out


def _varies(df: pd.DataFrame, col: str) -> bool:
    """Whether column ``col`` takes more than one value in ``df`` (a missing value counts as one)."""
    return col in df and df[col].nunique(dropna=False) > 1


def task_names(df: pd.DataFrame) -> pd.Series:
    """The task's name per row, with a short key appended where one name stands for several tasks
    (``text-classification [a1b2c3]``)."""
    keys_per_name = df.groupby("task")["task_key"].transform("nunique")
    return df["task"].where(keys_per_name <= 1, df["task"].astype(str) + " [" + df["task_key"].astype(str).str[:6] + "]")


def add_task_key(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``task_key`` in place (if missing): the task's name and parameters hashed, so two tasks
    of one plugin (two ``text-classification`` models or data sets) never share a baseline."""
    if "task_key" not in df and "task" not in df:  # an empty frame: no rows, no columns
        df["task_key"] = pd.Series(dtype=object)
    elif "task_key" not in df:
        params = df["task_params"] if "task_params" in df else pd.Series([None] * len(df), index=df.index)
        df["task_key"] = [stable_hash({"name": t, "params": p if isinstance(p, dict) else None})
                          for t, p in zip(df["task"], params)]
    return df


def _fill_ids(df: pd.DataFrame) -> None:
    """Add ``recipe_id`` / ``model_id`` in place where a row does not carry them."""
    for col in IDENTITY_FIELDS:
        if col not in df:
            df[col] = None
    lacking = df[list(IDENTITY_FIELDS)].isna().any(axis=1)
    for i, row in df[lacking].iterrows():
        for col, value in ids_of_row(row).items():
            if pd.isna(df.at[i, col]):
                df.at[i, col] = value


def kernel_variant_text(axis: Any, used: Any) -> str:
    """The kernel variant to show for a cell or a target.

    ``axis`` is the matrix axis value ``kernel_variant`` ("auto" or a variant name); ``used`` is
    ``kernel_variant_used``, what the sparse C kernels reported running (None/NaN where no
    sparse kernel ran; a comma-separated list for a target whose cells ran several). Returns
    e.g. "auto→avx512" when "auto" resolved to one variant, the axis value otherwise.
    """
    axis = axis if isinstance(axis, str) and axis else "auto"
    if axis == "auto" and isinstance(used, str) and used and "," not in used:
        return f"auto→{used}"
    return axis


def is_flagged(v: Any) -> bool:
    """A stored boolean flag (``latency_spread_flag``, ``contention_flag``): True only for a true
    bool, False for False, None or NaN (cells that have no such flag)."""
    return isinstance(v, (bool, np.bool_)) and bool(v)


#: how the pages mark a collapsed model (its metric beside it, a chart category, a table cell)
COLLAPSED_MARK = "(collapsed)"


def collapsed_mask(df: pd.DataFrame) -> pd.Series:
    """Boolean mask of the rows whose model collapsed (``collapsed`` true: it predicts one class,
    or does no better than the majority class); False where a row has no such flag."""
    if "collapsed" not in df:
        return pd.Series(False, index=df.index, dtype=bool)
    return df["collapsed"].map(is_flagged).astype(bool)


def is_number(v: Any) -> bool:
    """A finite real number (Python or numpy), not a bool, None, NaN or ±inf: an infinite latency
    must become a gap, never a savings factor of 0×."""
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)


def positive(v: Any) -> bool:
    """A number above zero: a value a ratio may divide by."""
    return is_number(v) and bool(v > 0)


def is_baseline(df: pd.DataFrame) -> pd.Series:
    """Boolean mask of the dense (pruner none) torch-fp32 rows: the cells savings divide."""
    return (df["pruner"] == BASELINE_PRUNER) & (df["accelerator"] == BASELINE_ACCELERATOR)


def add_savings(df: pd.DataFrame, allow_mixed_energy: bool = False) -> pd.DataFrame:
    """A copy of ``df`` with savings factors against the dense (pruner none) torch-fp32 cell of
    the same group (:data:`GROUP_KEYS`); cells without such a baseline get NaN.

    Adds ``latency_savings_factor`` (see below), ``latency_savings_p50_ratio`` (baseline p50 ÷
    cell p50, always), ``energy_savings_factor`` (baseline J/inference ÷ cell), ``accuracy_kept``
    (cell metric ÷ baseline metric), ``accuracy_delta`` (cell − baseline, in the metric's units;
    both NaN where the baseline collapsed), ``energy_mixed`` and ``energy_factor_refused``. An
    energy factor needs both cells on one energy method, unless ``allow_mixed_energy``: then cells
    of another method than their baseline get a factor too, with ``energy_mixed`` True; where it
    is refused, ``energy_factor_refused`` holds the methods ("measured vs estimated": baseline's,
    then the cell's; None elsewhere). A latency factor the runner stored (the median of
    same-round ratios of an interleaved run, :func:`is_same_round`) is kept when it was taken
    against the baseline chosen here (its ``baseline_cell_id``; a resumed run or a baseline that
    failed its accuracy pass can leave another); other rows get the ratio of p50s. Then
    :func:`add_best_dense` adds the factors against the fastest dense engine.
    """
    df = add_task_key(df.copy())
    stored = pd.to_numeric(df["latency_savings_factor"], errors="coerce") if "latency_savings_factor" in df else None
    if stored is not None:  # a non-finite stored factor is a gap, like a missing one
        for i in stored.index[stored.notna() & ~np.isfinite(stored)]:
            _drop_interval(df, i, "latency_savings_factor")
        stored = stored.where(np.isfinite(stored))
    stored_ref = df["baseline_cell_id"] if "baseline_cell_id" in df else pd.Series(None, index=df.index, dtype=object)
    for col in ("latency_savings_factor", "latency_savings_p50_ratio", "energy_savings_factor", "accuracy_kept", "accuracy_delta"):
        df[col] = float("nan")
    df["energy_mixed"] = False
    df["energy_factor_refused"] = pd.Series([None] * len(df), index=df.index, dtype=object)
    if df.empty:
        return add_best_dense(df)
    ok = df["status"] == "ok"
    base = df[ok & is_baseline(df)]
    base = base.drop_duplicates(GROUP_KEYS).set_index(GROUP_KEYS)
    for i, row in df[ok].iterrows():
        key = tuple(row[k] for k in GROUP_KEYS)
        if key not in base.index:  # the baseline failed or is missing: a factor stored against it goes too
            if stored is not None and isinstance(stored_ref.get(i), str):
                stored.at[i] = float("nan")
                _drop_interval(df, i, "latency_savings_factor")
            continue
        b = base.loc[key]
        if stored is not None and not _same_reference(stored_ref.get(i), b.get("cell_id")):
            stored.at[i] = float("nan")
            _drop_interval(df, i, "latency_savings_factor")
        if positive(row.get("latency_p50_s")) and positive(b["latency_p50_s"]):
            df.at[i, "latency_savings_factor"] = b["latency_p50_s"] / row["latency_p50_s"]
            df.at[i, "latency_savings_p50_ratio"] = b["latency_p50_s"] / row["latency_p50_s"]
        other_inputs = _estimate_inputs_differ(b, row)
        same_method = row.get("energy_method") == b.get("energy_method") and not other_inputs
        energies = positive(row.get("energy_j_per_inference")) and positive(b.get("energy_j_per_inference"))
        if energies and (same_method or allow_mixed_energy):
            df.at[i, "energy_savings_factor"] = b["energy_j_per_inference"] / row["energy_j_per_inference"]
            df.at[i, "energy_mixed"] = not same_method
        elif energies:  # both measured, by different methods: said as such, never as "not measured"
            df.at[i, "energy_factor_refused"] = other_inputs or f"{b.get('energy_method')} vs {row.get('energy_method')}"
        # a collapsed baseline's metric is the majority-class rate: a share of it is no kept accuracy
        if is_number(row.get("accuracy")) and positive(b.get("accuracy")) and not is_flagged(b.get("collapsed")):
            df.at[i, "accuracy_kept"] = row["accuracy"] / b["accuracy"]
            df.at[i, "accuracy_delta"] = row["accuracy"] - b["accuracy"]
    if stored is not None:  # a cell that did not finish has no factor, whatever an older row stored
        stored = stored.where(ok)
        for i in df.index[~ok]:
            _drop_interval(df, i, "latency_savings_factor")
        df["latency_savings_factor"] = stored.where(stored.notna(), df["latency_savings_factor"])
    return add_best_dense(df)


#: the estimate meter's model inputs a row records (W): two estimates taken with others are not one method
ESTIMATE_INPUTS = ("energy_estimate_tdp_w", "energy_estimate_memory_w")


def _estimate_inputs_differ(b: Any, row: Any) -> str | None:
    """"estimated vs estimated (…)" naming the inputs that differ when both rows are estimates whose
    model inputs (:data:`ESTIMATE_INPUTS`) differ, e.g. a run resumed under a release that counts
    RAM otherwise; None when they agree, are not both estimates, or a row does not record them."""
    if not (b.get("energy_method") == row.get("energy_method") == "estimated"):
        return None
    diff = [f"{k[len('energy_estimate_'):]} {b.get(k):g} vs {row.get(k):g}" for k in ESTIMATE_INPUTS
            if is_number(b.get(k)) and is_number(row.get(k)) and not math.isclose(b.get(k), row.get(k), rel_tol=1e-9)]
    return f"estimated vs estimated ({', '.join(diff)})" if diff else None


def _drop_interval(df: pd.DataFrame, i: Any, key: str) -> None:
    """Forget the same-round interval stored with factor ``key`` of row ``i`` (the factor was dropped)."""
    for col in (f"{key}_low", f"{key}_high"):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
            df.at[i, col] = float("nan")
    if f"{key}_rounds" in df:
        df.at[i, f"{key}_rounds"] = 0


def _same_reference(stored_ref: Any, chosen: Any) -> bool:
    """Whether a stored factor's reference cell (``None`` in rows written before it was stored:
    trusted) is the cell chosen as reference here."""
    return not isinstance(stored_ref, str) or stored_ref == chosen


def is_same_round(row: pd.Series | dict, key: str = "latency_savings_factor") -> bool:
    """Whether latency factor ``key`` of a row that went through :func:`add_savings` is the
    runner's median of same-round ratios (interleaved rounds: ``{key}_rounds`` > 0) rather than
    the ratio of p50s, which the pages compute where no stored factor stands."""
    return is_number(row.get(key)) and is_number(row.get(f"{key}_rounds")) and row.get(f"{key}_rounds") > 0


def energy_flag_text(v: Any) -> str:
    """A row's ``energy_flags`` (what the energy meter found suspect: a counter wrap, DRAM left out,
    a negative net not clamped, ...) as one "; "-joined text, "" where it has none (an empty
    list, None or NaN in rows written before the field existed)."""
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple, np.ndarray)):
        return "; ".join(str(f) for f in v if f is not None and str(f))
    return ""


def dense_fp32_mask(df: pd.DataFrame) -> pd.Series:
    """The dense full-precision engines: pruner none, fp32 arithmetic (rows written without
    ``compute_precision`` count only the torch-fp32 baseline)."""
    prec = df["compute_precision"] if "compute_precision" in df else pd.Series(None, index=df.index, dtype=object)
    dense = pd.Series([is_dense_fp32(p, a, c) for p, a, c in zip(df["pruner"], df["accelerator"], prec)],
                      index=df.index, dtype=bool)
    return (df["status"] == "ok") & dense & df["latency_p50_s"].map(positive)


def add_best_dense(df: pd.DataFrame) -> pd.DataFrame:
    """Factors against the **fastest dense fp32 cell of the same group** (the engine a user would
    run instead of pruning): ``latency_savings_vs_best_dense`` (kept when the runner stored the
    same-round median, else best p50 ÷ cell p50), ``energy_savings_vs_best_dense`` (best J ÷ cell
    J, one energy method only), ``best_dense_label``. A factor the runner stored stays with its own
    reference (``best_dense_cell_id``) while that is a usable dense cell of the group, even where
    the p50s here rank another first: a resumed run times the dense cells again, and its fastest
    can differ, within noise, from the first session's; a ratio of p50s across the two sessions
    would not be same-round. A collapsed or failed dense cell is no reference: a factor stored
    against it is recomputed against the fastest usable dense cell."""
    for col in ("latency_savings_vs_best_dense", "energy_savings_vs_best_dense", "best_dense_label"):
        if col not in df:
            df[col] = None
    df["latency_savings_vs_best_dense"] = pd.to_numeric(df["latency_savings_vs_best_dense"], errors="coerce")
    df["energy_savings_vs_best_dense"] = float("nan")
    if df.empty:
        return df
    for i in df.index[df["status"] != "ok"]:  # a stored factor of a cell that did not finish goes
        df.at[i, "latency_savings_vs_best_dense"] = float("nan")
        _drop_interval(df, i, "latency_savings_vs_best_dense")
    dense = df[dense_fp32_mask(df) & ~collapsed_mask(df)]
    best = dense.loc[dense.groupby(GROUP_KEYS, dropna=False)["latency_p50_s"].idxmin()] if len(dense) else dense
    best = best.set_index(GROUP_KEYS)
    by_id = dense.drop_duplicates("cell_id", keep="last").set_index("cell_id") if "cell_id" in dense else None
    for i, row in df[df["status"] == "ok"].iterrows():
        key = tuple(row[k] for k in GROUP_KEYS)
        if key not in best.index:  # no dense cell left to divide (failed or collapsed)
            if not _same_reference(row.get("best_dense_cell_id"), None):  # a stored factor against one of those
                df.at[i, "latency_savings_vs_best_dense"] = float("nan")
                _drop_interval(df, i, "latency_savings_vs_best_dense")
                df.at[i, "best_dense_label"] = None
            continue
        ref = row.get("best_dense_cell_id")
        own = (by_id is not None and isinstance(ref, str) and ref in by_id.index
               and _nan_as_none(tuple(by_id.loc[ref, k] for k in GROUP_KEYS)) == _nan_as_none(key)
               and is_number(df.at[i, "latency_savings_vs_best_dense"]))
        b = by_id.loc[ref] if own else best.loc[key]
        if not own and not _same_reference(ref, b.get("cell_id")):
            df.at[i, "latency_savings_vs_best_dense"] = float("nan")  # taken against another engine
            _drop_interval(df, i, "latency_savings_vs_best_dense")
        if not is_number(df.at[i, "latency_savings_vs_best_dense"]) and positive(row.get("latency_p50_s")):
            df.at[i, "latency_savings_vs_best_dense"] = b["latency_p50_s"] / row["latency_p50_s"]
        df.at[i, "best_dense_label"] = b.get("accelerator_label") or b.get("accelerator")
        if positive(row.get("energy_j_per_inference")) and positive(b.get("energy_j_per_inference")) \
                and row.get("energy_method") == b.get("energy_method"):
            df.at[i, "energy_savings_vs_best_dense"] = b["energy_j_per_inference"] / row["energy_j_per_inference"]
    return df


def verdicts(df: pd.DataFrame, min_kept: float = MIN_KEPT) -> list[str]:
    """One sentence per group (task, batch, sequence, threads, kernel variant) of a frame that went
    through :func:`add_savings`: the cell keeping ``min_kept`` of the dense accuracy with the
    highest latency factor against the fastest dense fp32 engine (``latency_savings_vs_best_dense``:
    a same-round median, said as such with both p50s, else a p50 ratio) and its factors, or that
    none beats the dense engines (also when the same-round interval of its latency factor reaches
    down to 1×). Each sentence opens with its
    group, told apart as :func:`shape_labels` tells chart categories apart: the task with a short
    key where one name stands for several tasks (:func:`task_names`), the kernel variant where the
    frame has several or one other than "auto". A group whose dense baseline collapsed, or has a
    metric ≤ 0 (no share of it is kept accuracy), gets a sentence saying so instead of a verdict.
    Collapsed models are never a candidate; energy factors say their method unless it is
    ``measured``. A group some of whose cells did not run says how many and their status, since the
    verdict only covers what ran."""
    out: list[str] = []
    if df.empty or "latency_p50_s" not in df:
        return out
    df = add_task_key(df.copy()).assign(_task_shown=lambda d: task_names(d))
    show_variant = _varies(df, "kernel_variant")
    ok = df[(df["status"] == "ok") & df["latency_p50_s"].map(positive)]
    not_run = {_nan_as_none(key): g["status"].value_counts() for key, g in
               df[df["status"] != "ok"].groupby(GROUP_KEYS, dropna=False, sort=True)}
    for key, g in ok.groupby(GROUP_KEYS, dropna=False, sort=True):
        fallen = g[collapsed_mask(g) & is_baseline(g)]
        # a metric ≤ 0 (a regression head's negative correlation) has no share: a ratio to it flips or divides by 0
        unshared = g[is_baseline(g) & g["accuracy"].map(lambda v: is_number(v) and v <= 0)]
        if not fallen.empty:  # its metric is the majority-class rate: no share of it is kept accuracy
            base = fallen.iloc[0]
            sentence = (f"{_where(key, g, show_variant)}: no verdict: the dense baseline ({BASELINE_PRUNER} + "
                        f"{base.get('accelerator_label') or base['accelerator']}) "
                        f"{_text(base.get('collapse_reason')) or _text(base.get('reason')) or 'collapsed'}, so no "
                        f"cell's kept accuracy is known; {_collapse_hint(base)}.")
        elif not unshared.empty:
            base = unshared.iloc[0]
            metric = _text(base.get("metric_name")) or "accuracy"
            sentence = (f"{_where(key, g, show_variant)}: no verdict: the dense baseline ({BASELINE_PRUNER} + "
                        f"{base.get('accelerator_label') or base['accelerator']}) has {metric} {base['accuracy']:.4f}, "
                        f"which is ≤ 0, so kept accuracy (a cell's {metric} ÷ the baseline's) is undefined.")
        else:  # a model predicting one class is not a candidate, whatever its metric
            sentence = _verdict(key, g[~collapsed_mask(g)], show_variant, min_kept)
        if sentence is None:
            continue
        counts = not_run.get(_nan_as_none(key))
        if counts is not None:
            sentence += (f" {int(counts.sum())} cell(s) of this group did not run ("
                         + ", ".join(f"{status} {int(n)}" for status, n in counts.items()) + ").")
        out.append(sentence)
    return out


def _collapse_hint(base: pd.Series) -> str:
    """What to do about a collapsed dense baseline: fine-tune it, or, where it was fine-tuned (its
    ``dense_finetune`` record, else its task's ``finetune_steps``), fine-tune longer."""
    record = base.get("dense_finetune")
    steps = record.get("steps") if isinstance(record, dict) else None
    if steps is None and isinstance(base.get("task_params"), dict):
        steps = base["task_params"].get("finetune_steps")
    if is_number(steps) and steps > 0:
        return f"fine-tune longer (finetune_steps = {steps:g} now) or check the labels"
    return "fine-tune the model first (finetune_steps) or check its labels"


def _text(v: Any) -> str | None:
    """``v`` where it is a non-empty string (a missing field reads as NaN in a frame), else None."""
    return v if isinstance(v, str) and v else None


def _nan_as_none(key: tuple) -> tuple:
    """A group key that compares equal to itself: NaN (a missing value; NaN != NaN) as None."""
    return tuple(None if isinstance(v, float) and math.isnan(v) else v for v in key)


def _where(key: tuple, g: pd.DataFrame, show_variant: bool) -> str:
    """The opening of a verdict sentence: the group ``key`` (:data:`GROUP_KEYS`) of the cells ``g``."""
    where = f"{g['_task_shown'].iloc[0]}, batch {key[1]}, seq {key[2]}, {key[3]} thread(s)"
    variant = key[4] if isinstance(key[4], str) and key[4] else "auto"
    if show_variant or variant != "auto":
        used = ", ".join(sorted(map(str, g["kernel_variant_used"].dropna().unique()))) if "kernel_variant_used" in g else None
        where += f", kernel {kernel_variant_text(variant, used or None)}"
    return where


def _verdict(key: tuple, g: pd.DataFrame, show_variant: bool, min_kept: float) -> str | None:
    """:func:`verdicts`' sentence for the group ``key`` of the cells ``g`` that ran, or None.

    The candidate is the kept cell with the highest ``latency_savings_vs_best_dense``, the figure
    the sentence quotes: under contention a same-round median and a ratio of pooled p50s can rank
    two cells apart, and a sentence naming a cell by one and quoting the other contradicts itself.
    A same-round factor is said as such, with both p50s beside it."""
    if g.empty:
        return None
    where = _where(key, g, show_variant)
    kept = g[pd.to_numeric(g["accuracy_kept"], errors="coerce") >= min_kept]
    dense = g[dense_fp32_mask(g)]
    if kept.empty or dense.empty:
        return None
    factor = pd.to_numeric(kept["latency_savings_vs_best_dense"], errors="coerce")
    x = kept.loc[factor.idxmax()] if factor.notna().any() else kept.loc[kept["latency_p50_s"].idxmin()]
    y = dense.loc[dense["latency_p50_s"].idxmin()]
    # the engine x's factor divides (a stored same-round factor keeps its own reference)
    ref_label = _text(x.get("best_dense_label")) or y.get("accelerator_label") or y["accelerator"]
    same_ref = dense[dense["accelerator_label"] == ref_label] if "accelerator_label" in dense else dense.iloc[:0]
    ref = same_ref.iloc[0] if len(same_ref) else y
    n, m = x.get("latency_savings_vs_best_dense"), x.get("energy_savings_vs_best_dense")
    basis = _latency_basis(x, ref) if is_same_round(x, "latency_savings_vs_best_dense") else ""
    if x.name in dense.index or not is_number(n) or n <= 1.0:
        fastest = x if x.name in dense.index else ref
        # a dense engine other than the p50-fastest can lead in the same rounds: its factor says so
        lead = (f" ({n:.2f}× the speed of {ref_label}" + (f"; {basis}" if basis else "") + ")"
                if fastest.name != ref.name and is_number(n) else "")
        return (f"{where}: none beats the dense engines at ≥ {min_kept:.0%} of the dense accuracy; "
                f"the fastest is the dense model under {fastest.get('accelerator_label') or fastest['accelerator']}{lead}.")
    acc = x.get("accelerator_label") or x["accelerator"]
    label = (f"the dense model under {acc} (no pruning)" if x["pruner"] == BASELINE_PRUNER
             else f"{x.get('pruner_label') or x['pruner']} + {acc}")
    low, high = x.get("latency_savings_vs_best_dense_low"), x.get("latency_savings_vs_best_dense_high")
    if is_number(low) and is_number(high) and low <= 1.0:  # interleaved rounds: no lead beyond the noise
        return (f"{where}: none is measurably faster than the dense engines at ≥ {min_kept:.0%} of the dense "
                f"accuracy: the highest latency factor, {label}, runs at {n:.2f}× the speed of the fastest dense engine "
                f"({ref_label}) with a 95 % interval of {low:.2f}–{high:.2f}×{f' ({basis})' if basis else ''}.")
    method = x.get("energy_method")
    how = f" ({method})" if isinstance(method, str) and method and method != "measured" else ""
    joules = (" (energy not comparable)" if not is_number(m) or m <= 0 else f" and {m:.2f}× fewer joules{how}"
              if m >= 1 else f" but {1 / m:.2f}× more joules{how}")
    return (f"{where}: fastest configuration that keeps ≥ {min_kept:.0%} of the dense accuracy: {label} — "
            f"{n:.2f}× lower latency{joules} than the fastest dense engine ({ref_label}){f' ({basis})' if basis else ''}.")


def _latency_basis(x: pd.Series, ref: pd.Series) -> str:
    """What a same-round latency factor of ``x`` against ``ref`` is, with both p50s (which can
    disagree with it under contention: the rounds are paired, the pooled p50s are not)."""
    rounds = x.get("latency_savings_vs_best_dense_rounds")
    p50s = (f"; p50 {x['latency_p50_s'] * 1e3:.3g} ms vs {ref['latency_p50_s'] * 1e3:.3g} ms"
            if positive(x.get("latency_p50_s")) and positive(ref.get("latency_p50_s")) else "")
    return f"latency: {same_round_words(rounds)}{p50s}"


def same_round_words(rounds: Any) -> str:
    """How a same-round factor over ``rounds`` rounds is said, in the verdict and in hover text alike."""
    return f"median of {int(rounds)} same-round ratios"


def pareto_front(df: pd.DataFrame, cost: str, gain: str = "accuracy") -> pd.Series:
    """Boolean mask of rows not dominated (no other row has lower-or-equal ``cost`` and
    higher-or-equal ``gain``, one of them strictly)."""
    mask = pd.Series(False, index=df.index)
    d = df.dropna(subset=[cost, gain])
    for i, r in d.iterrows():
        dominated = ((d[cost] <= r[cost]) & (d[gain] >= r[gain]) & ((d[cost] < r[cost]) | (d[gain] > r[gain]))).any()
        mask[i] = not dominated
    return mask


def folder_name(run_dir: Path) -> str:
    """The name of the folder ``run_dir`` stands for, resolved: ``.`` or ``run/..`` name a folder too."""
    p = Path(run_dir).resolve()
    return p.name or str(p)


#: the run files a page reads besides results.jsonl (their fields show as "?" when unreadable)
RUN_JSON_FILES = ("manifest.json", "hardware.json")


def damaged_run_files(run_dir: Path) -> list[str]:
    """Which of :data:`RUN_JSON_FILES` in ``run_dir`` exist but hold no readable JSON object."""
    return [name for name in RUN_JSON_FILES if (Path(run_dir) / name).exists() and not load_json(Path(run_dir) / name)]


#: the fields of the run files that the pages show, and the JSON type each holds as written
RUN_FILE_TYPES: dict[str, dict[str, type]] = {
    "hardware.json": {"cpu_model": str, "cpu_vendor": str, "isa_flags": list, "logical_cpus": numbers.Real,
                      "physical_cores": numbers.Real, "memory_gib": numbers.Real, "caches": dict, "os": str, "gpus": list,
                      "versions": dict, "kernel_variant": str, "kernel_variants_supported": list, "kernel_note": str,
                      "hardware_id": str,
                      # x86 only, and absent from files written before they were recorded
                      "cpu_family": numbers.Real, "cpu_model_number": numbers.Real, "cpu_stepping": numbers.Real},
    "manifest.json": {"sparsebench_version": str, "git_commit": str, "created": str, "harness_overhead_s": numbers.Real,
                      "config": dict, "target": str},
}


def load_run_file(run_dir: Path, name: str) -> tuple[dict, list[str]]:
    """``run_dir/name`` (one of :data:`RUN_FILE_TYPES`) as :func:`load_json` reads it, with every
    field the pages show in the type they expect, and what was wrong (``"isa_flags is null, not a
    list"``) for the page to warn about. A hand-edited file may hold anything: a single value of
    the wrong type becomes its text (a ``git_commit`` written as a number), a null where a list or
    an object belongs, or a list or an object where a single value belongs, is dropped (shown as
    ?), and the entries of a list become text (a GPU entry: ``{"name": text}``). A null single
    value stays: the writer leaves some unknown (``cpu_vendor``, ``memory_gib``, ``git_commit``).
    A field an older run wrote under a former name (``memory_gb``) is read under its current one."""
    d = load_json(Path(run_dir) / name)
    if name == "hardware.json":
        d = current_field_names(d)
    problems: list[str] = []
    for key, want in RUN_FILE_TYPES[name].items():
        if key not in d:
            continue
        v = d[key]
        container = want in (list, dict)
        if isinstance(v, want) and not (want is numbers.Real and isinstance(v, bool)):
            if key == "gpus" and not all(isinstance(g, dict) for g in v):
                problems.append(f"gpus holds {', '.join(sorted({type(g).__name__ for g in v if not isinstance(g, dict)}))}, not objects")
                d[key] = [g if isinstance(g, dict) else {"name": _json_text(g)} for g in v]
            elif want is list and key != "gpus" and not all(isinstance(x, str) for x in v):
                problems.append(f"{key} holds {', '.join(sorted({type(x).__name__ for x in v if not isinstance(x, str)}))}, not text")
                d[key] = [_json_text(x) for x in v]
            continue
        if v is None and not container:
            continue
        problems.append(f"{key} is {_json_type(v)}, not {_json_type(want)}")
        if container or isinstance(v, (list, dict)):
            del d[key]
        else:
            d[key] = _json_text(v)
    return d, problems


def _json_text(v: Any) -> str:
    """A JSON value as the text to show (``null`` → ``"null"``, ``true`` → ``"true"``)."""
    return v if isinstance(v, str) else json.dumps(v)


def _json_type(v: Any) -> str:
    """The JSON name of a value's type, or of a type (``null``, ``a number``, ``a list``...)."""
    t = v if isinstance(v, type) else type(v)
    if v is None:
        return "null"
    for py, name in ((bool, "true/false"), (numbers.Real, "a number"), (str, "text"), (list, "a list"), (dict, "an object")):
        if issubclass(t, py):
            return name
    return t.__name__


def load_json(path: Path) -> dict:
    """The JSON object in ``path``, or {} when the file is missing, unreadable, not UTF-8 JSON
    or not an object."""
    try:
        d = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return d if isinstance(d, dict) else {}
