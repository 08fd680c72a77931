"""``sparsebench report RUN_DIR``: one self-contained HTML page for a run."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from profiler.contention import BUSY_LIMIT_CPUS
from profiler.hardware import cpu_display_name
from profiler.timing import SPREAD_LIMIT
from reports.frame import (COLLAPSED_MARK, add_savings, add_task_key, collapsed_mask, damaged_run_files, energy_flag_text, folder_name, is_flagged,
                           is_number, is_same_round, kernel_variant_text, load_rows, load_run_file, pareto_front, same_round_words, shape_labels, task_names, verdicts)
from reports.html import (badge, damaged_warning, esc, figure, first_line, flagged_cell, fmt, fmt_kept, fmt_with_delta, ms, page, refused_cell,
                          run_file_warning, table, write_page)
from reports.multiply import multiply_section

#: what the "latency ×" figures are (the runner's same-round median where it stored one)
LATENCY_FACTOR_WORDS = "latency ×: median of same-round ratios against the baseline where interleaved, else the p50 ratio"

ENERGY_SYMBOL = {"measured": "circle", "power-poll": "diamond", "estimated": "circle-open", "unavailable": "x"}
#: the marker of a collapsed model in the scatter plots (never on a Pareto front)
COLLAPSED_SYMBOL = "x-thin-open"


def collapse_text(r: pd.Series) -> str:
    """Why a collapsed row's model collapsed (``collapse_reason``, else its ``reason``)."""
    for col in ("collapse_reason", "reason"):
        if isinstance(r.get(col), str) and r.get(col):
            return r[col]
    return "collapsed: the model predicts one class"


def metric_title(df: pd.DataFrame) -> str:
    """The headline metric's name(s) in this frame (``accuracy``, ``f1``, ``spearman``, ...)."""
    names = sorted(df["metric_name"].dropna().unique()) if "metric_name" in df else []
    return " / ".join(map(str, names)) or "accuracy"


def _cell_table(df: pd.DataFrame) -> str:
    headers = ["task", "pruner", "accelerator", "batch", "seq", "threads", "kernel", "status", metric_title(df), "kept",
               "sparsity (prunable)", "p50 ms", "p90 ms", "p99 ms", "n", "throughput /s", "J/inference (per sequence)",
               "J/inf net (per sequence)", "energy method", "latency ×", "energy ×", "model MB", "reason"]
    rows = []
    collapsed = collapsed_mask(df)
    for i, r in df.iterrows():
        method = r.get("energy_method") if isinstance(r.get("energy_method"), str) else "unavailable"  # NaN: a row without one
        spread = (" ⚠" if is_flagged(r.get("latency_spread_flag")) else "") + (" [busy]" if is_flagged(r.get("contention_flag")) else "")
        value = r.get("accuracy")
        accuracy: Any = (esc(fmt_with_delta(value, r.get("accuracy_delta"))), value if is_number(value) else None)
        reason = first_line(r.get("reason"), 160) if r["status"] != "ok" else ""
        if collapsed[i]:
            why = collapse_text(r)
            accuracy = (f"{accuracy[0]} <span class='badge failed' title='{esc(why)}'>{esc(COLLAPSED_MARK)}</span>", accuracy[1])
            reason = reason or first_line(why, 160)  # a failed row's own reason first
        kept = r.get("accuracy_kept")
        flags = energy_flag_text(r.get("energy_flags"))
        refused = r.get("energy_factor_refused")
        rows.append([
            r["task"], r["pruner_label"], r["accelerator_label"], r["batch_size"], r["seq_len"], r["threads"],
            kernel_variant_text(r.get("kernel_variant"), r.get("kernel_variant_used")),
            (badge(r["status"]), r["status"]), accuracy, (esc(fmt_kept(kept)), kept if is_number(kept) else None),
            r.get("sparsity_prunable"),
            (esc(fmt(ms(r.get("latency_p50_s")))) + spread, r.get("latency_p50_s")),
            ms(r.get("latency_p90_s")), ms(r.get("latency_p99_s")),
            r.get("latency_n"), r.get("throughput_per_s"), flagged_cell(r.get("energy_j_per_inference"), flags),
            flagged_cell(r.get("energy_j_per_inference_net"), flags), (badge(method), method),
            _latency_factor_cell(r),
            refused_cell(refused) if isinstance(refused, str) else r.get("energy_savings_factor"),
            r["model_bytes"] / 1e6 if pd.notna(r.get("model_bytes")) else None,
            reason,
        ])
    return table(headers, rows, left=3)


