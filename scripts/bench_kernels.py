#!/usr/bin/env python
"""Side-by-side per-layer benchmark of the sparse kernels against torch, in one process.

For each case (layer shape, tokens, sparsity, threads) the competitors are timed round-robin
(interleaved repeats, each repeat a short loop of individually timed calls, calls during which
this process was preempted set apart; see :func:`accelerators.timing.interleaved_samples`), all on
the same pruned weight (pruned with :mod:`pruners.structure`, the pruners' own selection):

* ``torch dense fp32``  F.linear(x, W, b)
* ``torch CSR``         ``W_csr @ x.T`` with ``W_csr = W.to_sparse_csr()``: torch's sparse baseline
                        exactly as a user writes it (x.T a strided view; no bias, no transpose back)
* ``torch CSR, x.T pre-transposed``  ``torch.mm(W_csr, xT)`` with ``xT = x.T.contiguous()`` made once
                        outside the timing: the most flattering form for torch, reported alongside
                        (``torch_csr_pretransposed_median_s``, ``speedup_vs_torch_csr_pretransposed``)
* ours, fp32            ``csr`` on the unstructured-pruned W, ``bsr4x1`` on the 4x1-block-pruned W
* ours, int8 (``--int8``) ``csr`` (1x4 quads) on unstructured W, ``bsr4x4`` on 4x4-block-pruned W,
                          vs torch dynamic INT8 (engines x86 / fbgemm / onednn where available)

Output: a table on stdout and a JSON list of objects (``--json`` / ``--out``, default runs/bench_kernels-<time>.json),
every one with ``cpu`` (the CPU model) and, in the per-layer mode, one per (case, competitor): out_features, in_features, tokens, sparsity, dtype, format,
block, variant, threads, median_s, dense_median_s, torch_csr_median_s, speedup_vs_dense,
speedup_vs_torch_csr, torch_csr_pretransposed_median_s, speedup_vs_torch_csr_pretransposed, gflops_effective (useful FLOPs = 2 * tokens * nnz(W) per second), roofline
fraction, spread (IQR / median) and, with ``--int8``, dense_int8_median_s / speedup_vs_dense_int8 (against
the fastest torch INT8 engine) on every row. Every ``speedup_vs_*`` without ``_p10`` is the median over
the repeats of the same-repeat ratio of the two competitors' medians (:func:`same_round`); the
``_p10`` ones are ratios of the pooled 10th percentiles.

``--attention``: our fp32 attention kernel (``_sparse_kernels.attention`` at ``precision = "fp32"``:
what ``sparse-cpu``'s fused layers and ``sparse-int8`` with ``attention = "fp32"`` run; its INT8 form is
benchmarked by ``scripts/bench_ffn.py``) against torch's ``F.scaled_dot_product_attention`` on the same q/k/v (BERT layout, a
key-padding mask of zeros), MiniLM's 12 heads x 32 at sequence 128, batch 1 and 8, threads 1 and 2;
rows carry batch, seq, heads, head_dim, threads, median_s, sdpa_median_s, speedup_vs_sdpa, gflops.

``--dense-formats``: our INT8 kernel in each of its formats (csr = 1x4 quads, bsr2x4, bsr4x4, bsr8x4,
bsr16x4: AMX tiles in the ``amx`` variant) on the *same* dense or lightly pruned weight, in every ISA
variant this CPU supports, against torch
dynamic INT8 on the dense weight: what ``sparse-int8``'s ``dense_format = "auto"`` chooses among for
the layers left dense. Default grid: MiniLM's shapes (1536x384, 384x1536, 1152x384: the stacked
q / k / v), 128 tokens, 1 thread, sparsity 0 and 0.3 unstructured (``--sparsities`` overrides);
rows carry variant, format, median_s, speedup_vs_csr, speedup_vs_dense_int8, stored_density.

``--model``: a whole MiniLM-shaped BERT (random weights, encoder Linear layers pruned per layer):
torch fp32 against our accelerators (and torch INT8 / bf16 with ``--int8``), interleaved.

Modes: default = W 3072x768, 128 tokens, sparsity 0.5/0.8/0.9/0.95/0.98, 2 threads;
``--quick`` = same layer at 0.9 and 0.95 only (< 1 minute); ``--full`` = the full grid
(4 shapes x tokens 1/8/128/1024 x 6 sparsities x threads 1, 2; many minutes).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from accelerators import _sparse_kernels as sk  # noqa: E402
from accelerators.base import PrepareSettings, logits_of  # noqa: E402
from accelerators.int8_dynamic import X86_QUANT_ENGINES, quantized_engine, supported_quant_engines  # noqa: E402
from accelerators.roles import encoder_linears  # noqa: E402
from accelerators.sparse_int8 import INT8_FORMATS  # noqa: E402
from accelerators.sparse_linear import SparseLinear  # noqa: E402
from accelerators.timing import interleaved_rounds, round_medians  # noqa: E402
from profiler.hardware import cpu_display_name, fingerprint  # noqa: E402
from pruners.structure import parse_structure  # noqa: E402

#: roofline of one AVX-512 core: 2 FMA ports x 16 lanes x 2 flops x ~3.4 GHz (GFLOP/s)
PEAK_FP32_GFLOPS_PER_CORE = 215.0
#: calls per timed loop at most (single calls are timed, so short loops cost nothing in accuracy)
MAX_CALLS_PER_LOOP = 200


def prune(w: torch.Tensor, s: float, structure: str = "unstructured") -> torch.Tensor:
    """``w`` with the lowest-|W| fraction ``s`` of its ``structure`` groups (``"unstructured"``,
    blocks ``"RxC"``) zeroed, selected exactly as the pruners select (:mod:`pruners.structure`)."""
    keep = parse_structure(structure).masks({"w": w.detach().abs()}, s)["w"]
    return w * keep


def cpu_idle_fraction(dt: float = 1.0) -> float:
    """Fraction of all CPUs idle over dt seconds (from /proc/stat; 1.0 where unavailable)."""
    def read():
        v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return v[3] + v[4], sum(v)
    try:
        i0, t0 = read()
        time.sleep(dt)
        i1, t1 = read()
    except OSError:
        return 1.0
    return (i1 - i0) / max(1, t1 - t0)


def wait_for_quiet(max_wait_s: float, need_s: int = 3, idle: float = 0.85) -> bool:
    """Block until the machine has been >= `idle` idle for `need_s` consecutive seconds (True), or
    `max_wait_s` passed (False). Other tenants' jobs make 2-thread timings meaningless."""
    deadline, ok = time.time() + max_wait_s, 0
    while time.time() < deadline:
        ok = ok + 1 if cpu_idle_fraction() >= idle else 0
        if ok >= need_s:
            return True
    return False


