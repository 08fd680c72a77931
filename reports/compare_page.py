"""The page of ``sparsebench compare``: tables, plots and one self-contained HTML file built from
:class:`reports.compare.Comparison` (the join itself lives in :mod:`reports.compare`)."""
from __future__ import annotations

import math

from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import plotly.graph_objects as go

from profiler.hardware import cpu_display_name
from profiler.timing import SPREAD_LIMIT
from reports.compare import MIN_KEPT, SHAPE_KEYS, Comparison, Target, build_compare
from reports.frame import energy_flag_text, folder_name, is_flagged, is_number
from reports.html import (badge, damaged_warning, esc, figure, first_line, flagged_cell, fmt, fmt_kept, fmt_with_delta, ms, page,
                          refused_cell, run_file_warning, table, write_page)

EXTRA_CSS = """<style>
td.gap{color:#999;font-style:italic;background:#f6f6f6} tr.diff td{background:#fff8e1}
td.win{background:#e8f5e9;font-weight:600} .tag{font-size:11px;color:#555}
.flag{background:#fde2e1;border:1px solid #f5b5b0;padding:8px;margin:8px 0}
.targets{font-size:14px} .targets li{margin:2px 0}
</style>"""
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


# ---- hardware -------------------------------------------------------------------------------------

def _gb(b: Any) -> str:
    return f"{b / 2**30:.0f} GiB" if isinstance(b, (int, float)) and b else "?"


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
        ("run directory", lambda t: folder_name(t.run_dir)),
        ("hardware_id", lambda t: t.hardware_id or "?"),
        ("CPU", lambda t: cpu_display_name(t.hardware)),
        ("vendor", lambda t: t.hardware.get("cpu_vendor") or "?"),
        ("cores / logical CPUs", lambda t: f"{t.hardware.get('physical_cores', '?')} / {t.hardware.get('logical_cpus', '?')}"),
        ("caches", lambda t: " ".join(f"{k} {s}" for k, s in (t.hardware.get("caches") or {}).items()) or "?"),
        ("ISA", lambda t: " ".join(t.hardware.get("isa_flags") or []) or "?"),
        ("memory", lambda t: f"{t.hardware.get('memory_gib', '?')} GiB"),
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
        (f"noisy latency (spread > {SPREAD_LIMIT:.0%})", lambda t: f"{t.noisy_cells} cell{'s' if t.noisy_cells != 1 else ''}"),
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


def _cell(r: pd.Series, value: Any, digits: int = 3, suffix: str = "") -> Any:
    """A table cell: the value, or why there is none (missing cell, failed, skipped)."""
    st = r["status"]
    if st == "missing":
        return ("<span class='tag'>missing</span>", None)
    if st != "ok":
        return (badge(st) + f" <span class='tag'>{esc(first_line(r.get('reason'), 60))}</span>", None)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ("n/a", None)
    return (esc(fmt(value, digits)) + suffix, value)


def _recipe_rows(c: Comparison, targets: list[Target], cells: Callable[[pd.Series, pd.Series], list[Any]]) -> list[list[Any]]:
    """One table row per recipe: its label, then ``cells(row, reference_row)`` for each of
    ``targets`` (the reference row is the reference target's row of the same recipe)."""
    by = {(r["target"], r["recipe_id"]): r for _, r in c.joined.iterrows()}
    ref = c.reference or c.targets[0].key
    rows = []
    for _, rc in c.joined.drop_duplicates("recipe_id").iterrows():
        line: list[Any] = [rc["recipe"]]
        for t in targets:
            line += cells(by[(t.key, rc["recipe_id"])], by[(ref, rc["recipe_id"])])
        rows.append(line)
    return rows


