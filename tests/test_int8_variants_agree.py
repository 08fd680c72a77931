"""The SIMD INT8 variants compute the same bits as each other, not only the same values within a bound.

The design notes (``accelerators/_csrc/README.md``, "Without VNNI: AVX2") say the AVX2 INT8 product
is exact and its softmax numerators use VNNI's ``exp255``, so a model gives the same outputs on an
AVX2-only CPU as on a VNNI one. Each variant is checked against a float64 reference elsewhere; this
file compares the variants with each other, on CPUs that run more than one SIMD INT8 variant.
``avx512`` (AVX-512 without VNNI) runs its own 16-lane ``vpmaddubsw`` product beside AVX2's other INT8
entries and its own fp32 ones and LayerNorm.
The portable ``scalar`` table is left out: its ``exp`` is libm's. LayerNorm is the one known
difference: AVX-512 accumulates its mean and variance in 16 float lanes, AVX2 (like the portable
kernel) in double, so a block ending in LayerNorm agrees to float rounding, not bit for bit.
"""
from __future__ import annotations

import numpy as np
import pytest

sk = pytest.importorskip("accelerators._sparse_kernels")

from tests.test_ffn_int8 import case, pack  # noqa: E402

SIMD = [v for v in sk.supported_variants() if v in ("avx2", "avx512", "vnni", "amx")]
pytestmark = pytest.mark.skipif(len(SIMD) < 2, reason=f"needs two SIMD INT8 variants; this CPU runs {SIMD}")


@pytest.mark.parametrize("S,heads,dh,masked", [(128, 12, 32, 0), (128, 12, 64, 40), (37, 3, 20, 5), (1, 2, 8, 0)])
@pytest.mark.parametrize("threads", [1, 2])
def test_int8_attention_same_bits_on_every_simd_variant(S, heads, dh, masked, threads):
    rng = np.random.default_rng(S + heads + dh + masked)
    qkv = (rng.standard_normal((2, S, 3 * heads * dh)) * 3).astype(np.float32)
    kb = np.zeros((2, S), np.float32)
    kb[1, S - masked:] = -np.inf if masked else 0.0
    outs = {}
    for v in SIMD:
        out = np.full((2, S, heads * dh), np.nan, np.float32)
        sk.attention(qkv, out, heads, key_bias=kb, threads=threads, variant=v, precision="int8")
        outs[v] = out
    for v in SIMD[1:]:
        np.testing.assert_array_equal(outs[v], outs[SIMD[0]], err_msg=f"{v} vs {SIMD[0]}")


@pytest.mark.parametrize("bh", [1, 4, 16])
@pytest.mark.parametrize("tokens", [1, 37, 128])
def test_spmm_int8_same_bits_on_every_simd_variant(bh, tokens):
    rng = np.random.default_rng(tokens + bh)
    m = pack(rng, 96, 64, bh, 0.2)
    x = rng.standard_normal((tokens, 64)).astype(np.float32)
    b = rng.standard_normal(96).astype(np.float32)
    outs = {}
    for v in SIMD:
        out = np.full((tokens, 96), np.nan, np.float32)
        sk.spmm_int8(m, x, out, b, activation="gelu", threads=2, variant=v, split="tokens")
        outs[v] = out
    for v in SIMD[1:]:
        np.testing.assert_array_equal(outs[v], outs[SIMD[0]], err_msg=f"{v} vs {SIMD[0]}")


@pytest.mark.parametrize("tokens", [1, 37, 128])
@pytest.mark.parametrize("layer_norm", [False, True])
def test_ffn_int8_agrees_on_every_simd_variant(tokens, layer_norm):
    """Same bits without LayerNorm; with it, within 4 float32 ulps of the output's scale (the two
    LayerNorm accumulations above; the normalised rows are O(1))."""
    m1, m2, x, b1, b2, lnw, lnb = case(tokens, tokens, hidden=64, inter=256, bh_in=4)
    ln = dict(ln_weight=lnw, ln_bias=lnb) if layer_norm else {}
    outs = {}
    for v in SIMD:
        out = np.full((tokens, 64), np.nan, np.float32)
        sk.ffn_int8(m1, m2, x, out, b1, b2, threads=2, variant=v, activation="gelu", residual=x, **ln)
        outs[v] = out
    for v in SIMD[1:]:
        if layer_norm:
            scale = float(np.abs(outs[SIMD[0]]).max())
            np.testing.assert_allclose(outs[v], outs[SIMD[0]], rtol=0, atol=4 * np.finfo(np.float32).eps * scale,
                                       err_msg=f"{v} vs {SIMD[0]}")
        else:
            np.testing.assert_array_equal(outs[v], outs[SIMD[0]], err_msg=f"{v} vs {SIMD[0]}")
