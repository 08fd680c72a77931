#!/usr/bin/env python
"""The recipes table: accuracy kept by each training-time pruner, from finished runs.

Reads the ``results.jsonl`` of one or more run directories (``sparsebench run`` of the configs in
``scripts/configs/recipes/`` and ``scripts/experiments/``) and prints, for every pruned model, its
accuracy under ``torch-fp32`` and ``sparse-int8`` (where the run has that accelerator), the
percentage of the dense model's accuracy *of the same run* (its ``pruner = "none"`` row under
``torch-fp32``), the pruner's training steps, wall time and steps/s (``pruner_training``), and
``collapsed`` / a failure's reason; with ``ema_decay``, the task metric of the last (un-averaged)
weights of the same run next to the pruner's name. Rows are sorted with the 1x4 targets first, then by
sparsity, then pruner (the other structures share one group, ordered by sparsity).

With ``--seeds``, a second table pools the models whose pruner settings differ only in ``seed``
(a setting an older run did not record counts as the pruner's default): the seeds, and the mean,
minimum and maximum of the % of dense under each engine — the seed spread a one-seed gain has to
clear. Each model's % is against the dense model of its own run.

With ``--engines``, a third table gives every engine's accuracy on each model of a run (the dense one
too) and its difference in points from the same model under ``torch-fp32``: what each INT8 path costs
(``scripts/configs/peers_accuracy.toml`` runs the INT8 engines on trained models for this).

Output: Markdown tables on stdout and, with ``--out``, JSON with one record per pruned model (with
``--seeds`` or ``--engines``: ``{"models", "seed_groups", "engines"}``).

    python scripts/recipe_table.py runs/recipe-* [--seeds] [--engines] [--out table.json]
"""
from __future__ import annotations

import argparse
import inspect
import json
import statistics
import sys
from pathlib import Path


def _rows(run_dir: Path) -> list[dict]:
    """The rows of ``run_dir/results.jsonl``; a line that is not a JSON object (the torn last line
    of a killed or running run) is skipped with a warning naming it."""
    if not run_dir.is_dir():
        print(f"skipped {run_dir}: not a directory", file=sys.stderr)
        return []
    path = run_dir / "results.jsonl"
    if not path.is_file():  # a run still in its first cell, or not a run directory
        print(f"skipped {run_dir}: no results.jsonl yet", file=sys.stderr)
        return []
    rows = []
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            print(f"skipped {path}:{i}: not a JSON object", file=sys.stderr)
            continue
        rows.append(row)
    return rows


def records(run_dirs: list[Path]) -> list[dict]:
    """One record per (run, pruned model): accuracies (by engine, the plainly labelled cell; variant
    cells such as ``sparse-int8 fallback fp32`` also under their label), % of dense, training figures."""
    out = []
    for run in dict.fromkeys(p.resolve() for p in run_dirs):  # a run named twice counts once
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
                "collapsed": r.get("collapsed"), "accuracy": {}, "params": params,
                "reason": None})
            if r.get("status") != "ok":
                rec["reason"] = r.get("reason")
                continue
            engine, label = r.get("accelerator", "?"), r.get("accelerator_label")
            if label and label != engine:  # a variant cell (e.g. "sparse-int8 fallback fp32"): its own key,
                rec["accuracy"][label] = r.get("accuracy")  # the table's engine column keeps the plain one
                rec["accuracy"].setdefault(engine, r.get("accuracy"))
            else:
                rec["accuracy"][engine] = r.get("accuracy")
        out.extend(models.values())
    out.sort(key=lambda m: (m["structure"] != "1x4", m["sparsity"] or 0, m["pruner"]))
    return out


def _target(m: dict) -> str:
    return f"{m['sparsity']:.0%} {m['structure']}" if isinstance(m["sparsity"], (int, float)) else f"— {m['structure']}"


def _share(acc, dense) -> float | None:
    """``acc`` as a percentage of ``dense`` (None when either is missing)."""
    return 100 * acc / dense if acc is not None and dense else None


def _pct(acc, dense) -> str:
    share = _share(acc, dense)
    return "—" if share is None else f"{share:.1f} %"


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
        lines.append(f"| {_target(m)} | {name} | "
                     f"{'—' if fp32 is None else f'{fp32:.4f}'} | {_pct(fp32, m['dense_accuracy'])} | "
                     f"{'—' if int8 is None else f'{int8:.4f}'} | {_pct(int8, m['dense_accuracy'])} | "
                     f"{tr.get('steps', '—')} | {'—' if wall is None else f'{wall / 60:.0f} min'} | "
                     f"{tr.get('steps_per_s', '—')} | {m['run']} |")
    return "\n".join(lines)


def engine_deltas(run_dirs: list[Path]) -> list[dict]:
    """One record per (run, model), the dense model included: each engine's accuracy (by accelerator
    label: ``openvino int8``, ``sparse-int8``...) and its difference from the same model under
    ``torch-fp32`` in points (100 × accuracy difference) — what INT8 costs on that model."""
    out = []
    for run in dict.fromkeys(p.resolve() for p in run_dirs):
        models: dict[str, dict] = {}
        for r in _rows(run):
            if r.get("status") != "ok" or r.get("accuracy") is None:
                continue
            model = "dense" if r.get("pruner") == "none" else (r.get("pruner_label") or r.get("pruner", "?"))
            rec = models.setdefault(model, {"run": run.name, "model": model, "collapsed": False, "accuracy": {}})
            rec["accuracy"][r.get("accelerator_label") or r.get("accelerator", "?")] = r["accuracy"]
            rec["collapsed"] = rec["collapsed"] or bool(r.get("collapsed"))
        for rec in models.values():
            base = rec["accuracy"].get("torch-fp32")
            rec["points_vs_torch_fp32"] = {e: None if base is None else round(100 * (a - base), 2)
                                           for e, a in rec["accuracy"].items() if e != "torch-fp32"}
        out.extend(models.values())
    return out


