"""SparseLinear (torch face of the kernels) and the sparse-cpu accelerator on a tiny BERT."""
from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
import torch
from torch import nn

sk = pytest.importorskip("accelerators._sparse_kernels")

from accelerators.base import PrepareSettings  # noqa: E402
from accelerators.sparse_cpu import SparseCPU, encoder_linears  # noqa: E402
from accelerators.sparse_linear import SparseLinear, parse_format  # noqa: E402
from profiler.config import parse_config  # noqa: E402
from profiler.errors import ConfigError  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402
from tests.tiny_family import tiny_bert, tiny_inputs  # noqa: E402


def pruned_linear(n_in, n_out, sparsity, bias=True, seed=0, block=1):
    torch.manual_seed(seed)
    lin = nn.Linear(n_in, n_out, bias=bias)
    with torch.no_grad():
        if block == 1:
            lin.weight.mul_(torch.rand_like(lin.weight) >= sparsity)
        else:
            rows = -(-n_out // block)
            keep = (torch.rand(rows, n_in) >= sparsity).repeat_interleave(block, 0)[:n_out]
            lin.weight.mul_(keep)
    return lin


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_int8_from_dense_refuses_a_non_finite_weight(bad):
    lin = nn.Linear(32, 16)
    with torch.no_grad():
        lin.weight[3, 5] = bad
    with pytest.raises(ValueError, match="weight row 3 holds NaN or inf"):
        SparseLinear.from_dense(lin, dtype="int8")
    assert not torch.isfinite(SparseLinear.from_dense(lin)(torch.ones(1, 32))[0, 3])  # fp32 keeps it


@pytest.mark.parametrize("fmt", ["csr", "bsr2x1", "bsr4x1", "bsr8x1"])
@pytest.mark.parametrize("bias", [True, False])
def test_from_dense_matches_linear(fmt, bias):
    lin = pruned_linear(77, 131, 0.8, bias=bias, block=4 if fmt != "csr" else 1)
    sl = SparseLinear.from_dense(lin, fmt, threads=2)
    x = torch.randn(3, 11, 77)
    with torch.no_grad():
        ref = lin(x)
    out = sl(x)
    assert out.shape == (3, 11, 131)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sl.to_dense(), lin.weight.detach())
    assert 0 < sl.density() <= 1


def test_from_dense_rejects_a_variant_this_cpu_cannot_run():
    assert sk.check_variant(None) == sk.kernel_variant()
    assert [sk.check_variant(v) for v in sk.supported_variants()] == sk.supported_variants()
    with pytest.raises(TypeError):
        sk.check_variant(3)
    with pytest.raises(ValueError, match="unknown kernel variant 'bogus'"):
        sk.check_variant("bogus")
    lin = pruned_linear(40, 24, 0.9)
    with pytest.raises(ValueError, match="kernel variant 'bogus' not supported here \\(this CPU runs scalar"):
        SparseLinear.from_dense(lin, "csr", variant="bogus")
    missing = [v for v in sk.compiled_variants() if v not in sk.supported_variants()]
    if missing:
        with pytest.raises(ValueError, match=f"kernel variant '{missing[0]}' not supported here"):
            SparseLinear.from_dense(lin, "csr", dtype="int8", variant=missing[0])


@pytest.mark.parametrize("variant", sk.supported_variants())
def test_every_variant_through_module(variant):
    lin = pruned_linear(40, 24, 0.9)
    sl = SparseLinear.from_dense(lin, "bsr", block=4)
    sl.variant = variant
    x = torch.randn(130, 40)
    with torch.no_grad():
        torch.testing.assert_close(sl(x), lin(x), rtol=1e-5, atol=1e-5)


def test_format_parsing():
    assert parse_format("csr") == ("csr", 1, 1)
    assert parse_format("bsr", block=8) == ("bsr8x1", 8, 1)
    assert parse_format("bsr4x4", "int8") == ("bsr4x4", 4, 4)
    assert parse_format("bsr16x4", "int8") == ("bsr16x4", 16, 4)
    with pytest.raises(ValueError, match="fp32 block rows must be one of 1, 2, 4, 8, got 16"):
        parse_format("bsr16x1")
    with pytest.raises(ValueError, match="int8 block rows must be one of 1, 2, 4, 8, 16, got 32"):
        parse_format("bsr32x4", "int8")
    for bad in [("bsr3x1", "fp32"), ("bsr4x4", "fp32"), ("bsr016x4", "int8"), ("bsr0x4", "int8"), ("coo", "fp32"),
                ("csr", "fp16")]:
        with pytest.raises(ValueError):
            parse_format(*bad)


