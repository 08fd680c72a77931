"""One real end-to-end matrix on the tiny-synthetic task, to report.html; resume; bad configs."""
import json
import math
import statistics

import pytest

from profiler.cli import main
from profiler.config import expand, parse_config
from profiler.identity import ids_of_row
from profiler.interleave import same_round_ratios
from profiler.results import read_results
from profiler.runner import Runner, accuracy_key
from profiler.timing import tail_min_samples
from reports.report import write_report
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "r"
    cfg = parse_config(tiny_config())
    Runner(cfg, run_dir).run()
    return cfg, run_dir


def test_matrix_writes_every_cell_and_report(finished_run):
    cfg, run_dir = finished_run
    rows = read_results(run_dir / "results.jsonl").rows
    assert sorted(r["cell_id"] for r in rows) == sorted(c.cell_id for c in expand(cfg))
    assert all(r["status"] == "ok" for r in rows), [r["reason"] for r in rows if r["status"] != "ok"]
    for r in rows:
        tails = [r[f"latency_p{q}_s"] for q in (90, 99) if r["latency_n"] >= tail_min_samples(q)]
        assert 0 < r["latency_p50_s"] <= min(tails + [math.inf]) and tails == sorted(tails)
        for q in (90, 99):  # a tail of too few calls would be their maximum: none, and why
            if r["latency_n"] < tail_min_samples(q):
                assert r[f"latency_p{q}_s"] is None and f"had {r['latency_n']}" in r["null_reasons"][f"latency_p{q}_s"]
        assert r["latency_n"] >= 3 and r["throughput_per_s"] > 0
        assert r["energy_method"] == "estimated" and r["energy_j_per_inference"] > 0
        assert 0.0 <= r["accuracy"] <= 1.0 and r["model_bytes"] > 0
        assert r["hardware_id"] == json.loads((run_dir / "hardware.json").read_text())["hardware_id"]
    dense = [r for r in rows if r["pruner"] == "none" and r["accelerator"] == "torch-fp32"]
    assert all(r["accuracy"] >= 0.9 for r in dense)  # the synthetic task is learnable
    sp = {r["pruner_params"].get("sparsity"): r["sparsity_prunable"] for r in rows}
    assert sp[0.9] == pytest.approx(0.9, abs=1e-3) and sp[None] < 0.01
    cells = {c.cell_id: c for c in expand(cfg)}
    for r in rows:  # identity fields on every row
        assert (r["recipe_id"], r["model_id"]) == (cells[r["cell_id"]].recipe_id, cells[r["cell_id"]].model_id)
        assert ids_of_row(r) == {"recipe_id": r["recipe_id"], "model_id": r["model_id"]}
    for r in rows:  # interleaved (the default): same-round factors against both references, per shape
        base = [d for d in dense if d["batch_size"] == r["batch_size"]][0]
        assert r["baseline_cell_id"] == base["cell_id"] and r["latency_rounds"] >= 3
        assert r["latency_savings_factor_low"] <= r["latency_savings_factor"] <= r["latency_savings_factor_high"]
        assert r["latency_savings_factor_rounds"] == r["latency_rounds"] == len(r["latency_round_medians_s"])
        # the stored round medians give back the row's factor: any two cells can be divided the same way
        ratios = same_round_ratios(base["latency_round_medians_s"], r["latency_round_medians_s"])
        assert statistics.median(ratios) == pytest.approx(r["latency_savings_factor"], rel=1e-12)
        assert r["best_dense_cell_id"] in {d["cell_id"] for d in rows if d["pruner"] == "none"}
        assert r["compute_precision"] == ("int8" if r["accelerator"] == "int8-dynamic" else "fp32")
    assert all(d["latency_savings_factor"] == 1.0 for d in dense)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["config"]["tasks"][0]["name"] == "tiny-synthetic" and "versions" in manifest
    assert 0 < manifest["harness_overhead_s"] < 1e-3
    html = write_report(run_dir).read_text()
    assert html.count("plotly.js v") <= 2 and "cdn.plot.ly" not in html.split("</script>", 1)[1]
    assert "Pareto" in html and "estimated" in html and "Savings factor" in html


