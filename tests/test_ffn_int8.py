"""``ffn_int8``: the feed-forward block in one call, the intermediate kept channel-major inside it.
It must give the same bits as the two ``spmm_int8`` calls it replaces (the first quantizing its
output per token, the second taking that int8 input), on every variant this CPU supports, for
every block height, token count (tails of 16-token groups and of token blocks), thread count, with
and without each epilogue; and validate every argument like the other entry points."""
from __future__ import annotations

import numpy as np
import pytest
import torch

sk = pytest.importorskip("accelerators._sparse_kernels")

from accelerators.sparse_linear import dense_to_blocks  # noqa: E402

VARIANTS = sk.supported_variants()


def pack(rng, n_out, n_in, bh, density):
    w = rng.integers(-127, 128, (n_out, n_in), dtype=np.int64) * (rng.random((n_out, n_in)) < density)
    ip, ix, bl = dense_to_blocks(torch.from_numpy(w.astype(np.int8)), bh, 4)
    scale = (rng.random(n_out) * 0.01 + 1e-3).astype(np.float32)
    return sk.pack_int8(ip.numpy(), ix.numpy(), bl.numpy(), scale, (n_out, n_in), block=bh)


def two_calls(m1, m2, x, b1, b2, act, residual, lnw, lnb, **kw):
    T = x.shape[0]
    q, s = np.empty((T, m1.shape[0]), np.int8), np.empty(T, np.float32)
    sk.spmm_int8(m1, x, q, b1, activation=act, out_scale=s, split="tokens", **kw)
    out = np.empty((T, m2.shape[0]), np.float32)
    sk.spmm_int8(m2, q, out, b2, x_scale=s, residual=residual, ln_weight=lnw, ln_bias=lnb, split="tokens", **kw)
    return out


def case(seed, T, hidden=40, inter=132, bh_in=1, bh_out=1, density=0.3):
    rng = np.random.default_rng(seed)
    m1, m2 = pack(rng, inter, hidden, bh_in, density), pack(rng, hidden, inter, bh_out, density)
    x = rng.standard_normal((T, hidden)).astype(np.float32)
    b1 = rng.standard_normal(inter).astype(np.float32)
    b2 = rng.standard_normal(hidden).astype(np.float32)
    lnw, lnb = rng.random(hidden).astype(np.float32) + 0.5, rng.standard_normal(hidden).astype(np.float32)
    return m1, m2, x, b1, b2, lnw, lnb


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bh_in,bh_out", [(1, 1), (4, 1), (1, 8), (2, 4), (16, 16)])
@pytest.mark.parametrize("tokens", [1, 16, 37, 128, 300])
def test_same_bits_as_the_two_calls(variant, bh_in, bh_out, tokens):
    m1, m2, x, b1, b2, lnw, lnb = case(tokens * 10 + bh_in + bh_out, tokens, bh_in=bh_in, bh_out=bh_out)
    for threads in (1, 2):
        want = two_calls(m1, m2, x, b1, b2, "gelu", x, lnw, lnb, threads=threads, variant=variant)
        got = np.full_like(want, np.nan)
        sk.ffn_int8(m1, m2, x, got, b1, b2, threads=threads, variant=variant, activation="gelu", residual=x,
                    ln_weight=lnw, ln_bias=lnb)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("variant", VARIANTS)
def test_epilogues_optional_and_token_blocks(variant):
    m1, m2, x, b1, b2, lnw, lnb = case(5, 200, hidden=64, inter=256)
    for kw in ({}, {"tile": 16, "token_block": 48}, {"tile": 64}):
        want = two_calls(m1, m2, x, None, None, None, None, None, None, variant=variant, **kw)
        got = np.empty_like(want)
        sk.ffn_int8(m1, m2, x, got, variant=variant, **kw)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("variant", VARIANTS)
def test_wide_intermediate_takes_64_token_blocks(variant):
    # 8,192 rows x 144 int32 (4.7 MB) outgrow half of any L2 up to 9 MB: 64-token blocks
    m1, m2, x, b1, b2, lnw, lnb = case(21, 200, hidden=32, inter=8192, density=0.02)
    for threads in (1, 2):
        want = two_calls(m1, m2, x, b1, b2, "gelu", x, lnw, lnb, threads=threads, variant=variant)
        got = np.empty_like(want)
        sk.ffn_int8(m1, m2, x, got, b1, b2, threads=threads, variant=variant, activation="gelu", residual=x,
                    ln_weight=lnw, ln_bias=lnb)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("variant", VARIANTS)
