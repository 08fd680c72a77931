"""Review findings on the report and compare pages: variants in the multiplicative savings, why
targets share no cell, what the latency factor is and which cell the verdict names, an empty
first run directory, a missing reference row, refused mixed-method energy factors, the
accuracy delta and the energy meter's flags."""
from __future__ import annotations

import html as htmllib
import re

import pandas as pd
import pytest

from reports.compare import build_compare
from reports.compare_page import build_compare_html
from reports.frame import add_savings, load_rows, verdicts
from reports.multiply import multiply_section, multiply_table
from reports.report import build_report_html, print_summary
from tests.test_compare import make_run, row, standard
from tests.test_report_collapsed import result, write_run


def text(page: str) -> str:
    """A page's visible text: scripts dropped, tags removed, entities unescaped."""
    page = re.sub(r"<script.*?</script>", "", page, flags=re.S)
    return htmllib.unescape(re.sub(r"<[^>]+>", " ", page))


def table_rows(page: str, heading: str) -> list[str]:
    """The rows of the first table after ``heading``, as HTML."""
    part = page[page.index(heading):]
    return part[:part.index("</table>")].split("<tr>")[2:]


# ---- 1: multiplicative savings name every variant -------------------------------------------------

def test_multiplicative_savings_show_every_sparse_variant_named():
    def cell(pruner, acc, p50, label=None, params=None):
        return dict(task="t", task_key="t", batch_size=1, seq_len=32, threads=1, kernel_variant="auto", status="ok",
                    pruner=pruner, pruner_label=pruner if pruner == "none" else f"{pruner} 0.5", accelerator=acc,
                    accelerator_label=label or acc, accelerator_params=params or {}, latency_p50_s=p50,
                    energy_j_per_inference=p50 * 10, energy_method="estimated", accuracy=0.9)

    df = add_savings(pd.DataFrame([
        cell("none", "torch-fp32", 0.12), cell("none", "int8-dynamic", 0.06),
        cell("magnitude", "sparse-cpu", 0.02, "sparse-cpu bsr4x1", {"format": "bsr4x1"}),  # written first
        cell("magnitude", "sparse-cpu", 0.04),
        cell("magnitude", "sparse-int8", 0.03),
    ]))
    t = multiply_table(df)
    assert sorted(zip(t["sparse_path"], t["latency_sparse"])) == [("sparse-cpu", pytest.approx(3.0)),
                                                                 ("sparse-cpu bsr4x1", pytest.approx(6.0))]
    assert set(t["both_path"]) == {"sparse-int8"} and set(t["int8_path"]) == {"int8-dynamic"}
    page = text(multiply_section(df))
    assert "magnitude 0.5 b1 · sparse-cpu bsr4x1 / sparse-int8" in page  # chart categories and rows told apart
    assert "magnitude 0.5 b1 · sparse-cpu / sparse-int8" in page


# ---- 2: no cell in common, said on the page with the task parameters that differ ------------------

def test_the_compare_page_says_why_targets_share_no_cell(tmp_path):
    import tests.test_compare as tc

    a = make_run(tmp_path / "a", standard())
    old, tc.TASK_PARAMS = tc.TASK_PARAMS, {"hidden_size": 36}
    try:
        rows_b = standard(threads=2)
    finally:
        tc.TASK_PARAMS = old
    b = make_run(tmp_path / "b", rows_b)
    c = build_compare([a, b])
    (note,) = [n for n in c.notes if "no cell in common" in n]
    assert "hidden_size 64 vs 36" in note and "task parameters of tiny" in note
    page = build_compare_html([a, b])
    assert "<div class='flag'>⚠ T1, T2 have no cell in common" in page and "hidden_size 64 vs 36" in page
    assert not build_compare([a, make_run(tmp_path / "c", standard(threads=2))]).notes  # cells in common: quiet


# ---- 3: the latency factor is said as what it is; the verdict names its cell by it ----------------