def latency_factor_text(r: pd.Series, key: str = "latency_savings_factor") -> str:
    """What latency factor ``key`` of a row is, for hover text: "median of 7 same-round ratios,
    95 % interval 1.02–1.31×; p50 ratio 1.19×", or "p50 ratio"."""
    if not is_same_round(r, key):
        return "p50 ratio (baseline p50 ÷ this cell's)"
    lo, hi = r.get(f"{key}_low"), r.get(f"{key}_high")
    text = same_round_words(r[f"{key}_rounds"])
    text += f", 95 % interval {fmt(lo)}–{fmt(hi)}×" if is_number(lo) and is_number(hi) else ""
    p50 = r.get("latency_savings_p50_ratio") if key == "latency_savings_factor" else None
    return text + (f"; p50 ratio {fmt(p50)}×" if is_number(p50) else "")


def _latency_factor_cell(r: pd.Series) -> Any:
    """The "latency ×" cell: the factor, with what it is (same-round median or p50 ratio) as hover text."""
    f = r.get("latency_savings_factor")
    if not is_number(f):
        return f
    return f"<span title='{esc(latency_factor_text(r))}'>{esc(fmt(f))}</span>", f


def _scatter(df: pd.DataFrame, x: str, xlabel: str, title: str) -> str:
    d = df[(df["status"] == "ok")].dropna(subset=[x, "accuracy"])
    if d.empty:
        return f"<p class='note'>{esc(title)}: no data.</p>"
    d = d.assign(_shape=shape_labels(d), _collapsed=collapsed_mask(d))
    scale = 1e3 if x.startswith("latency") else 1
    fig = go.Figure()
    for (shape, method), g in d[~d["_collapsed"]].groupby(["_shape", "energy_method"] if x.startswith("energy") else ["_shape", "status"]):
        name = shape + (f" ({method})" if x.startswith("energy") else "")
        fig.add_trace(go.Scatter(
            x=g[x] * scale, y=g["accuracy"], mode="markers", name=name, text=g["label"],
            marker=dict(size=10, symbol=ENERGY_SYMBOL.get(method, "circle") if x.startswith("energy") else "circle"),
            hovertemplate="%{text}<br>%{x:.4g}<br>accuracy %{y:.4f}<extra></extra>",
        ))
        front = g[pareto_front(g, x)].sort_values(x)
        fig.add_trace(go.Scatter(x=front[x] * scale, y=front["accuracy"], mode="lines+markers",
                                 line=dict(dash="dot"), marker=dict(size=18, symbol="circle-open", line=dict(width=2)),
                                 name=f"{name} Pareto front", hoverinfo="skip"))
    c = d[d["_collapsed"]]
    if not c.empty:  # shown, but apart: a model answering one class is on no front
        fig.add_trace(go.Scatter(
            x=c[x] * scale, y=c["accuracy"], mode="markers", name="collapsed (not on the Pareto front)",
            text=[f"{lab} {shape}<br>{esc(collapse_text(r))}" for lab, shape, (_, r) in zip(c["label"], c["_shape"], c.iterrows())],
            marker=dict(size=12, symbol=COLLAPSED_SYMBOL, color="#c0392b", line=dict(width=2, color="#c0392b")),
            hovertemplate="%{text}<br>%{x:.4g}<br>accuracy %{y:.4f}<extra>collapsed</extra>",
        ))
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=metric_title(df))
    return figure(fig)


def _savings(df: pd.DataFrame) -> str:
    d = df[(df["status"] == "ok")].dropna(subset=["latency_savings_factor"])
    if d.empty:
        return "<p class='note'>No savings factors: the run has no dense torch-fp32 baseline cell.</p>"
    d = d.assign(cell=d["label"] + " " + shape_labels(d) + collapsed_mask(d).map({True: " " + COLLAPSED_MARK, False: ""}))
    fig = go.Figure()
    fig.add_trace(go.Bar(x=d["cell"], y=d["latency_savings_factor"], name="latency ×",
                         hovertext=[latency_factor_text(r) for _, r in d.iterrows()],
                         hovertemplate="%{x}<br>%{y:.4g}×<br>%{hovertext}<extra>latency ×</extra>"))
    if d["energy_savings_factor"].notna().any():
        methods = ", ".join(sorted(d["energy_method"].dropna().unique()))
        fig.add_trace(go.Bar(x=d["cell"], y=d["energy_savings_factor"], name=f"energy × ({methods})"))
    fig.add_hline(y=1.0, line_dash="dash", line_color="#888")
    title = f"Savings factor vs dense fp32 baseline (higher is better; {LATENCY_FACTOR_WORDS})"
    if collapsed_mask(d).any():
        title += f" — {COLLAPSED_MARK}: the model collapsed, not a candidate"
    fig.update_layout(title=title, barmode="group", yaxis_title="×")
    return figure(fig)


