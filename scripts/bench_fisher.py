"""One OBS Fisher rebuild on MiniLM, part by part: the gradients, and the inverse built the paper's
way (rank-k Woodbury recursion) or directly (accumulate ``F``, one float64 Cholesky inverse per
block); see :mod:`pruners.fisher`.

Three measurements, on the SST-2 fine-tuned MiniLM (from the cache; fine-tuned first if absent) and
its 36 targeted Linear weights (10.6 M entries):

1. **Gradient**: seconds per batch-``--grad-batch-size`` gradient of the task loss (train mode,
   dropout on, as in the gradual loop without distillation), backpropagated into every parameter or
   into the targeted weights only (:func:`pruners.base.gradients_only_for`, what the pruner does);
   median over the same ``--grad-samples`` training batches for both.
2. **Inverse**: seconds to fold ``--num-grads`` gradients into every layer's Fisher,
   ``GRADS_PER_UPDATE`` at a time, and read ``F⁻¹`` (for ``"direct"`` the read inverts the blocks),
   for ``woodbury`` and ``direct``. The fold's cost does not depend on the gradients' values, so
   one buffer of real gradients is folded ``num_grads / k`` times.
3. **Accuracy**: on one layer (``--check-layer``), ``F⁻¹`` from ``--num-grads`` distinct real
   gradients by both methods in float32 against the float64 inverse of the float64 Fisher: the
   largest relative error of a diagonal entry (what the saliency divides by) and of a block
   (Frobenius), and the count of non-positive diagonal entries.

Gradient and inverse variants are interleaved in ``--rounds`` rounds (order reversed every other
round); speed-ups are medians of same-round ratios.

    python scripts/bench_fisher.py --rounds 3 --threads 2 > fisher.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from accelerators.base import logits_of  # noqa: E402
from profiler.hardware import cpu_display_name, fingerprint  # noqa: E402
from profiler.tasks.sst2 import SST2  # noqa: E402
from pruners.base import gradients_only_for  # noqa: E402
from pruners.fisher import METHODS, BlockFisherInverse  # noqa: E402
from pruners.obs import GRADS_PER_UPDATE, OBSPruner  # noqa: E402


def time_gradients(model, task, layers, batches: list, restricted: bool) -> float:
    """Seconds per gradient over ``batches`` (the same list for every variant), median, after one warm-up."""
    scope = gradients_only_for(model, [lin.weight for lin in layers.values()]) if restricted else contextlib.nullcontext()
    times = []
    with scope:
        for i, (inputs, labels) in enumerate([batches[0], *batches]):
            model.zero_grad(set_to_none=True)
            t = time.perf_counter()
            task.loss(logits_of(model(**inputs)), labels).backward()
            if i:
                times.append(time.perf_counter() - t)
    model.zero_grad(set_to_none=True)
    return statistics.median(times)


def time_inverse(layers, buf: dict[str, torch.Tensor], num_grads: int, block_size: int, damp: float, method: str) -> float:
    """Seconds to fold ``num_grads`` gradients (``buf`` rows, repeatedly) into every layer and read ``F⁻¹``."""
    t = time.perf_counter()
    for n, lin in layers.items():
        f = BlockFisherInverse(lin.weight.numel(), block_size, damp, num_grads, method=method)
        for _ in range(num_grads // buf[n].shape[0]):
            f.add_grads(buf[n])
        f.finv  # noqa: B018 -- the direct method inverts here
        del f
    return time.perf_counter() - t


def accuracy_check(grads: torch.Tensor, block_size: int, damp: float) -> dict:
    """float32 ``F⁻¹`` by each method against the float64 inverse of the float64 Fisher, ``grads`` ``(m, numel)``."""
    m = grads.shape[0]
    ref = BlockFisherInverse(grads.shape[1], block_size, damp, m, dtype=torch.float64)
    g64 = ref.to_blocks(grads.double())  # (m, n_blocks, B)
    fisher = torch.einsum("mbi,mbj->bij", g64, g64) / m + damp * torch.eye(block_size, dtype=torch.float64)
    exact = torch.linalg.inv(fisher)
    out = {}
    for method in METHODS:
        f = BlockFisherInverse(grads.shape[1], block_size, damp, m, method=method)
        for s in range(0, m, GRADS_PER_UPDATE):
            f.add_grads(grads[s : s + GRADS_PER_UPDATE])
        got = f.finv.double()
        d_ref, d_got = exact.diagonal(dim1=1, dim2=2), got.diagonal(dim1=1, dim2=2)
        block_err = torch.linalg.matrix_norm(got - exact) / torch.linalg.matrix_norm(exact)
        out[method] = {"max_rel_err_diag": float(((d_got - d_ref).abs() / d_ref.abs()).max()),
                       "max_rel_err_block_fro": float(block_err.max()), "median_rel_err_block_fro": float(block_err.median()),
                       "nonpositive_diag": int((d_got <= 0).sum())}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num-grads", type=int, default=256, help="gradients per Fisher (the recipes: 256)")
    ap.add_argument("--block-size", type=int, default=48)
    ap.add_argument("--damp", type=float, default=1e-7)
    ap.add_argument("--grad-batch-size", type=int, default=8)
    ap.add_argument("--grad-samples", type=int, default=20, help="gradients timed per variant and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--check-layer", default="bert.encoder.layer.0.attention.self.query",
                    help="qualified name of the layer of the accuracy check")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.num_grads % GRADS_PER_UPDATE:
        ap.error(f"--num-grads must be a multiple of {GRADS_PER_UPDATE}")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    task = SST2()
    model = task.load_finetuned()
    layers = OBSPruner(sparsity=0.9, structure="1x4").target_layers(model)
    if args.check_layer not in layers:
        ap.error(f"--check-layer must be one of: {', '.join(layers)}")
    model.train()
    batches = task.train_batches(args.grad_batch_size, 0)

    # real gradients: one fold buffer of every layer, and num_grads of the checked layer
    buf = {n: torch.empty(GRADS_PER_UPDATE, lin.weight.numel()) for n, lin in layers.items()}
    check = torch.empty(args.num_grads, layers[args.check_layer].weight.numel())
    with gradients_only_for(model, [lin.weight for lin in layers.values()]):
        for i in range(args.num_grads):
            model.zero_grad(set_to_none=True)
            inputs, labels = next(batches)
            task.loss(logits_of(model(**inputs)), labels).backward()
            check[i] = layers[args.check_layer].weight.grad.reshape(-1)
            if i < GRADS_PER_UPDATE:
                for n, lin in layers.items():
                    buf[n][i] = lin.weight.grad.reshape(-1)
    model.zero_grad(set_to_none=True)

    timed = [next(batches) for _ in range(args.grad_samples)]
    for method in METHODS:  # untimed: a method's first call pays one-off costs (allocations, kernel selection)
        time_inverse(layers, buf, args.num_grads, args.block_size, args.damp, method)
    load_at_start = os.getloadavg()[0]  # before the rounds: what else ran, not this benchmark's own load
    rounds = []
    for r in range(args.rounds):
        row: dict[str, float] = {}
        order = [True, False] if r % 2 == 0 else [False, True]
        for restricted in order:
            key = "gradient_targeted_s" if restricted else "gradient_all_params_s"
            row[key] = time_gradients(model, task, layers, timed, restricted)
        for method in (METHODS if r % 2 == 0 else METHODS[::-1]):
            row[f"inverse_{method}_s"] = time_inverse(layers, buf, args.num_grads, args.block_size, args.damp, method)
        row["gradient_speedup"] = row["gradient_all_params_s"] / row["gradient_targeted_s"]
        row["inverse_speedup"] = row["inverse_woodbury_s"] / row["inverse_direct_s"]
        rounds.append({k: round(v, 4) for k, v in row.items()})
        print(f"round {r + 1}: {rounds[-1]}", file=sys.stderr)
    med = {k: round(statistics.median(rw[k] for rw in rounds), 4) for k in rounds[0]}
    # one rebuild as the pruner does it: num_grads targeted gradients + the direct inverse
    med["rebuild_direct_targeted_s"] = round(args.num_grads * med["gradient_targeted_s"] + med["inverse_direct_s"], 2)
    med["rebuild_woodbury_all_params_s"] = round(args.num_grads * med["gradient_all_params_s"] + med["inverse_woodbury_s"], 2)
    out = {
        "cpu": cpu_display_name(fingerprint()), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "cpus_available": len(os.sched_getaffinity(0)), "loadavg_1min_start": load_at_start,
        "python": platform.python_version(), "model": "all-MiniLM-L6-v2 fine-tuned on SST-2 (sparsebench cache)",
        "command": shlex.join(["python", "scripts/bench_fisher.py", *(sys.argv[1:] if argv is None else argv)]),
        "targeted_weights": sum(lin.weight.numel() for lin in layers.values()),
        "settings": {"num_grads": args.num_grads, "block_size": args.block_size, "damp": args.damp,
                     "grad_batch_size": args.grad_batch_size, "grads_per_update": GRADS_PER_UPDATE,
                     "grad_samples": args.grad_samples, "rounds": args.rounds},
        "rounds": rounds, "median": med,
        "accuracy": {"layer": args.check_layer, **accuracy_check(check, args.block_size, args.damp)},
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
