#!/usr/bin/env python
"""Where one forward pass spends its time: our ``sparse-int8`` model against OpenVINO INT8, per operator.

MiniLM (all-MiniLM-L6-v2, the SST-2 task's model; the head's training does not matter for speed)
pruned one-shot to ``--sparsity`` in ``--structure`` blocks, prepared by the ``sparse-int8``
accelerator, and the *dense* model under OpenVINO INT8 (NNCF, calibrated on SST-2 training
sentences) — the engine the sparse model has to beat.

* ``sparse-int8``: ``cProfile`` over ``--calls`` forward passes. Every C-extension entry point
  (``spmm_int8``, ``attention``, ...) and every torch op called from Python is a builtin with its
  own time; builtins are grouped into operator classes by name (:data:`SPARSE_CLASSES`), and what
  is left of the wall time is Python overhead (module calls, argument handling, hooks).
* ``openvino-int8``: the CPU plugin's own per-primitive counters (``PERF_COUNT``), grouped by
  primitive type (:data:`OPENVINO_CLASSES`); ``real_time`` summed per inference.

Both run at one thread count and shape per case, batch ``--batch`` (default 1 and 8), sequence 128.
Profiling adds overhead to both (cProfile per Python call; PERF_COUNT per primitive), so the
breakdown's *shares* are what to read. Beside it, unprofiled: the two engines (OpenVINO compiled
again without the counters) timed in ``--rounds`` interleaved rounds (``bench_vs_openvino.round_times``):
each engine's p50 (median of its round medians) and the median of the same-round ratios.

Output: a table on stdout and JSON (``--out``, default runs/op_breakdown-<time>.json): one object
per (engine, batch, threads) with ``p50_ms`` (unprofiled), ``profiled_ms`` per inference and
``ops_ms`` {operator class: ms per forward pass}; the ``sparse-int8`` object also has
``speedup_vs_openvino_same_round`` (OpenVINO's round median ÷ ours, median over rounds; > 1: ours
faster); plus the CPU model and the command.
"""
from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import platform
import pstats
import shlex
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_openvino import round_times  # noqa: E402  (the whole-model bench's interleaved rounds)

from accelerators.base import PrepareSettings, logits_of
from accelerators.peer_openvino import OpenVINO
from accelerators.sparse_int8 import SparseInt8
from profiler.hardware import cpu_display_name, fingerprint
from profiler.tasks.sst2 import SST2
from pruners.magnitude import MagnitudePruner

#: builtin function name fragment -> operator class (first match wins)
SPARSE_CLASSES = (
    ("spmm", "linear kernels (sparse)"), ("ffn_int8", "linear kernels (sparse)"),
    ("qkv_attention", "q/k/v product + attention (one call)"),
    ("quantized", "linear (torch INT8 fallback)"),
    ("linear", "linear (dense: pooler, head, fallback)"), ("addmm", "linear (dense: pooler, head, fallback)"),
    ("attention", "attention"), ("softmax", "attention"), ("matmul", "attention"), ("bmm", "attention"),
    ("layer_norm", "LayerNorm"), ("gelu", "GELU"), ("quantize", "quantize / dequantize"),
    ("embedding", "embeddings"), ("tanh", "head"),
    ("transpose", "layout changes"), ("contiguous", "layout changes"), ("permute", "layout changes"),
    ("view", "layout changes"), ("reshape", "layout changes"), ("copy", "layout changes"), ("cat", "layout changes"),
)
#: OpenVINO primitive type -> operator class (every ``FullyConnected*`` type is a Linear kernel)
OPENVINO_CLASSES = {
    "FullyConnected": "linear kernels", "MatMul": "attention", "Softmax": "attention",
    "ScaledDotProductAttention": "attention", "MVN": "LayerNorm", "Gelu": "GELU", "Eltwise": "elementwise (add, scale, GELU)",
    "FakeQuantize": "quantize / dequantize", "Convert": "quantize / dequantize", "Reorder": "layout changes",
    "Transpose": "layout changes", "Reshape": "layout changes", "Gather": "embeddings", "Subgraph": "fused subgraphs",
}


def sparse_breakdown(module, example: dict, calls: int) -> tuple[float, dict[str, float]]:
    """(profiled ms per pass, {operator class: ms per pass}) of ``module`` on ``example``."""
    prof = cProfile.Profile()
    with torch.inference_mode():
        for _ in range(3):
            module(**example)
        t0 = time.perf_counter()
        prof.enable()
        for _ in range(calls):
            logits_of(module(**example))
        prof.disable()
        wall = (time.perf_counter() - t0) / calls * 1e3
    ops: dict[str, float] = defaultdict(float)
    for (file, _line, fn), (_cc, _nc, tottime, _ct, _callers) in pstats.Stats(prof).stats.items():  # type: ignore[attr-defined]
        if file != "~":  # Python frames: their own time is harness/module overhead
            continue
        name = fn.lower()
        cls = next((c for frag, c in SPARSE_CLASSES if frag in name), f"other: {fn}")
        ops[cls] += tottime / calls * 1e3
    ops["Python overhead"] = max(wall - sum(ops.values()), 0.0)
    small = [k for k, v in ops.items() if k.startswith("other: ") and v < 0.02 * wall]
    ops["other builtins (each < 2 %)"] = sum(ops.pop(k) for k in small)
    return wall, dict(ops)


