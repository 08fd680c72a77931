#!/usr/bin/env python
"""What the layer fusions of the INT8 encoder buy: the FFN in one call (``ffn_int8``), the range
handoff (``x_amax`` / ``out_amax``) and q / k / v with attention in one call (``qkv_attention_int8``).

Three parts, all timed in interleaved rounds (median per round; the ratio is the median over
rounds of the same-round ratio, > 1: faster than the chained calls):

* ``kernel``: one feed-forward block, 90 % sparse in 1x4 blocks with random int8 weights, at
  MiniLM's (384 -> 1536 -> 384) and BERT-base's (768 -> 3072 -> 768) shapes, 128 and 1,024 tokens,
  1 and 2 threads: ``spmm_int8`` (GELU, int8 out) then ``spmm_int8`` (int8 in, residual,
  LayerNorm) against one ``ffn_int8`` call with the same arguments.
* ``attention``: the stacked q / k / v product (90 % in 1x4 blocks) and INT8 attention at the same
  shapes (12 heads), sequence 128, batch 1 and 8, 1 and 2 threads: ``spmm_int8`` into fp32
  q | k | v rows then ``attention(precision="int8")`` against one ``qkv_attention_int8`` call.
* ``model``: ``sparse-int8`` on MiniLM / BERT-base pruned one-shot to 90 % in 1x4 blocks (as
  ``bench_vs_openvino.py``), sequence 128, with the lean layers' ``fuse_ffn`` / ``hand_ranges`` /
  ``fuse_attention`` switched: ``chained`` (all off), ``ffn_int8`` (the call, no handoff),
  ``ffn_int8 + ranges``, ``+ qkv_attention`` (all on, the default).

Output: a table on stdout and JSON (``--out``, default runs/bench_ffn-<time>.json) with the CPU,
the command line and one record per case and engine.

    python scripts/bench_ffn.py [--parts kernel,attention,model] [--rounds 7]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_vs_openvino's models and prunings

from accelerators import _sparse_kernels as sk  # noqa: E402
from accelerators.sparse_linear import dense_to_blocks  # noqa: E402
from profiler.hardware import cpu_display_name, fingerprint  # noqa: E402

SHAPES = {"minilm": (384, 1536), "bert-base": (768, 3072)}


def _pack(rng: np.random.Generator, n_out: int, n_in: int, density: float):
    keep = np.repeat(rng.random((n_out, n_in // 4)) < density, 4, axis=1)
    w = (rng.integers(-127, 128, (n_out, n_in)) * keep).astype(np.int8)
    ip, ix, bl = dense_to_blocks(torch.from_numpy(w), 1, 4)
    return sk.pack_int8(ip.numpy(), ix.numpy(), bl.numpy(), np.full(n_out, 1e-3, np.float32), w.shape, block=1)


def _rounds(fns: dict, rounds: int, loop_s: float, setup: dict | None = None) -> dict[str, list[float]]:
    """Per engine, the median seconds per call of each round's loop, engines interleaved;
    ``setup[name]()`` (if given) runs untimed before each of that engine's loops."""
    setup = setup or {}
    calls = {}
    for name, f in fns.items():
        setup.get(name, lambda: None)()
        f()
        t0 = time.perf_counter()
        f()
        calls[name] = max(3, int(loop_s / max(time.perf_counter() - t0, 1e-6)))
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, f in fns.items():
            setup.get(name, lambda: None)()
            f()  # untimed: a switched model rebuilds its plan here
            ts = []
            for _ in range(calls[name]):
                t0 = time.perf_counter()
                f()
                ts.append(time.perf_counter() - t0)
            out[name].append(statistics.median(ts))
    return out


def _records(case: dict, times: dict[str, list[float]]) -> list[dict]:
    """One record per engine: p50 and the same-round ratio against ``chained``."""
    recs = []
    for name, ts in times.items():
        rec = {**case, "engine": name, "latency_p50_ms": round(statistics.median(ts) * 1e3, 4),
               "speedup_vs_chained": round(statistics.median(b / t for b, t in zip(times["chained"], ts)), 3),
               "rounds": len(ts)}
        recs.append(rec)
        print(" ".join(f"{k}={v}" for k, v in case.items()), f"{name:18s} {rec['latency_p50_ms']:9.3f} ms  "
              f"x{rec['speedup_vs_chained']:.3f}", flush=True)
    return recs


