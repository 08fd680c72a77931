#!/usr/bin/env python
"""Does padding change what INT8 attention computes? SST-2 dev accuracy of ``sparse-int8`` on the
cached fine-tuned MiniLM of ``scripts/configs/peers.toml`` (run it first), with attention in INT8
and in fp32, evaluated one sentence per batch (no padding) and in padded batches.

With fp32 attention the two must agree (padded keys are masked out); under INT8 attention too,
now that V's scale per channel is taken over the head's unmasked keys only
(accelerators/_csrc/sk_common.h): a difference would mean masked keys still shape the quantization.

    python scripts/attention_padding_check.py --out docs/data/attention_padding_check_zen3_unmasked_ranges.json
    python scripts/attention_padding_check.py --pruned sst2-magnitude-8c41f0813c98 --batches 64

Output: one line per (attention, eval batch size) and, with ``--out``, JSON
``{"cpu", "model", "command", "results": [{"attention", "attention_precision", "eval_batch_size", "accuracy"}]}``.
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
from profiler.tasks.base import default_cache_dir
from profiler.tasks.sst2 import SST2


def batch_sizes(text: str) -> list[int]:
    """``--batches``: a comma list of positive integers."""
    try:
        sizes = [int(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma list of positive integers, e.g. 1,64") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: batch sizes must be positive integers")
    return sizes


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer")
    return value


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """``--cache-dir`` and ``--pruned``: which cached SST-2 model a check script loads (:func:`load_model`)."""
    ap.add_argument("--cache-dir", type=Path, default=default_cache_dir(),
                    help="model cache holding the fine-tuned model (default: %(default)s)")
    ap.add_argument("--pruned", metavar="ENTRY",
                    help="check a pruned model of the cache instead: the name of a folder in CACHE_DIR/pruned "
                         "(its prune_report.json says which pruner made it)")


def load_model(ap: argparse.ArgumentParser, args: argparse.Namespace, task: SST2):
    """(model, what made it) for :func:`add_model_args`' options; a wrong ``--pruned`` is a usage error."""
    if args.pruned is not None:
        try:
            return task.load_cached_pruned(args.pruned, args.cache_dir)
        except ValueError as exc:
            ap.error(f"--pruned {exc}")
    print(f"the fine-tuned {task.name} model from {args.cache_dir} (fine-tuned first when it is not there: "
          "minutes)", file=sys.stderr, flush=True)
    return task.load_finetuned(args.cache_dir), "dense (fine-tuned)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--batches", type=batch_sizes, default="1,64",
                    help="comma list of evaluation batch sizes (default: %(default)s)")
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    task = SST2()
    model, made_by = load_model(ap, args, task)
    settings = PrepareSettings(threads=args.threads, batch_size=1, seq_len=128, calibration=task.calibration_inputs)
    results = []
    for attention in ("int8", "fp32"):
        prepared = SparseInt8(attention=attention).prepare(model, task.example_inputs(1, 128), settings)
        with torch.inference_mode():
            for bs in args.batches:
                acc = task.evaluate_metrics(prepared.module, bs)[task.metric_name]
                results.append({"attention": attention, "attention_precision": prepared.fields["attention_precision"],
                                "eval_batch_size": bs, "accuracy": acc})
                print(f"attention {attention:4s} (ran {prepared.fields['attention_precision']}) eval batch {bs:3d}: "
                      f"{acc:.4f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"cpu": cpu_display_name(fingerprint()), "model": made_by,
                                        "command": shlex.join(
            ["python", "scripts/attention_padding_check.py", *(sys.argv[1:] if argv is None else argv)]),
            "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
