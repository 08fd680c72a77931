"""The C extension's limits at its edges: thread counts the OpenMP runtime could fail to start
(GNU libgomp exits the process then), scratch memory kept between calls, messages for buffers of
the wrong dimensions, and INT8 ranges at float32's extremes (a range near 3.4e38, a NaN range or
scale handed in by the caller). Every case must raise TypeError / ValueError or give torch's
numbers, never end the interpreter. No timings."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap

import numpy as np
import pytest

sk = pytest.importorskip("accelerators._sparse_kernels")

VARIANTS = sk.supported_variants()
KEEP_PER_THREAD = 4 << 20  # SK_WS_KEEP_PER_THREAD (sk_py.h): cached buffers above it are freed
WS_SLOTS = 8  # SK_WS_SLOTS (sk_buffers.c)


def pack_int8(rng, n_out, n_in, density=0.5, scale=1e-2):
    """csr int8 weight (1x4 quads) and its dense float64 value W ~= scale * W_q"""
    nq = n_in // 4
    wq = rng.integers(-127, 128, (n_out, n_in)).astype(np.int8)
    keep = rng.random((n_out, nq)) < density
    wq = (wq.reshape(n_out, nq, 4) * keep[:, :, None]).astype(np.int8)
    ip = np.zeros(n_out + 1, np.int64)
    ip[1:] = np.cumsum(keep.sum(1))
    r, c = np.nonzero(keep)
    m = sk.pack_int8(ip, c.astype(np.int32), np.ascontiguousarray(wq[r, c]).reshape(-1),
                     np.full(n_out, scale, np.float32), (n_out, n_in))
    return m, wq.reshape(n_out, n_in).astype(np.float64) * scale


def tiny_fp32():
    return sk.pack_csr(np.array([0, 1, 2], np.int64), np.array([0, 1], np.int32), np.ones(2, np.float32), (2, 4))


def every_entry_point(threads):
    """One minimal call of each entry point that takes threads=, with that value."""
    rng = np.random.default_rng(0)
    m8, _ = pack_int8(rng, 24, 8)
    x = np.ones((4, 4), np.float32)
    x8 = np.ones((4, 8), np.float32)
    m8b, _ = pack_int8(rng, 8, 24)
    yield "spmm", lambda: sk.spmm(tiny_fp32(), x, np.empty((4, 2), np.float32), threads=threads)
    yield "spmm_int8", lambda: sk.spmm_int8(m8, x8, np.empty((4, 24), np.float32), threads=threads)
    yield "spmm_int8_raw", lambda: sk.spmm_int8_raw(m8, np.ones((4, 8), np.int8), np.empty((4, 24), np.int32),
                                                    threads=threads)
    yield "ffn_int8", lambda: sk.ffn_int8(m8, m8b, x8, np.empty((4, 8), np.float32), threads=threads)
    yield "qkv_attention_int8", lambda: sk.qkv_attention_int8(m8, x8.reshape(1, 4, 8), np.empty((1, 4, 8), np.float32),
                                                              2, threads=threads)
    yield "attention", lambda: sk.attention(np.ones((1, 4, 24), np.float32), np.empty((1, 4, 8), np.float32), 2,
                                            threads=threads)


# ---------------------------------------------------------------------------------- threads
def test_thread_limit_is_a_small_multiple_of_the_processors():
    limit = sk.thread_limit()
    assert 1 <= limit <= min(1024, 4 * sk.max_threads())
    assert sk.check_threads(limit) == limit and sk.check_threads(np.int64(1)) == 1


@pytest.mark.parametrize("extra", [1, 1024])
def test_threads_above_the_limit_raise_value_error_naming_value_and_limit(extra):
    """Above thread_limit() a count is refused before any thread starts (a count the OS refuses
    made libgomp exit the process); at the limit every entry point runs."""
    limit = sk.thread_limit()
    bad = limit + extra
    for name, call in every_entry_point(bad):
        with pytest.raises(ValueError, match=rf"threads must be in \[1, {limit}\], got {bad}\b"):
            call()
    with pytest.raises(ValueError, match=rf"\[1, {limit}\], got {bad}\b"):
        sk.check_threads(bad)
    for name, call in every_entry_point(limit):
        call()


@pytest.mark.parametrize("value", [True, False])
def test_a_bool_is_not_a_thread_count(value):
    for name, call in every_entry_point(value):
        with pytest.raises(TypeError, match="threads: expected an int, got bool"):
            call()
    with pytest.raises(TypeError):
        sk.check_threads(value)
    with pytest.raises(TypeError):
        sk.check_threads(2.0)


def test_sparse_linear_uses_the_extensions_bound():
    torch = pytest.importorskip("torch")
    from accelerators.sparse_linear import SparseLinear
    lin = torch.nn.Linear(8, 4)
    limit = sk.thread_limit()
    assert SparseLinear.from_dense(lin, threads=limit).threads == limit
    with pytest.raises(ValueError, match=rf"threads must be in \[1, {limit}\], got {limit + 1}\b"):
        SparseLinear.from_dense(lin, threads=limit + 1)
    with pytest.raises(TypeError, match="bool"):
        SparseLinear.from_dense(lin, threads=True)


def _run_probe(code: str, env=None) -> subprocess.CompletedProcess:
    """code in a fresh interpreter with the extension loaded from its file as `sk` (no torch, so
    a small address-space limit leaves room for the interpreter itself)"""
    head = textwrap.dedent(f"""
        import importlib.util, resource, sys
        import numpy as np
        spec = importlib.util.spec_from_file_location("accelerators._sparse_kernels", {sk.__file__!r})
        sk = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sk)
    """)
    return subprocess.run([sys.executable, "-c", head + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, env=env)


def test_omp_thread_limit_lowers_the_bound():
    r = _run_probe("""
        m = sk.pack_csr(np.array([0, 1]), np.array([0], np.int32), np.ones(1, np.float32), (1, 4))
        print(sk.thread_limit())
        try:
            sk.spmm(m, np.ones((4, 4), np.float32), np.empty((4, 1), np.float32), threads=2)
        except ValueError as e:
            print("ValueError", e)
    """, env=dict(os.environ, OMP_THREAD_LIMIT="1"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "1"
    assert "ValueError threads must be in [1, 1], got 2" in r.stdout


def test_a_thread_count_past_the_limit_is_refused_under_a_memory_limit_not_fatal():
    """1,024 threads, each with its own stack, under a tight address-space limit: refused with a
    ValueError instead of libgomp exiting the process ("Thread creation failed"), while
    thread_limit()'s count still runs in that limit."""
    if sk.thread_limit() >= 1024:
        pytest.skip("1024 threads are within this machine's limit")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    r = _run_probe("""
        import os
        vm = int([l for l in open("/proc/self/status") if l.startswith("VmSize:")][0].split()[1]) * 1024
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        want = vm + (1 << 30)  # 1 GiB above what the interpreter maps: 1024 thread stacks do not fit
        if hard != resource.RLIM_INFINITY and hard < want:
            print("SKIP"); sys.exit(0)
        resource.setrlimit(resource.RLIMIT_AS, (want, hard))
        m = sk.pack_csr(np.array([0, 1]), np.array([0], np.int32), np.ones(1, np.float32), (1, 4))
        x, out = np.ones((4096, 4), np.float32), np.empty((4096, 1), np.float32)
        try:
            sk.spmm(m, x, out, threads=1024, split="tokens")
            print("RAN")
        except ValueError:
            print("REFUSED")
        sk.spmm(m, x, out, threads=min(sk.thread_limit(), 8), split="tokens")
        print("OK", float(out.sum()))
    """)
    if not os.path.exists("/proc/self/status") or "SKIP" in r.stdout:
        pytest.skip("cannot set an address-space limit here")
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert "REFUSED" in r.stdout and "OK 4096.0" in r.stdout