def test_state_dict_roundtrip_and_repack():
    lin = pruned_linear(32, 48, 0.7)
    a = SparseLinear.from_dense(lin, "csr")
    b = SparseLinear.from_dense(lin, "csr")
    with torch.no_grad():
        b.values.mul_(2.0)  # in-place change of a buffer -> handle is rebuilt
    x = torch.randn(5, 32)
    with torch.no_grad():
        ref = lin(x)
        torch.testing.assert_close(b(x) - lin.bias, 2 * (ref - lin.bias), rtol=1e-5, atol=1e-5)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(x), ref, rtol=1e-5, atol=1e-5)
    assert set(a.state_dict()) == {"indptr", "indices", "values", "bias"}


def test_non_float32_input_and_errors():
    lin = pruned_linear(16, 8, 0.5)
    sl = SparseLinear.from_dense(lin)
    x = torch.randn(4, 16, dtype=torch.float64)
    out = sl(x)
    assert out.dtype == torch.float64
    with pytest.raises(ValueError):
        sl(torch.randn(4, 15))
    with pytest.raises(ValueError, match="expected last dim"):
        sl(torch.tensor(1.0))  # 0-d


def test_a_residual_of_the_wrong_size_names_residual_and_both_shapes():
    sl = SparseLinear.from_dense(pruned_linear(16, 8, 0.5))
    x = torch.randn(2, 3, 16)
    for bad in (torch.randn(5), torch.randn(2, 3, 7), torch.randn(6, 8, 2)):
        with pytest.raises(ValueError, match=rf"^residual: expected shape \(2, 3, 8\) \(or another shape of tokens x "
                                             rf"out_features = 6 x 8 elements\), got shape "
                                             rf"{re.escape(str(tuple(bad.shape)))}$"):
            sl(x, residual=bad)
    r = torch.randn(6, 8)  # any shape of tokens x out_features elements still adds
    torch.testing.assert_close(sl(x, residual=r), sl(x) + r.view(2, 3, 8))


def test_act_quant_set_after_construction_is_checked():
    lin = pruned_linear(16, 8, 0.5)
    sl = SparseLinear.from_dense(lin, dtype="int8")
    sl.act_quant = "tensor"
    assert sl.act_quant == "tensor"
    for bad in ("channel", "Token", None):
        with pytest.raises(ValueError, match=r"^act_quant: must be one of 'token', 'tensor', got "):
            sl.act_quant = bad
    assert sl.act_quant == "tensor"  # a refused value leaves the old one
    with pytest.raises(ValueError, match=r"^act_quant: must be one of 'token', 'tensor', got 'channel'"):
        SparseLinear.from_dense(lin, dtype="int8", act_quant="channel")


def test_a_variant_holding_a_nul_is_refused_not_cut_short():
    """C reads a str up to its first NUL: "avx2\\x00junk" would run as avx2."""
    lin = pruned_linear(16, 8, 0.5)
    sl = SparseLinear.from_dense(lin)
    good = sk.supported_variants()[0]
    for bad in (good + "\x00junk", "\x00"):
        with pytest.raises(ValueError, match=r"^variant: .* holds a NUL character; valid: None or one of "):
            sl.variant = bad
        with pytest.raises(ValueError, match=r"^variant: .* holds a NUL character"):
            SparseLinear.from_dense(lin, variant=bad)
    assert sl.variant is None
    with pytest.raises(TypeError, match="^variant: must be a str or None, got int"):
        sl.variant = 3
    sl.variant = good
    assert sl.variant == good and sl(torch.randn(2, 16)).shape == (2, 8)
    with pytest.raises(ValueError, match="NUL"):  # the extension itself, for callers that bypass SparseLinear
        sk.check_variant(good + "\x00junk")


@pytest.mark.parametrize("values, got", [(lambda v: v[:-1], "(49)"), (lambda v: v[:3], "(3)"),
                                         (lambda v: v[:48].reshape(24, 2), "(24, 2)"),
                                         (lambda v: v.reshape(10, 5), "(10, 5)")])
