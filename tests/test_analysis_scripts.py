"""Small pure parts of the benchmark scripts: operator classes of OpenVINO's primitives, and the
pairs scripts/repeatability.py compares."""
import pandas as pd

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