# ---------------------------------------------------------------------------------- workspace
def test_normal_calls_reuse_their_cached_buffers():
    """A MiniLM-shaped layer at batch 8 x 128 tokens (the timed path): every scratch buffer is
    under the cap, so a second call allocates nothing new and the cache holds them."""
    rng = np.random.default_rng(1)
    m, _ = pack_int8(rng, 1536, 384, 0.1)
    x = rng.standard_normal((1024, 384)).astype(np.float32)
    out, osc = np.empty((1024, 1536), np.int8), np.empty(1024, np.float32)
    sk.spmm_int8(m, x, out, out_scale=osc)
    held = sk.workspace_bytes()
    sk.spmm_int8(m, x, out, out_scale=osc)
    assert held == sk.workspace_bytes()
    assert held >= 128 * 1536 * 4  # the staging rows (0.75 MiB) among them


def test_a_large_transient_call_returns_its_scratch_memory():
    """Buffers sized by a call's tokens are freed when it returns: 50,000 tokens of 256 fp32
    staging rows (49 MiB, a forced row split). The old cache kept them for the life of the
    process (and preferred them to smaller buffers)."""
    rng = np.random.default_rng(2)
    T = 50_000
    m, _ = pack_int8(rng, 256, 16, 0.5)
    sk.spmm_int8(m, rng.standard_normal((T, 16)).astype(np.float32), np.empty((T, 256), np.int8),
                 out_scale=np.empty(T, np.float32), split="rows")
    held = sk.workspace_bytes()
    assert held <= WS_SLOTS * KEEP_PER_THREAD < T * 256 * 4, held


