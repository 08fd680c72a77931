"""INT8 attention (``attention(..., precision="int8")``) and its use in the fused layer and sparse-int8.

Every supported kernel variant is checked against a float64 emulation of the documented INT8
arithmetic (exact integer products, float64 softmax), and against fp32 attention within the bound
the accelerator relies on.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings, strategies as st

from accelerators import _sparse_kernels as sk
from accelerators.base import PrepareSettings
from accelerators.fused_layer import FusedBertLayer, fuse_encoder_layers, set_attention_precision
from accelerators.sparse_cpu import layer_outputs, relative_error
from accelerators.sparse_int8 import SparseInt8
from tests.test_fused_layer import attention_ref, padded_example, tiny_bert

VARIANTS = sk.supported_variants()
MASKED_BIAS = -1e4  # a key bias at or below this masks the key (SK_KEY_MASKED)


def quantize(x: np.ndarray, axis: int, counts=None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric INT8 along ``axis`` (the kernels' rule): int values (float64) and scales.
    ``counts`` (broadcastable to ``x``, bool): the entries the range is taken over (all when None)."""
    a = np.abs(x if counts is None else np.where(counts, x, 0)).max(axis=axis, keepdims=True).astype(np.float32)
    ok = (a > 0) & np.isfinite(a)
    inv = np.where(ok, np.float32(127.0) / np.where(ok, a, 1), 0).astype(np.float32)
    q = np.clip(np.rint(x.astype(np.float32) * inv), -127, 127)
    return q.astype(np.float64), np.where(ok, a / np.float32(127.0), 0).astype(np.float64)


def attention_int8_ref(qkv: np.ndarray, heads: int, key_bias=None, scale=None) -> np.ndarray:
    """float64 emulation of precision='int8': q, k per row and v per channel over the unmasked
    keys (bias > -10000; all keys when every one is masked) quantized, a masked key's bias as -inf,
    exact integer products, softmax numerators rounded to rint(255 e) and normalised by their sum."""
    B, S, H3 = qkv.shape
    H = H3 // 3
    dh = H // heads
    x = qkv.reshape(B, S, 3, heads, dh).transpose(2, 0, 3, 1, 4)  # (3, B, heads, S, dh)
    q8, sq = quantize(x[0], -1)
    k8, sk_ = quantize(x[1], -1)
    counts = None
    if key_bias is not None:
        unmasked = ~(key_bias <= MASKED_BIAS)  # (B, S); NaN counts as unmasked
        counts = (unmasked | ~unmasked.any(-1, keepdims=True))[:, None, :, None]
    v8, sv = quantize(x[2], -2, counts)
    s = (q8 @ k8.transpose(0, 1, 3, 2)) * (sq * (dh ** -0.5 if scale is None else scale)) * sk_.transpose(0, 1, 3, 2)
    if key_bias is not None:  # a masked key's bias counts as -inf
        s = s + np.where(key_bias <= MASKED_BIAS, -np.inf, key_bias.astype(np.float64))[:, None, None, :]
    m = s.max(-1, keepdims=True)
    dead = ~np.isfinite(m)
    u = np.where(dead, 0.0, np.rint(255 * np.exp(s - np.where(dead, 0.0, m))))
    L = u.sum(-1, keepdims=True)
    o = np.divide(u @ v8, L, out=np.zeros((B, heads, S, dh)), where=L > 0) * sv
    return o.transpose(0, 2, 1, 3).reshape(B, S, H)


