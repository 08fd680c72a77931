"""``qkv_attention_int8``: the stacked q / k / v product and INT8 attention in one call, the
product's rows kept channel-major and quantized straight into each head's layouts. It must give
the same bits as ``spmm_int8`` into fp32 q | k | v rows followed by ``attention(precision="int8")``
on every variant this CPU supports, for every block height, sequence length (16-token tails,
several sequences per 128-token block, sequences longer than a block), head size (quad and
16-channel tails), thread count (whole blocks per thread and blocks shared by threads), with and
without key masks, bias and handed-in ranges; and validate every argument."""
from __future__ import annotations

import numpy as np
import pytest

sk = pytest.importorskip("accelerators._sparse_kernels")

from tests.test_ffn_int8 import pack, ranges  # noqa: E402

VARIANTS = sk.supported_variants()


def case(seed, B, S, hidden, n_in=None, bh=1, density=0.3, masked=True):
    rng = np.random.default_rng(seed)
    n_in = n_in or hidden
    m = pack(rng, 3 * hidden, n_in, bh, density)
    x = rng.standard_normal((B, S, n_in)).astype(np.float32)
    bias = rng.standard_normal(3 * hidden).astype(np.float32)
    kb = np.zeros((B, S), np.float32)
    if masked:  # padded tails of different lengths; one sequence fully masked
        for b in range(B):
            kb[b, S - (b * 7) % S:] = -np.inf if b % 2 else 0.0
        kb[B // 2, :] = -np.inf
    return m, x, bias, kb


def two_calls(m, x, bias, heads, kb, scale=-1.0, x_amax=None, **kw):
    B, S, _ = x.shape
    H = m.shape[0] // 3
    qkv = np.empty((B * S, 3 * H), np.float32)
    sk.spmm_int8(m, x.reshape(B * S, -1), qkv, bias, x_amax=x_amax, **kw)
    out = np.empty((B, S, H), np.float32)
    sk.attention(qkv.reshape(B, S, 3 * H), out, heads, scale, kb, precision="int8", **kw)
    return out


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("B,S", [(1, 128), (8, 128), (3, 37), (5, 16), (2, 200), (1, 1)])
@pytest.mark.parametrize("hidden,heads", [(64, 2), (96, 3), (40, 2)])
def test_same_bits_as_product_then_attention(variant, B, S, hidden, heads):
    m, x, bias, kb = case(B * 1000 + S + hidden, B, S, hidden)
    for threads in (1, 2, 3):
        want = two_calls(m, x, bias, heads, kb, threads=threads, variant=variant)
        got = np.full_like(want, np.nan)
        sk.qkv_attention_int8(m, x, got, heads, bias, key_bias=kb, threads=threads, variant=variant)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("variant", VARIANTS)
def test_padded_sequence_gets_the_bits_it_gets_alone(variant):
    """Per-token activations and value ranges over unmasked keys: padding tokens, however large,
    leave a sequence's output as it is alone."""
    m, x, bias, _ = case(5, 1, 45, 64, bh=4, masked=False)
    want = np.empty((1, 45, 64), np.float32)
    sk.qkv_attention_int8(m, x, want, 2, bias, variant=variant)
    rng = np.random.default_rng(6)
    for pad in (3, 83):
        xp = 40 * rng.standard_normal((2, 45 + pad, 64)).astype(np.float32)
        xp[0, :45] = x[0]
        kb = np.zeros((2, 45 + pad), np.float32)
        kb[0, 45:] = np.finfo(np.float32).min
        got = np.empty((2, 45 + pad, 64), np.float32)
        sk.qkv_attention_int8(m, xp, got, 2, bias, key_bias=kb, threads=2, variant=variant)
        np.testing.assert_array_equal(got[0, :45], want[0])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bh", [1, 2, 4, 8, 16])
def test_block_heights_bias_scale_and_ranges(variant, bh):
    m, x, bias, kb = case(bh, 4, 64, 64, n_in=48, bh=bh)
    want = two_calls(m, x, None, 4, None, 0.3, variant=variant)
    got = np.empty_like(want)
    sk.qkv_attention_int8(m, x, got, 4, scale=0.3, variant=variant)
    np.testing.assert_array_equal(got, want)
    x[1, 3, 5] = np.nan
    x[2, 0] = 0.0
    amax = ranges(x.reshape(-1, 48))
    for threads in (1, 2):
        want = two_calls(m, x, bias, 4, kb, threads=threads, variant=variant)
        got = np.empty_like(want)
        sk.qkv_attention_int8(m, x, got, 4, bias, key_bias=kb, threads=threads, variant=variant, x_amax=amax)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bh", [1, 8])
def test_long_sequences_keep_their_tiling_in_bounds(variant, bh):
    """A block is a whole sequence: past 512 register tiles of the variant's width (8,192 tokens
    at 16) the tiles widen instead of overflowing the tiling."""
    m, x, bias, kb = case(bh, 1, 9000, 4, n_in=4, bh=bh, masked=False)
    want = two_calls(m, x, bias, 1, None, variant=variant)
    got = np.empty_like(want)
    sk.qkv_attention_int8(m, x, got, 1, bias, variant=variant)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("variant", VARIANTS)
def test_close_to_float_attention(variant):
    """Against float64 attention on the same fp32 q | k | v rows: within the INT8 attention
    kernel's stated bound (1 % of max |v| for q, k, v of unit scale)."""
    m, x, bias, kb = case(3, 2, 128, 64, masked=False)
    x *= 0.5  # q, k, v about N(0, 1)
    qkv = np.empty((256, 192), np.float32)
    sk.spmm_int8(m, x.reshape(256, -1), qkv, None, variant=variant)
    q, k, v = (qkv.reshape(2, 128, 3, 4, 16).transpose(2, 0, 3, 1, 4).astype(np.float64))
    s = q @ k.transpose(0, 1, 3, 2) / 4.0
    p = np.exp(s - s.max(-1, keepdims=True))
    ref = ((p / p.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3).reshape(2, 128, 64)
    got = np.empty((2, 128, 64), np.float32)
    sk.qkv_attention_int8(m, x, got, 4, variant=variant)
    assert 0.5 < qkv.std() < 2.0
    assert np.abs(got - ref).max() <= 0.01 * np.abs(v).max()


def test_validation():
    m, x, bias, kb = case(1, 2, 8, 32)
    out = np.empty((2, 8, 32), np.float32)
    with pytest.raises(ValueError, match="num_heads"):
        sk.qkv_attention_int8(m, x, out, 3)
    with pytest.raises(ValueError, match="num_heads"):
        sk.qkv_attention_int8(m, x, out, 0)
    with pytest.raises(ValueError, match="n_out must be 3"):
        sk.qkv_attention_int8(pack(np.random.default_rng(0), 32, 32, 1, 0.3), x, out, 2)
    with pytest.raises(TypeError, match="needs an int8"):
        sk.qkv_attention_int8(sk.pack_csr(np.array([0, 0]), np.zeros(0, np.int32), np.zeros(0, np.float32), (1, 32)),
                              x, out, 2)
    with pytest.raises(ValueError, match="x: expected shape"):
        sk.qkv_attention_int8(m, x[:, :, :31].copy(), out, 2)
    with pytest.raises(ValueError, match="out: expected shape"):
        sk.qkv_attention_int8(m, x, out[:, :7].copy(), 2)
    with pytest.raises(ValueError, match="bias: expected length 96"):
        sk.qkv_attention_int8(m, x, out, 2, bias[:32].copy())
    with pytest.raises(ValueError, match="key_bias: expected shape"):
        sk.qkv_attention_int8(m, x, out, 2, key_bias=kb[:, :7].copy())
    with pytest.raises(ValueError, match="key_bias must be finite or -inf"):
        sk.qkv_attention_int8(m, x, out, 2, key_bias=np.where(np.arange(8) == 3, np.inf, kb).astype(np.float32))
    with pytest.raises(ValueError, match="out must not overlap"):
        sk.qkv_attention_int8(m, x, x, 2)
    with pytest.raises(ValueError, match="out must not overlap"):
        sk.qkv_attention_int8(m, x, out, 2, key_bias=out.reshape(-1)[:16].reshape(2, 8))
    with pytest.raises(ValueError, match="scale must be finite"):
        sk.qkv_attention_int8(m, x, out, 2, scale=float("nan"))
    with pytest.raises(ValueError, match="x_amax: expected length 16"):
        sk.qkv_attention_int8(m, x, out, 2, x_amax=np.ones(15, np.float32))
    with pytest.raises(ValueError, match="must not overlap"):
        sk.qkv_attention_int8(m, x, out, 2, x_amax=out.reshape(-1)[:16])
    with pytest.raises(ValueError, match="threads"):
        sk.qkv_attention_int8(m, x, out, 2, threads=0)
    with pytest.raises(TypeError):
        sk.qkv_attention_int8(m, x.astype(np.float64), out, 2)
    with pytest.raises(ValueError, match="3-dimensional"):
        sk.qkv_attention_int8(m, x.reshape(16, 32), out, 2)
    ro = np.empty((2, 8, 32), np.float32)
    ro.setflags(write=False)
    with pytest.raises((TypeError, ValueError, BufferError)):
        sk.qkv_attention_int8(m, x, ro, 2)
    with pytest.raises((TypeError, ValueError, BufferError)):  # non-contiguous x
        sk.qkv_attention_int8(m, np.empty((2, 8, 64), np.float32)[:, :, ::2], out, 2)
    before = out.copy()
    with pytest.raises(ValueError):
        sk.qkv_attention_int8(m, x, out, 3)
    np.testing.assert_array_equal(out, before)  # nothing written by a rejected call
    sk.qkv_attention_int8(m, np.empty((0, 8, 32), np.float32), np.empty((0, 8, 32), np.float32), 2)
    empty = pack(np.random.default_rng(0), 0, 32, 1, 0.3)  # hidden 0: nothing to do, whatever num_heads
    sk.qkv_attention_int8(empty, x, np.empty((2, 8, 0), np.float32), 2**30)
    sk.qkv_attention_int8(m, np.empty((2, 0, 32), np.float32), np.empty((2, 0, 32), np.float32), 2)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_token_holding_nan_makes_its_sequence_nan_as_in_two_calls(variant):
    """A NaN input token gives NaN q, k and v rows (spmm_int8's rule), so every head of its
    sequence is NaN where the token is an unmasked key (torch's answer too); the other sequences
    keep their bits."""
    m, x, bias, kb = case(4, 3, 12, 32, masked=False)
    clean = np.empty((3, 12, 32), np.float32)
    sk.qkv_attention_int8(m, x, clean, 4, bias, key_bias=kb, variant=variant)
    x[1, 5, 3] = np.nan
    for threads in (1, 2):
        got = np.empty_like(clean)
        sk.qkv_attention_int8(m, x, got, 4, bias, key_bias=kb, threads=threads, variant=variant)
        np.testing.assert_array_equal(got, two_calls(m, x, bias, 4, kb, threads=threads, variant=variant))
        assert np.isnan(got[1]).all()
        np.testing.assert_array_equal(got[[0, 2]], clean[[0, 2]])