def _savings_table(c: Comparison) -> str:
    def cells(r: pd.Series, _ref: pd.Series) -> list[Any]:
        kept = _cell(r, r.get("accuracy_kept"))
        if kept[1] is not None:  # rounded down: a cell below 99 % never reads as 99 %
            mark = (f" <span class='badge failed' title='{esc(r.get('collapse_reason') or 'collapsed')}'>collapsed</span>"
                    if is_flagged(r.get("collapsed")) else "")
            kept = (esc(fmt_kept(kept[1])) + mark, kept[1])
        refused = r.get("energy_factor_refused")
        energy = (refused_cell(refused) if r["status"] == "ok" and isinstance(refused, str) else
                  _cell(r, r.get("energy_savings_factor"), 3, "×" + (" ⚠ mixed" if bool(r.get("energy_mixed")) else "")))
        return [_cell(r, r.get("latency_savings_factor"), 3, "×"), energy, kept]

    heads = ["configuration"] + [f"{t.key} {m}" for t in c.targets for m in ("latency ×", "energy ×", "acc. kept")]
    return ("<h2>Savings factors per target</h2><p class='note'>Within each target: its dense (pruner none) torch-fp32 cell of the "
            "same task, batch and sequence ÷ the cell (higher is better); accuracy kept = cell metric ÷ dense metric, rounded down "
            "to 0.01 % (collapsed: the model answers one class, or no better than the majority class; never the best). "
            "Latency ×: the median of same-round ratios where interleaved, else the p50 ratio. mixed: the cell's energy method is not "
            "its baseline's, so no energy factor. 'missing': the target has no such cell. Click a header to sort.</p>" + table(heads, _recipe_rows(c, c.targets, cells), left=1))


def _measurements_table(c: Comparison) -> str:
    def cells(r: pd.Series, _ref: pd.Series) -> list[Any]:
        method = r.get("energy_method") if isinstance(r.get("energy_method"), str) else None
        spread = " ⚠" if is_flagged(r.get("latency_spread_flag")) else ""
        ok = r["status"] == "ok"
        return [_cell(r, ms(r.get("latency_p50_s")), 3, spread), _cell(r, ms(r.get("latency_p90_s"))),
                flagged_cell(r.get("energy_j_per_inference"), energy_flag_text(r.get("energy_flags"))) if ok else _cell(r, None),
                (badge(method), method) if ok and method else _cell(r, None),
                (esc(fmt_with_delta(r.get("accuracy"), r.get("accuracy_delta"), 4)), r.get("accuracy")) if ok and is_number(r.get("accuracy"))
                else _cell(r, r.get("accuracy"), 4)]

    heads = ["configuration"] + [f"{t.key} {m}" for t in c.targets for m in ("p50 ms", "p90 ms", "J/inference (per sequence)", "method", "accuracy")]
    return ("<h2>Latency, energy and accuracy per target</h2>"
            f"<p class='note'>⚠ after p50: latency spread (IQR/median) above {SPREAD_LIMIT:.0%} — a noisy measurement "
            "(shared or throttled cores); rerun before trusting that factor. Latency is per batch; J/inference is per sequence "
            "(one example); ⚠ after it: the energy meter flagged the value (hover for its flags). "
            "(±x) after accuracy: the cell's metric − its target's dense baseline's. n/a: not measured or not finite.</p>" + table(heads, _recipe_rows(c, c.targets, cells), left=1))