def test_zero_nan_and_inf_rows(variant):
    m1, m2, x, b1, b2, lnw, lnb = case(9, 48)
    x[3] = 0.0
    x[5, 2] = np.nan
    x[7, 0] = np.inf
    want = two_calls(m1, m2, x, b1, b2, "gelu", x, lnw, lnb, variant=variant)
    got = np.empty_like(want)
    sk.ffn_int8(m1, m2, x, got, b1, b2, variant=variant, activation="gelu", residual=x, ln_weight=lnw, ln_bias=lnb)
    np.testing.assert_array_equal(got, want)


def test_validation():
    m1, m2, x, b1, b2, lnw, lnb = case(1, 8)
    out = np.empty((8, 40), np.float32)
    with pytest.raises(ValueError, match="mat_out: expected n_in 132"):
        sk.ffn_int8(m1, m1, x, out)
    with pytest.raises(TypeError, match="mat_in: needs an int8"):
        sk.ffn_int8(sk.pack_csr(np.array([0, 0]), np.zeros(0, np.int32), np.zeros(0, np.float32), (1, 40)), m2, x, out)
    with pytest.raises(ValueError, match="x: expected shape"):
        sk.ffn_int8(m1, m2, x[:, :39].copy(), out)
    with pytest.raises(ValueError, match="out: expected shape"):
        sk.ffn_int8(m1, m2, x, out[:7])
    with pytest.raises(ValueError, match="bias_in: expected length 132"):
        sk.ffn_int8(m1, m2, x, out, b2)
    with pytest.raises(ValueError, match="bias_out: expected length 40"):
        sk.ffn_int8(m1, m2, x, out, b1, b1)
    with pytest.raises(ValueError, match="out must not overlap"):
        sk.ffn_int8(m1, m2, x, x)
    with pytest.raises(ValueError, match="residual must not overlap out"):
        sk.ffn_int8(m1, m2, x, out, residual=out)
    with pytest.raises(ValueError, match="residual: expected shape"):
        sk.ffn_int8(m1, m2, x, out, residual=out[:4].copy())
    with pytest.raises(ValueError, match="activation must be"):
        sk.ffn_int8(m1, m2, x, out, activation="relu")
    with pytest.raises(ValueError, match="ln_bias needs ln_weight"):
        sk.ffn_int8(m1, m2, x, out, ln_bias=lnb)
    with pytest.raises(ValueError, match="threads"):
        sk.ffn_int8(m1, m2, x, out, threads=0)
    with pytest.raises(TypeError):
        sk.ffn_int8(m1, m2, x.astype(np.float64), out)
    ro = np.empty((8, 40), np.float32)
    ro.setflags(write=False)
    with pytest.raises((TypeError, ValueError, BufferError)):
        sk.ffn_int8(m1, m2, x, ro)
    with pytest.raises((TypeError, ValueError, BufferError)):  # non-contiguous x
        sk.ffn_int8(m1, m2, np.empty((8, 80), np.float32)[:, ::2], out)
    with pytest.raises((TypeError, ValueError, BufferError)):  # non-contiguous out
        sk.ffn_int8(m1, m2, x, np.empty((40, 8), np.float32).T)
    with pytest.raises(TypeError):
        sk.ffn_int8(m1, m2, x, out, bias_in=[0.0] * 132)
    # nothing written by a rejected call; empty input is a no-op
    before = out.copy()
    with pytest.raises(ValueError):
        sk.ffn_int8(m1, m2, x, out, b2)
    np.testing.assert_array_equal(out, before)
    sk.ffn_int8(m1, m2, np.empty((0, 40), np.float32), np.empty((0, 40), np.float32))


def ranges(a):
    a = np.abs(a)
    return np.where(np.isnan(a), np.inf, a).max(axis=1).astype(np.float32)


