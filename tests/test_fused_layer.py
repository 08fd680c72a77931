"""Fused attention kernel, residual epilogue, stacked q/k/v and the lean encoder layer.

Every compiled kernel variant is checked against a float64 reference; the fused BERT layer is
checked against the transformers layer it replaces, with padded batches.
"""
from __future__ import annotations

import contextlib
import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings, strategies as st

from accelerators import _sparse_kernels as sk
from accelerators.base import PrepareSettings
from accelerators.fused_layer import FusedBertLayer, fuse_encoder_layers, key_padding_bias, set_attention_precision
from accelerators.sparse_cpu import SparseCPU, layer_outputs, relative_error
from accelerators.sparse_int8 import SparseInt8
from accelerators.sparse_linear import SparseLinear

VARIANTS = sk.supported_variants()


def attention_ref(qkv: np.ndarray, heads: int, key_bias=None, scale=None) -> np.ndarray:
    """float64 softmax(scale q k^T + key_bias) v per head; rows with every key masked -> 0."""
    B, S, H3 = qkv.shape
    H = H3 // 3
    dh = H // heads
    x = qkv.astype(np.float64).reshape(B, S, 3, heads, dh).transpose(2, 0, 3, 1, 4)
    q, k, v = x[0], x[1], x[2]
    s = (q @ k.transpose(0, 1, 3, 2)) * (dh ** -0.5 if scale is None else scale)
    if key_bias is not None:
        s = s + key_bias.astype(np.float64)[:, None, None, :]
    m = s.max(-1, keepdims=True)
    dead = ~np.isfinite(m)
    e = np.exp(s - np.where(dead, 0.0, m))
    e = np.where(dead, 0.0, e)
    den = e.sum(-1, keepdims=True)
    p = np.divide(e, den, out=np.zeros_like(e), where=den > 0)
    return (p @ v).transpose(0, 2, 1, 3).reshape(B, S, H)