def test_resume_adds_only_missing_cells(finished_run, tmp_path):
    cfg, run_dir = finished_run
    lines = (run_dir / "results.jsonl").read_text().splitlines(keepends=True)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    for f in ("manifest.json", "hardware.json", "idle_power.json"):
        (resumed / f).write_text((run_dir / f).read_text())
    # a run killed after 5 cells, in the middle of writing the 6th
    (resumed / "results.jsonl").write_text("".join(lines[:5]) + lines[5][:40])
    Runner(cfg, resumed).run()
    rows = read_results(resumed / "results.jsonl")
    assert rows.damaged_lines == []
    ids = [r["cell_id"] for r in rows.rows]
    assert len(ids) == len(set(ids)) == len(lines)
    assert ids[:5] == [json.loads(l)["cell_id"] for l in lines[:5]]


def test_resume_times_the_finished_references_again_so_factors_stay_same_round(finished_run, tmp_path):
    """A run killed with only its dense torch-fp32 rows written: the resumed cells are timed beside a
    fresh timing of those reference cells (same-round factors against them), whose rows stay as written."""
    cfg, run_dir = finished_run
    rows = [json.loads(l) for l in (run_dir / "results.jsonl").read_text().splitlines()]
    kept = [r for r in rows if r["pruner"] == "none" and r["accelerator"] == "torch-fp32"]
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    for f in ("manifest.json", "hardware.json", "idle_power.json"):
        (resumed / f).write_text((run_dir / f).read_text())
    text = "".join(json.dumps(r) + "\n" for r in kept)
    (resumed / "results.jsonl").write_text(text)
    Runner(cfg, resumed).run()
    out = read_results(resumed / "results.jsonl")
    assert out.duplicates == [] and (resumed / "results.jsonl").read_text().startswith(text)  # not written again
    new = [r for r in out.rows if r["cell_id"] not in {k["cell_id"] for k in kept}]
    assert len(new) == len(rows) - len(kept)
    for r in new:
        base = [k for k in kept if k["batch_size"] == r["batch_size"]][0]
        assert r["baseline_cell_id"] == base["cell_id"] and r["latency_savings_factor"] is not None
        assert r["latency_savings_factor_rounds"] == len(r["latency_round_medians_s"]) >= 3
        assert r["interleave_group_id"] != base["interleave_group_id"]  # another timing session than the kept row's
    assert len({r["interleave_group_id"] for r in new}) == len({r["batch_size"] for r in new})


def test_resume_reuses_accuracy_of_rows_without_ids(finished_run, tmp_path):
    """Rows written before recipe_id/model_id existed still key the accuracy reuse."""
    cfg, run_dir = finished_run
    rows = [json.loads(l) for l in (run_dir / "results.jsonl").read_text().splitlines()]
    old = []
    for r in rows[:5]:
        r = dict(r)
        del r["recipe_id"], r["model_id"]
        old.append(json.dumps(r) + "\n")
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    for f in ("manifest.json", "hardware.json", "idle_power.json"):
        (resumed / f).write_text((run_dir / f).read_text())
    (resumed / "results.jsonl").write_text("".join(old))
    runner = Runner(cfg, resumed)
    runner.run()
    for r in rows[:5]:
        assert runner._accuracy[accuracy_key(r["model_id"], r.get("numerics_key"))] == r["accuracy"]
    new = read_results(resumed / "results.jsonl").rows[5:]
    assert len(new) == len(rows) - 5 and all(r["recipe_id"] and r["model_id"] for r in new)


@pytest.mark.parametrize("override, needle", [
    ({"pruners": [{"name": "prune-it-all"}]}, "valid choices"),
    ({"pruners": [{"name": "magnitude", "sparsity": 1.5}]}, "sparsity"),
])
def test_cli_rejects_bad_config_before_any_work(tmp_path, capsys, override, needle):
    import tomllib  # noqa: F401  (config is TOML)

    cfg = tiny_config(**override)
    cfg["run"]["output_dir"] = str(tmp_path / "runs")
    path = tmp_path / "bad.toml"
    path.write_text(_to_toml(cfg))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "pruners[0]" in err and needle in err
    assert not (tmp_path / "runs").exists()


def _to_toml(cfg: dict) -> str:
    def val(v):
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return repr(v)

    out = []
    for section, body in cfg.items():
        if isinstance(body, list):
            for entry in body:
                out.append(f"[[{section}]]")
                out += [f"{k} = {val(v)}" for k, v in entry.items()]
        else:
            out.append(f"[{section}]")
            out += [f"{k} = {val(v)}" for k, v in body.items()]
    return "\n".join(out) + "\n"