def timeit(fns: dict, reps: int, min_time: float) -> dict:
    """``{name: (clean samples, all samples, per-repeat medians)}`` in seconds per call, the repeats
    interleaved (see :func:`accelerators.timing.interleaved_rounds`); a repeat's median is over its
    clean calls when it has at least 3, else over all of them."""
    out = {}
    for name, rounds in interleaved_rounds(fns, reps, min_time, max_calls=MAX_CALLS_PER_LOOP).items():
        out[name] = ([t for c, _ in rounds for t in c], [t for _, e in rounds for t in e], round_medians(rounds))
    return out


def same_round(res: dict, ref, key) -> float:
    """Speed-up of ``key`` over ``ref`` (> 1: ``key`` faster): the median over repeats of the ratio of
    the two repeats' medians, so that drift between repeats cancels. ``ref`` may be a list of keys:
    per repeat, the fastest of them (the best of several baselines)."""
    refs = ref if isinstance(ref, list) else [ref]
    per_round = [min(r) for r in zip(*(res[k][2] for k in refs))]
    return statistics.median(r / k for r, k in zip(per_round, res[key][2]))


def stats(samples):
    """(median, min, IQR / median, 10th percentile, clean fraction, median of all) in seconds.

    Statistics are over the clean samples (no preemption) when there are at least 5 of them."""
    clean, every = samples[:2] if isinstance(samples, tuple) else (samples, samples)
    v = sorted(clean if len(clean) >= 5 else every)
    med = statistics.median(v)
    q = statistics.quantiles(v, n=4) if len(v) >= 4 else [v[0], med, v[-1]]
    p10 = v[int(0.1 * (len(v) - 1))]
    return med, v[0], (q[2] - q[0]) / med if med > 0 else 0.0, p10, len(clean) / max(1, len(every)), \
        statistics.median(every)


def torch_int8_engines() -> list[str]:
    try:
        import torch.ao.nn.quantized.dynamic as nnqd  # noqa: F401
    except Exception:
        return []
    return supported_quant_engines(X86_QUANT_ENGINES)