def test_pack_names_the_shape_of_values_it_got(values, got):
    """1-D values: "(49)", not "(490)" (a second number of 0 printed after the first)."""
    rng = np.random.default_rng(0)
    w = np.zeros(8 * 16, np.float32)
    w[rng.permutation(8 * 16)[:50]] = 1.0 + rng.random(50, dtype=np.float32)  # 50 non-zeros
    w = w.reshape(8, 16)
    ip = np.concatenate([[0], np.cumsum((w != 0).sum(1))]).astype(np.int64)
    ix = np.nonzero(w)[1].astype(np.int32)
    vv = w[w != 0]
    sk.pack_csr(ip, ix, vv, (8, 16))
    with pytest.raises(ValueError, match=rf"^values: expected 50 floats \(nblocks=50 x block rows=1\), got shape "
                                         rf"{re.escape(got)}$"):
        sk.pack_csr(ip, ix, values(vv), (8, 16))


# ------------------------------------------------------------------------------------------
# the sparse-cpu accelerator on a tiny BERT built in code
# ------------------------------------------------------------------------------------------
def logits(m, ex):
    with torch.no_grad():
        out = m(**ex)
    return out.logits if hasattr(out, "logits") else out


def test_encoder_layer_selection():
    model = tiny_bert(0.0)
    names = [n for n, _ in encoder_linears(model)]
    assert len(names) == 12
    assert not any("pooler" in n or "classifier" in n for n in names)


def test_sparse_cpu_swaps_and_keeps_outputs():
    model = tiny_bert(0.9)
    before = copy.deepcopy(model.state_dict())
    acc = SparseCPU(format="csr", min_speedup=1.0, repeats=2, min_time_s=0.0005, check_model=False)
    assert acc.availability() == (True, "")
    ex = tiny_inputs()
    p = acc.prepare(model, ex, PrepareSettings(threads=2))
    new = p.module
    # input model untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(isinstance(m, nn.Linear) for _, m in encoder_linears(model))
    torch.testing.assert_close(logits(new, ex), logits(model, ex), rtol=1e-4, atol=1e-5)
    fields = p.fields
    assert fields["sparse_layers"] + fields["dense_layers"] == 12
    assert fields["kernel_variant_used"] in sk.supported_variants()
    choices = json.loads(fields["sparse_layer_choices"])
    assert len(choices) == 12
    # a fused layer runs q, k and v as one stacked SparseLinear (3 x 64 outputs in tiny_bert)
    n_swapped = sum(3 if m.out_features == 192 else 1 for m in new.modules() if isinstance(m, SparseLinear))
    assert n_swapped == fields["sparse_layers"]


def test_sparse_cpu_keeps_dense_when_not_sparse():
    model = tiny_bert(0.0)
    acc = SparseCPU(repeats=2, min_time_s=0.0005)
    ex = tiny_inputs()
    p = acc.prepare(model, ex, PrepareSettings(threads=1))
    new = p.module
    assert not any(isinstance(m, SparseLinear) for m in new.modules())
    assert p.fields["sparse_layers"] == 0
    torch.testing.assert_close(logits(new, ex), logits(model, ex))


def test_sparse_cpu_rule_mode_and_forced_variant():
    model = tiny_bert(0.95)
    acc = SparseCPU(calibrate=False, format="auto")
    ex = tiny_inputs(batch=1, seq=8)
    p = acc.prepare(model, ex, PrepareSettings(threads=1, kernel_variant="scalar"))
    new = p.module
    assert p.fields["sparse_layers"] == 12
    assert p.fields["kernel_variant_used"] == "scalar"
    assert all(m.variant == "scalar" for m in new.modules() if isinstance(m, SparseLinear))
    torch.testing.assert_close(logits(new, ex), logits(model, ex), rtol=1e-4, atol=1e-5)


def test_sparse_cpu_config_errors():
    with pytest.raises(ValueError):
        SparseCPU(format="coo")
    with pytest.raises(ValueError):
        SparseCPU(min_speedup=0.5)
    with pytest.raises(ConfigError, match="matrix.kernel_variant: unknown variant 'nonexistent'"):
        parse_config(tiny_config(matrix={"kernel_variant": ["nonexistent"]}))  # a typo fails at config time
    with pytest.raises(ValueError, match="min_time_s"):
        SparseCPU(min_time_s=-1)
    missing = [v for v in ("scalar", "avx2", "avx512", "vnni", "amx") if v not in sk.supported_variants()]
    if missing:  # a real variant this CPU lacks is reported by availability(), not a config error
        ok, reason = SparseCPU().availability(PrepareSettings(kernel_variant=missing[0]))
        assert not ok and missing[0] in reason


