"""Do the savings multiply? Pruning + sparse kernel, INT8, and both, each against dense fp32."""
from __future__ import annotations

import itertools
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from reports.frame import BASELINE_PRUNER, COLLAPSED_MARK, GROUP_KEYS, is_flagged, is_number, shape_labels
from reports.html import esc, figure, fmt_kept, refused_cell, table

SPARSE = "sparse-cpu"
INT8_CHOICES = ("int8-dynamic", "sparse-int8")  # INT8 alone on the dense model: the fastest of these
BOTH = "sparse-int8"


def multiply_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (group, pruned model, sparse-cpu variant, sparse-int8 variant): latency and
    energy factors of sparse alone, INT8 alone, their product, and the measured combined factor,
    with accuracy kept for each, whether each of the three cells' models collapsed
    (``collapsed_sparse``, ``_int8``, ``_both``), the energy methods that kept an energy factor
    from being computed (``energy_refused_sparse``, ``_int8``, ``_both``: "measured vs
    estimated", else None), the energy method(s) of the energy factors
    (``energy_method``, text; "" where none has one) and the accelerator labels of the three cells
    (``sparse_path``, ``int8_path``, ``both_path``). A config sweeping a parameter of sparse-cpu or
    sparse-int8 (``format``, ``attention``, ...) gives one row per pair of their variants, each
    named, never one variant standing for the rest.

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
            for (_, s), (_, b) in itertools.product(sp.iterrows(), both.iterrows()):
                out.append(_multiply_row(key, g["task"].iloc[0], label, s, i8, b))
    return pd.DataFrame(out)


def _multiply_row(key: tuple, task: str, label: str, s: pd.Series, i8: pd.Series, b: pd.Series) -> dict:
    """:func:`multiply_table`'s row of the sparse cell ``s``, the INT8 cell ``i8`` and the combined cell ``b``."""
    row = dict(zip(GROUP_KEYS, key), task=task)
    row.update(pruned=label, sparse_path=s["accelerator_label"], int8_path=i8["accelerator_label"],
               both_path=b["accelerator_label"])
    for kind in ("latency", "energy"):
        f = f"{kind}_savings_factor"
        row[f"{kind}_sparse"], row[f"{kind}_int8"], row[f"{kind}_both"] = s[f], i8[f], b[f]
        row[f"{kind}_product"] = s[f] * i8[f]
    row.update(acc_kept_sparse=s["accuracy_kept"], acc_kept_int8=i8["accuracy_kept"], acc_kept_both=b["accuracy_kept"])
    cells = {"sparse": s, "int8": i8, "both": b}
    row.update({f"collapsed_{k}": is_flagged(c.get("collapsed")) for k, c in cells.items()})
    # an energy factor refused because the cell's method is not the baseline's: "mixed", not "n/a"
    row.update({f"energy_refused_{k}": c.get("energy_factor_refused") if isinstance(c.get("energy_factor_refused"), str) else None
                for k, c in cells.items()})
    row["energy_method"] = ", ".join(sorted({c["energy_method"] for c in cells.values()
                                             if is_number(c["energy_savings_factor"]) and isinstance(c.get("energy_method"), str)}))
    return row


def multiply_section(df: pd.DataFrame) -> str:
    """HTML section: bars of each factor, product vs measured; empty string when the run lacks
    the cells (sparse-cpu and sparse-int8 on a pruned model plus INT8 on the dense one)."""
    t = multiply_table(df)
    if t.empty:
        return ""
    # a pruned model that collapsed under either kernel is marked as the rest of the report marks it
    mark = (t["collapsed_sparse"] | t["collapsed_both"]).map({True: " " + COLLAPSED_MARK, False: ""})
    # several variants of one pruned model: each chart category names its pair of kernels
    pair = t.duplicated(GROUP_KEYS + ["pruned"], keep=False).map({True: " · ", False: ""})
    pair = pair.where(pair == "", pair + t["sparse_path"] + " / " + t["both_path"])
    t = t.assign(cell=t["pruned"] + " " + shape_labels(t) + pair + mark)
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

    def energy(r: pd.Series, col: str) -> Any:
        """An energy factor, or "mixed" where the methods kept it from being computed (a product of
        a refused factor is refused too)."""
        refused = ([r["energy_refused_sparse"], r["energy_refused_int8"]] if col == "product" else [r[f"energy_refused_{col}"]])
        refused = [x for x in refused if isinstance(x, str)]
        return refused_cell("; ".join(dict.fromkeys(refused))) if refused else r[f"energy_{col}"]

    rows = [[r["cell"], r["sparse_path"] + (" " + COLLAPSED_MARK if r["collapsed_sparse"] else ""),
             r["int8_path"] + (" " + COLLAPSED_MARK if r["collapsed_int8"] else ""),
             r["both_path"] + (" " + COLLAPSED_MARK if r["collapsed_both"] else ""),
             r["latency_sparse"], r["latency_int8"], r["latency_product"], r["latency_both"],
             energy(r, "sparse"), energy(r, "int8"), energy(r, "product"), energy(r, "both"),
             kept(r, "sparse"), kept(r, "int8"), kept(r, "both")] for _, r in t.iterrows()]
    tab = table(["pruned model", "sparse path", "INT8 path", "sparse INT8 path", "lat × sparse", "lat × INT8", "lat × product", "lat × measured"]
                + [f"energy × {col}" + (f" ({methods})" if methods else "") for col in ("sparse", "INT8", "product", "measured")]
                + ["acc kept sparse", "acc kept INT8", "acc kept both"], rows, left=4)
    return "<h2>Multiplicative savings</h2><p class='note'>" + esc(
        "Pruning + sparse kernel (sparse-cpu on the pruned model), INT8 alone (the fastest INT8 path measured on the dense model), their product, "
        "and the measured combination (sparse-int8 on the pruned model); one row per pair of sparse-cpu and sparse-int8 variants run, each named. "
        "Latency factors: the median of same-round ratios against the dense fp32 cell where interleaved, else the p50 ratio. "
        "Accuracy kept = metric ÷ dense fp32 metric, rounded down to 0.01 %; "
        f"{COLLAPSED_MARK}: the model predicts one class, or does no better than the majority class. "
        "Energy factors only between cells of the baseline's energy method (mixed: the methods differ, no factor)."
    ) + "</p>" + "".join(figs) + tab


__all__ = ["multiply_section", "multiply_table"]
