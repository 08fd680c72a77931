#!/usr/bin/env python
"""The recipes table: accuracy kept by each training-time pruner, from finished runs.

Reads the ``results.jsonl`` of one or more run directories (``sparsebench run`` of the configs in
``scripts/configs/recipes/`` and ``scripts/experiments/``) and prints, for every pruned model, its
accuracy under ``torch-fp32`` and ``sparse-int8`` (where the run has that accelerator), the
percentage of the dense model's accuracy *of the same run* (its ``pruner = "none"`` row under
``torch-fp32``), the pruner's training steps, wall time and steps/s (``pruner_training``), and
``collapsed`` / a failure's reason; with ``ema_decay``, the task metric of the last (un-averaged)
weights of the same run next to the pruner's name. Rows are sorted by target (structure, sparsity), then pruner.

Output: a Markdown table on stdout and, with ``--out``, JSON with one record per pruned model.

    python scripts/recipe_table.py runs/recipe-* [--out table.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _rows(run_dir: Path) -> list[dict]:
    path = run_dir / "results.jsonl"
    if not path.is_file():  # a run still in its first cell, or not a run directory
        print(f"skipped {run_dir}: no results.jsonl yet", file=sys.stderr)
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def records(run_dirs: list[Path]) -> list[dict]:
    """One record per (run, pruned model): accuracies, % of dense, training figures."""
    out = []
    for run in run_dirs:
        rows = _rows(run)
        dense = next((r.get("accuracy") for r in rows if r.get("pruner") == "none"
                      and r.get("accelerator") == "torch-fp32" and r.get("status") == "ok"), None)
        models: dict[str, dict] = {}
        for r in rows:
            if r.get("pruner") in (None, "none"):
                continue
            params = r.get("pruner_params") or {}
            rec = models.setdefault(r.get("pruner_label") or r["pruner"], {
                "run": run.name, "pruner": r["pruner"], "label": r.get("pruner_label"),
                "variant": params.get("variant"), "sparsity": params.get("sparsity"),
                "structure": params.get("structure", "unstructured"), "dense_accuracy": dense,
                "training": r.get("pruner_training"), "weight_average": r.get("pruner_weight_average"),
                "collapsed": r.get("collapsed"), "accuracy": {},
                "reason": None})
            if r.get("status") != "ok":
                rec["reason"] = r.get("reason")
                continue
            rec["accuracy"][r["accelerator"]] = r.get("accuracy")
        out.extend(models.values())
    out.sort(key=lambda m: (m["structure"] != "1x4", m["sparsity"] or 0, m["pruner"]))
    return out


def _pct(acc, dense) -> str:
    return f"{100 * acc / dense:.1f} %" if acc is not None and dense else "—"


def markdown(recs: list[dict]) -> str:
    lines = ["| target | pruner | torch-fp32 | % of dense | sparse-int8 | % of dense | steps | wall | steps/s | run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for m in recs:
        fp32, int8 = m["accuracy"].get("torch-fp32"), m["accuracy"].get("sparse-int8")
        tr = m["training"] or {}
        wall = tr.get("wall_time_s")
        name = m["pruner"] + (f" ({m['variant']})" if m.get("variant") else "")
        avg = m.get("weight_average") or {}
        last = next((v for k, v in avg.items() if k.endswith("_last_weights")), None)
        if last is not None:
            name += f" (ema {avg['decay']:g}; last weights {last:.4f} fp32)"
        if m["collapsed"]:
            name += " — collapsed"
        if m["reason"]:
            name += f" — failed: {m['reason']}"
        lines.append(f"| {m['sparsity']:.0%} {m['structure']} | {name} | "
                     f"{'—' if fp32 is None else f'{fp32:.4f}'} | {_pct(fp32, m['dense_accuracy'])} | "
                     f"{'—' if int8 is None else f'{int8:.4f}'} | {_pct(int8, m['dense_accuracy'])} | "
                     f"{tr.get('steps', '—')} | {'—' if wall is None else f'{wall / 60:.0f} min'} | "
                     f"{tr.get('steps_per_s', '—')} | {m['run']} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories")
    ap.add_argument("--out", type=Path, help="JSON output")
    args = ap.parse_args(argv)
    recs = records(args.runs)
    if not recs:
        sys.exit("no pruned models in these runs")
    print(markdown(recs))
    if args.out:
        args.out.write_text(json.dumps(recs, indent=1) + "\n")
        print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
