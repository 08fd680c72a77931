"""Do the savings multiply? Pruning + sparse kernel, INT8, and both, each against dense fp32."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from reports.frame import BASELINE_PRUNER, GROUP_KEYS, shape_labels
from reports.html import esc, figure, table

SPARSE = "sparse-cpu"
INT8_CHOICES = ("int8-dynamic", "sparse-int8")  # INT8 alone on the dense model: the fastest of these
BOTH = "sparse-int8"


def multiply_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (group, pruned model): latency and energy factors of sparse alone, INT8 alone,
    their product, and the measured combined factor, with accuracy kept for each.

    Factors divide the dense (pruner ``none``) torch-fp32 cell of the same task, batch, sequence,
    threads and kernel variant (``add_savings`` must have run). Energy factors are NaN where
    methods differ from the baseline's.
    """
    ok = df[df["status"] == "ok"]
    out = []
    for key, g in ok.groupby(GROUP_KEYS):
        dense = g[g["pruner"] == BASELINE_PRUNER]
        int8 = dense[dense["accelerator"].isin(INT8_CHOICES)].dropna(subset=["latency_savings_factor"])
        if int8.empty:
            continue
        i8 = int8.loc[int8["latency_savings_factor"].idxmax()]  # the best INT8 path measured on the dense model
        for label, p in g[g["pruner"] != BASELINE_PRUNER].groupby("pruner_label"):
            sp, both = p[p["accelerator"] == SPARSE], p[p["accelerator"] == BOTH]
            if sp.empty or both.empty:
                continue
            s, b = sp.iloc[0], both.iloc[0]
            row = dict(zip(GROUP_KEYS, key), task=g["task"].iloc[0])
            row.update(pruned=label, int8_path=i8["accelerator_label"])
            for kind in ("latency", "energy"):
                f = f"{kind}_savings_factor"
                row[f"{kind}_sparse"], row[f"{kind}_int8"], row[f"{kind}_both"] = s[f], i8[f], b[f]
                row[f"{kind}_product"] = s[f] * i8[f]
            row.update(acc_kept_sparse=s["accuracy_kept"], acc_kept_int8=i8["accuracy_kept"], acc_kept_both=b["accuracy_kept"])
            out.append(row)
    return pd.DataFrame(out)


def multiply_section(df: pd.DataFrame) -> str:
    """HTML section: bars of each factor, product vs measured; empty string when the run lacks
    the cells (sparse-cpu and sparse-int8 on a pruned model plus INT8 on the dense one)."""
    t = multiply_table(df)
    if t.empty:
        return ""
    t = t.assign(cell=t["pruned"] + " " + shape_labels(t))
    figs = []
    for kind in ("latency", "energy"):
        if t[f"{kind}_both"].isna().all():
            continue
        fig = go.Figure()
        for col, name in (("sparse", "pruning + sparse kernel"), ("int8", "INT8 alone"), ("product", "product of the two"), ("both", "measured: sparse INT8")):
            fig.add_trace(go.Bar(x=t["cell"], y=t[f"{kind}_{col}"], name=name))
        fig.add_hline(y=1.0, line_dash="dash", line_color="#888")
        fig.update_layout(title=f"Do {kind} savings multiply? (× vs dense fp32)", barmode="group", yaxis_title="×")
        figs.append(figure(fig))
    rows = [[r["cell"], r["int8_path"], r["latency_sparse"], r["latency_int8"], r["latency_product"], r["latency_both"],
             r["energy_sparse"], r["energy_int8"], r["energy_product"], r["energy_both"],
             r["acc_kept_sparse"], r["acc_kept_int8"], r["acc_kept_both"]] for _, r in t.iterrows()]
    tab = table(["pruned model", "INT8 path", "lat × sparse", "lat × INT8", "lat × product", "lat × measured",
                 "energy × sparse", "energy × INT8", "energy × product", "energy × measured",
                 "acc kept sparse", "acc kept INT8", "acc kept both"], rows, left=2)
    return "<h2>Multiplicative savings</h2><p class='note'>" + esc(
        "Pruning + sparse kernel (sparse-cpu on the pruned model), INT8 alone (the fastest INT8 path measured on the dense model), their product, "
        "and the measured combination (sparse-int8 on the pruned model). Accuracy kept = metric ÷ dense fp32 metric."
    ) + "</p>" + "".join(figs) + tab


__all__ = ["multiply_section", "multiply_table"]
