"""Small pure parts of the benchmark scripts: operator classes of OpenVINO's primitives, the
pairs scripts/repeatability.py compares, and the same-round ratios of scripts/vs_reference.py."""
import json

import pandas as pd
import pytest

from tests.conftest import load_script


def test_every_fully_connected_primitive_is_a_linear_kernel():
    ob = load_script("op_breakdown")
    assert ob.openvino_class("FullyConnected") == "linear kernels"
    assert ob.openvino_class("FullyConnectedQuantizedLegacy") == "linear kernels"
    assert ob.openvino_class("MVN") == "LayerNorm"
    assert ob.openvino_class("SomethingNew") == "SomethingNew"


def test_repeatability_leaves_out_the_reference_cells(monkeypatch, tmp_path):
    rep = load_script("repeatability")
    runs = {
        "a": pd.DataFrame({"cell_id": ["base", "x"], "status": ["ok", "ok"], "pruner_label": ["none", "gmp"],
                           "accelerator_label": ["torch-fp32", "sparse-int8"], "batch_size": [1, 1], "threads": [1, 1],
                           "latency_savings_factor": [1.0, 2.0]}),
        "b": pd.DataFrame({"cell_id": ["base", "x"], "status": ["ok", "ok"], "pruner_label": ["none", "gmp"],
                           "accelerator_label": ["torch-fp32", "sparse-int8"], "batch_size": [1, 1], "threads": [1, 1],
                           "latency_savings_factor": [1.0, 2.2]}),
    }
    monkeypatch.setattr(rep, "load_rows", lambda p: (runs[p.name], []))
    monkeypatch.setattr(rep, "add_savings", lambda df: df)
    (pair,) = rep.pairs(tmp_path / "a", tmp_path / "b")
    assert pair["cell_id"] == "x" and abs(pair["rel_diff"] - 0.1) < 1e-12


def _row(cell_id, pruner, acc, rounds, accuracy, threads=1, collapsed=False):
    return {"cell_id": cell_id, "status": "ok", "task": "sst2", "batch_size": 1, "seq_len": 128, "threads": threads,
            "pruner_label": pruner, "accelerator_label": acc, "latency_round_medians_s": rounds,
            "latency_p50_s": sorted(rounds)[len(rounds) // 2], "accuracy": accuracy, "collapsed": collapsed}


def test_vs_reference_divides_round_by_round_and_pairs_the_fp32_accuracy(tmp_path):
    vr = load_script("vs_reference")
    rows = [
        _row("ov", "none", "openvino int8", [0.010, 0.020, 0.010], 0.88),
        _row("fp", "magnitude 0.9 1x4", "torch-fp32", [0.040, 0.080, 0.040], 0.80),
        # twice as fast as the reference in every round, although round 2 ran twice as slow for both
        _row("sp", "magnitude 0.9 1x4", "sparse-int8", [0.005, 0.010, 0.005], 0.795),
        _row("other", "none", "openvino int8", [0.1, 0.1, 0.1], 0.88, threads=2),  # another shape: not a reference here
    ]
    (rec,) = vr.compare(rows, "openvino int8", "none", "sparse-int8", "torch-fp32")
    assert rec["ratio"] == 2.0 and rec["rounds"] == 3
    assert rec["metric_fp32"] == 0.80 and abs(rec["delta_points"] - (-0.5)) < 1e-9
    assert rec["thread_scaling"] is None and rec["reference_thread_scaling"] is None  # not in these rows
    scaled = [{**r, "thread_scaling_factor": f, "thread_scaling_factor_low": f - 0.1, "thread_scaling_factor_high": f + 0.1}
              for r, f in zip(rows, (1.5, 1.0, 0.9, 1.0))]
    (rec,) = vr.compare(scaled, "openvino int8", "none", "sparse-int8", "torch-fp32")
    assert (rec["thread_scaling"], rec["thread_scaling_low"], rec["reference_thread_scaling"]) == (0.9, 0.9 - 0.1, 1.5)
    # a resumed run's rows file: the last row of a cell wins; failed rows are left out
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [*rows, {**rows[2], "status": "failed"}]) + "\n")
    assert {r["cell_id"] for r in vr.read_rows(tmp_path)} == {"ov", "fp", "other"}


