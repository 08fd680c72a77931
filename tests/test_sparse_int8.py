"""INT8 sparse kernels: bit-exact integer accumulation for every variant, dequantized results
against a float64 emulation and against fp32, saturation, zero rows, validation, the module and
the sparse-int8 accelerator on a tiny BERT. No timings."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck

sk = pytest.importorskip("accelerators._sparse_kernels")

from accelerators.base import PrepareSettings  # noqa: E402
from accelerators.sparse_linear import SparseLinear, dense_to_blocks  # noqa: E402
from tests.tiny_family import tiny_bert, tiny_inputs  # noqa: E402

VARIANTS = sk.supported_variants()
BLOCKS = [1, 2, 4, 8, 16]


def pack_q(wq: np.ndarray, bh: int, scale=None):
    ip, ix, bl = dense_to_blocks(torch.from_numpy(wq), bh, 4)
    n_out = wq.shape[0]
    sc = np.ones(n_out, np.float32) if scale is None else scale
    return sk.pack_int8(ip.numpy(), ix.numpy(), bl.numpy(), sc, wq.shape, block=bh)


def rand_wq(rng, n_out, n_in, density):
    w = rng.integers(-127, 128, (n_out, n_in), dtype=np.int64) * (rng.random((n_out, n_in)) < density)
    return w.astype(np.int8)


def raw(m, xq, variant, threads=1, **kw):
    out = np.full((xq.shape[0], m.shape[0]), -7, np.int32)
    sk.spmm_int8_raw(m, xq, out, threads=threads, variant=variant, **kw)
    return out


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bh", BLOCKS)
@pytest.mark.parametrize("tokens", [1, 7, 128, 1029])
@pytest.mark.parametrize("x_min", [-128, -127])  # -127: what quantized activations hold (avx2 runs its own product)
def test_exact_integer_accumulation(variant, bh, tokens, x_min):
    rng = np.random.default_rng(tokens + bh)
    n_out, n_in = (45, 61) if tokens > 1000 else (203, 333)
    wq = rand_wq(rng, n_out, n_in, 0.2)
    wq[0, :8] = -128
    xq = rng.integers(x_min, 128, (tokens, n_in)).astype(np.int8)
    ref = xq.astype(np.int64) @ wq.astype(np.int64).T
    m = pack_q(wq, bh)
    for threads in (1, 2):
        assert np.array_equal(raw(m, xq, variant, threads), ref)


@pytest.mark.parametrize("variant", VARIANTS)
def test_exact_wide_rows_every_tile_and_split(variant):
    """Wide 1x4-block rows (n_in 1,503, a packed tile of up to 188 KiB) called a group of chunks at a
    time: empty rows, rows whose blocks all lie at the end or the start, every tile width, both splits."""
    rng = np.random.default_rng(11)
    n_out, n_in = 300, 1503
    keep = np.repeat(rng.random((n_out, (n_in + 3) // 4)) < 0.1, 4, axis=1)[:, :n_in]
    wq = (rng.integers(-127, 128, (n_out, n_in)) * keep).astype(np.int8)
    wq[5] = 0
    wq[6, :-40] = 0
    wq[7, 300:] = 0
    xq = rng.integers(-127, 128, (200, n_in)).astype(np.int8)
    xq[3, 7] = -128  # the avx2 product is exact for x >= -127: this call runs on the scalar table
    ref = xq.astype(np.int64) @ wq.astype(np.int64).T
    m = pack_q(wq, 1)
    for tile in (0, 16, 32, 64, 128):
        for split in ("rows", "tokens"):
            for threads in (1, 2):
                assert np.array_equal(raw(m, xq, variant, threads, tile=tile, split=split), ref)
                assert np.array_equal(raw(m, xq[4:], variant, threads, tile=tile, split=split), ref[4:])


@pytest.mark.parametrize("variant", VARIANTS)
def test_extremes_and_saturation_free_accumulation(variant):
    # all-extreme operands: u8 = 0 / 1 / 255 against s8 = -128 / 127 (a plain vpmaddubsw would saturate int16)
    n_in = 4096
    for wv, xv in ((127, 127), (-128, -128), (127, -128), (-128, 127), (-128, -127), (127, -127)):
        wq = np.full((24, n_in), wv, np.int8)
        xq = np.full((17, n_in), xv, np.int8)
        ref = xq.astype(np.int64) @ wq.astype(np.int64).T
        for bh in BLOCKS:
            assert np.array_equal(raw(pack_q(wq, bh), xq, variant, 2), ref)


@pytest.mark.parametrize("variant", VARIANTS)
def test_tiles_tokens_blocks(variant):
    rng = np.random.default_rng(3)
    wq = rand_wq(rng, 70, 130, 0.3)
    xq = rng.integers(-128, 128, (300, 130)).astype(np.int8)
    ref = xq.astype(np.int64) @ wq.astype(np.int64).T
    for bh in BLOCKS:
        m = pack_q(wq, bh)
        for tile in (16, 32, 64, 128):
            assert np.array_equal(raw(m, xq, variant, 2, tile=tile), ref)
        assert np.array_equal(raw(m, xq, variant, 2, token_block=48), ref)
        for split in ("rows", "tokens"):
            assert np.array_equal(raw(m, xq, variant, 2, split=split), ref)
            assert np.array_equal(raw(m, xq[:41], variant, 3, split=split, token_block=16), ref[:41])


@pytest.mark.parametrize("variant", VARIANTS)
def test_16x4_tiles_padding_and_repeats(variant):
    """16x4 blocks are stored as AMX weight tiles, every block row padded to a multiple of 16 blocks:
    rows of 0, 1, 15, 16, 17 and 40 blocks, a repeated quad (its blocks add up), a last partial block
    row, against the exact product, at every tile width (passes of 1, 2 and 4 sub-tiles of 16 tokens,
    several passes per tile) and both splits."""
    rng = np.random.default_rng(16)
    n_out, n_in = 16 * 6 - 5, 4 * 45 - 2
    counts = [0, 1, 15, 16, 17, 40]
    wq = np.zeros((n_out, n_in), np.int8)
    for br, n in enumerate(counts):
        quads = np.sort(rng.choice(45, n, replace=False))
        for q in quads:
            wq[16 * br:16 * br + 16, 4 * q:4 * q + 4] = rng.integers(-128, 128, (16, 4))[: n_out - 16 * br, : n_in - 4 * q]
    ip, ix, bl = dense_to_blocks(torch.from_numpy(wq), 16, 4)
    ix[ip[4]] = ix[ip[4] + 1]  # row 4: its first two blocks on one quad (block 0's own quad then gets nothing)
    dense = np.zeros((6 * 16, 45 * 4), np.int64)
    for br in range(6):
        for j in range(int(ip[br]), int(ip[br + 1])):
            dense[16 * br:16 * br + 16, 4 * int(ix[j]):4 * int(ix[j]) + 4] += bl[j].numpy().astype(np.int64)
    m = sk.pack_int8(ip.numpy(), ix.numpy(), bl.numpy(), np.ones(n_out, np.float32), wq.shape, block=16)
    assert m.block == (16, 4) and m.format == "bsr16x4"
    assert m.nblocks == sum(-(-n // 16) * 16 for n in counts)
    xq = rng.integers(-127, 128, (211, n_in)).astype(np.int8)
    ref = xq.astype(np.int64) @ dense[:n_out, :n_in].T
    for tile in (16, 32, 64, 128, 256):
        for split in ("rows", "tokens"):
            for tokens in (211, 176, 48):  # tiles narrower than asked at the end of a token block
                assert np.array_equal(raw(m, xq[:tokens], variant, 2, tile=tile, split=split), ref[:tokens])
    for shape in ((len(ix), 4, 16), (2 * len(ix), 8, 4), (len(ix), 16 * 4, 1)):  # right size, wrong shape
        with pytest.raises(ValueError, match="values: expected shape"):
            sk.pack_int8(ip.numpy(), ix.numpy(), bl.numpy().reshape(shape), np.ones(n_out, np.float32), wq.shape,
                         block=16)
    with pytest.raises(ValueError, match="int8: or 16"):
        sk.pack_int8(ip.numpy(), ix.numpy(), bl.numpy(), np.ones(n_out, np.float32), wq.shape, block=32)
    with pytest.raises(ValueError, match="1, 2, 4 or 8, got 16"):
        sk.pack_bsr(np.zeros(2, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), (16, 4), block=16)


def emulate(x, wq, sw, bias, per_token=True):
    """float64 emulation of the int8 path (quantization in float32 exactly like the kernels)."""
    x = x.astype(np.float32)
    amax = np.abs(x).max(axis=1) if per_token else np.full(x.shape[0], np.abs(x).max(), np.float32)
    amax = amax.astype(np.float32)
    ok = amax > 0
    inv = np.where(ok, np.float32(127.0) / np.where(ok, amax, 1), 0).astype(np.float32)
    sx = np.where(ok, amax / np.float32(127.0), 0).astype(np.float32)
    xq = np.clip(np.rint(x * inv[:, None]), -127, 127)
    acc = xq.astype(np.int64) @ wq.astype(np.int64).T
    y = acc.astype(np.float64) * (sx[:, None].astype(np.float64) * sw[None, :].astype(np.float64))
    return y + (bias if bias is not None else 0)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("per_token", [True, False])
def test_dequantized_matches_emulation(variant, per_token):
    rng = np.random.default_rng(11)
    n_out, n_in, tokens = 96, 150, 37
    wq = rand_wq(rng, n_out, n_in, 0.25)
    sw = (rng.random(n_out) * 0.02 + 1e-3).astype(np.float32)
    bias = rng.standard_normal(n_out).astype(np.float32)
    x = (rng.standard_normal((tokens, n_in)) * rng.random((tokens, 1)) * 5).astype(np.float32)
    x[3] = 0.0  # a zero row: output is the bias
    ref = emulate(x, wq, sw, bias, per_token)
    for bh in BLOCKS:
        m = pack_q(wq, bh, sw)
        for split in ("rows", "tokens"):
            out = np.empty((tokens, n_out), np.float32)
            sk.spmm_int8(m, x, out, bias, threads=2, variant=variant, per_token=per_token, split=split)
            np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)
        if per_token:
            np.testing.assert_array_equal(out[3], bias)


@pytest.mark.parametrize("variant", VARIANTS)
def test_int8_gelu_epilogue_within_its_bound(variant):
    """The INT8 output pass's GELU (libm erff, or the SIMD variants' piecewise cubic of Phi) on the
    dequantized values the same call gives without it: within 2e-6 absolute of x Phi(x) in float64,
    over [-12, 12] (the cubic's joints and its switch to Phi = 1 at |x| = 5 included)."""
    n, tokens = 64, 4096
    wq = np.eye(n, dtype=np.int8) * 127
    m = pack_q(wq, 1, np.full(n, 1 / 127, np.float32))
    x = np.linspace(-12.0, 12.0, tokens * n, dtype=np.float32).reshape(tokens, n)
    plain, gelu = np.empty_like(x), np.empty_like(x)
    sk.spmm_int8(m, x, plain, variant=variant)
    sk.spmm_int8(m, x, gelu, variant=variant, activation="gelu")
    ref = torch.nn.functional.gelu(torch.from_numpy(plain).double()).numpy()
    assert np.abs(plain).max() > 11.9
    assert np.max(np.abs(gelu - ref)) <= 2e-6


def test_quantization_clamps_at_127():
    # one huge activation: the row's others round toward 0, the max maps to exactly 127
    wq = np.eye(8, dtype=np.int8)
    m = pack_q(wq, 1)
    x = np.array([[1e6, -1e6, 1.0, -3.0, 0, 0, 0, 0]], np.float32)
    out = np.empty((1, 8), np.float32)
    for variant in VARIANTS:
        sk.spmm_int8(m, x, out, variant=variant)
        np.testing.assert_allclose(out[0, :2], [1e6, -1e6], rtol=1e-6)
        np.testing.assert_array_equal(out[0, 2:], 0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_range_too_small_for_a_finite_inverse_scale_quantizes_to_zero(variant):
    """127 / amax overflows below about 3.7e-37: such a row is a zero range (scale 0, every value
    0), never 0 x inf = NaN quantized to -127. Input tokens and out_scale outputs alike."""
    wq = np.zeros((8, 8), np.int8)
    wq[:, 0] = 1  # every output = x[0]
    m = pack_q(wq, 1)
    for v, zero_range in ((1e-30, False), (1e-37, True), (1e-39, True)):
        x = np.zeros((1, 8), np.float32)
        x[0, 0] = v
        out = np.full((1, 8), np.nan, np.float32)
        sk.spmm_int8(m, x, out, variant=variant)
        np.testing.assert_allclose(out, 0.0 if zero_range else np.full((1, 8), v, np.float32), rtol=1e-6, atol=0)
        one = pack_q(np.eye(8, dtype=np.int8), 1)  # out = x: a row [v, 0, ..., 0] quantized on the way out
        q, scale = np.full((1, 8), 99, np.int8), np.full(1, np.nan, np.float32)
        sk.spmm_int8(one, np.zeros((1, 8), np.float32), q, variant=variant, out_scale=scale,
                     bias=np.array([v] + [0.0] * 7, np.float32))  # out = bias
        want = np.zeros(8, np.int8)
        if not zero_range:
            want[0] = 127
        np.testing.assert_array_equal(q[0], want)
        assert scale[0] == (0.0 if zero_range else np.float32(v) / np.float32(127.0))


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_token_holding_nan_or_inf_gives_nan_outputs_as_torch_would(variant):
    """Its values quantize to 0, but its scale is NaN, so its outputs are NaN (not the bias);
    per tensor, the one range is not finite and every output is NaN. Other tokens keep their bits;
    out_scale hands the NaN on to the next call."""
    rng = np.random.default_rng(2)
    wq = rng.integers(-127, 128, (16, 32)).astype(np.int8)
    m = pack_q(wq, 1)
    x = rng.standard_normal((5, 32)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    clean = np.empty((5, 16), np.float32)
    sk.spmm_int8(m, x, clean, b, variant=variant)
    for bad in (np.nan, np.inf):
        xb = x.copy()
        xb[2, 7] = bad
        out = np.empty((5, 16), np.float32)
        sk.spmm_int8(m, xb, out, b, variant=variant)
        assert np.isnan(out[2]).all()
        np.testing.assert_array_equal(np.delete(out, 2, 0), np.delete(clean, 2, 0))
        sk.spmm_int8(m, xb, out, b, variant=variant, per_token=False)
        assert np.isnan(out).all()
        q, scale = np.empty((5, 16), np.int8), np.empty(5, np.float32)
        sk.spmm_int8(m, xb, q, b, variant=variant, out_scale=scale)
        assert np.isnan(scale[2]) and not q[2].any() and np.isfinite(np.delete(scale, 2)).all()
        m2 = pack_q(np.eye(16, dtype=np.int8), 1)
        y = np.empty((5, 16), np.float32)
        sk.spmm_int8(m2, q, y, variant=variant, x_scale=scale)
        assert np.isnan(y[2]).all() and np.isfinite(np.delete(y, 2, 0)).all()


def test_rows_of_width_zero_have_zero_scales_and_ranges():
    """n_out = 0: out_scale and out_amax are written (0), not left as they were."""
    m0 = sk.pack_int8(np.array([0], np.int64), np.zeros(0, np.int32), np.zeros(0, np.int8), np.zeros(0, np.float32),
                      (0, 8))
    x = np.ones((4, 8), np.float32)
    scale, amax = np.full(4, 123.0, np.float32), np.full(4, -7.0, np.float32)
    sk.spmm_int8(m0, x, np.zeros((4, 0), np.int8), out_scale=scale)
    sk.spmm_int8(m0, x, np.zeros((4, 0), np.float32), out_amax=amax)
    assert not scale.any() and not amax.any()


def test_options_holding_a_nul_character_are_refused():
    m = pack_q(np.eye(8, dtype=np.int8), 1)
    x, out = np.ones((2, 8), np.float32), np.empty((2, 8), np.float32)
    for kw in ({"activation": "gelu\0junk"}, {"activation": "none\0gelu"}, {"split": "rows\0xyz"}):
        with pytest.raises(ValueError, match="activation must be|split must be"):
            sk.spmm_int8(m, x, out, **kw)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_out=st.integers(1, 40), n_in=st.integers(1, 70), tokens=st.integers(1, 35),
       density=st.sampled_from([0.0, 0.1, 0.5, 1.0]), bh=st.sampled_from(BLOCKS), seed=st.integers(0, 2**31 - 1))
def test_hypothesis_exact(n_out, n_in, tokens, density, bh, seed):
    rng = np.random.default_rng(seed)
    wq = rand_wq(rng, n_out, n_in, density)
    xq = rng.integers(-128, 128, (tokens, n_in)).astype(np.int8)
    ref = xq.astype(np.int64) @ wq.astype(np.int64).T
    m = pack_q(wq, bh)
    for variant in VARIANTS:
        assert np.array_equal(raw(m, xq, variant, 3), ref)


def test_int8_validation():
    wq = np.ones((4, 8), np.int8)
    ip, ix, bl = (t.numpy() for t in dense_to_blocks(torch.from_numpy(wq), 1, 4))
    sc = np.ones(4, np.float32)
    m = sk.pack_int8(ip, ix, bl, sc, (4, 8))
    assert m.dtype == "int8" and m.format == "bsr1x4" and m.block == (1, 4)
    with pytest.raises(TypeError):
        sk.pack_int8(ip, ix, bl.astype(np.float32), sc, (4, 8))
    with pytest.raises(TypeError):
        sk.pack_int8(ip, ix, bl, sc.astype(np.float64), (4, 8))
    with pytest.raises(ValueError):
        sk.pack_int8(ip, ix, bl[:-1], sc, (4, 8))
    with pytest.raises(ValueError):
        sk.pack_int8(ip, np.array([0, 1, 0, 2, 0, 1, 0, 1], np.int32), bl, sc, (4, 8))  # quad 2 >= 2
    with pytest.raises(ValueError):
        sk.pack_int8(ip, ix, bl, np.array([1, -1, 1, 1], np.float32), (4, 8))
    with pytest.raises(ValueError):
        sk.pack_int8(ip, ix, bl, np.array([1, np.nan, 1, 1], np.float32), (4, 8))
    with pytest.raises(ValueError):
        sk.pack_int8(ip, ix, bl, sc[:3], (4, 8))
    with pytest.raises(ValueError):
        sk.pack_int8(np.array([0, 1], np.int64), np.array([0], np.int32), np.ones(4, np.int8),
                     np.ones(1, np.float32), (1, 70000))
    # repeated quads add up, but beyond 16384 per row the int32 sums could wrap: refused, not wrong
    k = 16385
    with pytest.raises(ValueError, match="16385 quads"):
        sk.pack_int8(np.array([0, k], np.int64), np.zeros(k, np.int32), np.full(4 * k, 127, np.int8),
                     np.ones(1, np.float32), (1, 64))
    k = 16384
    mk = sk.pack_int8(np.array([0, k], np.int64), np.zeros(k, np.int32), np.full(4 * k, -128, np.int8),
                      np.ones(1, np.float32), (1, 64))
    xk = np.zeros((1, 64), np.int8)
    xk[0, :4] = 127
    assert raw(mk, xk, VARIANTS[0])[0, 0] == k * 4 * 127 * -128  # -266,338,304: exact
    x = np.ones((2, 8), np.float32)
    with pytest.raises(TypeError):
        sk.spmm_int8(m, x, np.empty((2, 4), np.int32))  # fp32 path needs float out
    with pytest.raises(TypeError):
        sk.spmm_int8_raw(m, x, np.empty((2, 4), np.int32))  # raw path needs int8 x
    with pytest.raises(TypeError):
        sk.spmm(m, x, np.empty((2, 4), np.float32))  # int8 matrix in the fp32 entry point
    with pytest.raises(ValueError):
        sk.spmm_int8(m, np.ones((2, 7), np.float32), np.empty((2, 4), np.float32))
    with pytest.raises(ValueError):
        sk.spmm_int8(m, np.ones((2, 16), np.float32)[:, ::2], np.empty((2, 4), np.float32))
    fm = sk.pack_csr(np.array([0, 0], np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), (1, 8))
    with pytest.raises(TypeError):
        sk.spmm_int8(fm, x, np.empty((2, 1), np.float32))


# ------------------------------------------------------------------------------------------ module
@pytest.mark.parametrize("fmt", ["csr", "bsr2x4", "bsr4x4", "bsr8x4"])
def test_sparse_linear_int8_close_to_fp32(fmt):
    torch.manual_seed(0)
    lin = torch.nn.Linear(130, 70)
    with torch.no_grad():
        lin.weight.mul_(torch.rand_like(lin.weight) > 0.8)
    sl = SparseLinear.from_dense(lin, fmt, dtype="int8", threads=2)
    x = torch.randn(2, 9, 130)
    with torch.no_grad():
        ref = lin(x)
    out = sl(x)
    assert out.shape == ref.shape
    # stated tolerance: per-token int8 activations x per-channel int8 weights
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 2e-2
    wd = sl.to_dense()
    assert ((wd - lin.weight).abs().max() <= sl.w_scale.max() / 2 + 1e-7).item()
    sl2 = SparseLinear.from_dense(lin, fmt, dtype="int8")
    sl2.load_state_dict(sl.state_dict())
    torch.testing.assert_close(sl2(x), out)


# ------------------------------------------------------------------------------------------ accelerator
@pytest.mark.parametrize("fallback", ["torch-int8", "kernel-int8", "fp32"])
def test_sparse_int8_accelerator(fallback):
    from accelerators.sparse_int8 import SparseInt8

    acc = SparseInt8(dense_fallback=fallback, min_speedup=1.0, repeats=2, min_time_s=0.0005, check_model=False)
    ok, reason = acc.availability()
    if not ok:
        pytest.skip(reason)
    model = tiny_bert(0.9)
    before = copy.deepcopy(model.state_dict())
    ex = tiny_inputs()
    p = acc.prepare(model, ex, PrepareSettings(threads=2))
    new = p.module
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    with torch.no_grad():
        ref = model(**ex).logits
        got = new(**ex).logits
    assert ((got - ref).abs().max() / ref.abs().max()).item() < 0.1
    f = p.fields
    assert f["sparse_layers"] + f["dense_layers"] == 12
    assert f["sparse_dtype"] == "int8" and f["sparse_act_quant"] == "token"
    assert len(json.loads(f["sparse_layer_choices"])) == 12


def test_kernel_int8_fallback_quantizes_the_layers_left_dense_per_token():
    """Layers below min_sparsity run on our INT8 kernel with the sparse layers' per-token
    activation scales (not torch's one scale per call), and the logits stay near fp32."""
    from accelerators.sparse_int8 import SparseInt8

    acc = SparseInt8(dense_fallback="kernel-int8", min_sparsity=0.95, repeats=2, min_time_s=0.0005,
                     check_model=False, fuse_layers=False)
    model = tiny_bert(0.9)
    ex = tiny_inputs()
    p = acc.prepare(model, ex, PrepareSettings(threads=1))
    kept = [m for m in p.module.modules() if isinstance(m, SparseLinear)]
    assert len(kept) == 12 and not any(isinstance(m, torch.nn.Linear) for m in p.module.bert.encoder.modules())
    assert all(m.dtype_name == "int8" and m.act_quant == "token" for m in kept)
    assert p.fields["dense_layers"] == 12 and p.fields["sparse_dense_fallback"] == "kernel-int8"
    assert "activations per call" not in p.fields["quant_scope"]
    with torch.no_grad():
        ref = model(**ex).logits
        got = p.module(**ex).logits
    assert ((got - ref).abs().max() / ref.abs().max()).item() < 0.1


def test_kernel_int8_fallback_is_not_timed_against_its_own_kernel(monkeypatch):
    """With the kernel-int8 fallback in csr a layer's "dense" module is the csr kernel itself: csr is
    chosen without a margin to beat (whatever min_speedup) and counted as sparse, and a layer whose
    only candidate is csr is not timed at all. The torch-int8 fallback still times dense."""
    import accelerators.sparse_cpu as sc
    from accelerators.sparse_int8 import SparseInt8

    real, per_layer = sc.interleaved_timing, []

    def spy(fns, repeats, min_time_s):
        if set(fns) & {"csr", "bsr4x4", "bsr8x4"}:  # a layer's choice (not the engine's, not a whole model's)
            per_layer.append(sorted(fns))
        return real(fns, repeats, min_time_s)

    monkeypatch.setattr(sc, "interleaved_timing", spy)
    acc = SparseInt8(dense_fallback="kernel-int8", dense_format="csr", min_speedup=1000.0, repeats=2,
                     min_time_s=0.0005, check_model=False, fuse_layers=False)
    p = acc.prepare(tiny_bert(0.9), tiny_inputs(), PrepareSettings(threads=1))  # unstructured: csr the only candidate
    assert p.fields["sparse_layers"] == 12 and p.fields["dense_layers"] == 0 and per_layer == []
    assert set(json.loads(p.fields["sparse_layer_choices"]).values()) == {"csr"}
    blocks = tiny_bert(0.0)  # 4x4 blocks pruned: bsr4x4 competes with csr, and needs min_speedup over it
    with torch.no_grad():
        for _, lin in sc.encoder_linears(blocks):
            w = lin.weight.view(lin.out_features // 4, 4, lin.in_features // 4, 4)
            norms = w.abs().sum((1, 3))
            w.mul_((norms > norms.flatten().kthvalue(int(0.9 * norms.numel())).values)[:, None, :, None])
    p = acc.prepare(blocks, tiny_inputs(), PrepareSettings(threads=1))
    choices = json.loads(p.fields["sparse_layer_choices"])
    assert p.fields["sparse_layers"] == 12 and len(per_layer) == 12
    assert all("dense" not in names and "csr" in names for names in per_layer)  # never csr against csr
    assert all(v.startswith("csr:") for v in choices.values())  # no format is 1000x faster than csr
    if SparseInt8(dense_fallback="torch-int8").availability()[0]:
        per_layer.clear()
        acc = SparseInt8(dense_fallback="torch-int8", min_speedup=1000.0, repeats=2, min_time_s=0.0005,
                         check_model=False, fuse_layers=False)
        p = acc.prepare(tiny_bert(0.9), tiny_inputs(), PrepareSettings(threads=1))
        assert len(per_layer) == 12 and all("dense" in names for names in per_layer)


def test_kernel_int8_fallback_runs_dense_layers_in_the_format_measured_fastest(monkeypatch):
    """dense_format "auto" times our INT8 formats once on a dense matrix of the largest layer's shape
    (here with fake times: bsr2x4 fastest) and runs every layer left dense in the winner; a fixed
    dense_format is used as given, without timing; without calibration the fallback stays csr."""
    import accelerators.sparse_int8 as si
    from accelerators.sparse_int8 import INT8_FORMATS, SparseInt8

    picks = []

    def fake_timing(fns, repeats, min_time_s):
        picks.append(sorted(fns))
        return {f: (1.0 if f == "bsr2x4" else 2.0) for f in fns}

    monkeypatch.setattr(si, "interleaved_timing", fake_timing)
    model, ex = tiny_bert(0.1), tiny_inputs()
    for fmt, timed in (("auto", True), ("bsr4x4", False)):
        picks.clear()
        acc = SparseInt8(dense_format=fmt, min_sparsity=0.95, repeats=2, min_time_s=0.0005, check_model=False)
        p = acc.prepare(model, ex, PrepareSettings(threads=1))
        want = "bsr2x4" if fmt == "auto" else fmt
        assert picks == ([sorted(INT8_FORMATS)] if timed else [])
        assert p.fields["sparse_dense_format"] == want and p.fields["dense_layers"] == 12
        kept = [m for m in p.module.modules() if isinstance(m, SparseLinear)]
        # q / k / v of each layer run stacked (one module): 4 modules per layer
        assert len(kept) == 8 and {m.format for m in kept} == {want}
        with torch.no_grad():
            ref, got = model(**ex).logits, p.module(**ex).logits
        assert ((got - ref).abs().max() / ref.abs().max()).item() < 0.1
    picks.clear()
    p = SparseInt8(calibrate=False, min_sparsity=0.95, check_model=False).prepare(model, ex, PrepareSettings(threads=1))
    assert picks == [] and p.fields["sparse_dense_format"] == "csr"
    p = SparseInt8(dense_fallback="fp32", min_sparsity=0.95, check_model=False).prepare(model, ex, PrepareSettings(threads=1))
    assert p.fields["sparse_dense_format"] is None


def test_kernel_int8_whole_model_fallback_is_fused_like_the_mix(monkeypatch):
    """The whole-model check races the mix against the all-dense fallback; with the kernel-int8
    fallback (our kernel) that model gets the fused layers too, and the rows say so when it wins."""
    import accelerators.sparse_cpu as sc
    from accelerators.fused_layer import FusedBertLayer
    from accelerators.sparse_int8 import SparseInt8

    real = sc.interleaved_timing

    def dense_wins(fns, repeats, min_time_s):
        t = real(fns, repeats, min_time_s)
        return {**t, "dense": 0.0} if set(fns) == {"dense", "sparse"} else t

    monkeypatch.setattr(sc, "interleaved_timing", dense_wins)
    model, ex = tiny_bert(0.9), tiny_inputs()
    p = SparseInt8(dense_format="bsr4x4", repeats=2, min_time_s=0.0005).prepare(model, ex, PrepareSettings(threads=1))
    f = p.fields
    assert f["sparse_fell_back_to_dense"] and f["sparse_layers"] == 0 and f["fused_encoder_layers"] == 2
    layers = [m for m in p.module.modules() if isinstance(m, FusedBertLayer)]
    assert len(layers) == 2 and {m.format for m in p.module.modules() if isinstance(m, SparseLinear)} == {"bsr4x4"}
    assert set(json.loads(f["fused_qkv_formats"]).values()) == {"bsr4x4"}  # the fallback's layers, not the mix's
    with torch.no_grad():
        ref, got = model(**ex).logits, p.module(**ex).logits
    assert ((got - ref).abs().max() / ref.abs().max()).item() < 0.1
    monkeypatch.setattr(sc, "interleaved_timing", real)
    p = SparseInt8(dense_fallback="fp32", repeats=2, min_time_s=0.0005)
    monkeypatch.setattr(sc, "interleaved_timing", dense_wins)
    f = p.prepare(model, ex, PrepareSettings(threads=1)).fields
    assert f["sparse_fell_back_to_dense"] and f["fused_encoder_layers"] == 0  # nn.Linear: nothing to fuse


def test_dense_formats_benchmark_rows_cover_every_variant_and_format(tmp_path):
    """scripts/bench_kernels.py --dense-formats: a row per (case, variant, format), csr the unit of
    speedup_vs_csr, the dense weight stored whole in every format (it checks the outputs itself)."""
    from tests.conftest import load_script

    bench = load_script("bench_kernels")
    out = tmp_path / "df.json"
    bench.main(["--dense-formats", "--shapes", "32x16", "--sparsities", "0,0.5", "--reps", "2",
                "--min-time", "0.0005", "--json", str(out)])
    rows = json.loads(out.read_text())
    formats = ("csr", "bsr2x4", "bsr4x4", "bsr8x4", "bsr16x4")
    assert len(rows) == 2 * len(VARIANTS) * len(formats)
    assert {(r["variant"], r["format"]) for r in rows} == {(v, f) for v in VARIANTS for f in formats}
    assert all(r["stored_density"] == 1.0 for r in rows if r["sparsity"] == 0.0)
    half = {(r["variant"], r["format"]): r for r in rows if r["sparsity"] == 0.5}
    for v in VARIANTS:  # blocks store the zeros inside them: csr the least, 16-row blocks the most
        d = [half[(v, f)]["stored_density"] for f in formats]
        assert 0.5 < d[0] <= d[1] <= d[2] <= d[3] <= d[4] <= 1.0
        assert half[(v, "csr")]["speedup_vs_csr"] == 1.0 and half[(v, "bsr2x4")]["speedup_vs_csr"] > 0
    assert all(r["median_s"] > 0 for r in rows)


def test_bench_speedups_are_medians_of_same_repeat_ratios():
    from tests.conftest import load_script

    bench = load_script("bench_kernels")
    res = {"a": ([], [], [1.0, 2.0, 4.0]), "b": ([], [], [0.5, 4.0, 2.0]), "c": ([], [], [2.0, 1.0, 1.0])}
    assert bench.same_round(res, "a", "b") == 2.0  # ratios 2, 0.5, 2 (the ratio of the medians: 1)
    assert bench.same_round(res, ["a", "c"], "b") == 0.5  # per repeat the faster reference: 1, 1, 1


def test_dense_format_errors_name_the_choices():
    from accelerators.sparse_int8 import SparseInt8

    with pytest.raises(ValueError, match="dense_format must be 'auto' or one of csr, bsr2x4, bsr4x4, bsr8x4, bsr16x4"):
        SparseInt8(dense_format="bsr3x4")
    with pytest.raises(ValueError, match="needs dense_fallback = 'kernel-int8'"):
        SparseInt8(dense_format="csr", dense_fallback="torch-int8")


@pytest.mark.parametrize("variant", VARIANTS)
def test_reformat_and_mixed_format_stack_give_the_same_bits(variant):
    """An int8 layer re-blocked into another format, and a stack of int8 layers of different
    formats (q / k / v with their own choices), give exactly the outputs of the originals: the
    weights are not re-quantized and the int32 sums are exact. fp32 layers do not reformat."""
    g = torch.Generator().manual_seed(3)
    lins = []
    for sparsity in (0.0, 0.5, 0.9):
        lin = torch.nn.Linear(64, 48)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(48, 64, generator=g) * (torch.rand(48, 64, generator=g) >= sparsity))
        lins.append(lin)
    x = torch.randn(2, 9, 64, generator=g)
    mods = [SparseLinear.from_dense(lin, fmt, dtype="int8", variant=variant)
            for lin, fmt in zip(lins, ("bsr2x4", "csr", "bsr8x4"))]
    outs = [m(x) for m in mods]
    for m, y in zip(mods, outs):
        for fmt in ("csr", "bsr2x4", "bsr4x4", "bsr8x4"):
            r = m.reformat(fmt)
            assert r.format == fmt and r.variant == variant and torch.equal(r.to_dense(), m.to_dense())
            assert torch.equal(r(x), y)
    assert SparseLinear.can_stack(mods)
    stacked = SparseLinear.stack(mods)
    assert stacked.format == "bsr2x4"  # the first of equally common formats
    assert torch.equal(stacked(x), torch.cat(outs, -1))
    fp32 = [SparseLinear.from_dense(lin, fmt) for lin, fmt in zip(lins, ("csr", "bsr4x1", "csr"))]
    assert not SparseLinear.can_stack(fp32)
    assert not SparseLinear.can_stack([mods[0]] + fp32[1:])  # mixed dtypes: False, not an error
    # the majority's blocks must tile every layer: 6 rows take 2-row blocks, not 4-row ones
    six = torch.nn.Linear(64, 6)
    odd = [SparseLinear.from_dense(six, "csr", dtype="int8", variant=variant)] + [
        SparseLinear.from_dense(torch.nn.Linear(64, 8), "bsr4x4", dtype="int8", variant=variant) for _ in range(2)]
    assert SparseLinear.can_stack(odd) and SparseLinear.stack(odd).format == "csr"
    assert torch.equal(SparseLinear.stack(odd)(x), torch.cat([m(x) for m in odd], -1))
    with pytest.raises(ValueError, match="needs an int8 layer"):
        fp32[0].reformat("bsr4x1")


def test_per_token_fallback_keeps_other_tokens_exact_beside_an_outlier_token():
    """One outlier token (LLM.int8()'s case) coarsens torch's single activation scale for every
    token of the call; the kernel-int8 fallback scales each token apart, so the other tokens keep
    their INT8 precision."""
    from accelerators.int8_dynamic import supported_quant_engines
    from accelerators.sparse_int8 import EngineInt8Linear

    engines = supported_quant_engines(("x86", "fbgemm", "onednn"))
    if not engines:
        pytest.skip("no torch quantized engine")
    g = torch.Generator().manual_seed(3)
    lin = torch.nn.Linear(64, 32)
    x = torch.randn(16, 64, generator=g)
    x[0] *= 100.0
    with torch.no_grad():
        ref = lin(x)[1:]
        per_token = SparseLinear.from_dense(lin, "csr", dtype="int8", act_quant="token")(x)[1:]
        per_call = EngineInt8Linear(lin, engines[0])(x)[1:]
    err_token = (per_token - ref).abs().max().item()
    err_call = (per_call - ref).abs().max().item()
    assert err_token < 0.05 * ref.abs().max().item()
    assert err_token * 5 < err_call


def test_dense_fallback_error_names_the_choices():
    from accelerators.sparse_int8 import SparseInt8

    with pytest.raises(ValueError, match="torch-int8, kernel-int8, fp32"):
        SparseInt8(dense_fallback="int4")


def test_engine_int8_linear_leaves_the_global_engine_alone():
    from accelerators.int8_dynamic import supported_quant_engines
    from accelerators.sparse_int8 import EngineInt8Linear

    engines = supported_quant_engines(("x86", "fbgemm", "onednn"))
    if len(engines) < 2:
        pytest.skip("needs two quantized engines")
    lin = torch.nn.Linear(32, 16)
    x = torch.randn(5, 32)
    before = torch.backends.quantized.engine
    mods = {e: EngineInt8Linear(lin, e) for e in engines}
    outs = {e: m(x) for e, m in mods.items()}
    assert torch.backends.quantized.engine == before
    for e, m in mods.items():  # the packed weights keep their engine whatever the global one is
        for g in engines:
            torch.backends.quantized.engine = g
            assert torch.equal(m(x), outs[e])
    torch.backends.quantized.engine = before


def test_sparse_int8_config_errors():
    from accelerators.sparse_int8 import SparseInt8

    with pytest.raises(ValueError):
        SparseInt8(format="bsr4x1")
    with pytest.raises(ValueError):
        SparseInt8(act_quant="channel")
    with pytest.raises(ValueError):
        SparseInt8(engine="qnnpack9")


def test_ffn_input_layers_are_timed_with_their_gelu(monkeypatch):
    """The sparse kernel applies BERT's GELU in its output pass; a dense FFN-in layer pays a
    separate GELU pass, so the per-layer choice times both sides with it."""
    import accelerators.sparse_cpu as sc
    from accelerators.sparse_int8 import SparseInt8
    from accelerators.sparse_linear import SparseLinear

    seen = []
    real = sc.interleaved_timing

    def spy(fns, repeats, min_time_s):
        if "dense" in fns and len(fns) > 1:  # a per-layer choice (not a whole-model comparison)
            sparse = [f.__defaults__[0] for k, f in fns.items() if k != "dense"]
            seen.append((sparse[0].out_features, {m.activation for m in sparse}))
        return real(fns, repeats, min_time_s)

    monkeypatch.setattr(sc, "interleaved_timing", spy)
    acc = SparseInt8(dense_fallback="fp32", min_speedup=1.0, repeats=2, min_time_s=0.0005, check_model=False)
    p = acc.prepare(tiny_bert(0.9), tiny_inputs(), PrepareSettings(threads=1))
    # intermediate.dense (256 outputs in tiny_bert) timed with the GELU in the kernel, the others without
    assert sorted(seen) == sorted([(256, {"gelu"})] * 2 + [(64, {"none"})] * 10)
    for m in p.module.modules():  # the activation ends where fuse_ffn_gelu put it, not left by the timing
        if isinstance(m, SparseLinear):
            assert m.activation == ("gelu" if m.out_features == 256 else "none")


def test_whole_model_all_sparse_is_timed_against_the_per_layer_mix():
    """Layers the per-layer timing leaves dense (here: every layer, min_speedup 1000) are tried
    all sparse as one whole model; the faster model is kept and the row says which."""
    from accelerators.sparse_int8 import SparseInt8
    from accelerators.sparse_linear import SparseLinear

    acc = SparseInt8(dense_fallback="fp32", min_speedup=1000.0, repeats=2, min_time_s=0.0005, check_model=False)
    model = tiny_bert(0.9)
    ex = tiny_inputs()
    p = acc.prepare(model, ex, PrepareSettings(threads=1))
    f = p.fields
    assert f["sparse_whole_model_choice"] in ("per-layer", "all-sparse") and f["sparse_all_sparse_speedup"] > 0
    n_sparse = sum(3 if m.out_features == 192 else 1 for m in p.module.modules() if isinstance(m, SparseLinear))
    if f["sparse_whole_model_choice"] == "all-sparse":
        assert f["sparse_layers"] == n_sparse == 12 and f["sparse_all_sparse_speedup"] > 1
        assert all(v.startswith("csr") for v in json.loads(f["sparse_layer_choices"]).values())
    else:
        assert f["sparse_layers"] == n_sparse == 0 and f["sparse_all_sparse_speedup"] <= 1
    with torch.no_grad():
        ref, got = model(**ex).logits, p.module(**ex).logits
    assert ((got - ref).abs().max() / ref.abs().max()).item() < 0.1


def test_labels_tell_sparse_int8_variants_apart():
    """Cells of one run that differ in what changes the numbers get different labels (reports, verdicts)."""
    from profiler.labels import plugin_label

    assert plugin_label("sparse-int8", {}) == "sparse-int8"
    assert plugin_label("sparse-int8", {"dense_fallback": "kernel-int8", "attention": "int8", "fuse_layers": True}) == \
        "sparse-int8"
    assert plugin_label("sparse-int8", {"dense_fallback": "torch-int8", "engine": "fbgemm"}) == \
        "sparse-int8 fbgemm fallback torch-int8"
    assert plugin_label("sparse-int8", {"attention": "fp32", "fuse_layers": False}) == "sparse-int8 attention fp32 unfused"
    assert plugin_label("sparse-int8", {"dense_format": "auto"}) == "sparse-int8"
    assert plugin_label("sparse-int8", {"dense_format": "csr"}) == "sparse-int8 dense csr"
    assert plugin_label("obs", {"sparsity": 0.8, "distill": True, "distill_text": ["mrpc"], "distill_text_share": 0.5}) == \
        "obs 0.8 KD +text 0.5"


def test_label_defaults_follow_the_accelerator_defaults():
    """profiler.labels (no torch import) restates which accelerator settings are the defaults; a
    changed default there or in any accelerator that takes the parameter must change both."""
    from profiler.labels import _ACCEL_UNLESS_DEFAULT
    from profiler.plugins import ACCELERATORS

    seen = set()
    for name in ACCELERATORS.names():
        params = ACCELERATORS.params(name)
        for k, (default, _) in _ACCEL_UNLESS_DEFAULT.items():
            if k in params:
                assert params[k].default == default, (name, k)
                seen.add(k)
    assert seen == set(_ACCEL_UNLESS_DEFAULT)  # every key names a parameter some accelerator takes


def test_a_nan_hidden_state_reaches_the_logits_as_under_torch():
    """The whole sparse-int8 model (fused INT8 layers and attention): a NaN in one token's embedding
    makes its sequence's logits NaN, as torch's model does, instead of being quantized away into a
    plausible answer the accuracy pass could not tell from a real one."""
    from accelerators.sparse_int8 import SparseInt8
    from tests.test_fused_layer import logits, padded_example
    from tests.test_fused_layer import tiny_bert as tiny_bert_sparse

    model, ex = tiny_bert_sparse(0.9), padded_example()
    prepared = SparseInt8().prepare(copy.deepcopy(model), ex, PrepareSettings(threads=1))
    assert prepared.fields["attention_precision"] == "int8" and torch.isfinite(logits(prepared.module, ex)).all()
    for m in (prepared.module, model):
        emb = next(x for x in m.modules() if isinstance(x, torch.nn.Embedding))
        with torch.no_grad():
            emb.weight[ex["input_ids"][0, 3]] = float("nan")
        assert torch.isnan(logits(m, ex)).any(-1).tolist() == [True, False, False], type(m).__name__


def test_a_mix_in_the_fallbacks_own_format_is_not_raced_against_it(monkeypatch):
    """Every layer in csr, the kernel-int8 fallback in csr from the same weights: one model twice.
    A race between them would set sparse_fell_back_to_dense and the layer counts by timing noise."""
    import accelerators.sparse_cpu as sc
    from accelerators.sparse_int8 import SparseInt8

    real, raced = sc.interleaved_timing, []

    def record(fns, repeats, min_time_s):
        raced.append(set(fns) == {"dense", "sparse"})
        return real(fns, repeats, min_time_s)

    monkeypatch.setattr(sc, "interleaved_timing", record)
    model, ex = tiny_bert(0.9), tiny_inputs()
    fields = [SparseInt8(format="csr", dense_format="csr", repeats=1, min_time_s=0.0).prepare(
        model, ex, PrepareSettings(threads=1)).fields for _ in range(2)]
    assert not any(raced)
    for f in fields:
        assert not f["sparse_fell_back_to_dense"] and f["sparse_model_check_speedup"] is None
        assert f["sparse_layers"] + f["dense_layers"] == 12 and f["sparse_layers"] == fields[0]["sparse_layers"]


def test_a_plain_dense_fallback_names_no_kernel_variant(monkeypatch):
    """When the whole model falls back to the plain dense copy, no kernel of ours runs: the row
    says so instead of naming the variant the discarded sparse model would have used."""
    import accelerators.sparse_cpu as sc
    from accelerators.sparse_cpu import SparseCPU

    real = sc.interleaved_timing

    def dense_wins(fns, repeats, min_time_s):
        t = real(fns, repeats, min_time_s)
        return {**t, "dense": 0.0} if set(fns) == {"dense", "sparse"} else t

    monkeypatch.setattr(sc, "interleaved_timing", dense_wins)
    p = SparseCPU(repeats=1, min_time_s=0.0).prepare(tiny_bert(0.9), tiny_inputs(), PrepareSettings(threads=1))
    assert not any(isinstance(m, SparseLinear) for m in p.module.modules())
    f = p.fields
    assert f["sparse_fell_back_to_dense"] and f["kernel_variant_used"] is None
    assert "fell back" in f["lean_model_note"]


def test_a_nan_error_fails_the_fused_layer_check():
    """err > limit is False for a NaN error: the check must refuse it, not pass it."""
    from torch import nn

    from accelerators.sparse_cpu import _SparseSwap, layer_outputs, sequence_errors

    class Model(nn.Module):
        def __init__(self, layer):
            super().__init__()
            self.encoder = nn.Module()
            self.encoder.layer = nn.ModuleList([layer])

        def forward(self, input_ids):
            return self.encoder.layer[0](input_ids.float()[..., None].expand(-1, -1, 4).clone())

    class Nan(nn.Module):
        def forward(self, x):
            return x * float("nan")

    ex = {"input_ids": torch.ones(1, 3, dtype=torch.long)}
    ref = layer_outputs(Model(nn.Identity()), ex)
    plain = [sequence_errors(h, r) for h, r in zip(ref, ref)]
    assert _SparseSwap._fused_error(Model(Nan()), ex, ref, plain, 1e-4).startswith("fused layer 0")
