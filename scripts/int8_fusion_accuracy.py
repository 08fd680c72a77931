#!/usr/bin/env python
"""How much of ``sparse-int8``'s accuracy difference is numerics noise? SST-2 dev accuracy of one
cached model under ``sparse-int8`` with fp32 attention and its fusions switched off one at a time —
paths that compute the same function, differing only in float rounding (e.g. the fused GELU's
piecewise cubic, within 1.7e-6 of erf GELU, before the next INT8 quantization) — and with its
default INT8 attention, next to the same model in torch fp32.

On a model near chance, rounding-level changes flip borderline sentences; the spread of these
variants is the noise floor of any INT8 accuracy comparison on that model.

    python scripts/int8_fusion_accuracy.py --pruned sst2-magnitude-8c41f0813c98 \
        --out docs/data/int8_fusion_accuracy_zen3_pruned_8c41f0813c98.json

Output: one line per variant and, with ``--out``, JSON ``{"cpu", "model", "command", "results":
[{"variant", "params", "attention_precision", "accuracy"}]}``.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from accelerators.base import PrepareSettings
from accelerators.sparse_int8 import SparseInt8
from profiler.hardware import cpu_display_name, fingerprint
from profiler.tasks.sst2 import SST2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attention_padding_check import add_model_args, load_model  # noqa: E402  (one home for picking the cached model)

#: variant name -> SparseInt8 parameters (attention in fp32 unless the variant says int8)
VARIANTS = {
    "fused (default), INT8 attention": {"attention": "int8"},
    "fused, fp32 attention": {"attention": "fp32"},
    "layers unfused, fused GELU": {"attention": "fp32", "fuse_layers": False},
    "layers unfused, torch GELU": {"attention": "fp32", "fuse_layers": False, "fuse_gelu": False},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    task = SST2()
    model, made_by = load_model(ap, args, task)
    torch.set_num_threads(2)
    settings = PrepareSettings(threads=2, batch_size=8, seq_len=128, calibration=task.calibration_inputs)
    results = []
    with torch.inference_mode():
        acc = task.evaluate_metrics(model.eval(), 64)[task.metric_name]
    results.append({"variant": "torch fp32", "params": {}, "attention_precision": "fp32", "accuracy": acc})
    print(f"{'torch fp32':36s} {acc:.4f}", flush=True)
    for name, params in VARIANTS.items():
        prepared = SparseInt8(**params).prepare(model, task.example_inputs(8, 128), settings)
        with torch.inference_mode():
            acc = task.evaluate_metrics(prepared.module, 64)[task.metric_name]
        ran = prepared.fields.get("attention_precision") or "fp32 (torch: layers not fused)"
        results.append({"variant": name, "params": params, "attention_precision": ran, "accuracy": acc})
        print(f"{name:36s} {acc:.4f} (attention ran {ran})", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"cpu": cpu_display_name(fingerprint()), "model": made_by,
                                        "command": shlex.join(["python", "scripts/int8_fusion_accuracy.py",
                                                             *(sys.argv[1:] if argv is None else argv)]),
                                        "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