@pytest.mark.parametrize("variant", VARIANTS)
def test_ranges_handed_from_one_call_to_the_next(variant):
    """out_amax of a call equals max |out| per token (NaN as +inf), with and without a LayerNorm
    epilogue; a call given x_amax computes the same bits as without it."""
    m1, m2, x, b1, b2, lnw, lnb = case(13, 150, hidden=48, inter=96)
    x[4, 1] = np.nan
    lnw96, lnb96 = np.linspace(0.5, 2.0, 96, dtype=np.float32), np.linspace(-1.0, 1.0, 96, dtype=np.float32)
    for split in ("tokens", "rows"):
        for ln in ({}, {"ln_weight": lnw96, "ln_bias": lnb96}):
            out, amax = np.empty((150, 96), np.float32), np.full(150, -1.0, np.float32)
            sk.spmm_int8(m1, x, out, b1, 2, variant, split=split, out_amax=amax, **ln)
            np.testing.assert_array_equal(amax, ranges(out))
            want, got = np.empty((150, 48), np.float32), np.empty((150, 48), np.float32)
            sk.spmm_int8(m2, out, want, b2, 2, variant, split=split)
            sk.spmm_int8(m2, out, got, b2, 2, variant, split=split, x_amax=amax)
            np.testing.assert_array_equal(got, want)
    # the fused FFN: ranges in and out
    amax_x = ranges(x)
    want = two_calls(m1, m2, x, b1, b2, "gelu", x, lnw, lnb, variant=variant)
    got, amax = np.empty_like(want), np.empty(150, np.float32)
    sk.ffn_int8(m1, m2, x, got, b1, b2, variant=variant, activation="gelu", residual=x, ln_weight=lnw, ln_bias=lnb,
                x_amax=amax_x, out_amax=amax)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(amax, ranges(want))


def test_range_arguments_are_validated():
    m1, m2, x, b1, b2, lnw, lnb = case(2, 8)
    out, q, s = np.empty((8, 132), np.float32), np.empty((8, 132), np.int8), np.ones(8, np.float32)
    with pytest.raises(ValueError, match="x_amax: expected length 8"):
        sk.spmm_int8(m1, x, out, x_amax=np.ones(7, np.float32))
    with pytest.raises(ValueError, match="x_amax needs a float32 x"):
        sk.spmm_int8(m2, q, np.empty((8, 40), np.float32), x_scale=s, x_amax=np.ones(8, np.float32))
    with pytest.raises(ValueError, match="out_amax needs a float32 out"):
        sk.spmm_int8(m1, x, q, out_scale=np.empty(8, np.float32), out_amax=np.empty(8, np.float32))
    ro = np.empty(8, np.float32)
    ro.setflags(write=False)
    with pytest.raises((TypeError, ValueError, BufferError)):
        sk.spmm_int8(m1, x, out, out_amax=ro)
    with pytest.raises(ValueError, match="out_amax must not overlap"):
        sk.spmm_int8(m1, x, out, out_amax=out.reshape(-1)[:8])
    with pytest.raises(ValueError, match="x_amax must not overlap"):
        sk.spmm_int8(m1, x, out, x_amax=out.reshape(-1)[:8])
    a = np.empty(8, np.float32)
    with pytest.raises(ValueError, match="must not overlap"):
        sk.ffn_int8(m1, m2, x, np.empty((8, 40), np.float32), x_amax=a, out_amax=a)
    with pytest.raises(ValueError, match="must not overlap"):  # out_amax over the residual (an input)
        r = np.zeros((8, 40), np.float32)
        sk.ffn_int8(m1, m2, x, np.empty((8, 40), np.float32), residual=r, out_amax=r.reshape(-1)[:8])
    with pytest.raises(ValueError, match="x_amax must not overlap"):  # x_amax over out_scale (written)
        sc = np.empty(8, np.float32)
        sk.spmm_int8(m1, x, q, out_scale=sc, x_amax=sc)
    with pytest.raises(ValueError, match="must not overlap"):  # out_amax over the bias
        b = np.zeros(132 + 8, np.float32)
        sk.spmm_int8(m1, x, out, b[:132], out_amax=b[124:132])
    with pytest.raises(TypeError):
        sk.ffn_int8(m1, m2, x, np.empty((8, 40), np.float32), out_amax=np.empty(8, np.float64))
    with pytest.raises(ValueError, match="out_scale must not overlap"):  # out_scale over the bias, read while written
        b = np.zeros(132 + 8, np.float32)
        sk.spmm_int8(m1, x, q, b[:132], out_scale=b[124:132])
    with pytest.raises(ValueError, match="out_scale must not overlap"):  # over the residual
        r = np.zeros((8, 132), np.float32)
        sk.spmm_int8(m1, x, q, residual=r, out_scale=r.reshape(-1)[:8])
    with pytest.raises(ValueError, match="x_scale must not overlap out"):  # read by later blocks, written by earlier ones
        o = np.empty((8, 40), np.float32)
        sk.spmm_int8(m2, np.zeros((8, 132), np.int8), o, x_scale=o.reshape(-1)[:8])