def make_torch_int8(lin: torch.nn.Linear, engine: str):
    """torch dynamic INT8 of ``lin``, its weights packed for ``engine`` (calls need no engine switch)."""
    with quantized_engine(engine), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8)


def linear_of(w: torch.Tensor, b: torch.Tensor) -> torch.nn.Linear:
    lin = torch.nn.Linear(w.shape[1], w.shape[0])
    lin.weight.data.copy_(w)
    lin.bias.data.copy_(b)
    return lin


# ---- one layer ------------------------------------------------------------------------------------
def _our_modules(w, b, wu, s, threads, args) -> dict:
    """(dtype, format, block rows) -> (our SparseLinear, the pruned weight it holds)."""
    ours = {}
    if not args.no_fp32:
        wb = prune(w, s, "4x1")
        ours[("fp32", "csr", 1)] = (SparseLinear.from_dense(linear_of(wu, b), "csr", threads=threads), wu)
        ours[("fp32", "bsr4x1", 4)] = (SparseLinear.from_dense(linear_of(wb, b), "bsr4x1", threads=threads), wb)
    if args.int8 and hasattr(sk, "pack_int8"):
        wb44 = prune(w, s, "4x4")
        ours[("int8", "csr", 1)] = (SparseLinear.from_dense(linear_of(wu, b), "csr", dtype="int8", threads=threads), wu)
        ours[("int8", "bsr4x4", 4)] = (SparseLinear.from_dense(linear_of(wb44, b), "bsr4x4", dtype="int8",
                                                               threads=threads), wb44)
    return ours


def _torch_int8_modules(w, b, x) -> dict:
    """engine -> torch dynamic INT8 of the dense (unpruned) layer, for the engines that run here."""
    lin_d = linear_of(w, b)
    out = {}
    for eng in torch_int8_engines():
        try:
            q = make_torch_int8(lin_d, eng)
            q(x)
            out[eng] = q
        except Exception as e:  # engine unusable here
            print(f"# torch int8 engine {eng}: {e}", file=sys.stderr)
    return out


def _case_fns(w, b, x, wu, s, threads, args):
    """The competitors of one case: ``(fns, meta, engines)`` where ``fns`` maps a key to a call,
    ``meta`` our keys to (module, nnz) and ``engines`` torch INT8 engine -> module. Raises
    RuntimeError when one of our modules gives a wrong result."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        csr_u = wu.to_sparse_csr()
    xt = x.t().contiguous()
    fns = {"dense": lambda: F.linear(x, wu, b), "torch_csr": lambda: csr_u @ x.T,
           "torch_csr_pretransposed": lambda: torch.mm(csr_u, xt)}
    ours = _our_modules(w, b, wu, s, threads, args)
    engines = _torch_int8_modules(w, b, x) if args.int8 and hasattr(sk, "pack_int8") else {}
    meta = {}
    for key, (mod, wref) in ours.items():
        ref = F.linear(x, wref, b)
        err = ((mod(x) - ref).abs().max() / (ref.abs().max() + 1e-6)).item()
        if err > (1e-4 if key[0] == "fp32" else 5e-2):
            raise RuntimeError(f"{key}: wrong result, max rel err {err:.2e}")
        fns[key] = (lambda m=mod: m(x))
        meta[key] = (mod, int((wref != 0).sum()))
    for eng, q in engines.items():
        fns[("torch_int8", eng)] = (lambda q=q: q(x))
    return fns, meta, engines


def _case_base(res, engines, n_out, n_in, tokens, s, threads) -> dict:
    """The fields every row of one case shares: shape, and the baselines' medians and p10s."""
    base = dict(out_features=n_out, in_features=n_in, tokens=tokens, sparsity=s, threads=threads,
                dense_median_s=stats(res["dense"])[0], torch_csr_median_s=stats(res["torch_csr"])[0],
                torch_csr_pretransposed_median_s=stats(res["torch_csr_pretransposed"])[0])
    int8_meds = {eng: stats(res[("torch_int8", eng)])[0] for eng in engines}
    if int8_meds:
        base["dense_int8_p10_s"] = min(stats(res[("torch_int8", eng)])[3] for eng in engines)
        base["dense_int8_median_s"] = min(int8_meds.values())
        base["dense_int8_engine"] = min(int8_meds, key=int8_meds.get)
    base["dense_p10_s"] = stats(res["dense"])[3]
    base["torch_csr_p10_s"] = stats(res["torch_csr"])[3]
    return base


