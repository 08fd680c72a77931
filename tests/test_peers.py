"""The peer engines (OpenVINO, ONNX Runtime) against torch fp32 eager on a tiny BERT built in code.

fp32 logits agree to 1e-4 of the largest logit; INT8 logits have cosine >= 0.99 with the same
predictions on the tiny task's eval split. A missing engine package makes the accelerator
unavailable with a reason, never a crash (tested with the import patched away).
"""
from __future__ import annotations

import logging
import sys

import pytest
import torch

from accelerators.base import PrepareSettings, logits_of
from accelerators.base import cpu_flags
from accelerators.peer_common import weights_digest
from accelerators.peer_onnxruntime import ONNXRuntime
from accelerators.peer_openvino import OpenVINO
from profiler.tasks.tiny_synthetic import TinySynthetic

BATCH, SEQ = 4, 32


@pytest.fixture(scope="module")
def task():
    return TinySynthetic(finetune_steps=60, n_train=512, n_eval=64)


@pytest.fixture(scope="module")
def model(task):
    return task.load_finetuned()


@pytest.fixture(scope="module")
def batches(task):
    """The timing batch (static shape) and the eval split in batches of 16 padded to their longest."""
    ex = task.eval_examples()
    return [task.example_inputs(BATCH, SEQ)] + [task.collate(ex[s : s + 16])[0] for s in range(0, len(ex), 16)]


@pytest.fixture(scope="module")
def reference(model, batches):
    with torch.inference_mode():
        return [logits_of(model(**b)).float() for b in batches]


@pytest.fixture(scope="module")
def settings(task, tmp_path_factory):
    return PrepareSettings(threads=1, batch_size=BATCH, seq_len=SEQ, calibration=task.calibration_inputs,
                           cache_dir=str(tmp_path_factory.mktemp("peers-cache")))


def run_all(module, batches):
    with torch.inference_mode():
        return [logits_of(module(**b)).float() for b in batches]


def assert_close_fp32(got, want):
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert float((g - w).abs().max() / w.abs().max()) <= 1e-4


def assert_int8_agrees(got, want):
    g, w = torch.cat(got), torch.cat(want)
    assert float(torch.nn.functional.cosine_similarity(g.flatten(), w.flatten(), dim=0)) >= 0.99
    assert torch.equal(g.argmax(-1), w.argmax(-1))


def test_openvino_fp32_matches_torch(model, batches, reference, settings):
    pytest.importorskip("openvino")
    before = weights_digest(model)
    prepared = OpenVINO("fp32").prepare(model, batches[0], settings)
    assert weights_digest(model) == before
    assert_close_fp32(run_all(prepared.module, batches), reference)
    f = prepared.fields
    assert (f["peer_engine"], f["inference_precision"], f["peer_threads"]) == ("openvino", "f32", 1)
    assert f["peer_static_shape"] == [BATCH, SEQ] and f["sparse_primitive_executed"] is False
    assert prepared.module.state_dict()["serialized"].numel() > 0


def test_onnxruntime_fp32_matches_torch(model, batches, reference, settings):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    before = (weights_digest(model), model.config._attn_implementation)
    prepared = ONNXRuntime("fp32").prepare(model, batches[0], settings)
    assert (weights_digest(model), model.config._attn_implementation) == before  # the export used a copy
    assert_close_fp32(run_all(prepared.module, batches), reference)
    f = prepared.fields
    assert (f["peer_engine"], f["inference_precision"], f["peer_threads"]) == ("onnxruntime", "f32", 1)
    assert "Attention:2" in f["ort_fused_ops"]  # the optimizer fused both layers' attention


def test_openvino_int8_agrees_and_is_cached(model, batches, reference, settings):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    acc = OpenVINO("int8", calibration_samples=64)
    first = acc.prepare(model, batches[0], settings)
    got = run_all(first.module, batches)
    assert_int8_agrees(got, reference)
    assert first.fields["quant_cache"] == "miss" and first.fields["quant_calibration_samples"] == 64
    assert first.fields["fc_layers_int8"] > 0
    # the float ops run at OpenVINO's own default (bf16 where the CPU has it), as its users get them
    import openvino as ov

    assert "INFERENCE_PRECISION_HINT" not in acc.compile_config(settings)
    assert first.fields["inference_precision"] == ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
    second = acc.prepare(model, batches[0], settings)
    assert second.fields["quant_cache"] == "hit"
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(run_all(second.module, batches), got))


def test_onnxruntime_int8_agrees(model, batches, reference, settings, caplog):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    with caplog.at_level(logging.WARNING):
        prepared = ONNXRuntime("int8").prepare(model, batches[0], settings)
    assert_int8_agrees(run_all(prepared.module, batches), reference)
    assert prepared.fields["int8_ops"] > 0 and prepared.fields["inference_precision"] == "int8-dynamic"
    # one activation scale per tensor: pad positions move it, so the row says its accuracy was not taken as timed
    assert ONNXRuntime("int8").padding_sensitive and not ONNXRuntime("fp32").padding_sensitive
    b = batches[1]
    pad = {k: torch.cat([v, torch.zeros(v.shape[0], 24, dtype=v.dtype)], 1) for k, v in b.items()}
    with torch.inference_mode():
        alone, padded = logits_of(prepared.module(**b)), logits_of(prepared.module(**pad))
    assert not torch.equal(alone, padded)
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]  # the model is optimised already