def test_sequential_schedule_times_cells_one_by_one(tmp_path):
    cfg = parse_config(tiny_config(
        measure={"warmup_iters": 1, "min_iters": 3, "min_seconds": 0.02, "max_seconds": 1.0, "idle_seconds": 0,
                 "schedule": "sequential"},
        pruners=[{"name": "none"}], matrix={"batch_size": [1], "seq_len": [16], "threads": [1]}))
    Runner(cfg, tmp_path / "seq").run()
    rows = read_results(tmp_path / "seq" / "results.jsonl").rows
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    assert all("latency_rounds" not in r for r in rows)
    # the same keys as an interleaved row, null: no same-round partner; the report takes the ratio of medians
    assert all(r["latency_savings_factor"] is None and r["latency_savings_vs_best_dense_rounds"] == 0 for r in rows)
    from reports.frame import add_savings, load_rows
    df, _ = load_rows(tmp_path / "seq")
    assert add_savings(df)["latency_savings_factor"].notna().all()
    html = write_report(tmp_path / "seq").read_text()
    assert "Verdict" in html and ("none beats the dense engines" in html or "fastest configuration" in html)


def _dense_rows(tmp_path, accelerators: list[str]) -> dict[str, dict]:
    """The rows, by accelerator, of a quick interleaved run of the dense model under ``accelerators``
    (one shape: b1, seq 16, 1 thread) in ``tmp_path / "c"``."""
    cfg = parse_config(tiny_config(
        measure={"warmup_iters": 1, "min_iters": 3, "min_seconds": 0.02, "max_seconds": 1.0, "idle_seconds": 0,
                 "visit_seconds": 0.01, "min_rounds": 2},
        pruners=[{"name": "none"}], accelerators=[{"name": a} for a in accelerators],
        matrix={"batch_size": [1], "seq_len": [16], "threads": [1]}))
    Runner(cfg, tmp_path / "c").run()
    return {r["accelerator"]: r for r in read_results(tmp_path / "c" / "results.jsonl").rows}


def test_a_collapsed_dense_fp32_engine_is_no_best_dense_reference(tmp_path, monkeypatch):
    """A dense fp32 engine that answers one class (constant logits, faster than any real engine)
    is recorded, but the same-round factors against "the fastest dense engine" use the real one."""
    from accelerators.null import NullAccelerator
    from profiler.plugins import ACCELERATORS

    class BrokenFP32(NullAccelerator):
        """Constant logits claimed as fp32 arithmetic."""
        name = "broken-fp32"
        compute_precision = "fp32"

    monkeypatch.setattr(ACCELERATORS, "_classes", dict(ACCELERATORS._classes))
    monkeypatch.setattr(ACCELERATORS, "_sources", dict(ACCELERATORS._sources))
    ACCELERATORS.register(BrokenFP32)
    rows = _dense_rows(tmp_path, ["torch-fp32", "broken-fp32"])
    assert rows["broken-fp32"]["collapsed"] is True
    assert rows["broken-fp32"]["latency_p50_s"] < rows["torch-fp32"]["latency_p50_s"]  # it would have been "best"
    assert {r["best_dense_cell_id"] for r in rows.values()} == {rows["torch-fp32"]["cell_id"]}
    assert rows["torch-fp32"]["latency_savings_vs_best_dense"] == 1.0


def test_no_savings_factor_against_a_baseline_that_failed_its_evaluation(tmp_path, monkeypatch):
    """The torch-fp32 baseline is timed, then its accuracy pass fails: its row says failed, and no
    other row carries a savings factor against it (the fastest usable dense engine still serves)."""
    real = Runner._evaluate

    def evaluate(self, c, task, row, module):
        if row.pruner == "none" and row.accelerator == "torch-fp32":
            return "RuntimeError: evaluation broke"
        return real(self, c, task, row, module)

    monkeypatch.setattr(Runner, "_evaluate", evaluate)
    rows = _dense_rows(tmp_path, ["torch-fp32", "int8-dynamic"])
    assert rows["torch-fp32"]["status"] == "failed" and rows["int8-dynamic"]["status"] == "ok"
    assert rows["int8-dynamic"].get("latency_savings_factor") is None
    assert rows["int8-dynamic"].get("baseline_cell_id") is None


