#!/usr/bin/env python
"""Does a pruned student fail to fit its teacher, or fit it and fail to generalise? A diagnostic
for distilled pruned models on a text-classification task (default SST-2 / MiniLM).

For a teacher (the dense fine-tuned model) and one or more students (pruned models, each a folder
of the model cache: ``~/.cache/sparsebench/pruned/<...>``, or any saved sequence classifier), all
in eval mode, fp32:

* on ``--train-sample`` training sentences drawn with ``--seed``: the share whose predicted class
  the student and the teacher agree on, and the mean of the distillation terms of the pruners'
  loss (``pruners.distill``): ``T²·KL`` at ``--temperature`` and the per-layer hidden-state MSE;
* on ``--train-sample`` *long* training items (at least ``--long-tokens`` word pieces, [CLS] and
  [SEP] included): the same, to tell "cannot fit long inputs" from "does not generalise";
* on the whole eval split: the same agreement and both models' task metric;
* each of these split by length (``--length-edges``, word pieces): agreement and metrics per bucket.

Agreement near 1 on training sentences with a lower one on the eval split means the student has
the capacity to copy the teacher where it was trained and the gap is generalisation (what data
augmentation addresses); low agreement on both means it cannot fit the teacher at all.

Output: one line per student on stdout and JSON (``--out``). Cost: a forward pass of teacher and
student over the sample and the eval split (about a minute per student for SST-2 on 2 cores).

    python scripts/teacher_agreement.py --teacher ~/.cache/sparsebench/finetuned/sst2-<key> \\
        ~/.cache/sparsebench/pruned/sst2-obs-<key> [--out agreement.json]
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch
from torch.nn import functional as F

from accelerators.base import logits_of
from pruners.distill import hidden_mse


@torch.inference_mode()
def _outputs(model, task, examples, batch_size: int = 64):
    """Per batch of ``examples`` in order: (inputs, labels, logits (batch, labels) float32, the encoder
    layers' hidden states)."""
    for s in range(0, len(examples), batch_size):
        inputs, labels = task.collate(examples[s : s + batch_size])
        out = model(**inputs, output_hidden_states=True)
        yield inputs, labels, logits_of(out).float(), out.hidden_states[1:]


@torch.inference_mode()
def compare(teacher, student, task, examples, temperature: float, length_edges: tuple[int, ...] = ()) -> dict:
    """Agreement, T²·KL and per-layer hidden MSE of ``student`` to ``teacher`` over ``examples``,
    and each model's task metric on them; with ``length_edges`` (ascending word-piece counts) also
    ``by_length``: per bucket ``[lo, hi)`` of ``len(input_ids)`` its examples, agreement and both
    models' metric (buckets with no example left out)."""
    agree = n = 0
    kl = 0.0
    layers: list[float] = []
    t_all, s_all, y_all = [], [], []
    for (inputs, labels, t, th), (_, _, s, sh) in zip(_outputs(teacher, task, examples), _outputs(student, task, examples)):
        b = labels.shape[0]
        agree += int((t.argmax(-1) == s.argmax(-1)).sum())
        n += b
        T = temperature
        kl += float(F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="sum")) * T * T
        per = [float(hidden_mse([a], [c], inputs["attention_mask"])) * b for a, c in zip(sh, th)]
        layers = [x + y for x, y in zip(layers, per)] if layers else per
        t_all.append(t), s_all.append(s), y_all.append(labels)
    t_all, s_all, y_all = torch.cat(t_all), torch.cat(s_all), torch.cat(y_all)
    out = {"examples": n, "agreement": agree / n, "t2_kl_mean": kl / n, "hidden_mse_per_layer": [x / n for x in layers],
           "teacher_metric": task.metric(t_all, y_all), "student_metric": task.metric(s_all, y_all)}
    if length_edges:
        lengths = torch.tensor([len(e.input_ids) for e in examples])
        bounds = [0, *length_edges, int(lengths.max()) + 1]
        out["by_length"] = []
        for lo, hi in zip(bounds, bounds[1:]):
            sel = (lengths >= lo) & (lengths < hi)
            if sel.any():
                t, s, y = t_all[sel], s_all[sel], y_all[sel]
                out["by_length"].append({"tokens": [lo, hi], "examples": int(sel.sum()),
                                         "agreement": float((t.argmax(-1) == s.argmax(-1)).float().mean()),
                                         "teacher_metric": task.metric(t, y), "student_metric": task.metric(s, y)})
    return out


