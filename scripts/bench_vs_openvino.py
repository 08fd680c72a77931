#!/usr/bin/env python
"""Whole-model latency: our ``sparse-int8`` on pruned models against OpenVINO INT8 on the dense model.

For each model (``minilm``: all-MiniLM-L6-v2 with the SST-2 head; ``bert-base``: a BERT-base-shaped
encoder, 12 layers x 768, built from its config with random weights, since speed does not depend
on the values), each pruning (one-shot magnitude: ``90-1x4``, ``80-1x4``, ``90-unstructured``; on
request ``90-16x4`` and ``80-16x4``, the blocks of the ``amx`` kernel variant), batch size and thread count (sequence 128, SST-2 dev sentences padded to 128):

* ``openvino-int8``: the dense model, OpenVINO INT8 (NNCF post-training quantization calibrated on
  SST-2 training sentences), prepared by the ``openvino`` accelerator;
* ``sparse-int8``: the pruned model prepared by the ``sparse-int8`` accelerator (INT8 attention,
  the default), and ``sparse-int8 (fp32 attention)`` with ``attention = "fp32"`` where asked.

* ``--variants``: ``sparse-int8`` under each of these kernel variants (``vnni,amx`` on an Intel CPU
  with AMX), each an engine of its own in the same rounds (``sparse-int8 90-16x4 [amx]``);

* ``--dense-peers``: other engines on the dense model, timed in the same rounds (``openvino-fp32``,
  ``openvino-bf16`` (AVX512_BF16 or AMX), ``onnxruntime-int8``, ``onnxruntime-fp32``, ``torch-int8``
  (dynamic INT8), ``torch-fp32``): on a
  CPU where OpenVINO INT8 is not the fastest dense engine, ``speedup_vs_best_dense`` compares ours
  with the fastest of all dense engines timed, round by round.

Engines of one (model, batch, threads) are timed in interleaved rounds (each round: a loop of
about ``--loop-s`` seconds per engine, per-call times, median per loop); the speed-up is the
median over rounds of the same-round ratio OpenVINO / ours (> 1: we are faster).

Output: a table on stdout and JSON (``--out``, default runs/bench_vs_openvino-<time>.json) with the
CPU model, the command line and one record per (model, batch, threads, engine); the engine's name
carries the pruning (``sparse-int8 90-1x4``) and a sparse record the choices its ``prepare()`` made.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import itertools
import json
import platform
import shlex
import statistics
import sys
from pathlib import Path

import torch

from accelerators.base import KERNEL_VARIANTS, PrepareSettings, logits_of
from accelerators.int8_dynamic import Int8Dynamic
from accelerators.peer_onnxruntime import ONNXRuntime
from accelerators.peer_openvino import OpenVINO
from accelerators.torch_fp32 import TorchFP32
from accelerators.sparse_int8 import SparseInt8
from accelerators.sparse_linear import variant_unavailable
from accelerators.timing import interleaved_rounds, round_medians
from profiler.hardware import cpu_display_name, fingerprint
from profiler.tasks.sst2 import SST2
from pruners.magnitude import MagnitudePruner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_bert_base_shaped import bert_base_shaped  # noqa: E402  (one home for the BERT-base-shaped model)

PRUNINGS = {"90-1x4": (0.9, "1x4"), "80-1x4": (0.8, "1x4"), "90-unstructured": (0.9, "unstructured"),
            "90-16x4": (0.9, "16x4"), "80-16x4": (0.8, "16x4")}
DEFAULT_PRUNINGS = ("90-1x4", "80-1x4", "90-unstructured")
MODELS = ("minilm", "bert-base")
#: dense engines --dense-peers can add (each prepared on the dense model)
DENSE_PEERS = {
    "openvino-fp32": lambda: OpenVINO(precision="fp32"),
    "openvino-bf16": lambda: OpenVINO(precision="bf16"),  # needs AVX512_BF16 or AMX: refused up front elsewhere
    "onnxruntime-int8": lambda: ONNXRuntime(precision="int8"),
    "onnxruntime-fp32": lambda: ONNXRuntime(precision="fp32"),
    "torch-int8": lambda: Int8Dynamic(),
    "torch-fp32": lambda: TorchFP32(),
}


def dense_model(task: SST2, name: str) -> torch.nn.Module:
    """The dense model ``name`` (eval mode); ``bert-base`` is built from BERT-base's config."""
    if name == "minilm":
        return task.base_model().eval()
    return bert_base_shaped(seed=0)


def pruned(model: torch.nn.Module, task: SST2, pruning: str) -> torch.nn.Module:
    import copy

    m = copy.deepcopy(model)
    sparsity, structure = PRUNINGS[pruning]
    MagnitudePruner(sparsity=sparsity, structure=structure).prune(m, task)
    return m.eval()


