"""Training speed of the training-time pruners, part by part: what fused AdamW, the cached
teacher logits and bf16 autocast each buy over the plain fp32 loop.

Every variant runs the real :class:`pruners.gmp.GMPPruner` (distilled) for ``--steps`` steps on
the task's dense fine-tuned model; the parts are switched off by substituting the plain
building block (unfused ``torch.optim.AdamW``; a live teacher; fp32). Variants are interleaved in
``--rounds`` rounds in a fresh random order each round, and each variant's steps per second is the
median over rounds of its steady-state rate (steps after ``--skip`` warm-up steps, wall clock).
The teacher cache is measured warm (the logits of the steps' examples are computed before the
first round), which is the state of every epoch after the first and of every later pruner
distilled from the same dense model. Speed-ups are same-round ratios to the plain loop.

    python scripts/bench_training.py --steps 40 --rounds 3 > training_speed.json
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import random
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import pruners.gmp as gmp  # noqa: E402
from profiler.hardware import cpu_display_name, fingerprint  # noqa: E402
from profiler.tasks.sst2 import SST2  # noqa: E402
from pruners import training  # noqa: E402

#: variant → (fused AdamW, teacher cache, precision)
VARIANTS = {
    "fp32 plain (unfused AdamW, live teacher)": (False, False, "fp32"),
    "+ fused AdamW": (True, False, "fp32"),
    "+ fused AdamW + teacher cache": (True, True, "fp32"),
    "+ fused AdamW + teacher cache + bf16": (True, True, "bf16"),
}


@contextlib.contextmanager
def parts(fused: bool, cache: bool) -> Iterator[None]:
    """Switch the fused optimizer and the teacher cache off by substituting the plain blocks."""
    saved_adamw, saved_distiller = gmp.adamw, gmp.Distiller
    if not fused:
        gmp.adamw = lambda params, lr, wd: torch.optim.AdamW(list(params), lr=lr, weight_decay=wd)
    if not cache:
        gmp.Distiller = lambda dense, T, a, examples=None, cache_dir=None, **kw: saved_distiller(dense, T, a, **kw)
    try:
        yield
    finally:
        gmp.adamw, gmp.Distiller = saved_adamw, saved_distiller


def one_run(task: SST2, dense: torch.nn.Module, variant: str, steps: int, skip: int, cache_dir: Path) -> float:
    fused, cache, precision = VARIANTS[variant]
    stamps: list[float] = []
    pruner = gmp.GMPPruner(sparsity=0.9, structure="1x4", steps=steps, update_every=50, end_frac=0.5, distill=True,
                           precision=precision, lr=1e-4)
    pruner.cache_dir = cache_dir
    with parts(fused, cache):
        pruner.prune(copy.deepcopy(dense), task, progress=lambda s, t, loss, sp: stamps.append(time.perf_counter()))
    return (len(stamps) - 1 - skip) / (stamps[-1] - stamps[skip])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40, help="training steps per run (default 40)")
    ap.add_argument("--skip", type=int, default=3, help="warm-up steps left out of the rate (default 3)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the rounds' shuffled order (default 0)")
    args = ap.parse_args(argv)
    if args.skip < 0 or args.steps < args.skip + 2:  # the rate needs two timed steps after the warm-up
        ap.error(f"--steps must be at least --skip + 2 (got --steps {args.steps}, --skip {args.skip}); --skip >= 0")
    if args.rounds < 1 or args.threads < 1:
        ap.error("--rounds and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    variants = [v for v in VARIANTS if VARIANTS[v][2] == "fp32" or training.bf16_native()]
    task = SST2()
    dense = task.load_finetuned()
    rates: dict[str, list[float]] = {v: [] for v in variants}
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        one_run(task, dense, variants[-1], args.steps, args.skip, Path(tmp))  # warms the teacher cache
        for _ in range(args.rounds):
            order = variants[:]
            rng.shuffle(order)
            for v in order:
                rates[v].append(one_run(task, dense, v, args.steps, args.skip, Path(tmp)))
    plain = variants[0]
    hw = fingerprint()
    out = {
        "cpu": cpu_display_name(hw), "isa": hw.get("isa_flags"), "threads": args.threads, "python": platform.python_version(),
        "torch": torch.__version__, "task": "sst2 (MiniLM, batch 32)", "pruner": "gmp 90% 1x4, distilled, mask update every 50 steps (as the recipes)",
        "command": shlex.join(["python", "scripts/bench_training.py", *(sys.argv[1:] if argv is None else argv)]),
        "seed": args.seed, "steps_per_run": args.steps, "warmup_steps_skipped": args.skip, "rounds": args.rounds,
        "steps_per_s": {v: statistics.median(r) for v, r in rates.items()},
        "speedup_vs_plain_same_round": {v: statistics.median(a / b for a, b in zip(rates[v], rates[plain])) for v in variants},
        "per_round": rates,
    }
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