def _edges(text: str) -> tuple[int, ...]:
    """``"16,24,32"`` -> (16, 24, 32): ascending positive word-piece counts ("" = no buckets)."""
    try:
        edges = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(e <= 0 for e in edges) or list(edges) != sorted(set(edges)):
        raise argparse.ArgumentTypeError(f"edges must be positive and strictly ascending, got {text!r}")
    return edges


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("students", nargs="+", type=Path, help="pruned model folders")
    ap.add_argument("--teacher", type=Path, required=True, help="the dense fine-tuned model's folder")
    ap.add_argument("--task", default="sst2", help="task name (default sst2)")
    ap.add_argument("--train-sample", type=int, default=1024, help="training sentences to compare on (default 1024)")
    ap.add_argument("--long-tokens", type=int, default=20,
                    help="word pieces from which a training item counts as long (default 20)")
    ap.add_argument("--length-edges", type=_edges, default=(16, 24, 32),
                    help="bucket edges in word pieces, comma-separated, ascending (default 16,24,32)")
    ap.add_argument("--temperature", type=float, default=2.0, help="T of the KL term (default 2, the recipes')")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    from profiler.plugins import TASKS

    torch.set_num_threads(args.threads)
    task = TASKS.build(args.task, {}, args.task)
    train = task.train_examples()
    rng = random.Random(args.seed)
    sample = [train[i] for i in rng.sample(range(len(train)), min(args.train_sample, len(train)))]
    longs = [e for e in train if len(e.input_ids) >= args.long_tokens]
    long_sample = rng.sample(longs, min(args.train_sample, len(longs)))
    edges = args.length_edges
    teacher = task.load_saved(args.teacher).eval()
    results = []
    for path in args.students:
        student = task.load_saved(path).eval()
        r = {"student": path.name, "train_sample": compare(teacher, student, task, sample, args.temperature, edges),
             "train_long_sample": compare(teacher, student, task, long_sample, args.temperature, edges)
             if long_sample else None,
             "eval_split": compare(teacher, student, task, task.eval_examples(), args.temperature, edges)}
        results.append(r)
        tr, ev, lg = r["train_sample"], r["eval_split"], r["train_long_sample"]
        buckets = ", ".join(f"{b['tokens'][0]}-{b['tokens'][1] - 1}: {b['agreement']:.3f}" for b in ev.get("by_length", []))
        print(f"{path.name}: agreement train {tr['agreement']:.4f} (long items "
              f"{lg['agreement'] if lg else float('nan'):.4f}) / eval {ev['agreement']:.4f} (by length: {buckets}); "
              f"{task.metric_name} student {ev['student_metric']:.4f} teacher {ev['teacher_metric']:.4f}; train T²KL "
              f"{tr['t2_kl_mean']:.4f}, hidden MSE per layer {', '.join(f'{x:.3f}' for x in tr['hidden_mse_per_layer'])}")
    if args.out:
        from profiler.hardware import cpu_display_name, fingerprint

        args.out.write_text(json.dumps({"cpu": cpu_display_name(fingerprint()), "teacher": args.teacher.name,
                                        "task": args.task, "train_sample": len(sample), "seed": args.seed,
                                        "long_tokens": args.long_tokens, "train_long_items": len(longs),
                                        "length_edges": list(edges),
                                        "threads": args.threads, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