def test_a_failed_cell_carries_no_savings_factor(tmp_path, monkeypatch):
    """A cell timed in its group whose accuracy pass then fails: failed, and no factor in its row
    (the console table and the report would show it as a result); the ok cells keep theirs."""
    real = Runner._evaluate

    def evaluate(self, c, task, row, module):
        if row.accelerator == "null":
            return "RuntimeError: evaluation broke"
        return real(self, c, task, row, module)

    monkeypatch.setattr(Runner, "_evaluate", evaluate)
    rows = _dense_rows(tmp_path, ["torch-fp32", "null"])
    bad = rows["null"]
    assert bad["status"] == "failed" and bad["latency_p50_s"] is not None
    for key in ("latency_savings_factor", "latency_savings_vs_best_dense", "thread_scaling_factor"):
        assert bad[key] is None and bad[f"{key}_low"] is None and bad[f"{key}_rounds"] == 0
    assert rows["torch-fp32"]["status"] == "ok" and rows["torch-fp32"]["latency_savings_factor"] is not None
    from reports.frame import add_savings, load_rows

    df = add_savings(load_rows(tmp_path / "c")[0])
    assert df.loc[df["accelerator"] == "null", "latency_savings_factor"].isna().all()


def test_a_cell_failing_mid_group_fails_alone_and_the_group_is_timed_without_it(tmp_path, monkeypatch):
    """Interleaved timing: a cell whose module raises after a few calls (past any check in
    prepare) is recorded failed with its own error; the other cells of its group are timed again
    without it and keep their same-round factors."""
    from accelerators.null import ConstantLogits, NullAccelerator
    from accelerators.base import Prepared
    from profiler.plugins import ACCELERATORS

    class Breaks(ConstantLogits):
        calls = 0

        def forward(self, input_ids, attention_mask=None, token_type_ids=None):
            Breaks.calls += 1
            if Breaks.calls > 3:
                raise RuntimeError("min should be less than or equal to max")
            return super().forward(input_ids)

    class Flaky(NullAccelerator):
        name = "flaky"

        def prepare(self, model, example, settings):
            return Prepared(Breaks(2), {})

    monkeypatch.setattr(ACCELERATORS, "_classes", dict(ACCELERATORS._classes))
    monkeypatch.setattr(ACCELERATORS, "_sources", dict(ACCELERATORS._sources))
    ACCELERATORS.register(Flaky)
    rows = _dense_rows(tmp_path, ["torch-fp32", "flaky", "null"])
    assert rows["flaky"]["status"] == "failed" and "min should be less than or equal to max" in rows["flaky"]["reason"]
    assert rows["torch-fp32"]["status"] == "ok" and rows["null"]["status"] == "ok"
    assert rows["null"]["latency_savings_factor"] is not None and rows["null"]["latency_rounds"] >= 2
    assert rows["null"]["interleave_group_id"] == rows["torch-fp32"]["interleave_group_id"]


def test_a_model_predicting_one_class_is_named_collapsed(tmp_path):
    """The null accelerator's constant logits predict class 0 for every example: the row says
    collapsed (with the reason) and the verdict does not take it as a candidate."""
    rows = _dense_rows(tmp_path, ["torch-fp32", "null"])
    assert rows["null"]["status"] == "ok" and rows["null"]["collapsed"] is True
    assert rows["null"]["reason"].startswith("collapsed: predicts class 0 for all")
    assert rows["torch-fp32"]["collapsed"] is False and rows["torch-fp32"]["reason"] is None
    from reports.frame import add_savings, load_rows, verdicts
    df, _ = load_rows(tmp_path / "c")
    assert all("null" not in v for v in verdicts(add_savings(df)))


def test_thread_counts_share_rounds_and_scaling_is_same_round(tmp_path):
    """Cells of one shape at 1 and 2 threads are timed in one group, each visit at its own thread
    count; savings factors divide cells of one thread count; thread scaling is a same-round ratio."""
    cfg = parse_config(tiny_config(pruners=[{"name": "none"}, {"name": "magnitude", "sparsity": 0.9}],
                                   matrix={"batch_size": [1, 4], "seq_len": [16], "threads": [1, 2]}))
    Runner(cfg, tmp_path / "r").run()
    rows = read_results(tmp_path / "r" / "results.jsonl").rows
    assert len(rows) == 16 and all(r["status"] == "ok" for r in rows)
    by_id = {r["cell_id"]: r for r in rows}
    for b in (1, 4):
        assert len({r["interleave_group_id"] for r in rows if r["batch_size"] == b}) == 1
    assert rows[0]["interleave_group_id"] != [r for r in rows if r["batch_size"] != rows[0]["batch_size"]][0]["interleave_group_id"]
    for r in rows:
        assert r["torch_threads"] == r["threads"]
        base = by_id[r["baseline_cell_id"]]
        assert (base["threads"], base["pruner"], base["accelerator"]) == (r["threads"], "none", "torch-fp32")
        assert by_id[r["best_dense_cell_id"]]["threads"] == r["threads"]
        assert r["thread_scaling_reference_threads"] == 1
        partner = next(o for o in rows if o["recipe_id"] == r["recipe_id"] and o["threads"] == 1)
        ratios = same_round_ratios(partner["latency_round_medians_s"], r["latency_round_medians_s"])
        assert r["thread_scaling_factor_rounds"] == len(ratios) == r["latency_rounds"] >= 3
        assert r["thread_scaling_factor"] == pytest.approx(statistics.median(ratios), rel=1e-12)
        if r["threads"] == 1:
            assert r["thread_scaling_factor"] == 1.0
        assert r["thread_scaling_factor_low"] <= r["thread_scaling_factor"] <= r["thread_scaling_factor_high"]
    assert "<h2>Thread scaling</h2>" in write_report(tmp_path / "r").read_text()


