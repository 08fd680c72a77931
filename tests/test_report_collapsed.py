"""Reports and collapsed models, verdict wording and number formatting: a collapsed model never
wins (compare) nor serves as the fastest dense engine (frame), the report marks it; verdicts of
groups that differ only by kernel variant or task parameters read apart and name an energy method
that is not a measurement; small numbers and accuracy kept never merge across a threshold."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from profiler.results import Result
from reports.compare import build_compare
from reports.compare_page import build_compare_html
from reports.frame import add_savings, load_rows, shape_labels, verdicts
from reports.html import fmt, fmt_kept
from reports.report import build_report_html

MAJORITY = "collapsed: accuracy 0.9000 is no better than always answering the majority class 0 (0.9000)"


def result(cell_id, pruner, acc, p50, accuracy, kv="auto", prec="fp32", energy=None, method="estimated",
           sparsity=0.9, task_params=None, **extra) -> dict:
    """One results row as the runner writes it (``extra`` lands as top-level fields)."""
    pp = {} if pruner == "none" else {"sparsity": sparsity}
    r = Result(cell_id=cell_id, task="tiny-synthetic", pruner=pruner, pruner_params=pp, accelerator=acc, accelerator_params={},
               batch_size=1, seq_len=32, threads=1, status="ok", kernel_variant=kv, metric_name="accuracy",
               accuracy=accuracy, latency_p50_s=p50, latency_mean_s=p50, latency_p90_s=p50, latency_p99_s=p50, latency_n=10,
               energy_j_per_inference=energy, energy_method=method if energy else "unavailable",
               extra={"compute_precision": prec, "task_params": task_params or {}, **extra})
    return r.to_dict()


def write_run(path: Path, rows: list[dict]) -> Path:
    path.mkdir(parents=True)
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "hardware.json").write_text(json.dumps({"hardware_id": "hw1", "cpu_model": "x"}))
    (path / "manifest.json").write_text(json.dumps({"sparsebench_version": "0"}))
    return path


def collapsed_majority_run(tmp_path: Path) -> Path:
    """Dense 0.905; a pruned model at 0.870 (96 % kept); a collapsed 97 % model at 0.900 (99.4 % kept,
    5× faster): the collapsed one would win on the numbers alone."""
    return write_run(tmp_path / "run", [
        result("b", "none", "torch-fp32", 0.010, 0.905, collapsed=False),
        result("s", "magnitude", "sparse-cpu", 0.006, 0.870, collapsed=False),
        result("c", "magnitude", "sparse-int8", 0.002, 0.900, sparsity=0.97, prec="int8", collapsed=True,
               collapse_reason=MAJORITY, reason=MAJORITY)])


def test_compare_never_names_a_collapsed_model_best(tmp_path):
    run = collapsed_majority_run(tmp_path)
    c = build_compare([run])
    (w,) = c.best.to_dict("records")
    assert (w["pruner_label"], w["accelerator_label"]) == ("none", "torch-fp32")  # the baseline, not the collapsed 5×
    df, _ = load_rows(run)
    assert all("sparse-int8" not in v for v in verdicts(add_savings(df)))  # as the report's verdict
    html = build_compare_html([run])
    assert "collapsed</span>" in html and "99.44 %" in html  # marked in the savings table, kept rounded down


def test_a_collapsed_dense_engine_is_no_best_dense_reference(tmp_path):
    """torch-fp32 10 ms, a collapsed onnxruntime fp32 2 ms, sparse-cpu 4 ms: the factor and the name
    in the verdict both refer to torch-fp32; a factor the runner stored against the collapsed cell is
    recomputed."""
    run = write_run(tmp_path / "run", [
        result("b", "none", "torch-fp32", 0.010, 0.905, collapsed=False,
               best_dense_cell_id="o", latency_savings_vs_best_dense=0.2),
        result("o", "none", "onnxruntime", 0.002, 0.50, collapsed=True, collapse_reason=MAJORITY,
               best_dense_cell_id="o", latency_savings_vs_best_dense=1.0),
        result("s", "magnitude", "sparse-cpu", 0.004, 0.900, collapsed=False,
               best_dense_cell_id="o", latency_savings_vs_best_dense=0.5, latency_savings_vs_best_dense_low=0.45,
               latency_savings_vs_best_dense_high=0.55, best_dense_label="onnxruntime")])
    df, _ = load_rows(run)
    d = add_savings(df).set_index("cell_id")
    assert set(d["best_dense_label"]) == {"torch-fp32"}
    assert d.loc["s", "latency_savings_vs_best_dense"] == pytest.approx(2.5)  # 10 ms ÷ 4 ms, not the stored 0.5
    assert pd.isna(d.loc["s", "latency_savings_vs_best_dense_low"])  # its interval went with it
    (v,) = verdicts(add_savings(df))
    assert "2.50× lower latency" in v and "(torch-fp32)" in v and "0.50×" not in v


def test_a_stored_factor_against_a_collapsed_only_dense_cell_is_dropped(tmp_path):
    """Where the only dense fp32 cell collapsed, no best-dense factor or label stays."""
    run = write_run(tmp_path / "run", [
        result("o", "none", "torch-fp32", 0.002, 0.50, collapsed=True, collapse_reason=MAJORITY),
        result("s", "magnitude", "sparse-cpu", 0.004, 0.900, collapsed=False, best_dense_cell_id="o",
               latency_savings_vs_best_dense=0.5, best_dense_label="torch-fp32")])
    df, _ = load_rows(run)
    d = add_savings(df).set_index("cell_id")
    assert pd.isna(d.loc["s", "latency_savings_vs_best_dense"]) and pd.isna(d.loc["s", "best_dense_label"])


def test_a_collapsed_baseline_gives_no_kept_accuracy_and_no_verdict(tmp_path):
    """The dense baseline at the majority-class rate (a model used without fine-tuning): 0.55 is
    110 % of it, yet no kept accuracy; the verdict says why there is none."""
    run = write_run(tmp_path / "run", [
        result("b", "none", "torch-fp32", 0.010, 0.50, collapsed=True, collapse_reason=MAJORITY),
        result("s", "magnitude", "sparse-cpu", 0.004, 0.55, collapsed=False)])
    df, _ = load_rows(run)
    d = add_savings(df).set_index("cell_id")
    assert d.loc["s", "latency_savings_factor"] == pytest.approx(2.5)  # its speed is still a speed
    assert pd.isna(d.loc["s", "accuracy_kept"]) and pd.isna(d.loc["s", "accuracy_delta"])
    (line,) = verdicts(add_savings(df))
    assert "no verdict: the dense baseline (none + torch-fp32) " + MAJORITY in line
    assert "fastest configuration" not in line
    assert "no verdict" in build_report_html(run)


def test_a_collapsed_baseline_that_was_fine_tuned_asks_to_fine_tune_longer(tmp_path):
    """After a fine-tune of 15 steps, "fine-tune the model first" would be wrong: the verdict asks for
    a longer one, naming the steps it had (from the row's dense_finetune record, else the task's
    finetune_steps)."""
    rows = [result("b", "none", "torch-fp32", 0.010, 0.50, collapsed=True, collapse_reason=MAJORITY,
                   dense_finetune={"steps": 15, "precision": "fp32"}),
            result("s", "magnitude", "sparse-cpu", 0.004, 0.55, collapsed=False)]
    (line,) = verdicts(add_savings(load_rows(write_run(tmp_path / "a", rows))[0]))
    assert line.endswith("; fine-tune longer (finetune_steps = 15 now) or check the labels.")
    assert "fine-tune the model first" not in line
    rows[0] = result("b", "none", "torch-fp32", 0.010, 0.50, collapsed=True, collapse_reason=MAJORITY,
                     task_params={"finetune_steps": 15})
    (line,) = verdicts(add_savings(load_rows(write_run(tmp_path / "b", rows))[0]))
    assert "fine-tune longer (finetune_steps = 15 now)" in line
    rows[0] = result("b", "none", "torch-fp32", 0.010, 0.50, collapsed=True, collapse_reason=MAJORITY,
                     task_params={"finetune_steps": 0})  # used as given: fine-tuning it is the advice
    (line,) = verdicts(add_savings(load_rows(write_run(tmp_path / "c", rows))[0]))
    assert "fine-tune the model first (finetune_steps) or check its labels." in line


def test_a_baseline_metric_at_or_below_zero_gets_a_no_verdict_sentence(tmp_path, capsys):
    """A regression head's dense baseline at Pearson -0.0115: no cell's kept accuracy exists (a share
    of a negative number); each group says why there is no verdict, on the console and in the page,
    instead of the page's "the run needs ... the dense torch-fp32 baseline" while the baseline is there."""
    from reports.report import print_summary

    rows = [{**result("b", "none", "torch-fp32", 0.010, -0.0115), "metric_name": "pearson"},
            {**result("s", "magnitude", "sparse-cpu", 0.004, 0.2), "metric_name": "pearson"}]
    rows += [{**r, "cell_id": r["cell_id"] + "8", "batch_size": 8} for r in rows]
    run = write_run(tmp_path / "run", rows)
    df, _ = load_rows(run)
    assert pd.isna(add_savings(df)["accuracy_kept"]).all()
    lines = verdicts(add_savings(df))
    assert [("batch 1" in v, "batch 8" in v) for v in lines] == [(True, False), (False, True)]
    for v in lines:
        assert v.endswith(": no verdict: the dense baseline (none + torch-fp32) has pearson -0.0115, which is ≤ 0, "
                          "so kept accuracy (a cell's pearson ÷ the baseline's) is undefined.")
    html = build_report_html(run)
    assert "has pearson -0.0115, which is ≤ 0" in html and "the run needs" not in html
    print_summary(run)
    assert " ".join(capsys.readouterr().out.split()).count("has pearson -0.0115, which is ≤ 0") == 2  # rich wraps