def _timing_fields(res, key, base, int8_keys) -> dict:
    """median/min/p10/spread/clean fraction of one competitor and its same-round speed-ups over the
    baselines (the ``_p10`` ones: ratios of pooled 10th percentiles)."""
    med, mn, spread, p10, clean, med_all = stats(res[key])
    vs_dense = same_round(res, "dense", key)
    out = dict(median_s=med, latency_median_s=med, min_s=mn, p10_s=p10, spread=spread, clean_fraction=clean,
               median_all_s=med_all, speedup_vs_dense_p10=base["dense_p10_s"] / p10,
               speedup_vs_dense=vs_dense, speedup_vs_dense_fp32=vs_dense,
               speedup_vs_torch_csr=same_round(res, "torch_csr", key),
               speedup_vs_torch_csr_pretransposed=same_round(res, "torch_csr_pretransposed", key))
    if int8_keys:
        out["speedup_vs_dense_int8"] = same_round(res, int8_keys, key)
    return out


def _case_rows(res, meta, engines, base, tokens, threads, nnz_u) -> list[dict]:
    rows = []
    n_out, n_in = base["out_features"], base["in_features"]
    int8_keys = [("torch_int8", eng) for eng in engines]
    for name, key, nnz in (("torch-dense", "dense", n_out * n_in), ("torch-csr", "torch_csr", nnz_u)):
        t = _timing_fields(res, key, base, int8_keys)
        rows.append(dict(base, impl=name, dtype="fp32", format="dense" if key == "dense" else "csr", block=None,
                         variant="torch", **t, speedup_vs_torch_csr_p10=base["torch_csr_p10_s"] / t["p10_s"],
                         gflops_effective=2 * tokens * nnz / t["median_s"] / 1e9))
    for eng in engines:
        t = _timing_fields(res, ("torch_int8", eng), base, int8_keys)
        rows.append(dict(base, impl=f"torch-int8-{eng}", dtype="int8", format="dense", block=None, variant="torch",
                         **t, gflops_effective=2 * tokens * n_out * n_in / t["median_s"] / 1e9))
    variant = sk.kernel_variant()
    for key, (mod, nnz) in meta.items():
        t = _timing_fields(res, key, base, int8_keys)
        med, p10 = t["median_s"], t["p10_s"]
        gf = 2 * tokens * nnz / med / 1e9
        row = dict(base, impl="sparsebench", dtype=key[0], format=key[1], block=[key[2], 1 if key[0] == "fp32" else 4],
                   variant=variant, kernel_variant=variant, **t,
                   speedup_vs_torch_csr_p10=base["torch_csr_p10_s"] / p10,
                   gflops_effective_p10=2 * tokens * nnz / p10 / 1e9,
                   gflops_effective=gf, gflops_useful=gf,
                   roofline_fraction=gf / (PEAK_FP32_GFLOPS_PER_CORE * threads), nnz=nnz,
                   stored_density=mod.density())
        if int8_keys:
            row["speedup_vs_dense_int8_p10"] = base["dense_int8_p10_s"] / p10
        rows.append(row)
    return rows


def run_case(n_out, n_in, tokens, s, threads, args, rng_seed=0) -> list[dict]:
    """Time every competitor on one (out x in) layer at ``tokens`` tokens, sparsity ``s``; one row each."""
    g = torch.Generator().manual_seed(rng_seed + int(s * 1000) + n_out + tokens)
    w = torch.randn(n_out, n_in, generator=g) * (1.0 / n_in ** 0.5)
    b = torch.randn(n_out, generator=g) * 0.1
    x = torch.randn(tokens, n_in, generator=g)
    torch.set_num_threads(threads)
    wu = prune(w, s)
    fns, meta, engines = _case_fns(w, b, x, wu, s, threads, args)
    res = timeit(fns, args.reps, args.min_time)
    base = _case_base(res, engines, n_out, n_in, tokens, s, threads)
    return _case_rows(res, meta, engines, base, tokens, threads, int((wu != 0).sum()))