def test_one_instance_prepares_each_cell_with_its_own_settings():
    from accelerators.fused_layer import FusedBertLayer

    model = tiny_bert(0.95)
    acc = SparseCPU(calibrate=False, format="csr")
    fresh = dict(vars(acc))
    ex = tiny_inputs(batch=1, seq=8)
    a = acc.prepare(model, ex, PrepareSettings(threads=1, kernel_variant="scalar"))
    b = acc.prepare(model, ex, PrepareSettings(threads=2))
    assert vars(acc) == fresh  # what prepare found comes back in Prepared, never in the instance
    assert a.fields["kernel_variant_used"] == "scalar" and b.fields["kernel_variant_used"] == sk.kernel_variant()
    for p, variant, threads in ((a, "scalar", 1), (b, None, 2)):
        sparse = [m for m in p.module.modules() if isinstance(m, SparseLinear)]
        fused = [m for m in p.module.modules() if isinstance(m, FusedBertLayer)]
        assert sparse and all(m.variant == variant and m.threads == threads for m in sparse)
        assert fused and all(m.variant == variant and m.threads == threads for m in fused)
    torch.testing.assert_close(logits(a.module, ex), logits(b.module, ex), rtol=1e-4, atol=1e-5)


def test_runner_passes_the_kernel_variant_axis_to_sparse_cells_only(tmp_path, monkeypatch):
    from profiler.results import read_results
    from profiler.runner import Runner

    supported = [v for v in sk.supported_variants() if v != "scalar"]
    monkeypatch.setattr(sk, "supported_variants", lambda: supported)  # as on a CPU without "scalar"
    cfg = parse_config(tiny_config(
        pruners=[{"name": "magnitude", "sparsity": 0.9}],
        accelerators=[{"name": "torch-fp32"}, {"name": "sparse-cpu", "calibrate": False, "format": "csr"}],
        matrix={"batch_size": [1], "seq_len": [16], "threads": [1], "kernel_variant": ["scalar", supported[0]]}))
    Runner(cfg, tmp_path / "r").run()
    rows = {(r["accelerator"], r["kernel_variant"]): r for r in read_results(tmp_path / "r" / "results.jsonl").rows}
    skipped = rows[("sparse-cpu", "scalar")]
    assert skipped["status"] == "skipped" and "'scalar' not supported" in skipped["reason"]
    ran = rows[("sparse-cpu", supported[0])]
    assert ran["status"] == "ok" and ran["kernel_variant_used"] == supported[0], ran["reason"]
    assert rows[("torch-fp32", supported[0])]["status"] == "ok"
    assert "kernel_variant_used" not in rows[("torch-fp32", supported[0])]
    # the "scalar" group has no cell that runs the kernels: its dense cell is not timed twice
    dense = rows[("torch-fp32", "scalar")]
    assert dense["status"] == "skipped" and f"timed under kernel_variant {supported[0]!r}" in dense["reason"]


def test_a_dense_cell_of_an_unavailable_variant_runs_when_the_sweep_has_no_other(tmp_path, monkeypatch):
    from profiler.results import read_results
    from profiler.runner import Runner

    monkeypatch.setattr(sk, "supported_variants", lambda: ["avx2"])  # as on a CPU without "scalar"
    cfg = parse_config(tiny_config(
        pruners=[{"name": "none"}], accelerators=[{"name": "torch-fp32"}],
        matrix={"batch_size": [1], "seq_len": [16], "threads": [1], "kernel_variant": ["scalar"]}))
    Runner(cfg, tmp_path / "r").run()
    (row,) = read_results(tmp_path / "r" / "results.jsonl").rows
    assert row["status"] == "ok", row["reason"]


@pytest.mark.parametrize("variant", sk.supported_variants())
@pytest.mark.parametrize("dtype", ["fp32", "int8"])
def test_fused_gelu_epilogue(variant, dtype):
    lin = pruned_linear(64, 96, 0.8, seed=3)
    plain = SparseLinear.from_dense(lin, "csr", dtype=dtype, threads=2)
    fused = SparseLinear.from_dense(lin, "csr", dtype=dtype, threads=2, activation="gelu")
    plain.variant = fused.variant = variant
    x = torch.randn(2, 70, 64) * 3
    x[0, 0] = 0.0
    ref = torch.nn.functional.gelu(plain(x))
    torch.testing.assert_close(fused(x), ref, rtol=1e-5, atol=2e-6)
    with pytest.raises(ValueError):
        SparseLinear.from_dense(lin, activation="relu6")
    with pytest.raises(ValueError):
        sk.spmm(plain.packed(), x[0].numpy(), np.empty((70, 96), np.float32), activation="tanh") \
            if dtype == "fp32" else sk.spmm_int8(plain.packed(), x[0].numpy(), np.empty((70, 96), np.float32),
                                                 activation="tanh")