def test_a_resumed_factor_keeps_its_own_same_round_reference(tmp_path):
    """Two dense engines within noise: the first session's p50s rank openvino first, the resumed
    session timed onnxruntime faster and stored the new cell's factor against it. The stored
    same-round factor, its interval and its reference stay; a p50 ratio across the sessions
    (17.0 ms ÷ 10.0 ms = 1.70) does not replace it."""
    run = write_run(tmp_path / "run", [
        result("b", "none", "torch-fp32", 0.040, 0.905),
        result("ov", "none", "openvino", 0.0170, 0.905, accelerator_label="openvino"),
        result("ort", "none", "onnxruntime", 0.0172, 0.905, accelerator_label="onnxruntime"),
        result("new", "magnitude", "sparse-cpu", 0.0100, 0.900, best_dense_cell_id="ort",
               latency_savings_vs_best_dense=1.60, latency_savings_vs_best_dense_low=1.58,
               latency_savings_vs_best_dense_high=1.62)])
    df, _ = load_rows(run)
    d = add_savings(df).set_index("cell_id")
    assert d.loc["new", "latency_savings_vs_best_dense"] == pytest.approx(1.60)
    assert d.loc["new", "latency_savings_vs_best_dense_low"] == pytest.approx(1.58)
    assert d.loc["new", "best_dense_label"] == "onnxruntime"
    assert d.loc["b", "best_dense_label"] == "openvino"  # rows without a stored factor: the fastest p50