def _thread_scaling(df: pd.DataFrame) -> str:
    """Bars of ``thread_scaling_factor`` (same-round median with its 95 % interval) of the cells
    timed beside the same recipe at fewer threads, and a warning naming those that are slower with
    more threads (interval entirely below 1). Empty when the run has one thread count per shape."""
    if "thread_scaling_factor" not in df:
        return ""
    ref = pd.to_numeric(df.get("thread_scaling_reference_threads"), errors="coerce")
    ok = df[df["status"] == "ok"]
    d = ok[ref[ok.index].notna() & (ok["threads"] != ref[ok.index])].dropna(subset=["thread_scaling_factor"])
    if d.empty:
        return ""
    # shapes labelled among every ok row: the thread count shows where the run has several
    d = d.assign(cell=d["label"] + " " + shape_labels(ok)[d.index], _ref=ref[d.index].astype(int))
    f, lo, hi = (pd.to_numeric(d[c], errors="coerce") for c in
                 ("thread_scaling_factor", "thread_scaling_factor_low", "thread_scaling_factor_high"))
    fig = go.Figure(go.Bar(x=d["cell"], y=f, name="thread scaling ×",
                           error_y=dict(type="data", symmetric=False, array=(hi - f).fillna(0), arrayminus=(f - lo).fillna(0)),
                           customdata=d["_ref"], hovertemplate="%{x}<br>%{y:.3g}× (÷ %{customdata} thread(s))<extra></extra>"))
    fig.add_hline(y=1.0, line_dash="dash", line_color="#888")
    fig.update_layout(title="Thread scaling: latency at the fewest threads ÷ latency here, same rounds (higher is better)",
                      yaxis_title="×")
    slower = d[hi < 1.0]
    warn = (f"<div class='warn'>{len(slower)} cell(s) are slower with more threads (95 % interval below 1×): "
            + esc(", ".join(f"{c} ({fmt(x)}×)" for c, x in zip(slower["cell"], f[slower.index]))) + ".</div>"
            if len(slower) else "")
    return ("<h2>Thread scaling</h2><p class='note'>Cells of one shape at every thread count are timed in the same "
            "rounds; each bar is the median over rounds of the same recipe's latency at the matrix's fewest threads ÷ "
            "this cell's latency.</p>" + warn + figure(fig))