class ProfiledOpenVINO(OpenVINO):
    """OpenVINO INT8 compiled with the CPU plugin's per-primitive counters on."""

    def compile_config(self, settings: PrepareSettings) -> dict:
        return {**super().compile_config(settings), "PERF_COUNT": True}


def openvino_class(node_type: str) -> str:
    """The operator class of an OpenVINO primitive type (e.g. ``FullyConnectedQuantizedLegacy``:
    a Linear kernel); an unknown type is its own class."""
    if node_type.startswith("FullyConnected"):
        return OPENVINO_CLASSES["FullyConnected"]
    return OPENVINO_CLASSES.get(node_type, node_type)


def openvino_breakdown(module, example: dict, calls: int) -> tuple[float, dict[str, float]]:
    request = module._run.static_request
    ops: dict[str, float] = defaultdict(float)
    total = 0.0
    with torch.inference_mode():
        for _ in range(5):  # the first inferences after compiling carry one-off costs
            module(**example)
        for _ in range(calls):
            module(**example)
            for p in request.get_profiling_info():
                ms = p.real_time.total_seconds() * 1e3
                ops[openvino_class(p.node_type)] += ms / calls
                total += ms / calls
    return total, dict(ops)


def prepare(task: SST2, sparse_model, dense_model, batch: int, threads: int) -> dict:
    example = task.example_inputs(batch, 128)
    settings = PrepareSettings(threads=threads, batch_size=batch, seq_len=128, calibration=task.calibration_inputs)
    torch.set_num_threads(threads)
    sparse = SparseInt8().prepare(sparse_model, example, settings)
    return {
        "sparse-int8": (sparse, sparse_breakdown, sparse),
        "openvino-int8 (dense model)": (ProfiledOpenVINO(precision="int8").prepare(dense_model, example, settings),
                                        openvino_breakdown,
                                        OpenVINO(precision="int8").prepare(dense_model, example, settings)),
        "_example": example,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", default="1,8", help="comma list of batch sizes")
    ap.add_argument("--threads", default="1", help="comma list of thread counts")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--structure", default="1x4")
    ap.add_argument("--calls", type=int, default=30, help="profiled forward passes per engine and case")
    ap.add_argument("--seconds", type=float, default=2.0, help="unprofiled timing per engine and case, all rounds")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the unprofiled timing")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.calls < 1 or not args.seconds > 0:
        ap.error("--rounds and --calls must be at least 1 and --seconds above 0")
    task = SST2()
    dense = task.base_model().eval()
    sparse = task.base_model().eval()
    MagnitudePruner(sparsity=args.sparsity, structure=args.structure).prune(sparse, task)
    cpu = cpu_display_name(fingerprint())
    out = []
    for threads in (int(t) for t in args.threads.split(",")):
        for batch in (int(b) for b in args.batch.split(",")):
            engines = prepare(task, sparse, dense, batch, threads)
            example = engines.pop("_example")
            rounds = round_times({name: plain.module for name, (_, _, plain) in engines.items()}, example,
                                 args.rounds, args.seconds / args.rounds)
            ours, theirs = rounds["sparse-int8"], rounds["openvino-int8 (dense model)"]
            same_round = statistics.median(t / o for o, t in zip(ours, theirs))  # OpenVINO's time / ours
            for name, (prepared, breakdown, _) in engines.items():
                profiled, ops = breakdown(prepared.module, example, args.calls)
                rec = {"engine": name, "batch_size": batch, "seq_len": 128, "threads": threads,
                       "p50_ms": round(statistics.median(rounds[name]) * 1e3, 3), "rounds": args.rounds,
                       "profiled_ms": round(profiled, 3),
                       "ops_ms": {k: round(v, 3) for k, v in sorted(ops.items(), key=lambda kv: -kv[1])},
                       "sparsity": args.sparsity, "structure": args.structure, "cpu": cpu}
                if name == "sparse-int8":
                    rec["speedup_vs_openvino_same_round"] = round(same_round, 3)
                out.append(rec)
                print(f"\n{name}  b{batch} t{threads}: p50 {rec['p50_ms']:.2f} ms (profiled {profiled:.2f} ms)"
                      + (f", {same_round:.2f}x OpenVINO INT8 (same-round median)" if name == "sparse-int8" else ""))
                for k, v in rec["ops_ms"].items():
                    if v < 0.005:
                        continue
                    print(f"  {k:40s} {v:8.3f} ms  {v / max(profiled, 1e-9):6.1%}")
    path = Path(args.out or f"runs/op_breakdown-{dt.datetime.now():%Y%m%d-%H%M%S}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "scripts/op_breakdown.py", *(sys.argv[1:] if argv is None else argv)])
    path.write_text(json.dumps({"cpu": cpu, "python": platform.python_version(), "command": command.strip(),
                                "results": out}, indent=1))
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
