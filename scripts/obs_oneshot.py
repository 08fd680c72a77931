"""One-shot OBS vs one-shot magnitude on SST-2 / MiniLM: dev accuracy, and the wall time and peak
memory of the OBS Fisher pass.

For each sparsity: the dense fine-tuned model (from the cache; fine-tuned first if absent) is
pruned once by ``magnitude`` and once by ``obs`` with ``steps = 0`` (no training), and both are
evaluated on all 872 SST-2 dev sentences. For OBS the prune report's notes give the time spent in
gradients, in building the inverse Fisher and in the OBS update; peak resident memory is sampled every
20 ms during the prune (``/proc/self/statm``; ``ru_maxrss`` where that is missing, then only the
first run's value is a per-run peak).

Usage::

    python scripts/obs_oneshot.py [--sparsity 0.5 0.7] [--num-grads 1024] [--block-size 48]
        [--damp 1e-7] [--grad-batch-size 8] [--update joint] [--structure unstructured]
        [--scope layer] [--threads N] [--out results.json]

Output: one JSON object (stdout, or ``--out``); bytes and seconds, accuracy as a fraction.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from profiler.hardware import cpu_display_name, fingerprint  # noqa: E402
from profiler.tasks.sst2 import SST2  # noqa: E402
from pruners.magnitude import MagnitudePruner  # noqa: E402
from pruners.obs import OBSPruner  # noqa: E402


def rss_bytes() -> int | None:
    """Current resident set size of this process, or None without ``/proc``."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


class PeakRSS:
    """Context manager sampling :func:`rss_bytes` every ``period_s`` in a thread; ``.peak``, ``.before``."""

    def __init__(self, period_s: float = 0.02) -> None:
        self.period_s, self.peak, self.before = period_s, 0, rss_bytes()
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.peak = max(self.peak, rss_bytes() or 0)

    def __enter__(self) -> "PeakRSS":
        self.before = rss_bytes()
        self.peak = self.before or 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.before is None:  # no /proc: the process-wide peak (KiB on Linux)
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_obs(dense: torch.nn.Module, task: SST2, sparsity: float, args: argparse.Namespace) -> dict:
    model = copy.deepcopy(dense)
    pruner = OBSPruner(sparsity=sparsity, steps=0, num_grads=args.num_grads, block_size=args.block_size, damp=args.damp,
                       grad_batch_size=args.grad_batch_size, update=args.update, structure=args.structure, scope=args.scope)
    t = time.perf_counter()
    with PeakRSS() as mem:
        report = pruner.prune(model, task)
    wall = time.perf_counter() - t
    n = report.notes
    row = {
        "pruner": "obs", "sparsity": sparsity, "sparsity_prunable": report.sparsity_prunable,
        "accuracy": task.evaluate(model), "prune_wall_s": round(wall, 2),
        "fisher_gradient_s": n["fisher_gradient_s"], "fisher_inverse_s": n["fisher_inverse_s"],
        "fisher_wall_s": round(n["fisher_gradient_s"] + n["fisher_inverse_s"], 2), "obs_update_s": n["obs_update_s"],
        "fisher_bytes": n["fisher_bytes"], "rss_before_bytes": mem.before, "peak_rss_bytes": mem.peak,
        "peak_rss_increase_bytes": mem.peak - mem.before if mem.before else None,
        "predicted_loss_increase": n["predicted_loss_increase"][0], "mean_gradient_loss": n["mean_gradient_loss"][0],
        "nonpositive_fisher_diag": n["nonpositive_fisher_diag"],
    }
    del model
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.7])
    ap.add_argument("--num-grads", type=int, default=1024)
    ap.add_argument("--block-size", type=int, default=48)
    ap.add_argument("--damp", type=float, default=1e-7)
    ap.add_argument("--grad-batch-size", type=int, default=8)
    ap.add_argument("--update", default="joint")
    ap.add_argument("--structure", default="unstructured")
    ap.add_argument("--scope", default="layer")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    task = SST2()
    dense = task.load_finetuned().eval()
    out = {
        "task": "sst2 (GLUE dev, 872 sentences)", "model": "all-MiniLM-L6-v2 fine-tuned (sparsebench cache)",
        "dense_accuracy": task.evaluate(dense), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "cpu": cpu_display_name(fingerprint()), "cpus_available": len(os.sched_getaffinity(0)),
        "loadavg_1min_start": os.getloadavg()[0],
        "obs": {"num_grads": args.num_grads, "block_size": args.block_size, "damp": args.damp,
                "grad_batch_size": args.grad_batch_size, "update": args.update, "structure": args.structure,
                "scope": args.scope},
        "runs": [],
    }
    for s in args.sparsity:
        mag = copy.deepcopy(dense)
        MagnitudePruner(sparsity=s, structure=args.structure, scope=args.scope).prune(mag, task)
        out["runs"].append({"pruner": "magnitude", "sparsity": s, "accuracy": task.evaluate(mag)})
        del mag
        out["runs"].append(run_obs(dense, task, s, args))
        print(json.dumps(out["runs"][-2:]), file=sys.stderr, flush=True)
    out["loadavg_1min_end"] = os.getloadavg()[0]  # other work on the machine slows every timing above
    text = json.dumps(out, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