# ---- whole model ----------------------------------------------------------------------------------
def _pruned_model(base, s: float, structure: str):
    """A copy of ``base`` with every encoder Linear weight pruned to sparsity ``s`` in ``structure``."""
    model = copy.deepcopy(base)
    with torch.no_grad():
        for _, lin in encoder_linears(model):
            lin.weight.copy_(prune(lin.weight, s, structure))
    return model


def _model_accelerators(args) -> dict:
    from accelerators.sparse_cpu import SparseCPU
    from accelerators.torch_fp32 import TorchFP32

    accs = {"torch-fp32": TorchFP32(), "sparse-cpu": SparseCPU()}
    if args.int8:
        from accelerators.sparse_int8 import SparseInt8
        accs["sparse-int8"] = SparseInt8()
        try:
            from accelerators.int8_dynamic import Int8Dynamic
            for eng in torch_int8_engines():
                accs[f"int8-dynamic-{eng}"] = Int8Dynamic(engine=eng)
        except Exception as e:
            print(f"# int8-dynamic unavailable: {e}", file=sys.stderr)
        try:
            from accelerators.bf16 import BF16
            accs["bf16"] = BF16()
        except Exception as e:
            print(f"# bf16 unavailable: {e}", file=sys.stderr)
    return accs


def _prepare_all(accs: dict, model, ex: dict, settings: PrepareSettings) -> tuple[dict, dict, dict]:
    """name -> prepared module, its row fields, its prepare time (s), for the available accelerators."""
    mods, fields, prep_s = {}, {}, {}
    for name, acc in accs.items():
        ok, why = acc.availability(settings)
        if not ok:
            print(f"# {name}: unavailable: {why}", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        prepared = acc.prepare(model, ex, settings)
        prep_s[name] = time.perf_counter() - t0
        mods[name], fields[name] = prepared.module, dict(prepared.fields)
        if "kernel_variant_used" in fields[name]:  # this script's rows call the variant that ran kernel_variant
            fields[name]["kernel_variant"] = fields[name].pop("kernel_variant_used")
    return mods, fields, prep_s


def _model_case(args, model, s: float, batch: int, th: int, vocab_size: int) -> list[dict]:
    """Every accelerator on ``model`` at one (batch, threads), interleaved; one row each."""
    torch.set_num_threads(th)
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(0, vocab_size, (batch, args.seq), generator=g)
    ex = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    mods, fields, prep_s = _prepare_all(_model_accelerators(args), model, ex,
                                        PrepareSettings(threads=th, batch_size=batch, seq_len=args.seq))

    def call(m):
        with torch.inference_mode():
            return m(**ex)

    with torch.inference_mode():
        ref = model(**ex).logits
    res = timeit({n: (lambda m=m: call(m)) for n, m in mods.items()}, args.reps, max(args.min_time, 0.05))
    dense_med, dense_p10 = stats(res["torch-fp32"])[0], stats(res["torch-fp32"])[3]
    rows = []
    for name in mods:
        rel = ((logits_of(call(mods[name])).float() - ref).abs().max() / ref.abs().max()).item()
        med, mn, spread, p10, clean, med_all = stats(res[name])
        rows.append(dict(model="minilm-shaped-bert", structure=args.model_structure, sparsity=s, batch=batch,
                         seq=args.seq, threads=th, accelerator=name, median_s=med, min_s=mn, p10_s=p10,
                         spread=spread, dense_p10_s=dense_p10, speedup_vs_torch_fp32_p10=dense_p10 / p10,
                         clean_fraction=clean, median_all_s=med_all,
                         dense_median_s=dense_med, speedup_vs_torch_fp32=same_round(res, "torch-fp32", name),
                         logits_max_rel_diff=rel, prepare_s=prep_s[name],
                         **{k: v for k, v in fields[name].items() if not isinstance(v, (dict, list))}))
        print(f"model s={s} b={batch} seq={args.seq} thr={th} {name:>22}: {med * 1e3:8.2f} ms "
              f"{rows[-1]['speedup_vs_torch_fp32']:5.2f}x  p10 {p10 * 1e3:8.2f} ms {dense_p10 / p10:5.2f}x  "
              f"spread {spread:4.2f} clean {clean:4.2f}  logits rel diff {rel:.1e}  "
              f"sparse layers {fields[name].get('sparse_layers', '-')}"
              f"{' (whole-model check kept the dense layout)' if fields[name].get('sparse_fell_back_to_dense') else ''}",
              flush=True)
    return rows


def run_model(args) -> list[dict]:
    """Whole MiniLM-shaped BERT (random weights, encoder Linear layers magnitude-pruned per layer):
    torch fp32 vs our accelerators (and torch INT8 / bf16 peers), interleaved, same process."""
    import transformers

    cfg = transformers.BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                  intermediate_size=1536, num_labels=2)
    torch.manual_seed(0)
    base = transformers.BertForSequenceClassification(cfg).eval()
    rows = []
    for s in [float(v) for v in (args.sparsities or "0.9").split(",")]:
        model = _pruned_model(base, s, args.model_structure)
        for batch in [int(v) for v in args.batches.split(",")]:
            for th in [int(v) for v in (args.threads or "2").split(",")]:
                rows += _model_case(args, model, s, batch, th, cfg.vocab_size)
    return rows


