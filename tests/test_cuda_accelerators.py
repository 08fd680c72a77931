"""GPU accelerators: unavailable-with-reason where CUDA is absent (always checked); the real GPU
paths are marked ``gpu`` and skipped without CUDA (run them with ``pytest -m gpu`` on a GPU)."""
import copy

import pytest
import torch
from torch import nn

from accelerators.base import PrepareSettings
from accelerators.cuda import CUDA_ABSENT, Cuda24, CudaBF16, CudaFP16, OnDevice, is_24_sparse, plan_24
from profiler.plugins import ACCELERATORS

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason=CUDA_ABSENT)


def tiny_bert(hidden: int = 64, inter: int = 256) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=inter, max_position_embeddings=64, num_labels=2)
    return BertForSequenceClassification(cfg).eval()


def prune_24_(model: nn.Module) -> nn.Module:
    """Zero the 2 smallest-|W| of every group of 4 along the input dim of each encoder Linear."""
    with torch.no_grad():
        for n, m in model.named_modules():
            if isinstance(m, nn.Linear) and ".encoder." in f".{n}.":
                w = m.weight.reshape(-1, 4)
                drop = w.abs().argsort(dim=1)[:, :2]
                w.scatter_(1, drop, 0.0)
    return model


def example(batch: int = 2, seq: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 100, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


# ---- everywhere (here: no CUDA) -----------------------------------------------------------------

def test_registered_with_cuda_device():
    for name, cls in (("cuda-fp16", CudaFP16), ("cuda-bf16", CudaBF16), ("cuda-2:4", Cuda24)):
        assert name in ACCELERATORS.names()
        assert cls.name == name and cls.device == "cuda"


@pytest.mark.skipif(HAS_CUDA, reason="checks the no-CUDA behaviour")
@pytest.mark.parametrize("cls", [CudaFP16, CudaBF16, Cuda24])
def test_unavailable_with_reason_without_cuda(cls):
    ok, why = cls().availability()
    assert ok is False and why == CUDA_ABSENT
    with pytest.raises(RuntimeError, match="no CUDA device/driver"):
        cls().prepare(tiny_bert(), example(), PrepareSettings(threads=1))


@pytest.mark.skipif(HAS_CUDA, reason="checks the no-CUDA behaviour")
def test_runner_records_skipped_with_reason(tmp_path):
    from profiler.config import parse_config
    from profiler.results import read_results
    from profiler.runner import Runner
    from tests.conftest import tiny_config

    cfg = parse_config(tiny_config(pruners=[{"name": "none"}], accelerators=[{"name": "cuda-fp16"}, {"name": "cuda-2:4"}],
                                   matrix={"batch_size": [1], "seq_len": [16], "threads": [1]}))
    Runner(cfg, tmp_path / "r").run()
    rows = read_results(tmp_path / "r" / "results.jsonl").rows
    assert [r["status"] for r in rows] == ["skipped", "skipped"]
    assert all(r["reason"] == CUDA_ABSENT for r in rows)


def test_bad_backend_rejected():
    with pytest.raises(ValueError, match="cutlass"):
        Cuda24(backend="magic")


def test_24_pattern_check():
    w = torch.tensor([[1.0, 0, 2, 0, 0, 0, 3, 4], [0, 0, 0, 1, 5, 0, 0, 6]])
    assert is_24_sparse(w)
    assert not is_24_sparse(torch.tensor([[1.0, 1, 1, 0]]))
    assert not is_24_sparse(torch.ones(2, 6))  # not a multiple of 4 columns


def test_plan_24_accepts_24_model_and_leaves_input_alone():
    model = prune_24_(tiny_bert())
    before = copy.deepcopy(model.state_dict())
    names = plan_24(model)
    assert len(names) == 12 and all(".encoder." in f".{n}." for n in names)  # 2 layers × (q, k, v, out, in, out)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_plan_24_clear_errors():
    with pytest.raises(ValueError, match="dense.*N:M 2:4 pruner"):
        plan_24(tiny_bert())
    unstructured = tiny_bert()
    with torch.no_grad():
        for n, m in unstructured.named_modules():
            if isinstance(m, nn.Linear) and ".encoder." in f".{n}.":
                m.weight.mul_(m.weight.abs() > m.weight.abs().median())  # 50 % zeros, not 2:4
    with pytest.raises(ValueError, match="not exactly 2:4 sparse.*query"):
        plan_24(unstructured)
    with pytest.raises(ValueError, match="multiples of"):
        plan_24(prune_24_(tiny_bert(hidden=48, inter=96)))


def test_on_device_wrapper_returns_logits_on_input_device():
    model = tiny_bert()
    wrapped = OnDevice(model, "cpu")
    out = wrapped(**example())
    assert out.dtype == torch.float32 and out.device.type == "cpu" and out.shape == (2, 2)
    assert torch.allclose(out, model(**example()).logits)


# ---- on a GPU (pytest -m gpu) -------------------------------------------------------------------

@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("cls,dtype", [(CudaFP16, torch.float16), (CudaBF16, torch.bfloat16)])
def test_dense_half_on_gpu(cls, dtype):
    acc = cls()
    ok, why = acc.availability()
    if not ok:
        pytest.skip(why)
    model = tiny_bert()
    ref = model(**example()).logits
    p = acc.prepare(model, example(), PrepareSettings(threads=1))
    mod = p.module
    assert next(model.parameters()).device.type == "cpu" and next(model.parameters()).dtype == torch.float32  # input untouched
    inner = mod.model
    assert next(inner.parameters()).device.type == "cuda" and next(inner.parameters()).dtype == dtype
    with torch.inference_mode():
        cpu_out = mod(**example())  # accuracy pass: CPU int64 in, CPU fp32 logits out
        gpu_out = mod(**{k: v.cuda() for k, v in example().items()})  # timed loop: inputs moved by the runner
    assert cpu_out.device.type == "cpu" and cpu_out.dtype == torch.float32
    assert gpu_out.device.type == "cuda"
    assert torch.allclose(cpu_out, ref, atol=5e-2 if dtype == torch.bfloat16 else 1e-2)
    assert p.fields["gpu_dtype"] in ("float16", "bfloat16")


@pytest.mark.gpu
@needs_cuda
def test_24_sparse_on_gpu_matches_dense_fp16():
    acc = Cuda24()
    ok, why = acc.availability()
    if not ok:
        pytest.skip(why)
    from torch.sparse import SparseSemiStructuredTensor

    model = prune_24_(tiny_bert())
    p = acc.prepare(model, example(8, 32), PrepareSettings(threads=1))
    mod = p.module
    assert isinstance(model.bert.encoder.layer[0].intermediate.dense.weight, nn.Parameter)
    assert not isinstance(model.bert.encoder.layer[0].intermediate.dense.weight.data, SparseSemiStructuredTensor)
    assert isinstance(mod.model.bert.encoder.layer[0].intermediate.dense.weight, SparseSemiStructuredTensor)
    dense = CudaFP16().prepare(model, example(8, 32), PrepareSettings(threads=1)).module
    with torch.inference_mode():
        a, b = mod(**example(8, 32)), dense(**example(8, 32))
    assert a.device.type == "cpu" and torch.allclose(a, b, atol=2e-2)
    assert p.fields["sparse_24_layers"] == 12
    sd = mod.state_dict()  # compressed form: stored-size accounting must not crash
    assert any(k.endswith(".packed") for k in sd)


@pytest.mark.gpu
@needs_cuda
def test_24_rejects_unstructured_model_on_gpu():
    acc = Cuda24()
    ok, why = acc.availability()
    if not ok:
        pytest.skip(why)
    with pytest.raises(ValueError, match="2:4"):
        acc.prepare(tiny_bert(), example(), PrepareSettings(threads=1))


@pytest.mark.gpu
@needs_cuda
def test_runner_cells_on_gpu(tmp_path):
    """A tiny matrix with the GPU accelerators through the real runner (CUDA-synchronised timing,
    accuracy pass with CPU inputs)."""
    from profiler.config import parse_config
    from profiler.results import read_results
    from profiler.runner import Runner
    from tests.conftest import tiny_config

    cfg = parse_config(tiny_config(pruners=[{"name": "none"}], accelerators=[{"name": "torch-fp32"}, {"name": "cuda-fp16"}, {"name": "cuda-bf16"}],
                                   matrix={"batch_size": [1, 4], "seq_len": [16], "threads": [1]}))
    Runner(cfg, tmp_path / "r").run()
    rows = read_results(tmp_path / "r" / "results.jsonl").rows
    ok = [r for r in rows if r["accelerator"] != "torch-fp32"]
    assert all(r["status"] in ("ok", "skipped") for r in ok), [r["reason"] for r in ok]
    base = {r["batch_size"]: r["accuracy"] for r in rows if r["accelerator"] == "torch-fp32"}
    for r in ok:
        if r["status"] == "ok":
            assert r["device"] == "cuda" and r["latency_p50_s"] > 0
            assert abs(r["accuracy"] - base[r["batch_size"]]) <= 0.05