def _cross_table(c: Comparison) -> str:
    """Ratios against the reference target (:func:`reports.compare.reference_target`); empty with
    a single target."""
    ref = c.reference_target
    if len(c.targets) < 2 or ref is None:
        return ""
    others = [t for t in c.targets if t is not ref]

    def cells(r: pd.Series, rref: pd.Series) -> list[Any]:
        if rref["status"] != "ok":  # no reference value: both ratios say why, alike
            tag = (f"<span class='tag'>{esc(ref.key)} {esc(rref['status'])}</span>", None)
            return [tag, tag]
        refused = r.get("energy_vs_ref_refused")
        if r["status"] == "ok" and isinstance(refused, str):
            ecell: Any = refused_cell(refused)
        else:
            ecell = _cell(r, r.get("energy_vs_ref"), 3, "×" + (" ⚠ mixed" if r.get("energy_vs_ref_mixed") else ""))
        return [_cell(r, r.get("latency_vs_ref"), 3, "×"), ecell]

    why = "" if ref is c.targets[0] else f" — {c.targets[0].key} has no cell that ran; the first target with one is the reference"
    heads = ["configuration"] + [f"{t.key} {m}" for t in others for m in (f"latency vs {ref.key}", f"energy vs {ref.key}")]
    return (f"<h2>Across targets (reference {esc(ref.key)} · {esc(ref.label)}{esc(why)})</h2><p class='note'>{esc(ref.key)}'s value ÷ this "
            "target's, for the same configuration: above 1 means this target is faster / uses less energy (latency: ratio of p50s). "
            "Energy ratios only between one energy method unless --allow-mixed-energy.</p>"
            + table(heads, _recipe_rows(c, others, cells), left=1))


# ---- best configuration and plots -----------------------------------------------------------------

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
                     + f", {fmt_kept(w['accuracy_kept'])} of dense accuracy"
                     + (" <span class='badge estimated'>⚠ noisy latency: rerun</span>" if w["noisy"] else "")
                     + (f" <span class='tag'>(noisy cells not counted: {esc(w['noisy_skipped'])})</span>" if w["noisy_skipped"] else "")
                     + "</li>")
    shapes = c.best.drop_duplicates(SHAPE_KEYS)[SHAPE_KEYS]
    heads = ["task", "batch", "seq"] + [f"{t.key} · {t.label}" for t in c.targets]
    rows = []
    for _, s in shapes.iterrows():
        line: list[Any] = [c.best.loc[s.name, "task_shown"], s["batch_size"], s["seq_len"]]
        for t in c.targets:
            m = c.best[(c.best["target"] == t.key) & (c.best["task_key"] == s["task_key"]) & (c.best["batch_size"] == s["batch_size"]) & (c.best["seq_len"] == s["seq_len"])]
            if m.empty:
                line.append(("<span class='tag'>—</span>", None))
            else:
                w = m.iloc[0]
                line.append((f"{esc(w['pruner_label'])} + {esc(w['accelerator_label'])}<br><b>{fmt(w['latency_savings_factor'], 3)}×</b> "
                             f"<span class='tag'>kept {fmt_kept(w['accuracy_kept'])}</span>" + (" ⚠" if w["noisy"] else "")
                             + (f"<br><span class='tag'>not counted (noisy): {esc(w['noisy_skipped'])}</span>" if w["noisy_skipped"] else ""),
                             w["latency_savings_factor"]))
        rows.append(line)
    return (f"<h2>Best configuration per target (≥ {MIN_KEPT:.0%} of dense accuracy)</h2>"
            f"<p class='note'>Highest latency savings factor among cells keeping at least {MIN_KEPT:.0%} of the dense fp32 metric; "
            f"cells with a latency spread above {SPREAD_LIMIT:.0%} do not win while a steady one qualifies (⚠: the winner or its baseline is noisy). "
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
        noisy = [is_flagged(v) for v in g.get("latency_spread_flag", pd.Series(False, index=g.index))]
        timed = col != "accuracy"  # every other bar here rests on a timed loop
        fig.add_trace(go.Bar(y=g["recipe"], x=g[col], name=name, orientation="h", marker_color=COLORS[i % len(COLORS)],
                             marker_pattern_shape=["/" if n and timed else "" for n in noisy],
                             text=[fmt(v, 3) + (" ⚠ noisy" if n and timed else "") for v, n in zip(g[col], noisy)],
                             textposition="outside", cliponaxis=False,
                             hovertemplate="%{y}<br>%{x:.4g}<extra>" + esc(t.key) + "</extra>"))
    if hline is not None:
        fig.add_vline(x=hline, line_dash="dash", line_color="#888")
    if col != "accuracy":
        title += f" — hatched ⚠: latency spread above {SPREAD_LIMIT:.0%}, rerun before quoting"
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
                marker=dict(size=11, symbol=symbols[k % len(symbols)], color=COLORS[i % len(COLORS)], line=dict(width=1, color="#333")),
                hovertemplate="%{text}<br>p50 %{x:.4g} ms<br>accuracy %{y:.4f}<extra>" + esc(t.key) + "</extra>",
            ))
    fig.update_layout(title="Accuracy vs p50 latency, per target (colour) and batch size (symbol)", xaxis_title="p50 latency per batch (ms, log)",
                      yaxis_title="accuracy", xaxis_type="log")
    return figure(fig)