@pytest.mark.parametrize("variant", VARIANTS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(B=st.integers(1, 3), S=st.integers(1, 40), heads=st.integers(1, 4), dh=st.integers(1, 40),
       masked=st.integers(0, 40), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
def test_attention_matches_float64_reference(variant, B, S, heads, dh, masked, threads, seed):
    rng = np.random.default_rng(seed)
    qkv = rng.standard_normal((B, S, 3 * heads * dh)).astype(np.float32)
    kb = np.zeros((B, S), np.float32)
    kb[-1, S - min(masked, S):] = -np.inf  # padding keys of the last sequence (possibly all of them)
    out = np.full((B, S, heads * dh), np.nan, np.float32)
    sk.attention(qkv, out, heads, key_bias=kb, threads=threads, variant=variant)
    np.testing.assert_allclose(out, attention_ref(qkv, heads, kb), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_attention_bert_shape_and_explicit_scale(variant):
    rng = np.random.default_rng(3)
    qkv = rng.standard_normal((2, 128, 3 * 384)).astype(np.float32)
    out = np.empty((2, 128, 384), np.float32)
    sk.attention(qkv, out, 12, 0.25, None, 2, variant)
    np.testing.assert_allclose(out, attention_ref(qkv, 12, scale=0.25), rtol=2e-5, atol=2e-6)
    # torch's SDPA gives the same answer in float32
    t = torch.from_numpy(qkv).view(2, 128, 3, 12, 32).permute(2, 0, 3, 1, 4)
    ref = F.scaled_dot_product_attention(t[0], t[1], t[2], scale=0.25).transpose(1, 2).reshape(2, 128, 384)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-4, atol=1e-5)


def test_attention_large_scores_are_stable():
    qkv = np.zeros((1, 4, 6), np.float32)
    qkv[0, :, 0] = 100.0  # q
    qkv[0, :, 2] = [100.0, -100.0, 50.0, 0.0]  # k: scores up to 1e4 would overflow a naive exp
    qkv[0, :, 4] = [1.0, 2.0, 3.0, 4.0]  # v
    out = np.empty((1, 4, 2), np.float32)
    sk.attention(qkv, out, 1)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, attention_ref(qkv, 1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_attention_nan_scores_give_nan_rows_and_masked_rows_zeros(variant):
    """One NaN rule on every variant, torch's: a query row with a NaN score gets NaN outputs
    (a NaN must not hide the row's maximum and leave a plausible mean of the other keys); the
    other rows are unchanged; a query whose keys are all masked gets zeros even where V holds inf."""
    S, dh = 24, 1
    qkv = np.zeros((1, S, 3), np.float32)
    qkv[0, :, 0] = 1.0  # every query 1
    qkv[0, :, 1] = 0.0
    qkv[0, 0, 1] = 100.0  # key 0: the largest score, in the same SIMD lane as key 8
    qkv[0, 8, 1] = np.nan
    qkv[0, :, 2] = np.arange(S)
    out = np.empty((1, S, 1), np.float32)
    sk.attention(qkv, out, 1, 1.0, None, 1, variant)
    t = torch.from_numpy(qkv).view(1, S, 3, 1, 1).permute(2, 0, 3, 1, 4)
    assert torch.isnan(F.scaled_dot_product_attention(t[0], t[1], t[2], scale=1.0)).all()  # torch's rule
    assert np.isnan(out).all()
    qkv = np.random.default_rng(1).standard_normal((2, 20, 3 * 2 * 4)).astype(np.float32)
    qkv[0, 3, :4] = np.nan  # sequence 0, query 3, head 0: only that row of that head is NaN
    kb = np.zeros((2, 20), np.float32)
    kb[1] = -np.inf  # sequence 1: every key masked
    qkv[1, 5, 16] = np.inf  # ... and an inf in its V
    out = np.empty((2, 20, 8), np.float32)
    sk.attention(qkv, out, 2, key_bias=kb, variant=variant, threads=2)
    nan = np.zeros_like(out, bool)
    nan[0, 3, :4] = True
    np.testing.assert_array_equal(np.isnan(out), nan)
    assert not out[1].any()
    clean = qkv.copy()
    clean[0, 3, :4] = 0.0
    np.testing.assert_allclose(out[0][~nan[0]], attention_ref(clean[:1], 2)[0][~nan[0]], rtol=2e-5, atol=2e-6)


def test_attention_rejects_bad_buffers():
    qkv = np.zeros((2, 8, 12), np.float32)
    out = np.zeros((2, 8, 4), np.float32)
    with pytest.raises(TypeError, match="dtype"):
        sk.attention(qkv.astype(np.float64), out, 2)
    with pytest.raises(ValueError, match="3-dimensional"):
        sk.attention(qkv.reshape(16, 12), out, 2)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        sk.attention(qkv, out, 3)
    with pytest.raises(ValueError, match="num_heads"):
        sk.attention(qkv, out, 0)
    with pytest.raises(ValueError, match="out: expected shape"):
        sk.attention(qkv, np.zeros((2, 8, 5), np.float32), 2)
    with pytest.raises(ValueError, match="key_bias: expected shape"):
        sk.attention(qkv, out, 2, key_bias=np.zeros((2, 7), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        sk.attention(np.asfortranarray(qkv), out, 2)
    with pytest.raises(ValueError, match="read-only"):
        ro = out.copy()
        ro.flags.writeable = False
        sk.attention(qkv, ro, 2)
    with pytest.raises(ValueError, match="overlap"):
        both = np.zeros(2 * 8 * 12, np.float32)
        sk.attention(both.reshape(2, 8, 12), both[: 2 * 8 * 4].reshape(2, 8, 4), 2)
    with pytest.raises(ValueError, match="finite"):
        sk.attention(qkv, out, 2, float("nan"))
    with pytest.raises(ValueError, match="threads"):
        sk.attention(qkv, out, 2, threads=0)
    with pytest.raises(ValueError):
        sk.attention(qkv, out, 2, variant="sse9")


# --------------------------------------------------------------------------- residual epilogue
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype,fmt", [("fp32", "csr"), ("fp32", "bsr4x1"), ("int8", "csr"), ("int8", "bsr4x4")])
def test_residual_is_added_in_the_output_pass(variant, dtype, fmt):
    torch.manual_seed(0)
    lin = torch.nn.Linear(48, 40)
    with torch.no_grad():
        lin.weight.mul_(torch.rand_like(lin.weight) > 0.7)
    m = SparseLinear.from_dense(lin, fmt, dtype=dtype, threads=2)
    m.variant = variant
    x, r = torch.randn(37, 48), torch.randn(37, 40)
    plain = m(x)
    torch.testing.assert_close(m(x, residual=r), plain + r, rtol=0, atol=1e-6)
    m.activation = "gelu"
    torch.testing.assert_close(m(x, residual=r), F.gelu(plain) + r, rtol=0, atol=2e-5)


def test_residual_rejects_bad_buffers():
    lin = torch.nn.Linear(8, 4)
    mat = SparseLinear.from_dense(lin).packed()
    x, out = np.zeros((3, 8), np.float32), np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="residual: expected shape"):
        sk.spmm(mat, x, out, residual=np.zeros((3, 5), np.float32))
    with pytest.raises(TypeError, match="residual"):
        sk.spmm(mat, x, out, residual=np.zeros((3, 4), np.float64))
    with pytest.raises(ValueError, match="residual must not overlap out"):
        sk.spmm(mat, x, out, residual=out)
    qmat = SparseLinear.from_dense(lin, dtype="int8").packed()
    with pytest.raises(ValueError, match="residual: expected shape"):
        sk.spmm_int8(qmat, x, out, residual=np.zeros((2, 4), np.float32))


# --------------------------------------------------------------------------- stacked q/k/v
@pytest.mark.parametrize("dtype,fmt", [("fp32", "csr"), ("fp32", "bsr4x1"), ("int8", "bsr4x4")])
def test_stack_is_bit_identical_to_separate_calls(dtype, fmt):
    torch.manual_seed(1)
    lins = [torch.nn.Linear(32, 24) for _ in range(3)]
    with torch.no_grad():
        for lin in lins:
            lin.weight.mul_(torch.rand_like(lin.weight) > 0.8)
    mods = [SparseLinear.from_dense(lin, fmt, dtype=dtype) for lin in lins]
    stacked = SparseLinear.stack(mods)
    x = torch.randn(19, 32)
    assert torch.equal(stacked(x), torch.cat([m(x) for m in mods], -1))
    assert stacked.out_features == 72 and stacked.nnz_stored == sum(m.nnz_stored for m in mods)
    with pytest.raises(ValueError, match="stack"):
        SparseLinear.stack([mods[0], SparseLinear.from_dense(torch.nn.Linear(16, 24), fmt, dtype=dtype)])


@pytest.mark.parametrize("densities", [(0.1, 0.1, 0.1), (0.1, 0.05, 0.02)])
def test_stack_with_column_panels_is_bit_identical(densities):
    """Column panels change each row's summation order: parts whose density picks different panel
    widths (128, 256, none) fall back to one width, so stacking stays bit-identical."""
    torch.manual_seed(2)
    lins = [torch.nn.Linear(512, 384) for _ in densities]
    with torch.no_grad():
        for lin, d in zip(lins, densities):
            lin.weight.mul_(torch.rand_like(lin.weight) < d)
    mods = [SparseLinear.from_dense(lin, "csr", threads=1) for lin in lins]
    widths = [m.packed().panel for m in mods]
    stacked = SparseLinear.stack(mods)
    x = torch.randn(128, 512)
    assert torch.equal(stacked(x), torch.cat([m(x) for m in mods], -1))
    assert stacked.packed().panel == (widths[0] if len(set(widths)) == 1 else 0)
    assert len(set(widths)) == 1 or widths == [128, 256, 0]


@pytest.mark.parametrize("outs,density,panel", [((17, 16, 33), 0.5, -1), ((128, 128, 128), 0.03, 128)])
def test_stack_bit_identical_with_unpaired_rows(outs, density, panel):
    """CSR rows run two at a time (the row-pair kernel); a row left without a partner (an odd row
    count in a chunk, an odd segment count in a panel) must sum in the same order as a paired one,
    or stacking would change its rounding."""
    torch.manual_seed(3)
    lins = [torch.nn.Linear(512 if panel > 0 else 64, o) for o in outs]
    with torch.no_grad():
        for lin in lins:
            lin.weight.mul_(torch.rand_like(lin.weight) < density)
    mods = [SparseLinear.from_dense(lin, "csr", threads=1) for lin in lins]
    for m in mods:
        m.panel = panel
    stacked = SparseLinear.stack(mods)
    for tokens in (17, 64, 130):
        x = torch.randn(tokens, lins[0].in_features)
        assert torch.equal(stacked(x), torch.cat([m(x) for m in mods], -1)), tokens


def test_sparse_linear_deepcopies_and_repacks():
    lin = torch.nn.Linear(16, 8)
    m = SparseLinear.from_dense(lin)
    x = torch.randn(5, 16)
    y = m(x)
    c = copy.deepcopy(m)
    assert c._mat is None
    assert torch.equal(c(x), y)


# --------------------------------------------------------------------------- fused encoder layer
def tiny_bert(sparsity: float, attn: str = "sdpa"):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=256, max_position_embeddings=64, num_labels=2,
                                  attn_implementation=attn)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "encoder.layer" in name and name.endswith("weight") and p.dim() == 2:
                p.mul_(torch.rand_like(p) > sparsity)
    return model


def padded_example(batch=3, seq=24):
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 120, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    mask[-1, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def logits(model, ex):
    with torch.no_grad():
        return model(**ex).logits


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_sparse_cpu_fused_layers_match_transformers(attn):
    model = tiny_bert(0.9, attn)
    ex = padded_example()
    acc = SparseCPU(format="csr", min_speedup=1.0, calibrate=False)
    p = acc.prepare(model, ex, PrepareSettings(threads=2))
    new, fields = p.module, p.fields
    assert fields["fused_encoder_layers"] == 2, fields["fused_encoder_note"]
    assert all(isinstance(layer, FusedBertLayer) for layer in new.bert.encoder.layer)
    assert all(layer.qkv is not None for layer in new.bert.encoder.layer)
    assert json.loads(fields["fused_qkv_formats"]) == {"bert.L0": "csr", "bert.L1": "csr"}
    torch.testing.assert_close(logits(new, ex), logits(model, ex), rtol=1e-4, atol=1e-5)
    other = padded_example(batch=2, seq=40)  # another shape and padding than prepare() saw
    torch.testing.assert_close(logits(new, other), logits(model, other), rtol=1e-4, atol=1e-5)
    no_mask = {k: v for k, v in other.items() if k != "attention_mask"}
    torch.testing.assert_close(logits(new, no_mask), logits(model, no_mask), rtol=1e-4, atol=1e-5)
    with torch.inference_mode():  # how the runner times and evaluates
        for _ in range(2):
            torch.testing.assert_close(new(**ex).logits, model(**ex).logits, rtol=1e-4, atol=1e-5)
    off = SparseCPU(format="csr", min_speedup=1.0, calibrate=False, fuse_layers=False)
    p_off = off.prepare(model, ex, PrepareSettings(threads=1))
    plain = p_off.module
    assert p_off.fields["fused_encoder_layers"] == 0 and p_off.fields["fused_qkv_formats"] is None
    assert not any(isinstance(layer, FusedBertLayer) for layer in plain.bert.encoder.layer)


def test_sparse_int8_fused_layers_match_unfused():
    model = tiny_bert(0.9)
    ex = padded_example()
    fused = SparseInt8(format="csr", min_speedup=1.0, calibrate=False, dense_fallback="fp32", attention="fp32")
    plain = SparseInt8(format="csr", min_speedup=1.0, calibrate=False, dense_fallback="fp32", fuse_layers=False)
    pa, pb = fused.prepare(model, ex, PrepareSettings(threads=2)), plain.prepare(model, ex, PrepareSettings(threads=2))
    a, b = pa.module, pb.module
    assert pa.fields["fused_encoder_layers"] == 2
    torch.testing.assert_close(logits(a, ex), logits(b, ex), rtol=1e-4, atol=1e-5)


def test_fused_layer_falls_back_to_sdpa_for_query_dependent_masks():
    model = tiny_bert(0.0)
    layer = model.bert.encoder.layer[0]
    fused = FusedBertLayer(copy.deepcopy(layer))
    h = torch.randn(2, 10, 64)
    causal = torch.ones(10, 10, dtype=torch.bool).tril()[None, None].expand(2, 1, 10, 10)
    assert key_padding_bias(causal, 2, 10) is None
    with torch.no_grad():
        torch.testing.assert_close(fused(h, causal), layer(h, causal), rtol=1e-4, atol=1e-5)
    fused.train()
    with pytest.raises(RuntimeError, match="inference-only"):
        fused(h)


def test_key_bias_cache_is_per_model():
    model = tiny_bert(0.0)
    n, why = fuse_encoder_layers(model, threads=1, variant="scalar")
    assert n == 2, why
    layers = list(model.bert.encoder.layer)
    assert layers[0].key_bias is layers[1].key_bias and all(l.variant == "scalar" for l in layers)
    copied = copy.deepcopy(model)
    assert copied.bert.encoder.layer[0].key_bias is copied.bert.encoder.layer[1].key_bias
    assert copied.bert.encoder.layer[0].key_bias is not layers[0].key_bias
    mask = torch.ones(2, 1, 1, 7)
    first = layers[0].key_bias.get(mask, 2, 7)
    assert layers[1].key_bias.get(mask, 2, 7) is first  # the same mask object: computed once
    assert copied.bert.encoder.layer[0].key_bias.get(mask, 2, 7) is not first


def test_key_padding_bias_forms():
    keep = torch.tensor([[True, True, False], [True, False, False]])
    bias = key_padding_bias(keep[:, None, None, :].expand(2, 1, 3, 3), 2, 3)
    assert torch.equal(bias, torch.tensor([[0.0, 0.0, float("-inf")], [0.0, float("-inf"), float("-inf")]]))
    additive = torch.tensor([[0.0, -1e9, 0.0]])[:, None, None, :]
    assert torch.equal(key_padding_bias(additive, 2, 3), torch.tensor([[0.0, -1e9, 0.0]] * 2))
    assert torch.equal(key_padding_bias(None, 1, 2), torch.zeros(1, 2))
    assert key_padding_bias(torch.zeros(2, 3), 2, 3) is None


def test_fuse_encoder_layers_leaves_other_models_alone():
    assert fuse_encoder_layers(torch.nn.Sequential(torch.nn.Linear(2, 2))) == (0, "no encoder layers")


# --------------------------------------------------------------------------- LayerNorm epilogue
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype,fmt", [("fp32", "csr"), ("int8", "csr"), ("int8", "bsr4x4")])
@pytest.mark.parametrize("tokens", [1, 7, 300])
def test_layer_norm_epilogue_matches_torch(variant, dtype, fmt, tokens):
    torch.manual_seed(2)
    lin = torch.nn.Linear(64, 48)
    with torch.no_grad():
        lin.weight.mul_(torch.rand_like(lin.weight) > 0.6)
    ln = torch.nn.LayerNorm(48, eps=1e-5)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    m = SparseLinear.from_dense(lin, fmt, dtype=dtype, threads=2)
    m.variant = variant
    x, r = torch.randn(tokens, 64), torch.randn(tokens, 48) * 3 + 1
    with torch.no_grad():
        ref = ln(m(x) + r)
        torch.testing.assert_close(m(x, residual=r, layer_norm=ln), ref, rtol=1e-5, atol=2e-5)
        no_bias = torch.nn.LayerNorm(48, eps=1e-5, bias=False)
        torch.testing.assert_close(m(x, layer_norm=no_bias), no_bias(m(x)), rtol=1e-5, atol=2e-5)


def test_layer_norm_epilogue_rejects_bad_arguments():
    lin = torch.nn.Linear(8, 4)
    m = SparseLinear.from_dense(lin)
    mat = m.packed()
    x, out, g = np.zeros((3, 8), np.float32), np.zeros((3, 4), np.float32), np.ones(4, np.float32)
    with pytest.raises(ValueError, match="ln_weight: expected length 4"):
        sk.spmm(mat, x, out, ln_weight=np.ones(5, np.float32))
    with pytest.raises(ValueError, match="ln_bias needs ln_weight"):
        sk.spmm(mat, x, out, ln_bias=g)
    with pytest.raises(ValueError, match="ln_bias: expected length 4"):
        sk.spmm(mat, x, out, ln_weight=g, ln_bias=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="ln_eps"):
        sk.spmm(mat, x, out, ln_weight=g, ln_eps=-1.0)
    with pytest.raises(TypeError, match="ln_weight"):
        sk.spmm_int8(SparseLinear.from_dense(lin, dtype="int8").packed(), x, out, ln_weight=g.astype(np.float64))
    with pytest.raises(ValueError, match="LayerNorm"):
        m(torch.zeros(3, 8), layer_norm=torch.nn.LayerNorm(5))


# --------------------------------------------------------------------------- INT8 activations between kernels
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("tokens", [1, 9, 130, 600])  # row split and token split, several token blocks
@pytest.mark.parametrize("threads", [1, 2])
def test_int8_output_feeds_next_layer_bit_identically(variant, tokens, threads):
    torch.manual_seed(3)
    l1, l2 = torch.nn.Linear(96, 200), torch.nn.Linear(200, 64)
    with torch.no_grad():
        for lin in (l1, l2):
            lin.weight.mul_(torch.rand_like(lin.weight) > 0.7)
    a = SparseLinear.from_dense(l1, "csr", dtype="int8", threads=threads, activation="gelu")
    b = SparseLinear.from_dense(l2, "bsr4x4", dtype="int8", threads=threads)
    a.variant = b.variant = variant
    x, r = torch.randn(tokens, 96), torch.randn(tokens, 64)
    ln = torch.nn.LayerNorm(64)
    q = a.forward_quantized(x)
    assert q.values.dtype == torch.int8 and q.scale.shape == (tokens,)
    assert torch.equal(b(q, residual=r, layer_norm=ln), b(a(x), residual=r, layer_norm=ln))
    y = a(x)
    amax = y.abs().amax(1)
    torch.testing.assert_close(q.scale, amax / 127, rtol=0, atol=0)
    torch.testing.assert_close(q.dequantize(), y, rtol=0, atol=float(amax.max()) / 254 + 1e-6)


def test_int8_chaining_edge_rows_and_errors():
    lin = torch.nn.Linear(8, 4, bias=False)
    a = SparseLinear.from_dense(lin, dtype="int8")
    x = torch.randn(3, 8)
    x[1] = 0.0  # an all-zero row: scale 0, values 0
    q = a.forward_quantized(x)
    assert q.scale[1] == 0 and not q.values[1].any()
    mat = a.packed()
    xq, sc = np.zeros((3, 8), np.int8), np.ones(3, np.float32)
    out = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="x_scale: expected length 3"):
        sk.spmm_int8(mat, xq, out, x_scale=np.ones(2, np.float32))
    with pytest.raises(TypeError, match="x: expected dtype int8"):
        sk.spmm_int8(mat, xq.astype(np.float32), out, x_scale=sc)
    with pytest.raises(TypeError, match="out: expected dtype int8"):
        sk.spmm_int8(mat, xq, out, x_scale=sc, out_scale=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="out_scale: expected length 3"):
        sk.spmm_int8(mat, xq, np.zeros((3, 4), np.int8), x_scale=sc, out_scale=np.ones(4, np.float32))
    with pytest.raises(ValueError, match="read-only"):
        ro = np.ones(3, np.float32)
        ro.flags.writeable = False
        sk.spmm_int8(mat, xq, np.zeros((3, 4), np.int8), x_scale=sc, out_scale=ro)
    with pytest.raises(ValueError, match="int8 SparseLinear"):
        SparseLinear.from_dense(lin).forward_quantized(x)
    with pytest.raises(ValueError, match="act_quant='token'"):
        SparseLinear.from_dense(torch.nn.Linear(4, 2), dtype="int8", act_quant="tensor")(q)


def test_fused_int8_layer_keeps_the_ffn_intermediate_int8():
    model = tiny_bert(0.9)
    ex = padded_example()
    acc = SparseInt8(format="csr", min_speedup=1.0, calibrate=False, dense_fallback="fp32")
    new = acc.prepare(model, ex, PrepareSettings(threads=2)).module
    assert all(layer.int8_ffn for layer in new.bert.encoder.layer)
    plain = SparseInt8(format="csr", min_speedup=1.0, calibrate=False, dense_fallback="fp32", fuse_layers=False)
    unfused = plain.prepare(model, ex, PrepareSettings(threads=2)).module
    torch.testing.assert_close(logits(new, ex), logits(unfused, ex), rtol=1e-2,
                               atol=1e-3)


@pytest.mark.parametrize("acc_cls", [SparseCPU, SparseInt8])
def test_fused_layers_kept_with_a_small_random_head(acc_cls):
    """The fused-layer check looks at each encoder layer's hidden states, not at the logits: a head
    whose logits are tiny (random, untrained) must not make INT8 rounding look like an error."""
    model = tiny_bert(0.9)
    with torch.no_grad():
        model.classifier.weight.mul_(1e-3)
        model.classifier.bias.zero_()
    ex = padded_example()
    assert logits(model, ex).abs().max() < 0.01
    kw = {"dense_fallback": "fp32", "attention": "fp32"} if acc_cls is SparseInt8 else {}
    p = acc_cls(format="csr", min_speedup=1.0, calibrate=False, **kw).prepare(model, ex, PrepareSettings(threads=2))
    assert p.fields["fused_encoder_layers"] == 2, p.fields["fused_encoder_note"]
    plain = acc_cls(format="csr", min_speedup=1.0, calibrate=False, fuse_layers=False, **kw).prepare(
        model, ex, PrepareSettings(threads=2)).module
    for got, ref in zip(layer_outputs(p.module, ex), layer_outputs(plain, ex)):
        assert relative_error(got, ref) <= acc_cls.fuse_tolerance


@pytest.mark.parametrize("acc", [SparseInt8(format="csr", min_speedup=1.0, calibrate=False, dense_fallback="fp32"),
                                 SparseCPU(format="csr", min_speedup=1.0, calibrate=False)])
def test_lean_forward_is_bit_identical_to_the_module_path(acc):
    """Layers whose products are all our kernels run on numpy views (one kernel call per step);
    the module-call path computes the same bits."""
    model = tiny_bert(0.9)
    ex = padded_example()
    new = acc.prepare(model, ex, PrepareSettings(threads=2)).module
    layers = [m for m in new.modules() if isinstance(m, FusedBertLayer)]
    assert len(layers) == 2 and all(m.lean for m in layers)
    lean = logits(new, ex)
    for m in layers:
        m.lean = False
    torch.testing.assert_close(logits(new, ex), lean, rtol=0, atol=0)


def test_lean_classifier_matches_the_transformers_forward_bit_for_bit():
    from accelerators.fused_layer import LeanBertClassifier

    model = tiny_bert(0.9)
    ex = padded_example()
    p = SparseInt8(format="csr", min_speedup=1.0, calibrate=False, dense_fallback="fp32").prepare(
        model, ex, PrepareSettings(threads=2))
    lean = p.module
    assert isinstance(lean, LeanBertClassifier) and p.fields["lean_model"] and p.fields["lean_model_note"] is None
    inner = lean.model
    other = padded_example(batch=2, seq=40)
    cases = [ex, other, {k: v for k, v in other.items() if k != "attention_mask"},
             {k: v for k, v in other.items() if k != "token_type_ids"}]
    for case in cases:
        for ctx in (torch.no_grad, torch.inference_mode, contextlib.nullcontext):  # and with grad enabled
            with ctx():
                assert torch.equal(lean(**case).logits, inner(**case).logits)
    # anything else goes to the wrapped model; its attributes read through the wrapper
    labels = torch.tensor([0, 1, 0])
    with torch.no_grad():
        assert lean(**ex, labels=labels).loss is not None
    assert lean.bert is inner.bert and lean.config is inner.config
    # the fused layers still run as modules: forward hooks (layer_outputs) see every layer
    assert len(layer_outputs(lean, ex)) == 2


def test_lean_classifier_declines_other_models():
    from accelerators.fused_layer import LeanBertClassifier

    model = tiny_bert(0.9)
    assert LeanBertClassifier.wrap(model)[1] == "not every encoder layer is a lean fused layer"
    p = SparseCPU(format="csr", min_speedup=1.0, calibrate=False, fuse_gelu=False).prepare(
        model, padded_example(), PrepareSettings(threads=1))
    assert not p.fields["lean_model"] and "lean" in p.fields["lean_model_note"]
    assert "not a BertForSequenceClassification" in LeanBertClassifier.wrap(torch.nn.Linear(2, 2))[1]


def test_lean_classifier_copies_and_pickles():
    import pickle

    from accelerators.fused_layer import LeanBertClassifier

    ex = padded_example()
    lean = SparseInt8(format="csr", min_speedup=1.0, calibrate=False, dense_fallback="fp32").prepare(
        tiny_bert(0.9), ex, PrepareSettings(threads=1)).module
    assert isinstance(lean, LeanBertClassifier)
    for other in (copy.deepcopy(lean), pickle.loads(pickle.dumps(lean))):
        assert isinstance(other, LeanBertClassifier) and other.layers[0] is other.model.bert.encoder.layer[0]
        assert torch.equal(logits(other, ex), logits(lean, ex))
    with pytest.raises(AttributeError):
        lean.no_such_attribute


def test_lean_classifier_plan_matches_the_layer_path_and_follows_changes():
    """The encoder plan (every layer's kernel calls bound once per input shape) computes the bits of
    the per-layer path, keeps at most MAX_PLANS shapes, is rebuilt when a layer's settings or
    weights change (in place or replaced), and steps aside for forward hooks, which then fire."""
    from accelerators.fused_layer import LeanBertClassifier

    ex = padded_example()
    lean = SparseInt8(format="csr", min_speedup=1.0, calibrate=False, dense_fallback="fp32").prepare(
        tiny_bert(0.9), ex, PrepareSettings(threads=1)).module
    assert isinstance(lean, LeanBertClassifier)

    def per_layer(case):  # a forward hook on each layer takes the per-layer path
        seen = []
        hooks = [layer.register_forward_hook(lambda *a: seen.append(1)) for layer in lean.layers]
        try:
            return logits(lean, case)
        finally:
            for h in hooks:
                h.remove()
            assert len(seen) == len(lean.layers)

    shapes = [padded_example(batch=b, seq=s) for b, s in ((3, 24), (2, 40), (2, 8), (4, 16), (2, 12))]
    for case in shapes + [ex]:
        assert torch.equal(logits(lean, case), per_layer(case))
    assert len(lean._plans) == LeanBertClassifier.MAX_PLANS
    before = logits(lean, ex)
    set_attention_precision(lean, "fp32" if lean.layers[0].attention_precision == "int8" else "int8")
    assert torch.equal(logits(lean, ex), per_layer(ex))
    with torch.no_grad():
        lean.layers[0].att_out.values.mul_(-1)  # in place: the packed kernel handle must follow
    changed = logits(lean, ex)
    assert torch.equal(changed, per_layer(ex)) and not torch.equal(changed, before)
    ln = lean.layers[1].ln2
    ln.weight = torch.nn.Parameter(ln.weight.detach() * 2)  # replaced: the bound array must follow
    assert torch.equal(logits(lean, ex), per_layer(ex)) and not torch.equal(logits(lean, ex), changed)


def test_lean_classifier_concurrent_forwards_agree():
    """Forwards from several threads at once: one holds the plan, the others take the per-layer
    path; every result is the single-threaded one."""
    from concurrent.futures import ThreadPoolExecutor

    ex = padded_example()
    lean = SparseInt8(format="csr", min_speedup=1.0, calibrate=False, dense_fallback="fp32").prepare(
        tiny_bert(0.9), ex, PrepareSettings(threads=1)).module
    want = logits(lean, ex)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: logits(lean, ex), range(40)))
    assert all(torch.equal(g, want) for g in got)


def test_lean_classifier_fused_calls_and_range_handoff_are_switches_with_the_same_bits():
    """The plan binds one ffn_int8 and one qkv_attention_int8 call per INT8 layer (INT8 attention)
    and hands ranges between kernels; turning any off (fuse_ffn / hand_ranges / fuse_attention)
    rebuilds the plan with the chained calls, the same bits."""
    from accelerators import _sparse_kernels as _sk

    ex = padded_example()
    lean = SparseInt8(format="csr", min_speedup=1.0, calibrate=False, dense_fallback="fp32").prepare(
        tiny_bert(0.9), ex, PrepareSettings(threads=1)).module
    want = logits(lean, ex)

    def plan_calls():
        return [(fn, kw) for fn, _, kw in lean._plans[0][6]]

    calls = plan_calls()
    assert all(layer.attention_precision == "int8" for layer in lean.layers)
    assert sum(fn is _sk.ffn_int8 for fn, _ in calls) == len(lean.layers)
    assert sum(fn is _sk.qkv_attention_int8 for fn, _ in calls) == len(lean.layers)
    assert not any(fn is _sk.attention for fn, _ in calls)
    assert any("x_amax" in kw for _, kw in calls) and any("out_amax" in kw for _, kw in calls)
    for fuse, hand, fuse_att in ((False, True, True), (True, False, True), (True, True, False),
                                 (False, False, False)):
        for layer in lean.layers:
            layer.fuse_ffn, layer.hand_ranges, layer.fuse_attention = fuse, hand, fuse_att
        assert torch.equal(logits(lean, ex), want)
        calls = plan_calls()
        assert any(fn is _sk.ffn_int8 for fn, _ in calls) == fuse
        assert any(fn is _sk.qkv_attention_int8 for fn, _ in calls) == fuse_att
        assert any(fn is _sk.attention for fn, _ in calls) != fuse_att
        assert any("x_amax" in kw or "out_amax" in kw for _, kw in calls) == hand


def test_fusion_and_attention_checks_judge_each_sequence_on_its_own_scale(monkeypatch):
    """A sequence whose error is large for its own activations is rejected however large the
    activations of the sequences batched with it: the choice does not depend on the timing batch."""
    import accelerators.sparse_cpu as sc
    from accelerators.sparse_cpu import sequence_errors

    ref = torch.zeros(2, 4, 8)
    ref[0, 0, 0], ref[1, 0, 0] = 100.0, 1.0
    got = ref.clone()
    got[1, 1, 1] = 0.1  # 0.1 of sequence 1's largest activation, 1e-3 of the batch's
    assert sequence_errors(got, ref) == pytest.approx([0.0, 0.1])
    assert sequence_errors(got[1:], ref[1:]) == pytest.approx([0.1])  # the same alone
    assert relative_error(got, ref) == pytest.approx(1e-3)  # what a batch-wide scale would have said
    monkeypatch.setattr(sc, "layer_outputs", lambda model, example: [got])
    why = SparseCPU._fused_error(None, {}, [ref], [[0.0, 0.0]], 2.5e-2, 1.0)
    assert "sequence 1" in why and "fused layer 0" in why
    assert SparseCPU._fused_error(None, {}, [ref], [[0.0, 0.09]], 2.5e-2, 1.0) == ""  # within plain + tolerance


# ------------------------------------------------------------- the fused-layer check's padded batch
def check_sentences(lengths=(7, 11, 19, 5, 9), seed=5):
    """Calibration-like sentences: dicts of int64 (1, length) tensors, as Task.calibration_inputs
    yields them (``token_type_ids`` 1 on the last two tokens, so the padding of it shows)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(5, 120, (1, n), generator=g)
        types = torch.zeros_like(ids)
        types[:, -2:] = 1
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": types})
    return out


def test_check_inputs_add_one_right_padded_batch_of_the_sentences():
    from accelerators.sparse_cpu import CHECK_SEQUENCES, check_inputs, padded_batch

    sents = check_sentences((3, 5, 2))
    b = padded_batch(sents, pad_id=1)
    assert set(b) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(t.shape == (3, 5) and t.dtype == torch.int64 for t in b.values())
    assert b["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    for i, (s, n) in enumerate(zip(sents, (3, 5, 2))):
        assert torch.equal(b["input_ids"][i, :n], s["input_ids"][0])  # real tokens in place
        assert torch.equal(b["token_type_ids"][i, :n], s["token_type_ids"][0])
        assert (b["input_ids"][i, n:] == 1).all() and (b["token_type_ids"][i, n:] == 0).all()
    no_mask = padded_batch([{"input_ids": s["input_ids"]} for s in sents])  # taken as all real
    assert torch.equal(no_mask["attention_mask"], b["attention_mask"]) and (no_mask["input_ids"][0, 3:] == 0).all()
    # nothing to pad: no padded batch
    assert padded_batch(sents[:1]) is None and padded_batch([]) is None
    assert padded_batch(check_sentences((6, 6, 6))) is None

    many = check_sentences((4, 9, 6) * 4)
    got = check_inputs(PrepareSettings(calibration=lambda n: iter(many[:n])), pad_id=1)
    assert len(got) == CHECK_SEQUENCES + 1 and got[:CHECK_SEQUENCES] == many[:CHECK_SEQUENCES]
    assert got[-1]["input_ids"].shape == (CHECK_SEQUENCES, 9)
    same = check_sentences((6,) * 10)
    assert check_inputs(PrepareSettings(calibration=lambda n: iter(same[:n]))) == same[:CHECK_SEQUENCES]
    assert check_inputs(PrepareSettings()) == []


def test_fused_layer_check_ignores_padded_positions(monkeypatch):
    """An error at a padded position (attention_mask 0) does not count, nor does a large activation
    there set the sequence's scale; the same error at a real position fails, naming the padded batch."""
    import accelerators.sparse_cpu as sc
    from accelerators.sparse_cpu import real_sequence_errors

    ref = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    at_pad, at_real = ref.clone(), ref.clone()
    at_pad[0, 3] += 100.0
    at_real[0, 2] += 100.0
    assert real_sequence_errors(at_pad, ref, mask) == [0.0, 0.0]
    assert real_sequence_errors(at_pad, ref, None)[0] > 1  # what an unmasked comparison says
    assert real_sequence_errors(at_real, ref, mask)[0] > 1
    big_pad = ref.clone()
    big_pad[0, 3] = 1e6  # the reference's scale comes from real positions only
    assert real_sequence_errors(at_real, big_pad, mask)[0] > 1

    def fused_error(got, example):
        monkeypatch.setattr(sc, "layer_outputs", lambda model, x: [got])
        return SparseCPU._fused_error(None, example, [ref], [[0.0, 0.0]], 1e-4)

    assert fused_error(at_pad, {"attention_mask": mask}) == ""
    assert "(padded batch of 2, sequence 0, relative to its max)" in fused_error(at_real, {"attention_mask": mask})
    # an unpadded batch names the sequence alone, and there the position counts
    assert "(sequence 0, relative to its max)" in fused_error(at_pad, {"attention_mask": torch.ones(2, 4)})


@pytest.mark.parametrize("acc_cls", [SparseCPU, SparseInt8])
@pytest.mark.parametrize("broken", [False, True])
def test_fused_layers_with_a_wrong_masked_path_are_rejected_at_prepare(monkeypatch, acc_cls, broken):
    """Calibration sentences of different lengths, each alone, never mask a key: a fused layer whose
    key-padding mask is ignored passes them, and only the padded check batch rejects it, with a note
    naming that batch. Unbroken, the fused layers are kept."""
    import accelerators.fused_layer as fl
    from accelerators.sparse_cpu import CHECK_SEQUENCES

    if broken:  # padded keys not masked: every key gets a 0 bias
        monkeypatch.setattr(fl, "key_padding_bias", lambda mask, batch, seq: torch.zeros(batch, seq))
    model = tiny_bert(0.9)
    # a random init's attention branch barely moves the hidden states (the bug shows as ~1e-3,
    # under sparse-int8's 1e-2 fuse tolerance); larger values make it count as in a trained model
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            layer.attention.self.value.weight.mul_(100)
    sents = check_sentences((7, 11, 19, 5, 9, 13, 17, 8))
    settings = PrepareSettings(threads=2, calibration=lambda n: iter(sents[:n]))
    kw = {"dense_fallback": "fp32"} if acc_cls is SparseInt8 else {}
    f = acc_cls(format="csr", min_speedup=1.0, calibrate=False, **kw).prepare(model, padded_example(), settings).fields
    if broken:
        assert f["fused_encoder_layers"] == 0
        assert f"padded batch of {CHECK_SEQUENCES}, sequence" in f["fused_encoder_note"]
    else:
        assert f["fused_encoder_layers"] == 2, f["fused_encoder_note"]
