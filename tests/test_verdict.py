"""Savings against the fastest dense engine and the report's verdict sentence, from rows built here."""
from __future__ import annotations

import math

import pandas as pd

from reports.frame import add_savings, verdicts


def row(pruner, acc, p50, acc_metric, precision="fp32", energy=None, **kw):
    return {"task": "tiny", "batch_size": 1, "seq_len": 32, "threads": 1, "kernel_variant": "auto", "status": "ok",
            "pruner": pruner, "accelerator": acc, "pruner_label": pruner, "accelerator_label": acc,
            "latency_p50_s": p50, "accuracy": acc_metric, "compute_precision": precision,
            "energy_j_per_inference": energy, "energy_method": "estimated", **kw}


def test_a_dense_int8_engine_wins_and_the_verdict_says_so():
    df = pd.DataFrame([
        row("none", "torch-fp32", 0.040, 0.90, energy=4.0),
        row("none", "openvino", 0.017, 0.90, energy=1.7),                    # fastest dense fp32 engine
        row("none", "openvino-int8", 0.0065, 0.90, precision="int8", energy=0.65),
        row("magnitude-90", "sparse-int8", 0.0053, 0.85, precision="int8", energy=0.5),  # faster but 94 % kept
    ])
    out = add_savings(df)
    assert math.isclose(out.loc[0, "latency_savings_factor"], 1.0)
    assert math.isclose(out.loc[2, "latency_savings_vs_best_dense"], 0.017 / 0.0065)
    assert math.isclose(out.loc[2, "energy_savings_vs_best_dense"], 1.7 / 0.65)
    assert set(out["best_dense_label"]) == {"openvino"}
    (v,) = verdicts(out)
    assert "fastest configuration that keeps ≥ 99% of the dense accuracy: the dense model under openvino-int8 (no pruning)" in v
    assert "2.62× lower latency and 2.62× fewer joules (estimated) than the fastest dense engine (openvino)" in v


def test_none_beats_the_dense_engines():
    df = pd.DataFrame([
        row("none", "torch-fp32", 0.040, 0.90),
        row("none", "openvino", 0.017, 0.90),
        row("magnitude-90", "sparse-cpu", 0.020, 0.90),
        row("magnitude-95", "sparse-int8", 0.005, 0.80, precision="int8"),
    ])
    (v,) = verdicts(add_savings(df))
    assert "none beats the dense engines" in v and "dense model under openvino" in v


def test_a_verdict_says_how_many_cells_of_its_group_did_not_run():
    """Every sparse cell skipped (a kernel variant this CPU lacks): the verdict covers the dense cells
    that ran and says the rest did not run, with their status."""
    df = pd.DataFrame([
        row("none", "torch-fp32", 0.040, 0.90),
        row("gmp-90", "sparse-int8", None, None, precision="int8", status="skipped"),
        row("gmp-80", "sparse-int8", None, None, precision="int8", status="skipped"),
        row("gmp-80", "sparse-cpu", None, None, status="failed"),
        {**row("none", "torch-fp32", 0.040, 0.90), "batch_size": 8},
    ])
    v1, v8 = verdicts(add_savings(df))
    assert "batch 1" in v1 and "none beats the dense engines" in v1
    assert v1.endswith(" 3 cell(s) of this group did not run (skipped 2, failed 1).")
    assert "batch 8" in v8 and "did not run" not in v8
    # rows without a kernel variant (older runs): a missing key still finds its group
    old = df.assign(kernel_variant=float("nan"))
    v1, v8 = verdicts(add_savings(old))
    assert v1.endswith(" 3 cell(s) of this group did not run (skipped 2, failed 1).") and "did not run" not in v8


def test_stored_same_round_factors_are_kept():
    df = pd.DataFrame([
        row("none", "torch-fp32", 0.040, 0.90, latency_savings_factor=1.0, latency_savings_vs_best_dense=1.0),
        row("magnitude-90", "sparse-cpu", 0.020, 0.90, latency_savings_factor=2.1, latency_savings_vs_best_dense=2.1),
    ])
    out = add_savings(df)
    assert out.loc[1, "latency_savings_factor"] == 2.1  # the median of same-round ratios, not 0.040/0.020
    assert out.loc[1, "latency_savings_vs_best_dense"] == 2.1


def test_stored_factors_taken_against_another_reference_are_recomputed():
    """The runner stores which cells its same-round factors divide by; where the report picks another
    reference (that cell failed later, or a resumed run timed part of a group), the p50 ratio stands."""
    df = pd.DataFrame([
        row("none", "torch-fp32", 0.040, 0.90, cell_id="base"),
        row("magnitude-90", "sparse-cpu", 0.020, 0.90, cell_id="c1", latency_savings_factor=3.0,
            latency_savings_factor_low=2.9, latency_savings_factor_high=3.1, baseline_cell_id="gone",
            latency_savings_vs_best_dense=3.0, best_dense_cell_id="gone"),
        row("magnitude-50", "sparse-cpu", 0.030, 0.90, cell_id="c2", latency_savings_factor=1.4, baseline_cell_id="base",
            latency_savings_vs_best_dense=1.4, best_dense_cell_id="base"),
    ])
    out = add_savings(df)
    assert math.isclose(out.loc[1, "latency_savings_factor"], 2.0) and math.isnan(out.loc[1, "latency_savings_factor_low"])
    assert math.isclose(out.loc[1, "latency_savings_vs_best_dense"], 2.0)
    assert out.loc[2, "latency_savings_factor"] == 1.4 and out.loc[2, "latency_savings_vs_best_dense"] == 1.4


def test_rows_without_compute_precision_use_the_torch_baseline_as_dense():
    df = pd.DataFrame([row("none", "torch-fp32", 0.04, 0.9), row("gmp", "sparse-cpu", 0.02, 0.9)]).drop(columns="compute_precision")
    out = add_savings(df)
    assert math.isclose(out.loc[1, "latency_savings_vs_best_dense"], 2.0)


def test_an_empty_frame_has_no_savings_and_no_verdict():
    out = add_savings(pd.DataFrame())
    assert out.empty and verdicts(out) == []


def test_a_lead_inside_the_noise_is_no_winner():
    """A cell 1.00× the dense engine with a same-round interval reaching 1× is not named the winner;
    one whose whole interval is above 1× is."""
    def frame(low, high):
        return pd.DataFrame([
            row("none", "torch-fp32", 0.040, 0.90, latency_savings_vs_best_dense=1.0),
            row("magnitude-50", "torch-fp32", 0.0399, 0.90, latency_savings_vs_best_dense=1.0001,
                latency_savings_vs_best_dense_low=low, latency_savings_vs_best_dense_high=high),
        ])
    (v,) = verdicts(add_savings(frame(0.996, 1.006)))
    assert "none is measurably faster than the dense engines" in v and "0.996" not in v and "1.00–1.01×" in v
    (v,) = verdicts(add_savings(frame(1.01, 1.02)))
    assert "fastest configuration that keeps ≥ 99% of the dense accuracy: magnitude-50 + torch-fp32" in v


def test_a_faster_configuration_that_costs_joules_says_more_not_fewer():
    """0.95× fewer joules would read as a saving: a factor below 1 is said as more joules."""
    df = pd.DataFrame([
        row("none", "torch-fp32", 0.040, 0.90, energy=1.0),
        row("magnitude-90", "sparse-int8", 0.020, 0.90, precision="int8", energy=1.25),
    ])
    (v,) = verdicts(add_savings(df))
    assert "2.00× lower latency but 1.25× more joules (estimated) than the fastest dense engine" in v
    assert "fewer joules" not in v