def kernel_part(rounds: int, loop_s: float) -> list[dict]:
    rng = np.random.default_rng(0)
    recs = []
    for model, (H, inter) in SHAPES.items():
        m1, m2 = _pack(rng, inter, H, 0.1), _pack(rng, H, inter, 0.1)
        b1, b2 = rng.standard_normal(inter).astype(np.float32), rng.standard_normal(H).astype(np.float32)
        lnw, lnb = np.ones(H, np.float32), np.zeros(H, np.float32)
        for T in (128, 1024):
            x = rng.standard_normal((T, H)).astype(np.float32)
            q, s, out = np.empty((T, inter), np.int8), np.empty(T, np.float32), np.empty((T, H), np.float32)
            for threads in (1, 2):
                def chained(threads=threads):
                    sk.spmm_int8(m1, x, q, b1, threads, activation="gelu", out_scale=s)
                    sk.spmm_int8(m2, q, out, b2, threads, x_scale=s, residual=x, ln_weight=lnw, ln_bias=lnb)

                def fused(threads=threads):
                    sk.ffn_int8(m1, m2, x, out, b1, b2, threads, activation="gelu", residual=x, ln_weight=lnw,
                                ln_bias=lnb)

                times = _rounds({"chained": chained, "ffn_int8": fused}, rounds, loop_s)
                recs += _records({"part": "kernel", "shape": model, "tokens": T, "threads": threads}, times)
    return recs


def attention_part(rounds: int, loop_s: float) -> list[dict]:
    rng = np.random.default_rng(1)
    recs = []
    for model, (H, _) in SHAPES.items():
        m = _pack(rng, 3 * H, H, 0.1)
        bias = rng.standard_normal(3 * H).astype(np.float32)
        for B in (1, 8):
            x = rng.standard_normal((B, 128, H)).astype(np.float32)
            kb = np.zeros((B, 128), np.float32)
            qkv, out = np.empty((B * 128, 3 * H), np.float32), np.empty((B, 128, H), np.float32)
            for threads in (1, 2):
                def chained(threads=threads):
                    sk.spmm_int8(m, x.reshape(B * 128, H), qkv, bias, threads)
                    sk.attention(qkv.reshape(B, 128, 3 * H), out, 12, -1.0, kb, threads, precision="int8")

                def fused(threads=threads):
                    sk.qkv_attention_int8(m, x, out, 12, bias, key_bias=kb, threads=threads)

                times = _rounds({"chained": chained, "qkv_attention_int8": fused}, rounds, loop_s)
                recs += _records({"part": "attention", "shape": model, "batch_size": B, "seq_len": 128,
                                  "threads": threads}, times)
    return recs


def model_part(rounds: int, loop_s: float) -> list[dict]:
    from accelerators.base import PrepareSettings
    from accelerators.fused_layer import FusedBertLayer
    from accelerators.sparse_int8 import SparseInt8
    from bench_vs_openvino import dense_model, pruned
    from profiler.tasks.sst2 import SST2

    task = SST2()
    recs = []
    for model in SHAPES:
        sparse = pruned(dense_model(task, model), task, "90-1x4")
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for batch in (1, 8):
                ex = task.example_inputs(batch, 128)
                mod = SparseInt8().prepare(sparse, ex, PrepareSettings(threads=threads, batch_size=batch, seq_len=128,
                                                                       calibration=task.calibration_inputs)).module
                layers = [m for m in mod.modules() if isinstance(m, FusedBertLayer)]

                def switch(fuse: bool, hand: bool, fuse_att: bool):
                    def set_switches():
                        for layer in layers:  # the plan is rebuilt at the next forward
                            layer.fuse_ffn, layer.hand_ranges, layer.fuse_attention = fuse, hand, fuse_att
                    return set_switches

                def forward():
                    with torch.inference_mode():
                        mod(**ex)

                engines = {"chained": (False, False, False), "ffn_int8": (True, False, False),
                           "ffn_int8 + ranges": (True, True, False), "+ qkv_attention": (True, True, True)}
                times = _rounds({k: forward for k in engines}, rounds, loop_s,
                                setup={k: switch(*v) for k, v in engines.items()})
                recs += _records({"part": "model", "model": model, "pruning": "90-1x4", "batch_size": batch,
                                  "seq_len": 128, "threads": threads}, times)
    return recs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="kernel,attention,model", help="comma list of kernel, attention, model")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--loop-s", type=float, default=0.3, help="seconds per engine per round")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    parts = args.parts.split(",")
    for p in parts:
        if p not in ("kernel", "attention", "model"):
            ap.error(f"--parts: unknown {p!r} (choose from kernel, attention, model)")
    recs = []
    if "kernel" in parts:
        recs += kernel_part(args.rounds, args.loop_s)
    if "attention" in parts:
        recs += attention_part(args.rounds, args.loop_s)
    if "model" in parts:
        recs += model_part(args.rounds, args.loop_s)
    path = Path(args.out or f"runs/bench_ffn-{dt.datetime.now():%Y%m%d-%H%M%S}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cpu": cpu_display_name(fingerprint()), "python": platform.python_version(),
                                "torch": torch.__version__,
                                "command": shlex.join(["python", "scripts/bench_ffn.py",
                                                     *(sys.argv[1:] if argv is None else argv)]),
                                "results": recs}, indent=1))
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
