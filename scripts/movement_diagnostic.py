#!/usr/bin/env python
"""Which weights would each score remove, and does the model survive it? A one-shot diagnostic
of movement pruning's criterion on SST-2 / MiniLM (Sanh, Wolf & Rush 2020).

From the dense fine-tuned model, trains ``--steps`` dense steps (batch 32, AdamW lr 1e-4, clip
1.0, distillation T = 2, α = 0.9, as the pruners' warm-up) while learning movement scores with
Adam at the paper's score lr 1e-2: one score set without penalty (hard movement's) and one per
``--lambdas`` value with soft movement's penalty ``λ·mean_l Σσ(S_l)/numel_l`` (constant λ).
Then masks the trained model at ``--sparsity`` by each ranking, with **no training after the
mask**, and evaluates each on all 872 dev sentences:

* magnitude |W| per layer, and a random mask per layer (references);
* hard movement S per layer (the paper's Top_v);
* soft movement S, one global ranking with the 0.5 % per-layer floor (the pruner's calibrated
  soft threshold), and per layer (to separate the ranking within a layer from the allocation
  across layers), per λ.

What it shows: how much of the model a criterion destroys before any recovery, the failure
that makes movement pruning collapse at short budgets. Per ranking: accuracy, predicted-class
counts, the collapse flag of the runner, the mean |W| of the weights it removes (magnitude
removes the smallest; a criterion blind to magnitude removes weights of average size), and the
sparsity of each encoder layer.

Output: one line per ranking on stdout and JSON (``--out``). Cost: ``--steps`` training steps
plus one evaluation per ranking (about 5 minutes on a quiet 2-core machine with the defaults).
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from accelerators.base import logits_of
from profiler.runner import PredictionCounter
from profiler.tasks.sst2 import SST2
from pruners.base import prunable_linears
from pruners.distill import Distiller
from pruners.movement_masks import MIN_KEEP
from pruners.scores import MovementScore
from pruners.structure import parse_structure


def learn_scores(task: SST2, model: torch.nn.Module, steps: int, lambdas: list[float], seed: int) -> dict[str, MovementScore]:
    """Train ``model`` dense for ``steps`` steps (distilled from its own dense copy) while stepping
    one score set per penalty (``"hard"``: none; ``"soft λ"``: constant λ). Returns the scores."""
    torch.manual_seed(seed)
    teacher = Distiller(model, 2.0, 0.9)
    layers = prunable_linears(model)
    scores = {"hard": MovementScore(layers)}
    scores.update({f"soft {lam:g}": MovementScore(layers, reg_lambda=(lambda _t, lam=lam: lam)) for lam in lambdas})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    batches = task.train_batches(32, seed)
    model.train()
    for _ in range(steps):
        inputs, labels = next(batches)
        logits = logits_of(model(**inputs))
        teacher.loss(inputs, logits, task.loss(logits, labels)).backward()
        for s in scores.values():
            s.accumulate()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    return scores


def evaluate_mask(task: SST2, model: torch.nn.Module, keep: dict[str, torch.Tensor]) -> dict:
    """Accuracy, predicted classes, collapse flag and mean |W| removed, for ``model`` masked by ``keep``."""
    masked = copy.deepcopy(model)
    layers = prunable_linears(masked)
    removed = [layers[n].weight.detach()[~k].abs() for n, k in keep.items()]
    with torch.no_grad():
        for n, k in keep.items():
            layers[n].weight.masked_fill_(~k, 0.0)
    counter = PredictionCounter(masked)
    acc = task.evaluate_metrics(counter)["accuracy"]
    by_layer: dict[str, list[int]] = {}  # encoder layer index → [removed, total]
    for n, k in keep.items():
        idx = n.split("layer.")[1].split(".")[0] if "layer." in n else n
        c = by_layer.setdefault(idx, [0, 0])
        c[0] += k.numel() - int(torch.count_nonzero(k))
        c[1] += k.numel()
    return {"accuracy": round(acc, 4), "classes": counter.classes,
            "collapsed": counter.collapse_fields(task, acc)["collapsed"],
            "mean_abs_weight_removed": round(float(torch.cat(removed).mean()), 5),
            "sparsity_by_encoder_layer": {i: round(r / t, 3) for i, (r, t) in by_layer.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40, help="dense steps of score learning (default 40)")
    ap.add_argument("--sparsity", type=float, default=0.5, help="one-shot sparsity of every mask (default 0.5)")
    ap.add_argument("--lambdas", default="400", help="comma-separated λ of soft movement (default 400, the paper's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="JSON output file")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    task, t0 = SST2(), time.time()
    model = task.load_finetuned()
    scores = learn_scores(task, model, a.steps, [float(x) for x in a.lambdas.split(",")], a.seed)
    weights = {n: lin.weight.detach().abs() for n, lin in prunable_linears(model).items()}
    g = torch.Generator().manual_seed(a.seed)
    st = parse_structure("unstructured")
    rankings = {"magnitude (layer)": (weights, "layer"),
                "random (layer)": ({n: torch.rand(w.shape, generator=g) for n, w in weights.items()}, "layer"),
                "hard movement (layer)": (scores["hard"].S, "layer")}
    for k, s in scores.items():
        if k != "hard":
            rankings.update({f"{k} movement (global)": (s.S, "global"), f"{k} movement (layer)": (s.S, "layer")})
    out = {"steps": a.steps, "sparsity": a.sparsity, "seed": a.seed, "threads": a.threads,
           "mean_abs_weight_all": round(float(torch.cat([w.flatten() for w in weights.values()]).mean()), 5),
           "rankings": {}}
    for name, (S, scope) in rankings.items():
        keep = st.masks(S, a.sparsity, scope, min_keep=MIN_KEEP if scope == "global" else 0.0)
        out["rankings"][name] = evaluate_mask(task, model, keep)
        print(f"{name:32s} {out['rankings'][name]}", flush=True)
    out["wall_s"] = round(time.time() - t0)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