def test_vs_reference_refuses_rows_without_round_medians_or_reference():
    vr = load_script("vs_reference")
    cell = _row("sp", "magnitude 0.9 1x4", "sparse-int8", [0.005], 0.8)
    with pytest.raises(ValueError, match="0 ok cells of 'openvino int8'"):
        vr.compare([cell], "openvino int8", "none", "sparse-int8", "torch-fp32")
    ref = {**_row("ov", "none", "openvino int8", [0.01], 0.88), "latency_round_medians_s": None}
    with pytest.raises(ValueError, match="latency_round_medians_s"):
        vr.compare([cell, ref], "openvino int8", "none", "sparse-int8", "torch-fp32")


def test_vs_reference_never_divides_across_kernel_variants_or_timing_sessions():
    vr = load_script("vs_reference")
    rows = [{**_row("ov2", "none", "openvino int8", [0.010], 0.88), "kernel_variant": "avx2"},
            {**_row("sp2", "m", "sparse-int8", [0.005], 0.8), "kernel_variant": "avx2"},
            {**_row("ov5", "none", "openvino int8", [0.004], 0.88), "kernel_variant": "avx512"},
            {**_row("sp5", "m", "sparse-int8", [0.002], 0.8), "kernel_variant": "avx512"}]
    recs = vr.compare(rows, "openvino int8", "none", "sparse-int8", "torch-fp32")
    assert sorted((r["kernel_variant"], r["ratio"]) for r in recs) == [("avx2", 2.0), ("avx512", 2.0)]
    resumed = [{**rows[0], "interleave_group_id": "a"}, {**rows[1], "interleave_group_id": "b"}]
    with pytest.raises(ValueError, match="resumed run"):
        vr.compare(resumed, "openvino int8", "none", "sparse-int8", "torch-fp32")
    # the script's own call: the group without its reference is named and skipped, the others stay
    skipped = []
    recs = vr.compare([*resumed, *rows[2:]], "openvino int8", "none", "sparse-int8", "torch-fp32", skipped)
    assert [(r["kernel_variant"], r["ratio"]) for r in recs] == [("avx512", 2.0)]
    assert len(skipped) == 1 and "resumed run records only its new cells" in skipped[0]


def test_vs_reference_json_records_a_command_that_reruns(tmp_path):
    import shlex

    vr = load_script("vs_reference")
    rows = [_row("ref", "gmp 0.9 1x4 KD", "sparse-int8", [0.010, 0.010, 0.010], 0.82),
            _row("sp", "gmp 0.9 16x4 KD", "sparse-int8", [0.005, 0.005, 0.005], 0.82),
            _row("fp", "gmp 0.9 16x4 KD", "torch-fp32", [0.050, 0.050, 0.050], 0.82)]
    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    argv = [str(tmp_path), "--reference", "sparse-int8", "--reference-pruner", "gmp 0.9 1x4 KD",
            "--out", str(tmp_path / "o.json")]
    assert vr.main(argv) == 0
    doc = json.loads((tmp_path / "o.json").read_text())
    assert shlex.split(doc["command"])[2:] == argv  # the label with spaces stays one argument
    ratios = {r["pruner_label"]: r["ratio"] for r in doc["cells"]}
    assert ratios == {"gmp 0.9 1x4 KD": 1.0, "gmp 0.9 16x4 KD": 2.0}


def test_vs_reference_also_divides_by_the_fastest_dense_int8_engine_of_the_group():
    vr = load_script("vs_reference")
    int8 = {"compute_precision": "int8"}
    rows = [{**_row("ov", "none", "openvino int8", [0.020, 0.020, 0.020], 0.88), **int8},
            {**_row("ort", "none", "onnxruntime int8", [0.010, 0.012, 0.010], 0.88), **int8},
            # faster still, but not INT8: not a candidate
            {**_row("bf", "none", "openvino bf16", [0.001, 0.001, 0.001], 0.88), "compute_precision": "bf16"},
            {**_row("sd", "none", "sparse-int8", [0.015, 0.015, 0.015], 0.88), **int8},
            {**_row("sp", "magnitude 0.9 1x4", "sparse-int8", [0.005, 0.006, 0.005], 0.80), **int8}]
    recs = {r["pruner_label"]: r for r in vr.compare(rows, "openvino int8", "none", "sparse-int8", "torch-fp32")}
    assert recs["magnitude 0.9 1x4"]["ratio"] == 4.0  # against the named reference, as before
    assert (recs["magnitude 0.9 1x4"]["fastest_int8_label"], recs["magnitude 0.9 1x4"]["fastest_int8_ratio"]) == \
        ("onnxruntime int8", 2.0)
    # the dense sparse-int8 cell is never its own fastest engine
    assert recs["none"]["fastest_int8_label"] == "onnxruntime int8"
    assert abs(recs["none"]["fastest_int8_ratio"] - 2 / 3) < 1e-12