def test_a_long_sequence_leaves_the_cache_as_it_was():
    """One 16,384-token sequence's attention scratch (4.3 MiB, one thread) is freed, not cached. In
    a fresh interpreter, so that no buffer cached by an earlier test can serve the call."""
    r = _run_probe("""
        rng = np.random.default_rng(3)
        S = 16_384
        qkv, out = rng.standard_normal((1, S, 3 * 32)).astype(np.float32), np.empty((1, S, 32), np.float32)
        before = sk.workspace_bytes()
        sk.attention(qkv, out, 1)
        print(before, sk.workspace_bytes())
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "0"]


# ---------------------------------------------------------------------------------- messages
def test_a_buffer_with_too_many_dimensions_names_the_accepted_range():
    with pytest.raises(ValueError, match=r"^values: expected 1 to 2 dimensions, got 3$"):
        sk.pack_csr(np.array([0, 1]), np.array([0], np.int32), np.ones((1, 1, 1), np.float32), (1, 4))
    with pytest.raises(ValueError, match=r"^values: expected 1 to 3 dimensions, got 4$"):
        sk.pack_int8(np.array([0, 1]), np.array([0], np.int32), np.ones((1, 1, 1, 4), np.int8),
                     np.ones(1, np.float32), (1, 4))
    with pytest.raises(ValueError, match=r"^x: expected 2-dimensional buffer, got 1 dimensions$"):
        sk.spmm(tiny_fp32(), np.ones(4, np.float32), np.empty((4, 2), np.float32))


def test_int8_values_of_the_wrong_shape_print_the_shape_they_have():
    ip, ix = np.array([0, 1]), np.array([0], np.int32)
    with pytest.raises(ValueError, match=r"values: expected shape \(8,\), \(1, 8\) or \(1, 2, 4\) .*, got \(1, 4, 2\)$"):
        sk.pack_int8(ip, ix, np.ones((1, 4, 2), np.int8), np.ones(2, np.float32), (2, 4), block=2)
    with pytest.raises(ValueError, match=r", got \(2, 4\)$"):
        sk.pack_int8(ip, ix, np.ones((2, 4), np.int8), np.ones(2, np.float32), (2, 4), block=2)


# ---------------------------------------------------------------------------------- INT8 ranges
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("per_token", [True, False])
def test_a_token_near_float32s_max_is_quantized_not_nan(variant, per_token):
    """A finite range above 3.0e38 (up to float32's max) used to count as non-finite: NaN outputs.
    Its 127 / range is a normal float, so it is quantized like any other token."""
    rng = np.random.default_rng(3)
    m, w = pack_int8(rng, 24, 64, 1.0, scale=1e-3)
    x = rng.standard_normal((5, 64)).astype(np.float32)
    for t, a in ((1, 3.2e38), (3, np.finfo(np.float32).max)):
        x[t] *= np.float32(a) / np.abs(x[t]).max()
    out = np.empty((5, 24), np.float32)
    sk.spmm_int8(m, x, out, variant=variant, per_token=per_token)
    ref = x.astype(np.float64) @ w.T
    assert np.all(np.isfinite(out))
    rows = [1, 3] if per_token else range(5)
    for t in rows:  # quantization error: half a step of the token's (or tensor's) range per product
        amax = np.abs(x[t] if per_token else x).max().astype(np.float64)
        assert np.max(np.abs(out[t] - ref[t])) <= 0.5 * amax / 127 * np.abs(w).sum(1).max() * 1.01
    # chained: such a token's out_scale is finite (its output range / 127), not NaN
    big = np.zeros((2, 64), np.float32)
    big[0, 0] = 3.3e38  # outputs 3.3e38 * w[o, 0], |w| <= 0.127: finite
    q, s = np.empty((2, 24), np.int8), np.empty(2, np.float32)
    sk.spmm_int8(m, big, q, variant=variant, out_scale=s)
    assert np.isfinite(s).all() and s[0] > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_nan_range_handed_in_gives_nan_per_token_and_per_tensor(variant):
    """x_amax with NaN (NaN counts as +inf, as the range pass gives it): that token's outputs per
    token; every output per tensor, since NaN is then the tensor's range (it used to be skipped by
    the per-tensor max, giving finite outputs)."""
    rng = np.random.default_rng(4)
    m, _ = pack_int8(rng, 24, 32)
    x = rng.standard_normal((6, 32)).astype(np.float32)
    amax = np.abs(x).max(1).astype(np.float32)
    amax[2] = np.nan
    out = np.empty((6, 24), np.float32)
    sk.spmm_int8(m, x, out, x_amax=amax, variant=variant)
    assert np.isnan(out[2]).all() and np.isfinite(np.delete(out, 2, 0)).all()
    sk.spmm_int8(m, x, out, x_amax=amax, per_token=False, variant=variant)
    assert np.isnan(out).all()
    amax[2] = np.inf
    sk.spmm_int8(m, x, out, x_amax=amax, per_token=False, variant=variant)
    assert np.isnan(out).all()


def test_x_scale_must_be_non_negative_and_finite_or_nan():
    """x_scale is refused like w_scale (ValueError) when negative or infinite; NaN is what
    out_scale writes for a non-finite token, and gives that token NaN outputs."""
    rng = np.random.default_rng(5)
    m, _ = pack_int8(rng, 24, 32)
    q = rng.integers(-127, 128, (4, 32)).astype(np.int8)
    out = np.empty((4, 24), np.float32)
    for bad, shown in ((-1.0, "-1"), (-0.5, "-0.5"), (np.inf, "inf"), (-np.inf, "-inf")):
        s = np.full(4, 0.1, np.float32)
        s[3] = bad
        with pytest.raises(ValueError, match=rf"x_scale\[3\] must be >= 0 and finite .*got {shown}$"):
            sk.spmm_int8(m, q, out, x_scale=s)
    s = np.array([0.1, np.nan, 0.0, 0.2], np.float32)
    sk.spmm_int8(m, q, out, x_scale=s)
    assert np.isnan(out[1]).all() and np.isfinite(np.delete(out, 1, 0)).all()
    assert (out[2] == 0).all()