# ---- attention ------------------------------------------------------------------------------------
def run_attention(args) -> list[dict]:
    """Our attention kernel vs torch SDPA (fp32), interleaved, per (batch, threads)."""
    rows = []
    heads, dh, seq = args.heads, args.head_dim, args.seq
    hidden = heads * dh
    print(f"{'batch':>5} {'seq':>4} {'heads':>5} {'dh':>3} {'thr':>3} {'ours_ms':>8} {'sdpa_ms':>8} {'x_sdpa':>6} "
          f"{'GFLOP/s':>7} {'clean':>5}")
    for b in [int(v) for v in args.batches.split(",")]:
        for th in [int(v) for v in (args.threads or "1,2").split(",")]:
            torch.set_num_threads(th)
            g = torch.Generator().manual_seed(0)
            qkv = torch.randn(b, seq, 3 * hidden, generator=g)
            out = torch.empty(b, seq, hidden)
            kb = torch.zeros(b, seq)
            q, k, v = qkv.view(b, seq, 3, heads, dh).permute(2, 0, 3, 1, 4)
            mask = torch.ones(b, 1, seq, seq, dtype=torch.bool)
            fns = {"ours": lambda: sk.attention(qkv.numpy(), out.numpy(), heads, dh ** -0.5, kb.numpy(), th),
                   "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)}
            res = timeit(fns, args.reps, args.min_time)
            (m_ours, *_rest), (m_sdpa, *_r2) = stats(res["ours"]), stats(res["sdpa"])
            flops = 4.0 * b * heads * seq * seq * dh
            clean = stats(res["ours"])[4]
            x_sdpa = same_round(res, "sdpa", "ours")
            print(f"{b:>5} {seq:>4} {heads:>5} {dh:>3} {th:>3} {m_ours * 1e3:>8.3f} {m_sdpa * 1e3:>8.3f} "
                  f"{x_sdpa:>6.2f} {flops / m_ours / 1e9:>7.1f} {clean:>5.2f}", flush=True)
            rows.append(dict(kind="attention", batch=b, seq=seq, heads=heads, head_dim=dh, threads=th, dtype="fp32",
                             variant=sk.kernel_variant(), median_s=m_ours, sdpa_median_s=m_sdpa,
                             speedup_vs_sdpa=x_sdpa, gflops=flops / m_ours / 1e9, clean_fraction=clean))
    return rows


# ---- command line ---------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", "--out", dest="json", default=None, help="JSON output path")
    ap.add_argument("--quick", action="store_true", help="3072x768, 128 tokens, sparsity 0.9/0.95, 2 threads")
    ap.add_argument("--full", action="store_true", help="the full grid of shapes, tokens, sparsities, threads")
    ap.add_argument("--shapes", default=None, help="comma list like 3072x768,768x3072 (out x in)")
    ap.add_argument("--tokens", default=None, help="comma list of token counts")
    ap.add_argument("--sparsities", default=None, help="comma list")
    ap.add_argument("--threads", default=None, help="comma list")
    ap.add_argument("--reps", type=int, default=15, help="interleaved repeats")
    ap.add_argument("--min-time", type=float, default=0.01, help="seconds per repeat and competitor (a loop of "
                    "individually timed calls; median and p10 are over all calls)")
    ap.add_argument("--int8", action="store_true", help="add INT8 rows (ours and torch dynamic INT8)")
    ap.add_argument("--no-fp32", action="store_true", help="skip our fp32 rows")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                    help="first wait up to SECONDS for an idle machine (>= 85%% idle for 3 s); the rows record "
                         "whether it was quiet")
    ap.add_argument("--model", action="store_true", help="whole MiniLM-shaped model instead of single layers")
    ap.add_argument("--model-structure", default="unstructured", choices=["unstructured", "4x1", "1x4", "4x4", "16x4"])
    ap.add_argument("--batches", default="8,1", help="model mode: batch sizes")
    ap.add_argument("--seq", type=int, default=128, help="model / attention mode: sequence length")
    ap.add_argument("--attention", action="store_true", help="our fused attention kernel vs torch SDPA")
    ap.add_argument("--dense-formats", action="store_true",
                    help="our INT8 formats on dense / lightly pruned weights, every ISA variant, vs torch INT8")
    ap.add_argument("--heads", type=int, default=12, help="attention mode: heads")
    ap.add_argument("--head-dim", type=int, default=32, help="attention mode: head dimension")
    return ap.parse_args(argv)