def vmax(qkv: np.ndarray) -> float:
    return float(np.abs(qkv[..., 2 * qkv.shape[-1] // 3:]).max())


def vmax_per_channel(qkv: np.ndarray, key_bias: np.ndarray) -> np.ndarray:
    """max |v| of each sequence's V channel over its unmasked keys (all keys when every one is
    masked), shaped (B, 1, H) to broadcast over an output (B, S, H): V's quantization range."""
    H = qkv.shape[-1] // 3
    unmasked = key_bias > MASKED_BIAS
    counts = unmasked | ~unmasked.any(-1, keepdims=True)
    return np.abs(np.where(counts[..., None], qkv[..., 2 * H:], 0)).max(axis=1, keepdims=True)


@pytest.mark.parametrize("variant", VARIANTS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(B=st.integers(1, 3), S=st.integers(1, 40), heads=st.integers(1, 4), dh=st.integers(1, 40),
       masked=st.integers(0, 40), mask=st.sampled_from([-np.inf, np.finfo(np.float32).min, -1e9, -1e4]),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
@example(B=2, S=37, heads=3, dh=20, masked=7, mask=-np.inf, threads=2, seed=0)
def test_int8_attention_matches_its_float64_emulation(variant, B, S, heads, dh, masked, mask, threads, seed):
    rng = np.random.default_rng(seed)
    H = heads * dh
    qkv = rng.standard_normal((B, S, 3 * H)).astype(np.float32)
    # V channels of different ranges: a kernel sharing one V scale across channels (a SIMD group
    # or a head) instead of one per channel then misses the emulation by many tolerances
    qkv[..., 2 * H:] *= rng.uniform(0.05, 3, H).astype(np.float32)
    kb = np.zeros((B, S), np.float32)
    kb[-1, S - min(masked, S):] = mask
    out = np.full((B, S, H), np.nan, np.float32)
    sk.attention(qkv, out, heads, key_bias=kb, threads=threads, variant=variant, precision="int8")
    # integer parts are exact; exp differs (libm / a degree-3 polynomial), so a numerator may land
    # on the other side of a rounding boundary: one unit of u moves an output channel by <= its
    # own max|v| / 255, so the tolerance is per channel
    ref = attention_int8_ref(qkv, heads, kb)
    atol = 2 * vmax_per_channel(qkv, kb) / 255 + 1e-6
    assert np.all(np.abs(out - ref) <= atol), f"worst error / tolerance {float((np.abs(out - ref) / atol).max()):.3g}"
    if masked >= S:
        assert not out[-1].any()  # every key masked: zeros


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mask", [-np.inf, np.finfo(np.float32).min, -1e9, -10000.0])
def test_padded_sequence_gets_the_bits_it_gets_alone(variant, mask):
    """Masked keys are left out of the value ranges, so padding, however large its values, does
    not change a sequence's attention: the same bits as the sequence alone, on every variant."""
    rng = np.random.default_rng(3)
    heads, dh, n = 3, 20, 37
    alone = rng.standard_normal((1, n, 3 * heads * dh)).astype(np.float32)
    want = np.empty((1, n, heads * dh), np.float32)
    sk.attention(alone, want, heads, variant=variant, precision="int8")
    for pad in (1, 11, 91):
        padded = 50 * rng.standard_normal((2, n + pad, 3 * heads * dh)).astype(np.float32)
        padded[0, :n] = alone[0]
        kb = np.zeros((2, n + pad), np.float32)
        kb[0, n:] = mask
        got = np.empty((2, n + pad, heads * dh), np.float32)
        sk.attention(padded, got, heads, key_bias=kb, variant=variant, precision="int8", threads=2)
        np.testing.assert_array_equal(got[0, :n], want[0])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shift", [1e5, 1.1e7, 3e7, 1e9])
def test_softmax_is_shift_invariant_at_any_score_magnitude(variant, shift):
    """Adding one constant to every score leaves the softmax alone: the numerators are e^(s - m)
    with s - m formed first (exact here: the offsets are multiples of the shift's float32 spacing),
    so a large common score gives the same bits as the offsets alone, on every variant."""
    rng = np.random.default_rng(5)
    heads, dh, S = 2, 8, 37
    qkv = rng.standard_normal((1, S, 3 * heads * dh)).astype(np.float32)
    qkv[..., : heads * dh] = 0  # q = 0: every score is its key's bias
    shift = float(np.float32(shift))
    offsets = -float(np.spacing(np.float32(shift))) * rng.integers(0, 4, S)
    offsets[0] = 0
    assert (offsets < 0).any() and (offsets > MASKED_BIAS).all()  # graded weights, no key masked
    want = np.empty((1, S, heads * dh), np.float32)
    sk.attention(qkv, want, heads, key_bias=offsets[None].astype(np.float32), variant=variant, precision="int8",
                 threads=2)
    kb = (np.float32(shift) + offsets.astype(np.float32))[None].astype(np.float32)
    assert (kb.astype(np.float64) - shift == offsets).all()  # the shift itself is exact
    got = np.empty_like(want)
    sk.attention(qkv, got, heads, key_bias=kb, variant=variant, precision="int8", threads=2)
    assert np.abs(want).max() > 0
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_nan_score_does_not_hide_the_row_maximum(variant):
    """A score of 0 x an overflowed scale is NaN; it gets no weight, and the row's maximum is taken
    over the other keys wherever the NaN sits (every variant: as the scalar one does)."""
    S, dh = 24, 4
    qkv = np.zeros((1, S, 3 * dh), np.float32)
    qkv[0, :, 2 * dh:] = np.random.default_rng(0).standard_normal((S, dh))
    qkv[0, :, 1] = 1e22  # every query [0, 1e22, 0, 0]
    qkv[0, 13, dh] = 1e22  # key 13 orthogonal to it, at a scale whose product overflows: 0 x inf
    qkv[0, 5, dh + 1] = 1.0  # the largest score, in the same SIMD lane as key 13 (and key 21)
    qkv[0, 21, dh + 1] = 0.5
    out = np.empty((1, S, dh), np.float32)
    sk.attention(qkv, out, 1, variant=variant, precision="int8")
    v8, sv = quantize(qkv[0, :, 2 * dh:], 0)  # V per channel
    np.testing.assert_allclose(out[0], np.broadcast_to(v8[5] * sv[0], (S, dh)), rtol=1e-6)  # all weight on key 5


@pytest.mark.parametrize("variant", VARIANTS)
def test_an_overflowing_score_gives_a_nan_row_as_fp32_does(variant):
    """Finite q and k whose product overflows to +inf: fp32 softmax gives NaN (inf - inf); INT8
    gives NaN too, not a row of zeros; the rows whose scores stay finite are unchanged."""
    S, dh = 20, 4
    qkv = np.zeros((1, S, 3 * dh), np.float32)
    qkv[0, :, 2 * dh:] = np.random.default_rng(1).standard_normal((S, dh))
    qkv[0, :, dh] = 1.0  # every key [1, 0, 0, 0]
    qkv[0, 3, dh] = 1e30  # key 3 huge
    qkv[0, 7, 0] = 1e30  # query 7 huge: its score for key 3 overflows
    qkv[0, 9, 0] = 1.0  # query 9 ordinary
    out = np.empty((1, S, dh), np.float32)
    for precision in ("fp32", "int8"):
        sk.attention(qkv, out, 1, variant=variant, precision=precision)
        assert np.isnan(out[0, 7]).all(), precision
        assert np.isfinite(out[0, 9]).all(), precision


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("S,heads,dh", [(128, 12, 32), (128, 12, 64), (33, 3, 20)])
def test_int8_attention_within_bound_of_fp32(variant, S, heads, dh):
    """The stated bound: on N(0, 1) inputs the INT8 output is within 1 % of max |v| of fp32
    attention (measured: 0.3-0.5 %)."""
    rng = np.random.default_rng(7)
    qkv = rng.standard_normal((2, S, 3 * heads * dh)).astype(np.float32)
    kb = np.zeros((2, S), np.float32)
    kb[1, S // 2:] = -np.inf
    out = np.empty((2, S, heads * dh), np.float32)
    sk.attention(qkv, out, heads, key_bias=kb, variant=variant, precision="int8", threads=2)
    err = np.abs(out - attention_ref(qkv, heads, kb)).max() / vmax(qkv)
    assert 0 < err <= 1e-2


def test_int8_attention_edge_rows_and_errors():
    qkv = np.zeros((1, 5, 12), np.float32)  # all-zero q, k, v: uniform weights over zero values
    out = np.full((1, 5, 4), np.nan, np.float32)
    sk.attention(qkv, out, 2, precision="int8")
    assert not out.any()
    rng = np.random.default_rng(0)
    qkv = rng.standard_normal((1, 6, 12)).astype(np.float32)
    qkv[0, 2, :4] = np.nan  # a query row holding NaN: that row is NaN (as torch's), the others are not
    sk.attention(qkv, out := np.empty((1, 6, 4), np.float32), 2, precision="int8")
    np.testing.assert_array_equal(np.isnan(out[0]).any(-1), np.arange(6) == 2)
    with pytest.raises(ValueError, match="precision"):
        sk.attention(qkv, out, 2, precision="bf16")
    for bad in (np.inf, np.nan):  # would make every score of the sequence NaN
        kb = np.zeros((1, 6), np.float32)
        kb[0, 4] = bad
        for precision in ("fp32", "int8"):
            with pytest.raises(ValueError, match=r"key_bias must be finite or -inf .* index 4"):
                sk.attention(qkv, out, 2, key_bias=kb, precision=precision)
    with pytest.raises(ValueError, match="65536"):
        sk.attention(np.zeros((1, 65537, 3), np.float32), np.zeros((1, 65537, 1), np.float32), 1, precision="int8")


@torch.no_grad()
def test_fused_layer_int8_attention_close_to_fp32():
    model = tiny_bert(0.5)
    ex = padded_example()
    ref = layer_outputs(model, ex)
    fused = copy.deepcopy(model)
    assert fuse_encoder_layers(fused, 2, None, "int8")[0] == 2
    assert all(m.attention_precision == "int8" for m in fused.modules() if isinstance(m, FusedBertLayer))
    errs = [relative_error(g, r) for g, r in zip(layer_outputs(fused, ex), ref)]
    assert max(errs) < SparseInt8.attention_tolerance
    assert set_attention_precision(fused, "fp32") == 2
    assert max(relative_error(g, r) for g, r in zip(layer_outputs(fused, ex), ref)) < 1e-4
    with pytest.raises(ValueError):
        set_attention_precision(fused, "fp16")


@pytest.mark.parametrize("attention", ["int8", "fp32"])
def test_sparse_int8_records_its_attention_precision(attention):
    model = tiny_bert(0.9)
    ex = padded_example()
    p = SparseInt8(format="csr", min_speedup=1.0, calibrate=False, dense_fallback="fp32",
                   attention=attention).prepare(model, ex, PrepareSettings(threads=2))
    f = p.fields
    assert f["fused_encoder_layers"] == 2
    assert f["attention_precision"] == attention and f"attention {attention}" in f["quant_scope"]
    layers = [m for m in p.module.modules() if isinstance(m, FusedBertLayer)]
    assert [m.attention_precision for m in layers] == [attention] * 2


def test_sparse_int8_rejects_int8_attention_beyond_tolerance():
    model = tiny_bert(0.9)
    ex = padded_example()
    acc = SparseInt8(format="csr", min_speedup=1.0, calibrate=False, dense_fallback="fp32")
    acc.attention_tolerance = 0.0  # any INT8 rounding is then too much
    with torch.no_grad():  # peaked attention: INT8 rounding shows in the layer outputs
        for m in model.modules():
            if hasattr(m, "query"):
                m.query.weight.mul_(8)
    f = acc.prepare(model, ex, PrepareSettings(threads=2)).fields
    assert f["fused_encoder_layers"] == 2 and f["attention_precision"] == "fp32"
    assert f["attention_note"].startswith("int8 attention rejected")


def test_sparse_int8_attention_config_error():
    with pytest.raises(ValueError, match="attention"):
        SparseInt8(attention="bf16")


def test_fused_layers_are_checked_on_the_calibration_sentences_whatever_the_timing_batch(monkeypatch):
    """The fused-layer and INT8-attention checks run on the first CHECK_SEQUENCES calibration
    sentences, each alone and then as one padded batch, so cells of every batch size get the same
    numerics from one model."""
    from accelerators.sparse_cpu import CHECK_SEQUENCES

    g = torch.Generator().manual_seed(5)
    sentences = [torch.randint(0, 120, (1, n), generator=g) for n in (7, 11, 19, 5, 9, 13, 17, 8, 12, 6)]

    def calibration(n):
        for ids in sentences[:n]:
            yield {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}

    seen = []
    real = SparseInt8._fused_error

    def spy(fused, example, *a, **k):
        seen.append(tuple(example["input_ids"].shape))
        return real(fused, example, *a, **k)

    monkeypatch.setattr(SparseInt8, "_fused_error", staticmethod(spy))
    fields = []
    for batch in (2, 3):
        seen.clear()
        acc = SparseInt8(format="csr", min_speedup=1.0, calibrate=False, dense_fallback="fp32")
        fields.append(acc.prepare(tiny_bert(0.9), padded_example(batch), PrepareSettings(threads=2, calibration=calibration)).fields)
        # never the timing batch: the sentences alone, then as one batch padded to the longest
        longest = max(s.shape[1] for s in sentences[:CHECK_SEQUENCES])
        assert set(seen) == {tuple(s.shape) for s in sentences[:CHECK_SEQUENCES]} | {(CHECK_SEQUENCES, longest)}
    keys = ("fused_encoder_layers", "attention_precision", "attention_note", "numerics_key")
    assert [{k: f.get(k) for k in keys} for f in fields][0] == [{k: f.get(k) for k in keys} for f in fields][1]


def test_int8_attention_refuses_a_head_too_wide_for_int32_scores():
    """q . k sums up to 127 * 127 * head_dim in int32: head_dim above 65536 could wrap."""
    qkv, out = np.zeros((1, 1, 3 * 65537), np.float32), np.zeros((1, 1, 65537), np.float32)
    with pytest.raises(ValueError, match="head_dim <= 65536"):
        sk.attention(qkv, out, 1, precision="int8")
    sk.attention(qkv, out, 1)  # fp32 attention has no such limit


@pytest.mark.parametrize("variant", VARIANTS)
def test_int8_attention_gives_nan_where_torch_does(variant):
    """The quantization maps NaN and inf to 0; the output still shows them as torch's would: a query
    row holding one gives a NaN row, an unmasked key or value row a NaN head. A masked key's row is
    left out (a padded sequence gets what it gets alone), and the other head is untouched."""
    rng = np.random.default_rng(5)
    S, heads, dh = 10, 2, 4
    H = heads * dh
    base = rng.standard_normal((1, S, 3 * H)).astype(np.float32)
    kb = np.zeros((1, S), np.float32)
    kb[0, 8:] = -np.inf
    clean = np.empty((1, S, H), np.float32)
    sk.attention(base, clean, heads, key_bias=kb, variant=variant, precision="int8")
    cases = {"query": ((0, 3, 1), np.eye(S, dtype=bool)[3]), "key": ((0, 6, H + 2), np.ones(S, bool)),
             "value": ((0, 1, 2 * H), np.ones(S, bool)), "masked key": ((0, 9, H + 1), np.zeros(S, bool))}
    for what, (at, nan_rows) in cases.items():
        for bad in (np.nan, np.inf):
            qkv = base.copy()
            qkv[at] = bad
            out = np.empty((1, S, H), np.float32)
            sk.attention(qkv, out, heads, key_bias=kb, variant=variant, precision="int8")
            np.testing.assert_array_equal(np.isnan(out[0, :, :dh]).all(-1), nan_rows, err_msg=f"{what} {bad}")
            np.testing.assert_array_equal(out[0, :, dh:], clean[0, :, dh:])  # head 1 untouched
            np.testing.assert_array_equal(out[0, ~nan_rows, :dh], clean[0, ~nan_rows, :dh])
    qkv = base.copy()  # every key masked: zeros, whatever V holds (as fp32 attention gives)
    qkv[0, 4, 2 * H] = np.inf
    for precision in ("int8", "fp32"):
        out = np.full((1, S, H), np.nan, np.float32)
        sk.attention(qkv, out, heads, key_bias=np.full((1, S), -np.inf, np.float32), variant=variant,
                     precision=precision)
        assert not out.any(), precision