def test_a_factor_stored_against_a_failed_baseline_is_dropped(tmp_path):
    """The torch-fp32 baseline was timed, then failed its accuracy pass: the factor the runner
    stored against it (and its interval) is no savings factor; no other row is the baseline."""
    run = write_run(tmp_path / "run", [
        result("b", "none", "torch-fp32", 0.040, None),
        result("s", "magnitude", "sparse-cpu", 0.020, 0.900, baseline_cell_id="b", latency_savings_factor=2.0,
               latency_savings_factor_low=1.9, latency_savings_factor_high=2.1)])
    rows = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    rows[0].update(status="failed", reason="accuracy pass: RuntimeError")
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    df, _ = load_rows(run)
    d = add_savings(df).set_index("cell_id")
    assert pd.isna(d.loc["s", "latency_savings_factor"]) and pd.isna(d.loc["s", "latency_savings_factor_low"])


def test_the_report_marks_a_collapsed_model(tmp_path):
    html = build_report_html(collapsed_majority_run(tmp_path))
    cells = html[html.index("<h2>All cells"):]
    rows = [r for r in cells.split("<tr>") if "sparse-int8" in r]
    assert len(rows) == 1 and "(collapsed)</span>" in rows[0] and f"title='{MAJORITY}'" in rows[0]
    assert f"<td>{MAJORITY}</td>" in rows[0]  # the reason column of an ok row that collapsed
    assert all("(collapsed)" not in r for r in cells.split("<tr>") if "sparse-cpu" in r)
    assert "1 cell(s) hold a collapsed model" in html
    assert "collapsed (not on the Pareto front)" in html  # its own trace, apart from the fronts
    assert "magnitude 0.97 + sparse-int8 b1 (collapsed)" in html  # its savings bar says so


def test_verdicts_of_kernel_variants_read_apart(tmp_path):
    rows = []
    for kv, p50 in (("avx2", 0.009), ("avx512", 0.004)):
        rows += [result(f"b{kv}", "none", "torch-fp32", 0.010, 0.90, kv=kv),
                 result(f"s{kv}", "magnitude", "sparse-cpu", p50, 0.899, kv=kv)]
    df, _ = load_rows(write_run(tmp_path / "kv", rows))
    v = verdicts(add_savings(df))
    assert len(v) == 2 and len({s.split(":")[0] for s in v}) == 2
    assert v[0].startswith("tiny-synthetic, batch 1, seq 32, 1 thread(s), kernel avx2:") and "1.11×" in v[0]
    assert v[1].startswith("tiny-synthetic, batch 1, seq 32, 1 thread(s), kernel avx512:") and "2.50×" in v[1]
    one, _ = load_rows(write_run(tmp_path / "auto", rows[:2]))  # one variant: nothing to tell apart
    (w,) = verdicts(add_savings(one.assign(kernel_variant="auto")))
    assert w.startswith("tiny-synthetic, batch 1, seq 32, 1 thread(s):")