def build_compare_html(run_dirs: Sequence[Path], allow_mixed_energy: bool = False,
                       comparison: Comparison | None = None) -> str:
    """The compare page of ``run_dirs``; ``comparison``: their :func:`build_compare`, when the caller
    has it already (the CLI prints its notes)."""
    c = comparison if comparison is not None else build_compare(run_dirs, allow_mixed_energy)
    title = f"sparsebench compare — {len(c.targets)} target{'s' if len(c.targets) != 1 else ''}"
    head = [EXTRA_CSS, f"<h1>{esc(title)}</h1>",
            "<ul class='targets'>" + "".join(
                f"<li><b>{esc(t.key)}</b> · {esc(t.label)} — <span class='tag'>{esc(str(t.run_dir))}, hardware_id {esc(t.hardware_id or '?')}, "
                f"energy {' '.join(badge(m) for m in t.energy_methods) or 'none'}</span></li>" for t in c.targets) + "</ul>"]
    for f in c.notes + c.flags:
        head.append(f"<div class='flag'>⚠ {esc(f)}</div>")
    for t in c.targets:
        if t is next(x for x in c.targets if x.run_dir == t.run_dir):  # once per run directory
            head.append(damaged_warning(f"{folder_name(t.run_dir)}/results.jsonl", t.damaged_lines))
            head += [run_file_warning(f"{folder_name(t.run_dir)}/{name}", problems) for name, problems in t.file_problems.items()]
    if c.joined.empty or (c.joined["status"] == "missing").all():
        return page(title, head + ["<h2>Hardware</h2>", _hardware_table(c.targets), "<p>No results to compare.</p>"])
    gaps = {t.key: int(((c.joined["target"] == t.key) & (c.joined["status"] == "missing")).sum()) for t in c.targets}
    if any(gaps.values()):
        head.append("<p class='note'>Gaps (configurations a target lacks): " + ", ".join(f"{k}: {v}" for k, v in gaps.items()) + ".</p>")
    sections = head + [
        _best_section(c),
        "<h2>Hardware targets</h2>", _hardware_table(c.targets),
        "<h2>Latency savings per target</h2>", _bars(c, "latency_savings_factor", "Latency savings factor vs each target's dense fp32 (higher is better)", "× dense torch fp32 (p50 ÷ p50; the median of same-round ratios where interleaved)", hline=1.0),
        "<h2>Accuracy per target</h2>", _bars(c, "accuracy", "Accuracy per configuration and target", "accuracy"),
    ]
    if c.joined["energy_savings_factor"].notna().any():
        sections += ["<h2>Energy savings per target</h2>",
                     _bars(c, "energy_savings_factor", "Energy savings factor vs each target's dense fp32 (method in legend)", "× (dense J ÷ cell J)", hline=1.0)]
    sections += ["<h2>Accuracy vs latency</h2>", _scatter(c), _savings_table(c), _measurements_table(c), _cross_table(c)]
    return page(title, sections)


def write_compare(run_dirs: Sequence[Path], out: Path, allow_mixed_energy: bool = False,
                  comparison: Comparison | None = None) -> Path:
    """Write the compare page to ``out`` and return its path (``comparison``: see :func:`build_compare_html`)."""
    return write_page(Path(out), build_compare_html([Path(d) for d in run_dirs], allow_mixed_energy, comparison))
