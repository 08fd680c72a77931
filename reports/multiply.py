"""Do the savings multiply? Pruning + sparse kernel, INT8, and both, each against dense fp32."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from reports.frame import BASELINE_PRUNER, COLLAPSED_MARK, GROUP_KEYS, is_flagged, is_number, shape_labels
from reports.html import esc, figure, fmt_kept, table

SPARSE = "sparse-cpu"
INT8_CHOICES = ("int8-dynamic", "sparse-int8")  # INT8 alone on the dense model: the fastest of these
BOTH = "sparse-int8"


def multiply_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (group, pruned model): latency and energy factors of sparse alone, INT8 alone,
    their product, and the measured combined factor, with accuracy kept for each, whether each
    of the three cells' models collapsed (``collapsed_sparse``, ``_int8``, ``_both``) and the energy
    method(s) of the energy factors (``energy_method``, text; "" where none has one).

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
            cells = {"sparse": s, "int8": i8, "both": b}
            row.update({f"collapsed_{k}": is_flagged(c.get("collapsed")) for k, c in cells.items()})
            row["energy_method"] = ", ".join(sorted({c["energy_method"] for c in cells.values()
                                                     if is_number(c["energy_savings_factor"]) and isinstance(c.get("energy_method"), str)}))
            out.append(row)
    return pd.DataFrame(out)


def multiply_section(df: pd.DataFrame) -> str:
    """HTML section: bars of each factor, product vs measured; empty string when the run lacks
    the cells (sparse-cpu and sparse-int8 on a pruned model plus INT8 on the dense one)."""
    t = multiply_table(df)
    if t.empty:
        return ""
    # a pruned model that collapsed under either kernel is marked as the rest of the report marks it
    mark = (t["collapsed_sparse"] | t["collapsed_both"]).map({True: " " + COLLAPSED_MARK, False: ""})
    t = t.assign(cell=t["pruned"] + " " + shape_labels(t) + mark)
    # energy factors exist only within one method (the baseline's): name it, as the savings chart does
    methods = ", ".join(sorted({m for text in t["energy_method"] for m in text.split(", ") if m}))
    energy_x = f"energy × ({methods})" if methods else "energy ×"
    figs = []
    for kind in ("latency", "energy"):
        if t[f"{kind}_both"].isna().all():
            continue
        fig = go.Figure()
        for col, name in (("sparse", "pruning + sparse kernel"), ("int8", "INT8 alone"), ("product", "product of the two"), ("both", "measured: sparse INT8")):
            fig.add_trace(go.Bar(x=t["cell"], y=t[f"{kind}_{col}"], name=name))
        fig.add_hline(y=1.0, line_dash="dash", line_color="#888")
        title = f"Do {kind} savings multiply? (× vs dense fp32{f'; energy {methods}' if kind == 'energy' and methods else ''})"
        fig.update_layout(title=title, barmode="group", yaxis_title=energy_x if kind == "energy" else "latency ×")
        figs.append(figure(fig))

    def kept(r: pd.Series, col: str) -> tuple[str, float | None]:
        """Accuracy kept, rounded down as everywhere on the page, and marked where the model collapsed."""
        v = r[f"acc_kept_{col}"]
        return (esc(fmt_kept(v) + (" " + COLLAPSED_MARK if r[f"collapsed_{col}"] else "")), v if is_number(v) else None)

    rows = [[r["cell"], r["int8_path"] + (" " + COLLAPSED_MARK if r["collapsed_int8"] else ""),
             r["latency_sparse"], r["latency_int8"], r["latency_product"], r["latency_both"],
             r["energy_sparse"], r["energy_int8"], r["energy_product"], r["energy_both"],
             kept(r, "sparse"), kept(r, "int8"), kept(r, "both")] for _, r in t.iterrows()]
    tab = table(["pruned model", "INT8 path", "lat × sparse", "lat × INT8", "lat × product", "lat × measured"]
                + [f"energy × {col}" + (f" ({methods})" if methods else "") for col in ("sparse", "INT8", "product", "measured")]
                + ["acc kept sparse", "acc kept INT8", "acc kept both"], rows, left=2)
    return "<h2>Multiplicative savings</h2><p class='note'>" + esc(
        "Pruning + sparse kernel (sparse-cpu on the pruned model), INT8 alone (the fastest INT8 path measured on the dense model), their product, "
        "and the measured combination (sparse-int8 on the pruned model). Accuracy kept = metric ÷ dense fp32 metric, rounded down to 0.01 %; "
        f"{COLLAPSED_MARK}: the model predicts one class, or does no better than the majority class. "
        "Energy factors only between cells of the baseline's energy method."
    ) + "</p>" + "".join(figs) + tab


__all__ = ["multiply_section", "multiply_table"]