def build_report_html(run_dir: Path) -> str:
    run_dir = Path(run_dir)
    df, damaged = load_rows(run_dir)
    (hw, hw_problems), (manifest, manifest_problems) = (load_run_file(run_dir, n) for n in ("hardware.json", "manifest.json"))
    title = f"sparsebench report — {folder_name(run_dir)}"
    head = [f"<h1>{esc(title)}</h1>"]

    def known(v: Any) -> Any:
        return "?" if v is None else v

    gpus = (", ".join(str(known(g.get("name"))) for g in hw["gpus"]) or "none") if "gpus" in hw else "?"
    head.append(
        f"<p class='note'>hardware <b>{esc(cpu_display_name(hw))}</b>, {esc(known(hw.get('logical_cpus')))} logical CPUs, "
        f"{esc(known(hw.get('memory_gib')))} GiB RAM, ISA {esc(' '.join(hw['isa_flags']) if 'isa_flags' in hw else '?')}, GPU {esc(gpus)}; "
        f"hardware_id {esc(known(hw.get('hardware_id')))}; sparsebench {esc(known(manifest.get('sparsebench_version')))}, "
        f"git {esc((manifest.get('git_commit') or '?')[:10])}</p>"
    )
    if damaged:
        head.append(damaged_warning("results.jsonl", damaged))
    for name in damaged_run_files(run_dir):
        head.append(f"<div class='warn'>{esc(name)} is damaged (no readable JSON object): what it records shows as ?.</div>")
    head += [run_file_warning("hardware.json", hw_problems), run_file_warning("manifest.json", manifest_problems)]
    if df.empty:
        return page(title, head + ["<p>No results yet.</p>"])
    df = add_savings(df)
    head.append(_harness_note(df, manifest.get("harness_overhead_s")))
    head.append(_models_note(df))
    lines = verdicts(df)
    head.append("<h2>Verdict</h2>" + ("<ul>" + "".join(f"<li>{esc(v)}</li>" for v in lines) + "</ul>" if lines else
                "<p class='note'>No verdict: the run needs, in each shape, the dense torch-fp32 baseline (pruner none, accelerator torch-fp32) with an accuracy.</p>"))
    head.append(_energy_banner(df))
    contended = int(df["contention_flag"].map(is_flagged).sum()) if "contention_flag" in df else 0
    if contended:
        head.append(f"<div class='warn'>[busy] {contended} cell(s) were timed while other processes kept more than "
                    f"{BUSY_LIMIT_CPUS:g} CPUs busy (<code>other_busy_cpus</code>): their latency and energy are inflated; rerun on a quiet machine.</div>")
    padded = df["padding_flag"].dropna() if "padding_flag" in df else pd.Series(dtype=object)
    if len(padded):
        head.append(f"<div class='warn'>[padding] {len(padded)} cell(s) have outputs that depend on padding: "
                    f"{esc(str(padded.iloc[0]))}.</div>")
    collapsed = df[collapsed_mask(df)]
    if len(collapsed):
        head.append(f"<div class='warn'>{esc(COLLAPSED_MARK)} {len(collapsed)} cell(s) hold a collapsed model, never a verdict candidate "
                    f"nor on a Pareto front: {esc(', '.join(dict.fromkeys(collapsed['label'])))} — {esc(first_line(collapse_text(collapsed.iloc[0]), 200))}.</div>")
    counts = df["status"].value_counts().to_dict()
    head.append("<p>" + " ".join(badge(k, f"{k}: {v}") for k, v in counts.items()) + "</p>")
    sections = head + [
        "<h2>Accuracy vs latency</h2>", _scatter(df, "latency_p50_s", "p50 latency per batch (ms)", "Accuracy vs p50 latency (Pareto front: rings and dotted line)"),
        "<h2>Accuracy vs energy</h2>", _scatter(df, "energy_j_per_inference", "energy per inference (J per sequence)", "Accuracy vs energy per inference (open markers: estimated)"),
        "<h2>Savings factors</h2>", _savings(df), _thread_scaling(df),
    ]
    sections.append(multiply_section(df))
    sections += [f"<h2>All cells</h2><p class='note'>Click a header to sort. ⚠ marks a latency spread (IQR/median) above {SPREAD_LIMIT:.0%}; [busy] a cell timed while other processes were busy; "
                 "(collapsed): the model predicts one class, or does no better than the majority class (the reason column says which). "
                 "n/a: a value that was not measured or not finite (the row's <code>reason</code>, <code>energy_reason</code> or <code>null_reasons</code> say why). "
                 "(±x) after the metric: the cell's metric − the dense baseline's, in the metric's units. "
                 "kept: the metric ÷ the dense baseline's, rounded down to 0.01 %. "
                 "⚠ after J/inference: the energy meter flagged the value (hover for its <code>energy_flags</code>: a counter wrap, DRAM left out, "
                 "a negative net energy, visits too short for the meter...). "
                 "Latency (p50, p90, p99) is per batch; J/inference is per sequence (one example): a batch costs batch × J/inference. "
                 "Savings factors divide the dense (pruner none) torch-fp32 cell of the same task, batch, sequence, threads and kernel variant. "
                 "latency ×: the median of same-round ratios against that cell (interleaved runs; hover for the rounds, the 95 % interval and the p50 ratio), "
                 "else the ratio of p50s. Energy factors only between cells of one energy method: "
                 "mixed: the two cells' methods differ (baseline's vs this cell's), so no factor.</p>", _cell_table(df)]
    return page(title, sections)


#: what each energy method means for a reader of the page
METHOD_WORDS = {"measured": "energy counters", "power-poll": "polled power × time, not an energy counter",
                "estimated": "not a measurement", "unavailable": "no energy value"}


def _energy_banner(df: pd.DataFrame) -> str:
    """The warning when some energy here is not ``measured``: the method, or with several, how
    many cells each covers (a list of methods would read as if every cell were all of them)."""
    counts = df.loc[df["status"] == "ok", "energy_method"].dropna().value_counts().sort_index()
    if all(m == "measured" for m in counts.index):
        return ""
    reasons = "; ".join(sorted({str(r) for col in ("energy_estimated_because", "energy_reason")
                                for r in df.get(col, pd.Series(dtype=str)).dropna().unique()}))
    if len(counts) == 1:
        (m,) = counts.index
        text = f"Energy here is {badge(m)}" + (" — not a measurement." if m == "estimated" else ".")
    else:
        text = ("Energy here comes from several methods: "
                + "; ".join(f"{badge(m)} for {n} cell(s) ({esc(METHOD_WORDS.get(m, m))})" for m, n in counts.items())
                + ". Energy factors only compare cells of one method.")
    return "<div class='warn'>" + text + (f" {esc(reasons[:400])}" if reasons else "") + "</div>"