def layer_grid(args) -> tuple[list, list, list, list]:
    """(shapes, tokens, sparsities, threads) of the per-layer mode; ``--quick`` also caps ``args.reps``."""
    shapes, tokens, sparsities, threads = [(3072, 768)], [128], [0.5, 0.8, 0.9, 0.95, 0.98], [2]
    if args.quick:
        sparsities = [0.9, 0.95]
        args.reps = min(args.reps, 11)
    if args.full:
        shapes = [(3072, 768), (768, 3072), (1536, 384), (384, 1536)]
        tokens = [1, 8, 128, 1024]
        sparsities = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98]
        threads = [1, 2]
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    if args.tokens:
        tokens = [int(v) for v in args.tokens.split(",")]
    if args.sparsities:
        sparsities = [float(v) for v in args.sparsities.split(",")]
    if args.threads:
        threads = [int(v) for v in args.threads.split(",")]
    return shapes, tokens, sparsities, threads


LAYER_HEADER = (f"{'shape':>10} {'tok':>5} {'thr':>3} {'sparsity':>8} {'impl':>18} {'dtype':>5} {'format':>7} "
                f"{'median_ms':>9} {'x_dense':>7} {'x_tcsr':>6} {'x_tcsrT':>7} {'x_int8':>6} {'GFLOP/s':>7} {'spread':>6} "
                f"{'p10_ms':>8} {'x_dense':>7} {'x_tcsr':>6} {'clean':>5}")


def layer_line(r: dict) -> str:
    """One row of the per-layer table (see :data:`LAYER_HEADER`)."""
    x8 = r.get("speedup_vs_dense_int8")
    return (f"{r['out_features']:>5}x{r['in_features']:<4} {r['tokens']:>5} {r['threads']:>3} {r['sparsity']:>8.2f} "
            f"{r['impl']:>18} {r['dtype']:>5} {r['format']:>7} {r['median_s'] * 1e3:>9.3f} "
            f"{r['speedup_vs_dense']:>7.2f} {r['speedup_vs_torch_csr']:>6.2f} "
            f"{r.get('speedup_vs_torch_csr_pretransposed', float('nan')):>7.2f} "
            f"{(f'{x8:.2f}' if x8 is not None else '-'):>6} {r['gflops_effective']:>7.1f} "
            f"{r['spread']:>6.2f} {r['p10_s'] * 1e3:>8.3f} {r['speedup_vs_dense_p10']:>7.2f} "
            f"{r.get('speedup_vs_torch_csr_p10', float('nan')):>6.2f} {r['clean_fraction']:>5.2f}")


def run_layers(args, quiet) -> list[dict]:
    """The per-layer grid: every case's rows, printed as a table while running."""
    shapes, tokens, sparsities, threads = layer_grid(args)
    loadavg = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"# kernel variant {sk.kernel_variant()}, torch {torch.__version__}, load average {loadavg}")
    print(LAYER_HEADER)
    rows = []
    for (n_out, n_in) in shapes:
        for t in tokens:
            for th in threads:
                for s in sparsities:
                    for r in run_case(n_out, n_in, t, s, th, args):
                        rows.append(r)
                        print(layer_line(r), flush=True)
    loadavg_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    for r in rows:
        r.update(torch_version=torch.__version__, loadavg_start=loadavg, loadavg_end=loadavg_end,
                 machine_quiet_at_start=quiet)
    return rows