def round_times(engines: dict, example: dict, rounds: int, loop_s: float) -> dict[str, list[float]]:
    """Per engine, the median per-call seconds of each round's loop (all its calls), engines
    interleaved (:func:`accelerators.timing.interleaved_rounds`: loops of about ``loop_s``, at
    least 3 calls), after two warm-up calls each."""
    fns = {name: (lambda m=mod: logits_of(m(**example))) for name, mod in engines.items()}
    with torch.inference_mode():
        for f in fns.values():
            for _ in range(2):
                f()
        per_round = interleaved_rounds(fns, rounds, loop_s, max_calls=None, min_calls=3)
    return {name: round_medians(r, min_clean=None) for name, r in per_round.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="minilm,bert-base", help=f"comma list of {', '.join(MODELS)}")
    ap.add_argument("--prunings", default=",".join(DEFAULT_PRUNINGS), help=f"comma list of {', '.join(PRUNINGS)}")
    ap.add_argument("--variants", default="auto",
                    help=f"comma list of sparse kernel variants (auto, {', '.join(KERNEL_VARIANTS)}), each its own engine")
    ap.add_argument("--batch", default="1,8", help="comma list of batch sizes")
    ap.add_argument("--threads", default="1,2", help="comma list of thread counts")
    ap.add_argument("--fp32-attention", action="store_true",
                    help="also time sparse-int8 with attention = 'fp32' (what INT8 attention buys)")
    ap.add_argument("--dense-peers", default="", help=f"comma list of {', '.join(DENSE_PEERS)} (default: none)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--loop-s", type=float, default=0.4, help="seconds per engine per round")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    models = args.models.split(",")
    prunings = args.prunings.split(",")
    for m in models:
        if m not in MODELS:
            ap.error(f"--models: unknown {m!r} (choose from {', '.join(MODELS)})")
    for p in prunings:
        if p not in PRUNINGS:
            ap.error(f"--prunings: unknown {p!r} (choose from {', '.join(PRUNINGS)})")
    variants = args.variants.split(",")
    for v in variants:
        if v not in ("auto", *KERNEL_VARIANTS):
            ap.error(f"--variants: unknown {v!r} (choose from auto, {', '.join(KERNEL_VARIANTS)})")
        why = variant_unavailable(None if v == "auto" else v)
        if why:
            ap.error(f"--variants: {v} cannot run here: {why}")
    peers = [p for p in args.dense_peers.split(",") if p]
    for p in peers:
        if p not in DENSE_PEERS:
            ap.error(f"--dense-peers: unknown {p!r} (choose from {', '.join(DENSE_PEERS)})")
        ok, why = DENSE_PEERS[p]().availability()
        if not ok:
            ap.error(f"--dense-peers: {p} cannot run here: {why}")
    task = SST2()
    cpu = cpu_display_name(fingerprint())
    records = []
    for model_name in models:
        dense = dense_model(task, model_name)
        sparse_models = {p: pruned(dense, task, p) for p in prunings}
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            for batch in (int(b) for b in args.batch.split(",")):
                example = task.example_inputs(batch, 128)
                settings = PrepareSettings(threads=threads, batch_size=batch, seq_len=128,
                                           calibration=task.calibration_inputs)
                engines = {"openvino-int8": OpenVINO(precision="int8").prepare(dense, example, settings).module}
                for p in peers:
                    engines[p] = DENSE_PEERS[p]().prepare(dense, example, settings).module
                dense_names = ["openvino-int8", *peers]
                fields = {}
                for p, sm in sparse_models.items():
                    accs = {f"sparse-int8 {p}": SparseInt8()}
                    if args.fp32_attention:
                        accs[f"sparse-int8 {p} (fp32 attention)"] = SparseInt8(attention="fp32")
                    for (name, acc), v in itertools.product(accs.items(), variants):  # each prepared on its own
                        if variants != ["auto"]:
                            name = f"{name} [{v}]"
                        prep = acc.prepare(sm, example, dataclasses.replace(settings, kernel_variant=v))
                        engines[name] = prep.module
                        fields[name] = {k: prep.fields.get(k) for k in (
                            "sparse_layers", "dense_layers", "fused_encoder_layers", "attention_precision",
                            "sparse_fell_back_to_dense", "kernel_variant_used")}
                times = round_times(engines, example, args.rounds, args.loop_s)
                ov = times["openvino-int8"]
                best = [min(times[d][i] for d in dense_names) for i in range(args.rounds)]  # per round
                for name, ts in times.items():
                    rec = {"model": model_name, "engine": name, "batch_size": batch, "seq_len": 128,
                           "threads": threads, "latency_p50_ms": round(statistics.median(ts) * 1e3, 3),
                           "speedup_vs_openvino_int8": round(statistics.median(o / t for o, t in zip(ov, ts)), 3),
                           "rounds": len(ts), "cpu": cpu, **fields.get(name, {})}
                    if peers:
                        rec["speedup_vs_best_dense"] = round(statistics.median(b / t for b, t in zip(best, ts)), 3)
                    records.append(rec)
                    vs_best = f"  x{rec['speedup_vs_best_dense']:.2f} vs the best dense" if peers else ""
                    print(f"{model_name:9s} b{batch} t{threads} {name:45s} {rec['latency_p50_ms']:8.2f} ms  "
                          f"x{rec['speedup_vs_openvino_int8']:.2f} vs OpenVINO INT8{vs_best}", flush=True)
    path = Path(args.out or f"runs/bench_vs_openvino-{dt.datetime.now():%Y%m%d-%H%M%S}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cpu": cpu, "python": platform.python_version(), "torch": torch.__version__,
                                "command": shlex.join(["python", "scripts/bench_vs_openvino.py",
                                                     *(sys.argv[1:] if argv is None else argv)]),
                                "results": records}, indent=1))
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