def test_measure_group_runs_each_call_at_its_thread_count():
    import torch

    from profiler.config import MeasureSpec
    from profiler.measure import measure_group
    from profiler.meters.estimate import EstimateMeter

    seen: dict[str, set[int]] = {"one": set(), "two": set(), "unnamed": set()}

    def call(k):
        return lambda: seen[k].add(torch.get_num_threads())

    before = torch.get_num_threads()
    try:
        m = MeasureSpec(warmup_iters=2, min_iters=3, min_seconds=0.0, max_seconds=1.0, visit_seconds=0.002,
                        min_rounds=5)
        timed = measure_group({k: call(k) for k in seen}, 1, m, EstimateMeter(tdp_w=10.0), None, seed=0,
                              threads={"one": 1, "two": 2})
        assert seen["one"] == {1} and seen["two"] == {2}
        assert seen["unnamed"] <= {1, 2}  # keeps whatever count the visit before it set
        assert all(len(t.round_medians) >= 5 for t in timed.values())
    finally:
        torch.set_num_threads(before)


def test_interleave_threads_false_times_each_thread_count_apart(tmp_path):
    cfg = parse_config(tiny_config(
        pruners=[{"name": "none"}], measure={**tiny_config()["measure"], "interleave_threads": False},
        matrix={"batch_size": [1], "seq_len": [16], "threads": [1, 2]}))
    Runner(cfg, tmp_path / "r").run()
    rows = read_results(tmp_path / "r" / "results.jsonl").rows
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert len({r["interleave_group_id"] for r in rows}) == 2
    for r in rows:
        assert len({o["interleave_group_id"] for o in rows if o["threads"] == r["threads"]}) == 1
        assert r["thread_scaling_factor"] is None and r["thread_scaling_factor_rounds"] == 0
        assert r["thread_scaling_reference_threads"] is None


def test_resume_times_again_what_the_missing_cells_divide_by():
    """The finished dense fp32 cells of an open group, and each open recipe's cell at the fewest
    threads (its thread-scaling reference); nothing of a closed group."""
    from profiler.runner import references_to_retime

    cfg = parse_config(tiny_config(matrix={"batch_size": [1, 4], "seq_len": [16], "threads": [1, 2]}))
    cells = expand(cfg)
    todo = [c for c in cells if c.batch_size == 1 and c.threads == 2 and c.pruner.params.get("sparsity") == 0.9
            and c.accelerator.name == "int8-dynamic"]
    assert len(todo) == 1
    rows = [{"cell_id": c.cell_id, "status": "ok", "pruner": c.pruner.name, "accelerator": c.accelerator.name,
             "compute_precision": "int8" if c.accelerator.name == "int8-dynamic" else "fp32"}
            for c in cells if c not in todo]
    again = references_to_retime(cells, todo, rows, "interleaved")
    dense = {c.cell_id for c in cells if c.batch_size == 1 and c.pruner.name == "none" and c.accelerator.name == "torch-fp32"}
    scaling_ref = {c.cell_id for c in cells if c.recipe_id == todo[0].recipe_id and c.threads == 1}
    assert {c.cell_id for c in again} == dense | scaling_ref and len(dense) == 2 and len(scaling_ref) == 1
    apart = references_to_retime(cells, todo, rows, "interleaved", threads_share_rounds=False)
    assert {c.cell_id for c in apart} == {c for c in dense if by_threads(cells, c) == 2}
    assert references_to_retime(cells, todo, rows, "sequential") == []


def by_threads(cells, cell_id):
    return next(c.threads for c in cells if c.cell_id == cell_id)
