"""Self-contained HTML page scaffolding shared by report and compare: plotly.js embedded once,
sortable tables, badges for how energy was obtained."""
from __future__ import annotations

import html
import math
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any, Iterable, Sequence

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from profiler.rundir import write_atomic
from reports.frame import is_number

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f3f3f3;cursor:pointer;position:sticky;top:0} th.sorted-asc:after{content:" ▲"} th.sorted-desc:after{content:" ▼"}
td.l,th.l{text-align:left} tr:nth-child(even){background:#fafafa}
.badge{display:inline-block;padding:0 5px;border-radius:3px;font-size:11px;font-weight:600}
.measured{background:#d4edda;color:#155724}.estimated{background:#fff3cd;color:#856404}
.power-poll{background:#d1ecf1;color:#0c5460}.unavailable{background:#eee;color:#666}
.failed{background:#f8d7da;color:#721c24}.skipped{background:#eee;color:#666}.ok{background:#d4edda;color:#155724}
.warn{background:#fff3cd;border:1px solid #ffe08a;padding:8px;margin:8px 0}
.note{color:#555;font-size:13px}
"""

SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
 t.querySelectorAll('th').forEach(function(th,ci){th.addEventListener('click',function(){
  var asc=!th.classList.contains('sorted-asc');
  t.querySelectorAll('th').forEach(function(h){h.classList.remove('sorted-asc','sorted-desc')});
  th.classList.add(asc?'sorted-asc':'sorted-desc');
  var rows=Array.from(t.tBodies[0].rows);
  rows.sort(function(a,b){var x=a.cells[ci].dataset.v??a.cells[ci].innerText,y=b.cells[ci].dataset.v??b.cells[ci].innerText;
   var nx=parseFloat(x),ny=parseFloat(y);
   if(!isNaN(nx)&&!isNaN(ny))return asc?nx-ny:ny-nx; return asc?x.localeCompare(y):y.localeCompare(x)});
  rows.forEach(function(r){t.tBodies[0].appendChild(r)});});});});
"""


def esc(x: Any) -> str:
    return html.escape(str(x))


def badge(kind: str, text: str | None = None) -> str:
    return f'<span class="badge {esc(kind)}">{esc(text or kind)}</span>'


def ms(seconds: Any) -> float | None:
    """Seconds → milliseconds for display; None when the value is not a number (None, NaN)."""
    return seconds * 1e3 if is_number(seconds) else None


def first_line(text: Any, limit: int) -> str:
    """The first line of the first ``limit`` characters of ``text`` ("" when not a string)."""
    return (text[:limit].splitlines() or [""])[0] if isinstance(text, str) else ""


def damaged_warning(name: str, lines: Sequence[int]) -> str:
    """The warning for a results file with unreadable lines (their 1-based numbers), or ""."""
    if not lines:
        return ""
    return (f"<div class='warn'>{esc(name)}: damaged line(s) {esc(', '.join(map(str, lines)))} could not be read "
            "(a run killed mid-write?) and are left out; every complete row is used.</div>")


def run_file_warning(name: str, problems: Sequence[str]) -> str:
    """The warning for a run file (``hardware.json``, ``manifest.json``) with fields of the wrong
    type (:func:`reports.frame.load_run_file`'s problems), or ""."""
    if not problems:
        return ""
    return (f"<div class='warn'>{esc(name)}: field(s) of the wrong type ({esc('; '.join(problems))}), edited by hand? "
            "They show as their text, or as ? where no text fits.</div>")


def fmt(v: Any, digits: int = 3) -> str:
    """``v`` for a table cell; ``"n/a"`` for a value that is missing or not finite (the pages'
    footnotes say so), never a number made up for it. Below 1, ``digits + 1`` significant digits
    (``0.0015``, ``0.0024``, ``0.9896``: two values never merge because they are small); from 1 to
    1e4, ``digits`` decimals without trailing zeros; above, ``digits`` significant digits."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) < 1:
            return f"{v:.{digits + 1}g}"
        if abs(v) >= 1e4:
            return f"{v:.{max(digits, 1)}g}"
        return f"{v:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{v:.0f}"
    return str(v)


def fmt_kept(v: Any) -> str:
    """Accuracy kept (cell metric ÷ dense metric) as a percentage with two decimals, **rounded
    down**, so that a cell below a threshold never reads as reaching it (0.9896 → ``98.96 %``,
    0.98999 → ``98.99 %``, never ``99.00 %``); ``"n/a"`` where there is none."""
    if not is_number(v):
        return "n/a"
    pct = (Decimal(repr(float(v))) * 100).quantize(Decimal("0.01"), rounding=ROUND_FLOOR)
    return f"{pct} %"


def fmt_with_delta(v: Any, delta: Any, digits: int = 3) -> str:
    """A metric and its difference from the dense baseline's, in the metric's units:
    ``"0.8807 (−0.0034)"``, ``"0.9 (±0)"``; the metric alone where there is no difference (no
    baseline, or a collapsed one), ``"n/a"`` where there is no metric."""
    text = fmt(v, digits)
    if not is_number(v) or not is_number(delta):
        return text
    # the difference to the decimals the metric shows, ``digits`` at least (a metric of 0.5 shows
    # one): 0.8738 (−0.0103), not (−0.010321)
    shown_decimals = len(text.split(".")[1]) if "." in text and "e" not in text else 0
    decimals = max(shown_decimals, digits)
    shown = f"{abs(float(delta)):.{decimals}f}"
    if float(shown) == 0:
        return f"{text} (±0)"
    return f"{text} ({'+' if delta > 0 else '−'}{shown})"


def flagged_cell(value: Any, flags: str, digits: int = 3) -> tuple[str, float | None]:
    """A table cell (display, sort value) for an energy value, with ⚠ and the meter's flags
    (:func:`reports.frame.energy_flag_text`) as its hover text where it has any."""
    mark = f" <span title='{esc(flags)}'>⚠</span>" if flags else ""
    return esc(fmt(value, digits)) + mark, value if is_number(value) else None


def refused_cell(refused: str) -> tuple[str, None]:
    """The cell of an energy factor refused because the two cells' energy methods differ
    (``"measured vs estimated"``): "mixed", never "n/a", which means not measured."""
    return f"<span class='badge estimated' title='{esc(refused)}'>mixed: {esc(refused)}</span>", None


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 0, sortable: bool = True) -> str:
    """HTML table; cells may be (display_html, sort_value) pairs or plain values (escaped)."""
    th = "".join(f'<th class="{"l" if i < left else ""}">{esc(h)}</th>' for i, h in enumerate(headers))
    body = []
    for r in rows:
        tds = []
        for i, c in enumerate(r):
            cls = ' class="l"' if i < left else ""
            if isinstance(c, tuple):
                disp, val = c
                sv = "" if val is None or (isinstance(val, float) and math.isnan(val)) else f' data-v="{esc(val)}"'
                tds.append(f"<td{cls}{sv}>{disp}</td>")
            else:
                tds.append(f"<td{cls}>{esc(fmt(c))}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f'<div style="overflow-x:auto"><table class="{"sortable" if sortable else ""}"><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def figure(fig: go.Figure) -> str:
    fig.update_layout(template="plotly_white", margin=dict(l=60, r=20, t=50, b=50), height=430)
    return fig.to_html(full_html=False, include_plotlyjs=False)


def page(title: str, sections: list[str]) -> str:
    """A complete HTML document embedding plotly.js once (no CDN: renders offline)."""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{CSS}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
        + "\n".join(sections)
        + f"<script>{SORT_JS}</script></body></html>"
    )


def write_page(out: Path, text: str) -> Path:
    """Write an HTML page to ``out`` (its folder created) with :func:`profiler.rundir.write_atomic`:
    a full disk leaves the previous page, or none, never a truncated one. Raises OSError."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(out, text.encode("utf-8"))