def engines_markdown(recs: list[dict]) -> str:
    engines = list(dict.fromkeys(e for m in recs for e in m["points_vs_torch_fp32"]))
    lines = ["| model | torch-fp32 | " + " | ".join(f"{e} (points)" for e in engines) + " | run |",
             "|---|---|" + "---|" * len(engines) + "---|"]
    for m in recs:
        base = m["accuracy"].get("torch-fp32")
        cells = [("—" if e not in m["accuracy"] else f"{m['accuracy'][e]:.4f} ({m['points_vs_torch_fp32'][e]:+.2f})"
                  if m["points_vs_torch_fp32"][e] is not None else f"{m['accuracy'][e]:.4f}") for e in engines]
        lines.append(f"| {m['model']}{' — collapsed' if m['collapsed'] else ''} | {'—' if base is None else f'{base:.4f}'} | "
                     + " | ".join(cells) + f" | {m['run']} |")
    return "\n".join(lines)


def _defaults(pruner: str) -> dict:
    """The constructor defaults of built-in pruner ``pruner`` ({} when it is not one)."""
    import profiler.plugins  # noqa: F401  (fills the registry)
    from profiler.registry import PRUNERS

    if pruner not in PRUNERS:
        return {}
    return {k: p.default for k, p in PRUNERS.params(pruner).items() if p.default is not inspect.Parameter.empty}


def seed_groups(recs: list[dict]) -> list[dict]:
    """Pool the records whose pruner and settings are equal but for ``seed``.

    Returns one dict per setting (in the order of first appearance): ``pruner``, ``structure``,
    ``sparsity``, ``params`` (without ``seed``), ``seeds`` (list, one per model), ``runs`` and
    ``pct_of_dense``: {engine: {"mean", "min", "max", "n"}} in percent, over the models with that
    engine's accuracy and their run's dense accuracy.
    """
    groups: dict[str, dict] = {}
    defaults: dict[str, dict] = {}
    for m in recs:
        if m["pruner"] not in defaults:
            defaults[m["pruner"]] = _defaults(m["pruner"])
        params = {**defaults[m["pruner"]], **(m.get("params") or {})}
        seed = params.pop("seed", None)
        key = json.dumps([m["pruner"], params], sort_keys=True, default=str)
        g = groups.setdefault(key, {"pruner": m["pruner"], "structure": m["structure"], "sparsity": m["sparsity"],
                                    "params": params, "seeds": [], "runs": [], "_pct": {}})
        g["seeds"].append(seed)
        g["runs"].append(m["run"])
        for engine, acc in m["accuracy"].items():
            share = _share(acc, m["dense_accuracy"])
            if share is not None:
                g["_pct"].setdefault(engine, []).append(share)
    out = []
    for g in groups.values():
        g["pct_of_dense"] = {e: {"mean": statistics.fmean(v), "min": min(v), "max": max(v), "n": len(v)}
                             for e, v in g.pop("_pct").items()}
        out.append(g)
    return out


def seeds_markdown(groups: list[dict]) -> str:
    """Markdown: one row per setting, the seeds and the % of dense (mean, min–max) per engine."""
    def cell(g: dict, engine: str) -> str:
        s = g["pct_of_dense"].get(engine)
        if s is None:
            return "— | —"
        return f"{s['mean']:.1f} % | {s['min']:.1f}–{s['max']:.1f} %"

    def target(g: dict) -> tuple:
        return g["pruner"], g["structure"], g["sparsity"]

    def differs(g: dict) -> list[str]:  # the settings that tell this row from others of its target
        peers = [h for h in groups if target(h) == target(g)]
        return sorted(k for k in g["params"]
                      if len({json.dumps(h["params"].get(k), default=str) for h in peers}) > 1)

    lines = ["| target | pruner | settings that differ | seeds | sparse-int8: mean % of dense | min–max "
             "| torch-fp32: mean % of dense | min–max |", "|---|---|---|---|---|---|---|---|"]
    for g in groups:
        setting = ", ".join(f"{k} = {g['params'][k]}" for k in differs(g)) or "—"
        lines.append(f"| {_target(g)} | {g['pruner']} | {setting} | "
                     f"{', '.join(str(s) for s in g['seeds'])} | {cell(g, 'sparse-int8')} | {cell(g, 'torch-fp32')} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories")
    ap.add_argument("--seeds", action="store_true",
                    help="also pool the models whose settings differ only in seed (mean, min-max)")
    ap.add_argument("--engines", action="store_true",
                    help="also every engine's accuracy against torch-fp32 on the same model, the dense one included")
    ap.add_argument("--out", type=Path, help="JSON output")
    args = ap.parse_args(argv)
    recs = records(args.runs)
    if not recs:
        sys.exit("no pruned models in these runs")
    print(markdown(recs))
    groups = seed_groups(recs) if args.seeds else None
    if groups is not None:
        print()
        print(seeds_markdown(groups))
    deltas = engine_deltas(args.runs) if args.engines else None
    if deltas is not None:
        print()
        print(engines_markdown(deltas))
    if args.out:
        payload = recs if groups is None and deltas is None else {
            "models": recs, **({"seed_groups": groups} if groups is not None else {}),
            **({"engines": deltas} if deltas is not None else {})}
        args.out.write_text(json.dumps(payload, indent=1, default=str) + "\n")
        print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
