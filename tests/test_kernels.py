"""Correctness of the fp32 sparse kernels (accelerators._sparse_kernels) for every variant.

Each supported ISA variant is checked against a float64 dense reference; the bad-buffer tests
check that every kind of invalid input raises a Python exception. No timings here.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

sk = pytest.importorskip("accelerators._sparse_kernels")

VARIANTS = sk.supported_variants()
BLOCKS = [1, 2, 4, 8]


def to_bsr(W: np.ndarray, bh: int, idx_dtype=np.int32, ptr_dtype=np.int64):
    """Dense (n_out, n_in) -> (indptr, indices, values (nblocks, bh)) with bh x 1 blocks."""
    n_out, n_in = W.shape
    nbr = -(-n_out // bh)
    Wp = np.zeros((nbr * bh, n_in), dtype=np.float32)
    Wp[:n_out] = W
    B = Wp.reshape(nbr, bh, n_in).transpose(0, 2, 1)  # (nbr, n_in, bh)
    mask = np.any(B != 0, axis=2)
    indptr = np.zeros(nbr + 1, dtype=ptr_dtype)
    indptr[1:] = np.cumsum(mask.sum(axis=1))
    r, c = np.nonzero(mask)
    return indptr, c.astype(idx_dtype), np.ascontiguousarray(B[r, c], dtype=np.float32)


def pack(W, bh, **kw):
    ip, ix, v = to_bsr(W, bh)
    if bh == 1:
        return sk.pack_csr(ip, ix, v.reshape(-1), W.shape, **kw)
    return sk.pack_bsr(ip, ix, v, W.shape, block=bh, **kw)


def reference(X, W, b=None):
    y = X.astype(np.float64) @ W.astype(np.float64).T
    if b is not None:
        y += b
    return y


def check(X, W, b, bh, variant, threads, **kw):
    m = pack(W, bh, **{k: v for k, v in kw.items() if k == "panel"})
    out = np.full((X.shape[0], W.shape[0]), np.nan, dtype=np.float32)
    sk.spmm(m, X, out, b, threads=threads, variant=variant, **{k: v for k, v in kw.items() if k != "panel"})
    ref = reference(X, W, b)
    scale = np.abs(X).astype(np.float64) @ np.abs(W).astype(np.float64).T + 1.0
    err = np.max(np.abs(out - ref) / scale) if out.size else 0.0
    assert np.all(np.isfinite(out))
    assert err < 1e-5, (variant, bh, threads, X.shape, W.shape, err)


def rand_sparse(rng, n_out, n_in, density):
    W = rng.standard_normal((n_out, n_in)).astype(np.float32)
    W *= rng.random((n_out, n_in)) < density
    return W


def test_variant_api():
    assert "scalar" in sk.compiled_variants()
    assert set(VARIANTS) <= set(sk.compiled_variants())
    assert sk.kernel_variant() in VARIANTS
    old = sk.set_kernel_variant("scalar")
    try:
        assert sk.kernel_variant() == "scalar"
    finally:
        sk.set_kernel_variant(old)
    with pytest.raises(ValueError):
        sk.set_kernel_variant("sse9")
    with pytest.raises(ValueError):
        sk.spmm(pack(np.eye(4, dtype=np.float32), 1), np.ones((1, 4), np.float32),
                np.empty((1, 4), np.float32), variant="nope")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bh", BLOCKS)
@pytest.mark.parametrize("tokens", [1, 7, 128, 1029])
@pytest.mark.parametrize("threads", [1, 2])
def test_matches_reference(variant, bh, tokens, threads):
    rng = np.random.default_rng(tokens * 31 + bh)
    n_out, n_in = (61, 45) if tokens > 1000 else (203, 333)
    W = rand_sparse(rng, n_out, n_in, 0.15)
    X = rng.standard_normal((tokens, n_in)).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32)
    check(X, W, b, bh, variant, threads)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bh", BLOCKS)
def test_special_matrices(variant, bh):
    rng = np.random.default_rng(bh)
    X = rng.standard_normal((19, 40)).astype(np.float32)
    b = rng.standard_normal(35).astype(np.float32)
    # all zero
    check(X, np.zeros((35, 40), np.float32), b, bh, variant, 2)
    check(X, np.zeros((35, 40), np.float32), None, bh, variant, 1)
    # fully dense
    check(X, rng.standard_normal((35, 40)).astype(np.float32), b, bh, variant, 2)
    # empty rows and empty columns
    W = rand_sparse(rng, 35, 40, 0.3)
    W[::3] = 0
    W[:, ::4] = 0
    check(X, W, b, bh, variant, 2)
    # one output / one input
    check(X[:, :1].copy(), rng.standard_normal((1, 1)).astype(np.float32), b[:1].copy(), bh, variant, 1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_tiles_blocks_and_panels(variant):
    rng = np.random.default_rng(5)
    W = rand_sparse(rng, 130, 700, 0.1)
    X = rng.standard_normal((300, 700)).astype(np.float32)
    b = rng.standard_normal(130).astype(np.float32)
    for bh in BLOCKS:
        for tile in (16, 32, 64, 128, 256):
            check(X, W, b, bh, variant, 2, tile=tile)
        check(X, W, b, bh, variant, 2, token_block=48)
        for split in ("rows", "tokens", "auto"):
            check(X, W, b, bh, variant, 2, split=split)
            check(X[:37], W, b, bh, variant, 3, split=split, token_block=16)
        check(X, W, b, bh, variant, 2, panel=128)
        check(X, W, b, bh, variant, 1, panel=64, tile=32, token_block=16)


@pytest.mark.parametrize("variant", VARIANTS)
def test_column_panels_sorted_segments(variant):
    """Column panels (segments sorted by length, a group of 256 rows sweeping each panel): several
    groups with a partial last one, empty rows, an all-zero panel, rows denser in one panel."""
    rng = np.random.default_rng(11)
    W = rand_sparse(rng, 600, 700, 0.12)
    W[5:40] = 0  # empty rows
    W[:, 256:384] = 0  # an all-zero panel
    W[300:310, :128] = rng.standard_normal((10, 128))  # long segments in panel 0
    b = rng.standard_normal(600).astype(np.float32)
    for bh in BLOCKS:
        for T in (1, 17, 64, 300):
            X = rng.standard_normal((T, 700)).astype(np.float32)
            for threads in (1, 2):
                check(X, W, b, bh, variant, threads, panel=128)
            check(X, W, b, bh, variant, 1, panel=64, tile=16)


def test_panel_default_rule():
    rng = np.random.default_rng(0)
    assert pack(rand_sparse(rng, 512, 768, 0.1), 1).panel == 128  # ~12.8 non-zeros per row and panel
    assert pack(rand_sparse(rng, 512, 768, 0.05), 1).panel == 256  # 6.4 per 128 columns, 12.8 per 256
    assert pack(rand_sparse(rng, 512, 768, 0.02), 1).panel == 0  # 5.1 per 256: segment overhead dominates
    assert pack(rand_sparse(rng, 512, 200, 0.5), 1).panel == 0  # fewer than 2 panels
    assert pack(rand_sparse(rng, 512, 768, 0.1), 4).panel == 0  # blocks: off unless asked
    assert pack(rand_sparse(rng, 512, 768, 0.1), 4, panel=128).panel == 128
    assert pack(rand_sparse(rng, 512, 768, 0.1), 1, panel=0).panel == 0
    W = rand_sparse(rng, 512, 768, 0.1)
    nnz = np.count_nonzero(W)
    assert pack(W, 1, panel=0).nbytes == 513 * 8 + nnz * 8  # indptr, indices, values
    assert pack(W, 1, panel=128).nbytes > 513 * 8 + nnz * 16  # plus the panel copy and its segments

    # very wide rows: the default skips a width that would need more panels than compute_panels accepts
    n_in, nnz = 4096 * 128 + 1000, 40_000
    ix = np.sort(np.random.default_rng(2).choice(n_in, nnz, replace=False)).astype(np.int32)
    assert sk.pack_csr(np.array([0, nnz]), ix, np.ones(nnz, np.float32), (1, n_in)).panel == 256
    with pytest.raises(ValueError, match="more than 4096 panels"):
        sk.pack_csr(np.array([0, nnz]), ix, np.ones(nnz, np.float32), (1, n_in), panel=128)


def test_integers_and_floats_beyond_their_c_types_are_value_errors():
    """An int too large for its C type raises ValueError (not OverflowError); a double that is
    infinite as float32 is refused where the kernels take a float."""
    m = pack(np.ones((4, 8), np.float32), 1)
    x, out = np.ones((2, 8), np.float32), np.empty((2, 4), np.float32)
    for kw in (dict(threads=2**40), dict(tile=2**40), dict(token_block=2**70)):
        with pytest.raises(ValueError):
            sk.spmm(m, x, out, **kw)
    with pytest.raises(ValueError):
        sk.pack_csr(np.array([0, 0]), np.zeros(0, np.int32), np.zeros(0, np.float32), (2**70, 1))
    with pytest.raises(ValueError):
        sk.pack_csr(np.array([0, 0]), np.zeros(0, np.int32), np.zeros(0, np.float32), (1, 8), panel=2**70)
    with pytest.raises(ValueError, match="ln_eps must be finite as a float32"):
        sk.spmm(m, x, out, ln_weight=np.ones(4, np.float32), ln_eps=1e39)
    qkv, att = np.ones((1, 3, 3 * 8), np.float32), np.empty((1, 3, 8), np.float32)
    with pytest.raises(ValueError, match="scale must be finite as a float32"):
        sk.attention(qkv, att, 2, scale=1e39)
    with pytest.raises(ValueError):
        sk.attention(qkv, att, 2**40)


def test_zero_sizes():
    for variant in VARIANTS:
        m = pack(np.zeros((5, 0), np.float32), 1)
        out = np.full((3, 5), np.nan, np.float32)
        b = np.arange(5, dtype=np.float32)
        sk.spmm(m, np.zeros((3, 0), np.float32), out, b, variant=variant)
        assert np.array_equal(out, np.tile(b, (3, 1)))
        m = pack(np.ones((4, 6), np.float32), 4)
        sk.spmm(m, np.zeros((0, 6), np.float32), np.zeros((0, 4), np.float32), variant=variant)
        m = pack(np.zeros((0, 6), np.float32), 2)
        sk.spmm(m, np.ones((3, 6), np.float32), np.zeros((3, 0), np.float32), variant=variant)


def test_unsorted_and_duplicate_indices():
    # CSR with unsorted columns and a duplicate entry: duplicates add up like scipy does
    indptr = np.array([0, 3, 3, 5], np.int64)
    indices = np.array([4, 0, 4, 2, 1], np.int32)
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0], np.float32)
    W = np.zeros((3, 5), np.float32)
    W[0, 4] = 4.0
    W[0, 0] = 2.0
    W[2, 2] = 4.0
    W[2, 1] = 5.0
    X = np.random.default_rng(0).standard_normal((9, 5)).astype(np.float32)
    for variant in VARIANTS:
        for panel in (0, 2):
            m = sk.pack_csr(indptr, indices, values, (3, 5), panel=panel)
            out = np.empty((9, 3), np.float32)
            sk.spmm(m, X, out, variant=variant)
            np.testing.assert_allclose(out, reference(X, W), rtol=1e-5, atol=1e-5)


def test_rows_of_duplicates_longer_than_n_in():
    # column panels sort segments by length; a row of repeated indices is longer than n_in
    k, n_in = 300, 256
    X = np.random.default_rng(1).standard_normal((3, n_in)).astype(np.float32)
    expected = np.zeros((3, 4), np.float64)
    expected[:, :] = (k * X[:, :1].astype(np.float64))
    for panel in (0, 128, -1):
        m = sk.pack_csr(np.array([0, k, 2 * k, 3 * k, 4 * k]), np.zeros(4 * k, np.int32),
                        np.ones(4 * k, np.float32), (4, n_in), panel=panel)
        mb = sk.pack_bsr(np.array([0, k]), np.zeros(k, np.int32), np.ones((k, 4), np.float32), (4, n_in),
                         block=4, panel=panel)
        for variant in VARIANTS:
            for mat in (m, mb):
                out = np.empty((3, 4), np.float32)
                sk.spmm(mat, X, out, variant=variant)
                np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


def test_int64_indices_and_matrix_attributes():
    rng = np.random.default_rng(1)
    W = rand_sparse(rng, 16, 20, 0.3)
    ip, ix, v = to_bsr(W, 1, idx_dtype=np.int64, ptr_dtype=np.int32)
    m = sk.pack_csr(ip, ix, v, (16, 20))
    assert m.shape == (16, 20) and m.format == "csr" and m.dtype == "fp32"
    assert m.nblocks == np.count_nonzero(W) and m.nbytes > 0
    mb = pack(W, 4)
    assert mb.format == "bsr4x1" and mb.block == (4, 1)
    X = rng.standard_normal((3, 20)).astype(np.float32)
    out = np.empty((3, 16), np.float32)
    sk.spmm(m, X, out)
    np.testing.assert_allclose(out, reference(X, W), rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_out=st.integers(1, 70),
    n_in=st.integers(1, 90),
    tokens=st.integers(1, 40),
    density=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
    bh=st.sampled_from(BLOCKS),
    threads=st.sampled_from([1, 2, 3]),
    seed=st.integers(0, 2**31 - 1),
    bias=st.booleans(),
)
def test_hypothesis_shapes(n_out, n_in, tokens, density, bh, threads, seed, bias):
    rng = np.random.default_rng(seed)
    W = rand_sparse(rng, n_out, n_in, density)
    X = rng.standard_normal((tokens, n_in)).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32) if bias else None
    for variant in VARIANTS:
        check(X, W, b, bh, variant, threads)


# ---------------------------------------------------------------------------------------------
# validation: every bad buffer raises, never crashes
# ---------------------------------------------------------------------------------------------
def good_csr():
    return (np.array([0, 1, 3], np.int64), np.array([2, 0, 1], np.int32),
            np.array([1.0, 2.0, 3.0], np.float32), (2, 3))


def test_pack_validation():
    ip, ix, v, shape = good_csr()
    sk.pack_csr(ip, ix, v, shape)
    with pytest.raises(TypeError):
        sk.pack_csr(ip, ix, v.astype(np.float64), shape)  # wrong value dtype
    with pytest.raises(TypeError):
        sk.pack_csr(ip.astype(np.float32), ix, v, shape)  # float indptr
    with pytest.raises(TypeError):
        sk.pack_csr(ip, ix.astype(np.int16), v, shape)  # int16 indices
    with pytest.raises(TypeError):
        sk.pack_csr(ip, [2, 0, 1], v, shape)  # not a buffer
    with pytest.raises(ValueError):
        sk.pack_csr(ip, np.array([2, 0, 1, 0, 0, 0], np.int32)[::2], v, shape)  # non-contiguous
    with pytest.raises(ValueError):
        sk.pack_csr(np.array([1, 1, 3], np.int64), ix, v, shape)  # indptr[0] != 0
    with pytest.raises(ValueError):
        sk.pack_csr(np.array([0, 2, 1], np.int64), ix, v, shape)  # decreasing / end mismatch
    with pytest.raises(ValueError):
        sk.pack_csr(np.array([0, 1, 2], np.int64), ix, v, shape)  # indptr[-1] != nnz
    with pytest.raises(ValueError):
        sk.pack_csr(np.array([0, 1], np.int64), ix, v, shape)  # wrong indptr length
    with pytest.raises(ValueError):
        sk.pack_csr(ip, np.array([2, 0, 3], np.int32), v, shape)  # index out of range
    with pytest.raises(ValueError):
        sk.pack_csr(ip, np.array([2, -1, 1], np.int32), v, shape)  # negative index
    with pytest.raises(ValueError):
        sk.pack_csr(ip, ix, v[:2], shape)  # values length mismatch
    with pytest.raises(ValueError):
        sk.pack_csr(ip, ix, v, (2, -3))  # negative shape
    with pytest.raises(ValueError):
        sk.pack_csr(ip.reshape(1, 3), ix, v, shape)  # 2-D indptr
    with pytest.raises(ValueError):
        sk.pack_bsr(ip, ix, v, shape, block=3)  # unsupported block
    with pytest.raises(ValueError):
        # block rows: 2 rows / block 2 -> 1 block row -> indptr must have length 2
        sk.pack_bsr(ip, ix, np.ones((3, 2), np.float32), shape, block=2)
    with pytest.raises(ValueError):
        sk.pack_bsr(np.array([0, 3], np.int64), ix, np.ones((3, 4), np.float32), shape, block=2)


def test_spmm_validation():
    ip, ix, v, shape = good_csr()
    m = sk.pack_csr(ip, ix, v, shape)
    X = np.ones((4, 3), np.float32)
    out = np.empty((4, 2), np.float32)
    b = np.ones(2, np.float32)
    sk.spmm(m, X, out, b, threads=2)
    with pytest.raises(TypeError):
        sk.spmm("not a matrix", X, out)
    with pytest.raises(TypeError):
        sk.spmm(m, X.astype(np.float64), out)
    with pytest.raises(TypeError):
        sk.spmm(m, X, out.astype(np.float64))
    with pytest.raises(TypeError):
        sk.spmm(m, X, out, b.astype(np.int32))
    with pytest.raises(ValueError):
        sk.spmm(m, np.ones((4, 6), np.float32)[:, ::2], out)  # non-contiguous x
    with pytest.raises(ValueError):
        sk.spmm(m, X, np.empty((2, 4), np.float32).T)  # non-contiguous out
    with pytest.raises(ValueError):
        sk.spmm(m, np.ones((4, 5), np.float32), out)  # wrong n_in
    with pytest.raises(ValueError):
        sk.spmm(m, X, np.empty((4, 3), np.float32))  # wrong n_out
    with pytest.raises(ValueError):
        sk.spmm(m, X, np.empty((5, 2), np.float32))  # wrong tokens
    with pytest.raises(ValueError):
        sk.spmm(m, X, out, np.ones(3, np.float32))  # wrong bias length
    with pytest.raises(ValueError):
        sk.spmm(m, np.ones(3, np.float32), out)  # 1-D x
    with pytest.raises(ValueError):
        ro = np.empty((4, 2), np.float32)
        ro.flags.writeable = False
        sk.spmm(m, X, ro)  # read-only out
    with pytest.raises(ValueError):
        sk.spmm(m, X, out, threads=0)
    with pytest.raises(ValueError):
        sk.spmm(m, X, out, tile=24)
    with pytest.raises(ValueError):
        sk.spmm(m, X, out, split="columns")
    with pytest.raises(ValueError):
        buf = np.zeros((4, 3), np.float32)
        m3 = sk.pack_csr(np.array([0, 1, 1, 1], np.int64), np.array([0], np.int32),
                         np.array([1.0], np.float32), (3, 3))
        sk.spmm(m3, buf, buf)  # out aliases x
    with pytest.raises(ValueError, match="ln_weight and ln_bias must not overlap out"):
        sk.spmm(m, X, out, ln_weight=out[1])  # LayerNorm's gamma inside the rows it rewrites
    with pytest.raises(ValueError, match=r"ln_eps must be finite as a float32 and >= 0, got -1$"):
        sk.spmm(m, X, out, ln_weight=np.ones(2, np.float32), ln_eps=-1.0)
    # still usable after all those errors
    sk.spmm(m, X, out, b)
    np.testing.assert_allclose(out, reference(X, np.array([[0, 0, 1], [2, 3, 0]], np.float32), b))


@pytest.mark.parametrize("variant", VARIANTS)
def test_gelu_epilogue_within_its_bound_everywhere(variant):
    """The GELU epilogue (libm erff, or the AVX-512 variants' piecewise cubic of Phi) stays within
    2e-6 absolute of x Phi(x) in float64 on a dense grid over [-12, 12], across the cubic's 16
    interval joints and its switch to Phi = 1 at |x| = 5; NaN stays NaN."""
    import torch

    n = 64
    x = np.linspace(-12.0, 12.0, n * 8192, dtype=np.float32).reshape(-1, n)
    x[0, :4] = [np.nan, 5.0, -5.0, np.nextafter(np.float32(5.0), np.float32(0.0))]
    eye = sk.pack_csr(np.arange(n + 1, dtype=np.int64), np.arange(n, dtype=np.int64), np.ones(n, np.float32), (n, n))
    out = np.empty_like(x)
    sk.spmm(eye, x, out, None, 1, variant, activation="gelu")
    ref = torch.nn.functional.gelu(torch.from_numpy(x).double()).numpy()
    assert np.isnan(out[0, 0])
    assert np.nanmax(np.abs(out - ref)) <= 2e-6