def _training_text(t: Any) -> str:
    """``6315 steps, bf16, 9.1 steps/s, 694 s`` from a training record (missing parts left out)."""
    if not isinstance(t, dict):
        return "as given (not fine-tuned here)"
    parts = [f"{t['steps']} steps" if t.get("steps") is not None else None, t.get("precision"),
             f"{t['steps_per_s']:.2f} steps/s" if is_number(t.get("steps_per_s")) else None,
             f"{t['wall_time_s']:.0f} s" if is_number(t.get("wall_time_s")) else None]
    return ", ".join(p for p in parts if p)


def _models_note(df: pd.DataFrame) -> str:
    """Which dense model each task used (its fine-tune) and how each training pruner trained. A task
    is named as the charts name it (:func:`reports.frame.task_names`: a short key only where one
    name stands for several tasks)."""
    items = []
    if "dense_finetune" in df:
        d = add_task_key(df.copy())
        d = d.assign(_task=task_names(d)).dropna(subset=["dense_finetune"])
        for task, t in d.groupby("_task", sort=False)["dense_finetune"].first().items():
            items.append(f"dense model of {task}: fine-tuned {_training_text(t)}")
    if "pruner_training" in df:
        for label, t in df.dropna(subset=["pruner_training"]).groupby("pruner_label")["pruner_training"].first().items():
            items.append(f"{label}: trained {_training_text(t)}")
    if not items:
        return ""
    return "<h2>Models</h2><ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


def _harness_note(df: pd.DataFrame, overhead_s: Any) -> str:
    """The timing loop's own per-call cost (the null module) against the fastest cell's p50."""
    if not is_number(overhead_s):
        return ""
    fastest = pd.to_numeric(df.loc[(df["status"] == "ok") & (df["accelerator"] != "null"), "latency_p50_s"],
                            errors="coerce").min()
    share = overhead_s / fastest if is_number(fastest) and fastest > 0 else None
    text = f"harness overhead {overhead_s * 1e6:.1f} µs per call (null module)"
    if share is None:
        return f"<p class='note'>{esc(text)}.</p>"
    text += f", {share:.2%} of the fastest cell's p50 latency"
    cls = "warn" if share > 0.02 else "note"
    return f"<p class='{cls}'>{esc(text)}{' — above 2 %: the fastest latencies include a visible harness share' if share > 0.02 else ''}.</p>"


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the report (default ``RUN_DIR/report.html``) and return its path."""
    return write_page(Path(out) if out else Path(run_dir) / "report.html", build_report_html(Path(run_dir)))


def print_summary(run_dir: Path) -> None:
    """A short table of the run's cells on the terminal (rich)."""
    from rich.console import Console
    from rich.table import Table

    df, damaged = load_rows(Path(run_dir))
    if df.empty:
        return
    df = add_savings(df)
    t = Table(title=f"sparsebench — {folder_name(run_dir)}")
    for c in ("pruner", "accelerator", "batch", "seq", "threads", "status", "accuracy", "p50 ms", "p90 ms", "J/inf (per seq)", "energy method", "latency ×", "× best dense"):
        # labels fold onto more lines rather than end in "…": cells of a sweep differ at their end
        t.add_column(c, justify="left" if c in ("pruner", "accelerator", "status", "energy method") else "right",
                     overflow="fold" if c in ("pruner", "accelerator") else "ellipsis")
    collapsed = collapsed_mask(df)
    for i, r in df.iterrows():
        ok = r["status"] == "ok"
        t.add_row(
            str(r["pruner_label"]), str(r["accelerator_label"]), str(r["batch_size"]), str(r["seq_len"]), str(r["threads"]), str(r["status"]),
            fmt_with_delta(r.get("accuracy"), r.get("accuracy_delta"), 4) + (f" {COLLAPSED_MARK}" if collapsed[i] else ""), fmt(ms(r.get("latency_p50_s")) if ok else None), fmt(ms(r.get("latency_p90_s")) if ok else None),
            fmt(r.get("energy_j_per_inference") if ok else None), str(r.get("energy_method")), fmt(r.get("latency_savings_factor"), 2),
            fmt(r.get("latency_savings_vs_best_dense"), 2),
        )
    console = Console()
    # a readable table beats a wrapped one; a log or a pipe has no width to keep to: labels whole there
    console.width = max(console.width, 130 if console.is_terminal else 200)
    console.print(t)
    for i in df.index[collapsed]:
        console.print(f"{COLLAPSED_MARK} {df.at[i, 'label']} b{df.at[i, 'batch_size']}: {first_line(collapse_text(df.loc[i]), 200)} "
                      "— never a verdict candidate", markup=False)
    for line in verdicts(df):
        console.print(line)
