"""Results rows → pandas DataFrame with savings factors against the dense fp32 baseline."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from profiler.labels import plugin_label
from profiler.results import read_results

BASELINE_PRUNER = "none"
BASELINE_ACCELERATOR = "torch-fp32"
# Cells that share these keys are compared with each other (same shape, threads and target).
GROUP_KEYS = ["task", "batch_size", "seq_len", "threads", "kernel_variant"]


def load_rows(run_dir: Path) -> tuple[pd.DataFrame, list[int]]:
    """All complete rows of ``run_dir/results.jsonl`` and the numbers of damaged lines."""
    rf = read_results(Path(run_dir) / "results.jsonl")
    df = pd.DataFrame(rf.rows)
    if df.empty:
        return df, rf.damaged_lines
    if "kernel_variant" not in df:
        df["kernel_variant"] = "auto"
    df["kernel_variant"] = df["kernel_variant"].fillna("auto")
    for col in ("pruner_params", "accelerator_params"):
        if col not in df:
            df[col] = [{} for _ in range(len(df))]
    df["sparsity"] = df["pruner_params"].map(lambda p: (p or {}).get("sparsity", 0.0) if isinstance(p, dict) else 0.0)
    # labels are recomputed from the params, so runs written by older versions read the same
    df["pruner_label"] = [plugin_label(n, p) for n, p in zip(df["pruner"], df["pruner_params"])]
    df["accelerator_label"] = [plugin_label(n, p) for n, p in zip(df["accelerator"], df["accelerator_params"])]
    df["label"] = df["pruner_label"] + " + " + df["accelerator_label"]
    return df, rf.damaged_lines


def add_savings(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``latency_savings_factor`` (baseline p50 ÷ cell p50), ``energy_savings_factor`` (baseline
    J/inference ÷ cell, only when both share one energy method), and ``accuracy_kept`` (cell metric
    ÷ baseline metric); the baseline is the dense (pruner none) torch-fp32 cell of the same group."""
    df = df.copy()
    for col in ("latency_savings_factor", "energy_savings_factor", "accuracy_kept", "accuracy_delta"):
        df[col] = float("nan")
    if df.empty:
        return df
    ok = df["status"] == "ok"
    base = df[ok & (df["pruner"] == BASELINE_PRUNER) & (df["accelerator"] == BASELINE_ACCELERATOR)]
    base = base.drop_duplicates(GROUP_KEYS).set_index(GROUP_KEYS)
    for i, row in df[ok].iterrows():
        key = tuple(row[k] for k in GROUP_KEYS)
        if key not in base.index:
            continue
        b = base.loc[key]
        if row.get("latency_p50_s"):
            df.at[i, "latency_savings_factor"] = b["latency_p50_s"] / row["latency_p50_s"]
        if (
            row.get("energy_j_per_inference") and b.get("energy_j_per_inference")
            and row.get("energy_method") == b.get("energy_method")
        ):
            df.at[i, "energy_savings_factor"] = b["energy_j_per_inference"] / row["energy_j_per_inference"]
        if row.get("accuracy") is not None and b.get("accuracy"):
            df.at[i, "accuracy_kept"] = row["accuracy"] / b["accuracy"]
            df.at[i, "accuracy_delta"] = row["accuracy"] - b["accuracy"]
    return df


def pareto_front(df: pd.DataFrame, cost: str, gain: str = "accuracy") -> pd.Series:
    """Boolean mask of rows not dominated (no other row has lower-or-equal ``cost`` and
    higher-or-equal ``gain``, one of them strictly)."""
    mask = pd.Series(False, index=df.index)
    d = df.dropna(subset=[cost, gain])
    for i, r in d.iterrows():
        dominated = ((d[cost] <= r[cost]) & (d[gain] >= r[gain]) & ((d[cost] < r[cost]) | (d[gain] > r[gain]))).any()
        mask[i] = not dominated
    return mask


def load_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