def test_sparse_cpu_fuses_ffn_gelu():
    model = tiny_bert(0.9)
    acc = SparseCPU(format="csr", min_speedup=1.0, calibrate=False, fuse_layers=False)
    ex = tiny_inputs()
    p = acc.prepare(model, ex, PrepareSettings(threads=2))
    new, fields = p.module, p.fields
    assert fields["sparse_fused_gelu_layers"] == 2
    assert all(isinstance(l.intermediate.intermediate_act_fn, nn.Identity) for l in new.bert.encoder.layer)
    assert all(l.intermediate.dense.activation == "gelu" for l in new.bert.encoder.layer)
    torch.testing.assert_close(logits(new, ex), logits(model, ex), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(l.intermediate.intermediate_act_fn, nn.Identity) for l in model.bert.encoder.layer)
    acc2 = SparseCPU(format="csr", calibrate=False, fuse_gelu=False)
    assert acc2.prepare(model, ex, PrepareSettings(threads=1)).fields["sparse_fused_gelu_layers"] == 0


def test_constructor_rejects_nonsense_shapes_and_threads():
    lin = torch.nn.Linear(8, 4)
    with pytest.raises(ValueError, match="threads"):
        SparseLinear.from_dense(lin, threads=2**31)
    with pytest.raises(ValueError, match="2-D"):
        bad = torch.nn.Linear(8, 4)
        bad.weight = torch.nn.Parameter(torch.zeros(4, 8, 1))
        SparseLinear.from_dense(bad)


@pytest.mark.parametrize("kw, match", [({"threads": 0}, "threads"), ({"batch_size": 0}, "batch_size"),
                                       ({"seq_len": 1.5}, "seq_len"), ({"kernel_variant": "sse"}, "valid: auto, scalar")])
def test_prepare_settings_refuse_what_no_engine_can_run(kw, match):
    with pytest.raises(ValueError, match=f"PrepareSettings.*{match}"):
        PrepareSettings(**kw)
    assert PrepareSettings(threads=np.int64(2)).threads == 2


@pytest.mark.parametrize("example", [{}, {"attention_mask": torch.ones(1, 8, dtype=torch.long)}])
def test_prepare_names_a_timing_batch_without_input_ids(example):
    from accelerators.sparse_int8 import SparseInt8

    model = tiny_bert(0.5).eval()
    for acc in (SparseCPU(), SparseInt8()):
        with pytest.raises(ValueError, match="'input_ids' tensor of shape \\(batch, seq_len\\)"):
            acc.prepare(model, example, PrepareSettings(threads=1))


def test_cells_of_one_model_whose_prepares_chose_differently_get_their_own_accuracy_pass():
    """The per-layer choices are timed at the cell's shape and threads: a numerics_key tells prepares
    that compute differently apart, and the runner keys accuracy by it (resume included)."""
    from profiler.runner import accuracy_key, known_metrics

    model, ex = tiny_bert(0.9), tiny_inputs()
    kw = dict(format="csr", repeats=2, min_time_s=0.0005, check_model=False)
    sparse = SparseCPU(min_speedup=1.0, calibrate=False, **kw).prepare(model, ex, PrepareSettings(threads=1)).fields
    dense = SparseCPU(calibrate=False, min_sparsity=0.95, **kw).prepare(model, ex, PrepareSettings(threads=1)).fields
    assert sparse["sparse_layers"] > 0 and dense["sparse_layers"] == 0
    assert len(sparse["numerics_key"]) == 12 and sparse["numerics_key"] != dense["numerics_key"]
    again = SparseCPU(min_speedup=1.0, calibrate=False, **kw).prepare(model, ex, PrepareSettings(threads=1)).fields
    assert again["numerics_key"] == sparse["numerics_key"]  # the same choices: one pass shared
    rows = [{"status": "ok", "model_id": "m", "accuracy": a, "numerics_key": k}
            for a, k in ((0.9, sparse["numerics_key"]), (0.8, dense["numerics_key"]), (0.7, None))]
    known = known_metrics(rows)
    assert known[accuracy_key("m", sparse["numerics_key"])]["accuracy"] == 0.9
    assert known[accuracy_key("m", dense["numerics_key"])]["accuracy"] == 0.8 and known["m"]["accuracy"] == 0.7