def contended_run(tmp_path):
    """Under contention the pooled p50s and the same-round medians rank two cells apart: the INT8
    cell has the lowest p50 but runs at 0.51× the dense engine in the same rounds, the sparse one
    at 1.40× (interval 1.2–1.6×)."""
    same_round = dict(latency_savings_vs_best_dense_rounds=7, latency_savings_factor_rounds=7)
    return write_run(tmp_path / "run", [
        result("b", "none", "torch-fp32", 0.0104, 0.9, accelerator_label="torch-fp32", latency_savings_factor=1.0,
               latency_savings_vs_best_dense=1.0, **same_round),
        result("q", "none", "int8-dynamic", 0.0054, 0.9, prec="int8", accelerator_label="int8-dynamic",
               latency_savings_factor=0.51, latency_savings_vs_best_dense=0.51, latency_savings_vs_best_dense_low=0.45,
               latency_savings_vs_best_dense_high=0.6, **same_round),
        result("s", "magnitude", "sparse-cpu", 0.0090, 0.9, sparsity=0.5, latency_savings_factor=1.4,
               latency_savings_factor_low=1.2, latency_savings_factor_high=1.6, latency_savings_vs_best_dense=1.4,
               latency_savings_vs_best_dense_low=1.2, latency_savings_vs_best_dense_high=1.6, **same_round),
    ])


def test_the_verdict_names_its_cell_by_the_factor_it_quotes(tmp_path):
    df, _ = load_rows(contended_run(tmp_path))
    (v,) = verdicts(add_savings(df))
    assert "fastest configuration that keeps ≥ 99% of the dense accuracy: magnitude 0.5 + sparse-cpu — 1.40× lower latency" in v
    assert "(latency: median of 7 same-round ratios; p50 9 ms vs 10.4 ms)" in v
    assert "int8-dynamic" not in v


def test_the_report_says_the_latency_factor_is_a_same_round_median(tmp_path):
    page = build_report_html(contended_run(tmp_path))
    assert "median of same-round ratios against the baseline where interleaved, else the p50 ratio" in page  # chart title
    assert "latency ×: the median of same-round ratios against that cell" in page  # the table's footnote
    (s,) = [r for r in table_rows(page, "<h2>All cells") if "sparse-cpu" in r]
    assert "title='median of 7 same-round ratios, 95 % interval 1.2–1.6×; p50 ratio 1.156×'>1.4<" in s


# ---- 4: an empty first run directory is no reference ---------------------------------------------

def test_an_empty_first_run_directory_is_not_the_reference(tmp_path):
    empty = make_run(tmp_path / "e", [])
    a = make_run(tmp_path / "a", standard())
    b = make_run(tmp_path / "b", standard(threads=2, speed=2.0))
    c = build_compare([empty, a, b])
    assert c.reference == "T2"
    r = c.joined[(c.joined["target"] == "T3") & (c.joined["pruner"] == "none") & (c.joined["accelerator"] == "torch-fp32")
                 & (c.joined["batch_size"] == 1)].iloc[0]
    assert r["latency_vs_ref"] == pytest.approx(2.0)
    assert any("T1 has no cell that ran: the ratios across targets divide T2" in n for n in c.notes)
    assert not any("no cell in common" in n for n in c.notes)  # the empty folder is not the cause
    page = build_compare_html([empty, a, b])
    assert "Across targets (reference T2" in page and "T1 has no cell that ran; the first target with one is the reference" in page
    cross = table_rows(page, "Across targets")
    assert not any("T1 missing" in r for r in cross) and any("2×" in r for r in cross)


# ---- 5: a missing reference row says so in both ratio columns -------------------------------------

def test_a_missing_reference_row_reads_alike_for_latency_and_energy(tmp_path):
    a = make_run(tmp_path / "a", [r for r in standard() if r["accelerator"] != "int8-dynamic"])
    b = make_run(tmp_path / "b", standard(threads=2))
    page = build_compare_html([a, b])
    (r,) = [r for r in table_rows(page, "Across targets") if "int8-dynamic · b1" in r]
    assert r.count("T1 missing") == 2 and "n/a" not in r


# ---- 6: refused mixed-method energy factors read "mixed", not "n/a" -------------------------------