def test_verdicts_of_two_tasks_of_one_name_read_apart(tmp_path):
    rows = []
    for data, p50 in (("a", 0.009), ("b", 0.004)):
        rows += [result(f"b{data}", "none", "torch-fp32", 0.010, 0.90, task_params={"dataset": data}),
                 result(f"s{data}", "magnitude", "sparse-cpu", p50, 0.899, task_params={"dataset": data})]
    df, _ = load_rows(write_run(tmp_path / "t", rows))
    d = add_savings(df)
    v = verdicts(d)
    heads = {s.split(":")[0] for s in v}
    assert len(v) == 2 and len(heads) == 2 and all(h.startswith("tiny-synthetic [") for h in heads)
    labels = set(shape_labels(d))  # the chart categories name the tasks alike
    assert len(labels) == 2 and {label.split(" b1")[0] for label in labels} == {h.split(",")[0] for h in heads}


@pytest.mark.parametrize("method, shown", [("estimated", " (estimated)"), ("power-poll", " (power-poll)"), ("measured", "")])
def test_the_verdict_names_an_energy_method_that_is_not_a_measurement(tmp_path, method, shown):
    df, _ = load_rows(write_run(tmp_path / "e", [
        result("b", "none", "torch-fp32", 0.010, 0.90, energy=1.0, method=method),
        result("s", "magnitude", "sparse-cpu", 0.005, 0.90, energy=0.4, method=method)]))
    (v,) = verdicts(add_savings(df))
    assert f"2.50× fewer joules{shown} than the fastest dense engine" in v


def test_small_numbers_and_accuracy_kept_never_merge():
    assert [fmt(x) for x in (0.0015, 0.0024, 0.0009)] == ["0.0015", "0.0024", "0.0009"]
    assert fmt(0.9896) == "0.9896" and fmt(0.99) == "0.99" and fmt(0.5) == "0.5" and fmt(0.0) == "0"
    assert fmt(12.3456) == "12.346" and fmt(12345.6) == "1.23e+04" and fmt(float("nan")) == "n/a" and fmt(None) == "n/a"
    assert fmt(0.7412, 2) == "0.741" and fmt(1.04, 2) == "1.04"
    assert fmt_kept(0.9896) == "98.96 %"
    assert fmt_kept(0.98999) == "98.99 %"  # below 99 % never reads as 99 %
    assert fmt_kept(0.99) == "99.00 %" and fmt_kept(0.891 / 0.9) == "99.00 %" and fmt_kept(1.0) == "100.00 %"
    assert fmt_kept(float("nan")) == "n/a" and fmt_kept(None) == "n/a"


def test_the_compare_latency_axis_says_what_it_plots(tmp_path):
    run = collapsed_majority_run(tmp_path)
    html = build_compare_html([run])
    assert "same-round ratios where interleaved" in html and "dense p50 ÷ cell p50" not in html


def test_a_damaged_manifest_is_named_on_the_page_and_by_the_command(tmp_path, capsys):
    from profiler.cli import main

    run = write_run(tmp_path / "run", [result("b", "none", "torch-fp32", 0.010, 0.905)])
    (run / "manifest.json").write_text('{"sparsebench_version": ')  # cut short
    html = build_report_html(run)
    assert "manifest.json is damaged" in html and "hardware.json is damaged" not in html
    assert main(["report", str(run)]) == 0
    assert "manifest.json is damaged" in capsys.readouterr().err


def test_a_failed_cell_shows_no_factor_an_older_row_stored():
    """Rows written before the runner cleared them carry factors on failed cells: the pages drop them."""
    rows = [result("b", "none", "torch-fp32", 0.010, 0.9),
            {**result("f", "magnitude", "sparse-cpu", 0.0001, 0.5), "status": "failed", "reason": "boom",
             "latency_savings_factor": 187.1, "latency_savings_factor_low": 150.0, "latency_savings_vs_best_dense": 99.0}]
    df = add_savings(pd.DataFrame(rows))
    failed = df[df["cell_id"] == "f"].iloc[0]
    assert pd.isna(failed["latency_savings_factor"]) and pd.isna(failed["latency_savings_factor_low"])
    assert pd.isna(failed["latency_savings_vs_best_dense"])
