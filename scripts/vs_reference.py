#!/usr/bin/env python
"""Same-round latency ratios of a run's cells against one reference engine of their shape.

A run with ``schedule = "interleaved"`` times the cells of one shape (task, batch, sequence; every
thread count) in shared rounds and stores each cell's per-round median latency
(``latency_round_medians_s``). The run's own factors divide by dense torch fp32 and by the fastest
dense fp32 engine; this script divides by any reference of the same thread count — by default OpenVINO INT8 on the dense
model, the engine a user would pick instead of pruning — round by round: per shape, for every ok
cell of ``--accelerator`` (default ``sparse-int8``), the median over rounds of reference ÷ cell
(> 1: the cell is faster) with a bootstrap 95 % interval (``profiler.interleave.median_ratio``).

Each line also gives the cell's accuracy next to the same model's accuracy under ``--fp32``
(default ``torch-fp32``), the difference in points, and whether the model is flagged collapsed,
and the same-round ratio against the **fastest dense INT8 engine** of its group (lowest p50 among
the ``--reference-pruner`` cells whose ``compute_precision`` is ``int8``, the cell itself aside):
the reference a user reads may not be the fastest INT8 engine on their CPU (without VNNI,
ONNX Runtime INT8 can beat OpenVINO INT8).

    python scripts/vs_reference.py runs/peers-20261206-101500
    python scripts/vs_reference.py RUN_DIR --reference "openvino fp32" --accelerator "openvino int8"

Output: a table on stdout and, with ``--out``, JSON ``{"run_dir", "cpu", "reference": {...},
"cells": [{pruner_label, accelerator_label, batch_size, seq_len, threads, ratio, ratio_low,
ratio_high, rounds, latency_p50_s, reference_p50_s, fastest_int8_label, fastest_int8_ratio,
fastest_int8_ratio_low, fastest_int8_ratio_high, metric, metric_fp32, delta_points,
collapsed, attention_precision, thread_scaling, thread_scaling_low, thread_scaling_high, thread_scaling_rounds,
thread_scaling_reference_threads, reference_thread_scaling}, ...]}`` (thread scaling: the rows'
``thread_scaling_factor`` fields, the cell's and the reference's). A group without its reference
cell (a resumed run's new session) is skipped with a note on stderr. Exits 2 when the run has no
per-round medians (timed before they were stored, or not interleaved) or no cell is left to compare.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from profiler.hardware import cpu_display_name
from profiler.interleave import median_ratio, same_round_ratios
from profiler.rundir import RESULTS

SHAPE = ("task", "batch_size", "seq_len", "threads")
#: what else splits the runner's interleaved groups: cells differing here were never timed together
GROUP = ("task_params", "kernel_variant", "interleave_group_id")


def group_key(row: dict) -> tuple:
    """The interleaved group of ``row``: its shape, task parameters, kernel variant and timing
    session (``interleave_group_id``: a resumed run times its missing cells in a new session)."""
    return tuple(json.dumps(row.get(k), sort_keys=True, default=str) for k in (*SHAPE, *GROUP))


def read_rows(run_dir: Path) -> list[dict]:
    """The ok rows of ``run_dir``'s results file (the last row of a cell wins, as in a resumed run)."""
    rows: dict[str, dict] = {}
    with open(run_dir / RESULTS, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                rows[row["cell_id"]] = row
    return [r for r in rows.values() if r.get("status") == "ok"]


def compare(rows: list[dict], reference: str, reference_pruner: str, accelerator: str, fp32: str,
            skipped: list[str] | None = None) -> list[dict]:
    """One record per ok cell of ``accelerator``: its same-round ratio against the cell of
    ``reference`` (accelerator label) on ``reference_pruner`` (pruner label) of its shape.
    ValueError when the rows carry no round medians, or when a group has cells but no reference
    (with ``skipped`` a list, that group's reason is appended to it instead and the others go on)."""
    by_group: dict[tuple, list[dict]] = {}
    for r in rows:
        by_group.setdefault(group_key(r), []).append(r)
    fp32_metric = {(r.get("task"), json.dumps(r.get("task_params"), sort_keys=True, default=str), r.get("pruner_label")):
                   r.get("accuracy") for r in rows if r.get("accelerator_label") == fp32}
    out = []
    for _, group in sorted(by_group.items()):
        cells = [r for r in group if r.get("accelerator_label") == accelerator]
        if not cells:
            continue
        refs = [r for r in group if r.get("accelerator_label") == reference and r.get("pruner_label") == reference_pruner]
        if len(refs) != 1:
            where = {k: cells[0].get(k) for k in (*SHAPE, "kernel_variant")}
            why = (f"{len(refs)} ok cells of {reference!r} on {reference_pruner!r} timed with {accelerator!r} at {where} "
                   "(need exactly one; a resumed run records only its new cells, not the finished ones it timed again)")
            if skipped is None:
                raise ValueError(why)
            skipped.append(why)
            continue
        ref = refs[0]
        int8 = [r for r in group if r.get("pruner_label") == reference_pruner and r.get("compute_precision") == "int8"
                and r.get("latency_round_medians_s") and isinstance(r.get("latency_p50_s"), (int, float))]
        if ref.get("latency_round_medians_s") is None:
            raise ValueError("the rows hold no latency_round_medians_s: the run was not interleaved, or was timed "
                             "by a sparsebench that did not store them")
        for c in sorted(cells, key=lambda r: str(r.get("pruner_label"))):
            r = median_ratio(same_round_ratios(ref["latency_round_medians_s"], c.get("latency_round_medians_s") or []))
            best = min((x for x in int8 if x is not c), key=lambda x: x["latency_p50_s"], default=None)
            rb = best and median_ratio(same_round_ratios(best["latency_round_medians_s"],
                                                         c.get("latency_round_medians_s") or []))
            metric = c.get("accuracy")
            base = fp32_metric.get((c.get("task"), json.dumps(c.get("task_params"), sort_keys=True, default=str),
                                    c.get("pruner_label")))
            out.append({
                **{k: c.get(k) for k in ("pruner_label", "accelerator_label", *SHAPE, "kernel_variant")},
                "ratio": r.median if r else None, "ratio_low": r.low if r else None, "ratio_high": r.high if r else None,
                "rounds": r.n_rounds if r else 0, "latency_p50_s": c.get("latency_p50_s"),
                "reference_p50_s": ref.get("latency_p50_s"),
                "fastest_int8_label": best and best.get("accelerator_label"),
                "fastest_int8_ratio": rb.median if rb else None, "fastest_int8_ratio_low": rb.low if rb else None,
                "fastest_int8_ratio_high": rb.high if rb else None, "metric": metric, "metric_fp32": base,
                "delta_points": (100 * (metric - base) if metric is not None and base is not None else None),
                "collapsed": c.get("collapsed"), "attention_precision": c.get("attention_precision"),
                # the fewest threads -> these, same rounds (null where the run timed thread counts apart)
                "thread_scaling": c.get("thread_scaling_factor"), "thread_scaling_low": c.get("thread_scaling_factor_low"),
                "thread_scaling_high": c.get("thread_scaling_factor_high"),
                "thread_scaling_rounds": c.get("thread_scaling_factor_rounds"),
                "thread_scaling_reference_threads": c.get("thread_scaling_reference_threads"),
                "reference_thread_scaling": ref.get("thread_scaling_factor"),
            })
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--reference", default="openvino int8", help="accelerator label of the reference (default: %(default)s)")
    ap.add_argument("--reference-pruner", default="none", help="pruner label of the reference's model (default: %(default)s)")
    ap.add_argument("--accelerator", default="sparse-int8", help="accelerator label of the cells compared (default: %(default)s)")
    ap.add_argument("--fp32", default="torch-fp32", help="accelerator label whose accuracy is the model's own (default: %(default)s)")
    ap.add_argument("--out", type=Path, help="JSON output file")
    args = ap.parse_args(argv)
    skipped: list[str] = []
    try:
        records = compare(read_rows(args.run_dir), args.reference, args.reference_pruner, args.accelerator, args.fp32,
                          skipped)
    except (OSError, ValueError) as exc:
        print(f"vs_reference: {exc}", file=sys.stderr)
        return 2
    for why in skipped:
        print(f"vs_reference: skipped: {why}", file=sys.stderr)
    if not records:
        print(f"vs_reference: no ok cell of {args.accelerator!r} in {args.run_dir}", file=sys.stderr)
        return 2
    print(f"{args.accelerator} ÷ {args.reference} on {args.reference_pruner} (same-round median, > 1: faster)")
    print(f"{'pruner':<28} {'b':>3} {'t':>2} {'ratio':>6} {'95% CI':>14} {'rounds':>6} {'p50 ms':>8} {'ref ms':>8} {'acc':>7} {'fp32':>7} {'Δ pt':>6}  vs fastest dense INT8")
    for r in records:
        fmt = lambda v, spec: format(v, spec) if v is not None else "—"  # noqa: E731
        ci = f"[{fmt(r['ratio_low'], '.2f')}, {fmt(r['ratio_high'], '.2f')}]"
        print(f"{str(r['pruner_label'])[:28]:<28} {r['batch_size']:>3} {r['threads']:>2} {fmt(r['ratio'], '6.2f')} {ci:>14} "
              f"{r['rounds']:>6} {fmt(r['latency_p50_s'] and 1e3 * r['latency_p50_s'], '8.2f')} "
              f"{fmt(r['reference_p50_s'] and 1e3 * r['reference_p50_s'], '8.2f')} {fmt(r['metric'], '7.4f')} "
              f"{fmt(r['metric_fp32'], '7.4f')} {fmt(r['delta_points'], '+6.2f')}  "
              f"{fmt(r['fastest_int8_ratio'], '.2f')} ({r['fastest_int8_label'] or '—'}){' collapsed' if r['collapsed'] else ''}")
    if args.out:
        hw = {}
        if (args.run_dir / "hardware.json").is_file():
            hw = json.loads((args.run_dir / "hardware.json").read_text())
        args.out.write_text(json.dumps({
            "run_dir": args.run_dir.name, "cpu": cpu_display_name(hw) if hw else None, "hardware": hw,
            "reference": {"accelerator_label": args.reference, "pruner_label": args.reference_pruner},
            # quoted as a shell would need it: labels hold spaces
            "command": shlex.join(["python", "scripts/vs_reference.py", *(argv if argv is not None else sys.argv[1:])]),
            "cells": records}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