def run_dense_formats(args) -> list[dict]:
    """Our INT8 formats on one weight per case, per ISA variant, interleaved with torch dynamic INT8."""
    shapes = ([tuple(int(v) for v in x.split("x")) for x in args.shapes.split(",")] if args.shapes
              else [(1536, 384), (384, 1536), (1152, 384)])
    tokens = [int(v) for v in args.tokens.split(",")] if args.tokens else [128]
    sparsities = [float(v) for v in args.sparsities.split(",")] if args.sparsities else [0.0, 0.3]
    threads = [int(v) for v in args.threads.split(",")] if args.threads else [1]
    variants = sk.supported_variants()
    print(f"# dense formats: variants {variants}, default {sk.kernel_variant()}, torch {torch.__version__}")
    print(f"{'shape':>10} {'tok':>4} {'thr':>3} {'sparsity':>8} {'variant':>7} "
          + " ".join(f"{f:>8}" for f in INT8_FORMATS) + f" {'torch':>8}  (ms)")
    rows = []
    for (n_out, n_in) in shapes:
        for t in tokens:
            for th in threads:
                for sp in sparsities:
                    g = torch.Generator().manual_seed(n_out + n_in + t + int(sp * 1000))
                    w = torch.randn(n_out, n_in, generator=g) / n_in ** 0.5
                    w = prune(w, sp) if sp > 0 else w
                    b = torch.randn(n_out, generator=g) * 0.1
                    x = torch.randn(t, n_in, generator=g)
                    lin = linear_of(w, b)
                    mods = {(v, f): SparseLinear.from_dense(lin, f, dtype="int8", threads=th, variant=v)
                            for v in variants for f in INT8_FORMATS}
                    for (v, f), m in mods.items():  # every format: the same exact int32 sums as csr
                        if not torch.equal(m(x), mods[(v, "csr")](x)):
                            raise RuntimeError(f"{v} {f}: output differs from {v} csr's")
                    engines = _torch_int8_modules(w, b, x)
                    fns = {key: (lambda m=m: m(x)) for key, m in mods.items()}
                    fns.update({("torch", e): (lambda q=q: q(x)) for e, q in engines.items()})
                    torch.set_num_threads(th)
                    res = timeit(fns, args.reps, args.min_time)
                    med = {k: stats(v)[0] for k, v in res.items()}
                    best_torch = min((med[("torch", e)] for e in engines), default=None)
                    for v in variants:
                        print(f"{n_out:>5}x{n_in:<4} {t:>4} {th:>3} {sp:>8.2f} {v:>7} "
                              + " ".join(f"{med[(v, f)] * 1e3:>8.3f}" for f in INT8_FORMATS)
                              + f" {(best_torch or float('nan')) * 1e3:>8.3f}", flush=True)
                        for f in INT8_FORMATS:
                            mm = med[(v, f)]
                            rows.append(dict(out_features=n_out, in_features=n_in, tokens=t, threads=th, sparsity=sp,
                                             variant=v, format=f, dtype="int8", median_s=mm,
                                             spread=stats(res[(v, f)])[2], stored_density=mods[(v, f)].density(),
                                             speedup_vs_csr=same_round(res, (v, "csr"), (v, f)),
                                             dense_int8_median_s=best_torch,
                                             speedup_vs_dense_int8=(same_round(res, [("torch", e) for e in engines], (v, f))
                                                                    if engines else None),
                                             torch_version=torch.__version__))
    return rows


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.json) if args.json else ROOT / "runs" / f"bench_kernels-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    quiet = None
    if args.wait_quiet > 0:
        quiet = wait_for_quiet(args.wait_quiet)
        print(f"# machine quiet: {quiet}", flush=True)
    if args.dense_formats:
        rows = run_dense_formats(args)
        for r in rows:
            r["machine_quiet_at_start"] = quiet
    elif args.model or args.attention:
        rows = run_model(args) if args.model else run_attention(args)
        for r in rows:
            r["machine_quiet_at_start"] = quiet
    else:
        rows = run_layers(args, quiet)
    cpu = cpu_display_name(fingerprint())  # every figure names the CPU it was measured on
    command = shlex.join(["python", "scripts/bench_kernels.py", *(sys.argv[1:] if argv is None else argv)])
    for r in rows:  # and the command and settings that produced it
        r.update(cpu=cpu, command=command, settings=vars(args))
    out.write_text(json.dumps(rows, indent=1))
    print(f"# wrote {out}")


if __name__ == "__main__":
    main()