def test_onnxruntime_int8_per_channel_weights(model, batches, reference, settings):
    """per_channel: one weight scale per output channel, recorded in quant_method, within the
    INT8 agreement bound; refused outside INT8."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    prepared = ONNXRuntime("int8", per_channel=True).prepare(model, batches[0], settings)
    assert prepared.fields["quant_method"].endswith("per_channel=True)")
    assert_int8_agrees(run_all(prepared.module, batches), reference)
    assert ONNXRuntime("int8").prepare(model, batches[0], settings).fields["quant_method"].endswith("per_channel=False)")
    with pytest.raises(ValueError, match="per_channel = true applies to precision = \"int8\" only"):
        ONNXRuntime("fp32", per_channel=True)
    with pytest.raises(ValueError, match="per_channel must be true or false"):
        ONNXRuntime("int8", per_channel="yes")
    from profiler.labels import plugin_label

    assert plugin_label("onnxruntime", {"precision": "int8", "per_channel": True}) == "onnxruntime int8 per-channel"
    assert plugin_label("onnxruntime", {"precision": "int8", "per_channel": False}) == "onnxruntime int8"
    # added after ONNX Runtime cells had results: at its default it is left out of their keys
    from profiler.config import parse_config
    from tests.conftest import tiny_config

    (spec,) = parse_config(tiny_config(accelerators=[{"name": "onnxruntime", "precision": "int8"}])).accelerators
    assert spec.canonical() == {"name": "onnxruntime", "params": {"precision": "int8"}}


def test_only_the_preprocess_hint_is_dropped(caplog):
    from accelerators.peer_onnxruntime import without_preprocess_hint

    with caplog.at_level(logging.WARNING), without_preprocess_hint():
        logging.warning("Please consider to run pre-processing before quantization. Refer to example: …")
        logging.warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]
    assert not logging.getLogger().filters  # the filter is gone again


def test_openvino_bf16(model, batches, reference, settings):
    pytest.importorskip("openvino")
    acc = OpenVINO("bf16")
    ok, why = acc.availability(settings)
    if not ok:
        pytest.skip(why)
    prepared = acc.prepare(model, batches[0], settings)
    assert prepared.fields["inference_precision"] == "bf16"
    got, want = torch.cat(run_all(prepared.module, batches)), torch.cat(reference)
    assert float(torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0)) >= 0.99


def test_openvino_sparse_weights_field_tells_what_ran(model, batches, settings):
    """90 % zeros in every encoder Linear: the sparse kernel runs where the CPU has AMX, and the
    row says why not elsewhere."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    import copy

    sparse = copy.deepcopy(model)
    for name, mod in sparse.named_modules():
        if isinstance(mod, torch.nn.Linear) and ".encoder." in f".{name}.":
            w = mod.weight.data
            w[w.abs() < w.abs().flatten().kthvalue(int(0.9 * w.numel())).values] = 0.0
    f = OpenVINO("int8", sparse_weights_rate=0.5, calibration_samples=32).prepare(sparse, batches[0], settings).fields
    assert f["sparse_weights_rate"] == 0.5
    if "amx_int8" in cpu_flags():
        assert f["sparse_primitive_executed"] is True and f["fc_layers_sparse"] > 0
    else:
        assert f["sparse_primitive_executed"] is False and "AMX" in f["sparse_primitive_reason"]


@pytest.mark.parametrize("make, package", [
    (lambda: OpenVINO("fp32"), "openvino"),
    (lambda: OpenVINO("int8"), "nncf"),
    (lambda: ONNXRuntime("int8"), "onnxruntime"),
    (lambda: ONNXRuntime("fp32"), "onnx"),
])
def test_missing_package_makes_it_unavailable(monkeypatch, make, package, settings):
    monkeypatch.setitem(sys.modules, package, None)  # `import package` now raises ImportError
    acc = make()
    ok, why = acc.availability()
    assert not ok and repr(package) in why and "pip install sparsebench[peers]" in why
    with pytest.raises(RuntimeError, match="unavailable"):
        acc.prepare(torch.nn.Linear(1, 1), {"input_ids": torch.ones(1, 4, dtype=torch.long)}, settings)


def test_invalid_params_fail_up_front():
    with pytest.raises(ValueError, match="precision"):
        OpenVINO("int4")
    with pytest.raises(ValueError, match="INT8"):
        OpenVINO("fp32", sparse_weights_rate=0.8)
    with pytest.raises(ValueError, match="sparse_weights_rate"):
        OpenVINO("int8", sparse_weights_rate=1.5)
    with pytest.raises(ValueError, match="precision"):
        ONNXRuntime("bf16")


def test_openvino_int8_without_calibration_is_unavailable():
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    ok, why = OpenVINO("int8").availability(PrepareSettings())
    assert not ok and "calibration" in why


def test_a_crashing_openvino_compile_becomes_an_error(monkeypatch, tmp_path):
    """The sparse-weights compile is probed in a child process; a child killed by a signal is a
    RuntimeError naming the signal, so the run records a failed cell instead of dying."""
    import subprocess

    from accelerators import peer_openvino

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, -11, "", ""))
    with pytest.raises(RuntimeError, match="SIGSEGV"):
        peer_openvino.probe_compile(tmp_path / "model.xml", ["input_ids"], (1, 16), {"INFERENCE_NUM_THREADS": 1})