def test_an_energy_factor_refused_for_mixed_methods_reads_mixed(tmp_path):
    rows = [row(), row(acc="int8-dynamic", p50=0.005, energy=0.5, method="measured")]
    df = add_savings(pd.DataFrame(rows))
    assert df.loc[1, "energy_factor_refused"] == "estimated vs measured" and pd.isna(df.loc[1, "energy_savings_factor"])
    assert df.loc[0, "energy_factor_refused"] is None
    assert pd.isna(add_savings(pd.DataFrame(rows), allow_mixed_energy=True).loc[1, "energy_factor_refused"])
    run = make_run(tmp_path / "a", rows)
    (r,) = [r for r in table_rows(build_compare_html([run]), "Savings factors per target") if "int8-dynamic" in r]
    assert "mixed: estimated vs measured" in r and "n/a" not in r
    (r,) = [r for r in table_rows(build_report_html(run), "<h2>All cells") if "int8-dynamic" in r]
    assert "mixed: estimated vs measured" in r


def test_estimates_taken_with_other_model_inputs_are_not_one_method():
    """A run resumed under a release that models RAM otherwise mixes two estimates: no factor."""
    base, cell = row(), row(acc="int8-dynamic", p50=0.005, energy=0.5)
    base.update(energy_estimate_tdp_w=20.0, energy_estimate_memory_w=9.478)
    cell.update(energy_estimate_tdp_w=20.0, energy_estimate_memory_w=8.828)
    df = add_savings(pd.DataFrame([base, cell]))
    assert df.loc[1, "energy_factor_refused"] == "estimated vs estimated (memory_w 9.478 vs 8.828)"
    assert pd.isna(df.loc[1, "energy_savings_factor"])
    cell["energy_estimate_memory_w"] = 9.478  # the same inputs: one method
    df = add_savings(pd.DataFrame([base, cell]))
    assert df.loc[1, "energy_factor_refused"] is None and df.loc[1, "energy_savings_factor"] > 0


# ---- 8: the accuracy delta is shown where accuracy is ---------------------------------------------

def test_the_accuracy_delta_is_shown_beside_the_metric(tmp_path, capsys):
    run = make_run(tmp_path / "a", [row(accuracy=0.8841), row("magnitude", 0.5, p50=0.008, accuracy=0.8807)])
    (r,) = [r for r in table_rows(build_report_html(run), "<h2>All cells") if "magnitude" in r]
    assert "0.8807 (−0.0034)" in r
    (b,) = [r for r in table_rows(build_report_html(run), "<h2>All cells") if "magnitude" not in r]
    assert "0.8841 (±0)" in b
    (r,) = [r for r in table_rows(build_compare_html([run]), "Latency, energy and accuracy per target") if "magnitude" in r]
    assert "0.8807 (−0.0034)" in r
    print_summary(run)
    assert "0.8807 (−0.0034)" in capsys.readouterr().out


# ---- energy flags: marked on the energy cells, with the flags as hover text -----------------------

def test_energy_values_the_meter_flagged_are_marked(tmp_path):
    flags = ["net energy -0.3 J is negative: not clamped", "DRAM left out of the sum"]
    run = make_run(tmp_path / "a", [dict(row(), energy_flags=flags, energy_j_per_inference_net=-0.3),
                                    dict(row("magnitude", 0.5, p50=0.008), energy_flags=[])])
    title = "title='net energy -0.3 J is negative: not clamped; DRAM left out of the sum'>⚠</span>"
    rows = table_rows(build_report_html(run), "<h2>All cells")
    (flagged,) = [r for r in rows if "magnitude" not in r]
    assert flagged.count(title) == 2  # J/inference and net J/inference
    (plain,) = [r for r in rows if "magnitude" in r]
    assert "⚠</span>" not in plain
    (flagged,) = [r for r in table_rows(build_compare_html([run]), "Latency, energy and accuracy per target") if "none +" in r]
    assert title in flagged


def test_an_accuracy_delta_is_shown_to_the_metrics_own_decimals():
    from reports.html import fmt_with_delta

    assert fmt_with_delta(0.87385, -0.010321, 4) == "0.87385 (−0.01032)"  # not (−0.010321)
    assert fmt_with_delta(0.8807339, -0.0034404) == "0.8807 (−0.0034)"
    assert fmt_with_delta(0.5, -0.0034) == "0.5 (−0.003)"  # a metric that shows one decimal: the delta still shows
    assert fmt_with_delta(0.9, 0.00001) == "0.9 (±0)"
