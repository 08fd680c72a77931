#!/usr/bin/env python
"""How far apart are the savings factors of two runs of one config on one machine?

Reads two run directories (the same config run twice in a row), joins their ok rows on
``cell_id`` and, for every savings factor both rows carry (``latency_savings_factor``,
``latency_savings_vs_best_dense``; energy factors as the report computes them), gives the
relative difference second ÷ first − 1. A reference cell (the baseline, or the best dense engine,
whose own factor is exactly 1 in both runs) is left out: it would count as a perfect pair. The
worst pair is what a reader should expect between two runs; a trustworthy setup keeps it within ±5 %.

Output: the worst pairs on stdout and JSON (``--out``): ``{"worst": {...}, "within_5pct": bool,
"pairs": [{cell_id, label, batch_size, threads, factor, first, second, rel_diff}, ...]}``.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from reports.frame import add_savings, load_rows

FACTORS = ("latency_savings_factor", "latency_savings_vs_best_dense", "energy_savings_factor",
           "energy_savings_vs_best_dense")


def pairs(run_a: Path, run_b: Path) -> list[dict]:
    """One entry per (cell, factor) present and finite in both runs."""
    a, _ = load_rows(run_a)
    b, _ = load_rows(run_b)
    a, b = add_savings(a), add_savings(b)
    a = a[a["status"] == "ok"].set_index("cell_id")
    b = b[b["status"] == "ok"].set_index("cell_id")
    out = []
    for cid in a.index.intersection(b.index):
        ra, rb = a.loc[cid], b.loc[cid]
        for f in FACTORS:
            x, y = ra.get(f), rb.get(f)
            if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in (x, y)):
                continue
            if x == 1.0 and y == 1.0:  # the reference itself in both runs: 1 by definition
                continue
            out.append({"cell_id": cid, "label": f"{ra['pruner_label']} + {ra['accelerator_label']}",
                        "batch_size": int(ra["batch_size"]), "threads": int(ra["threads"]), "factor": f,
                        "first": float(x), "second": float(y), "rel_diff": float(y / x - 1)})
    return sorted(out, key=lambda p: -abs(p["rel_diff"]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--show", type=int, default=10, help="worst pairs printed")
    args = ap.parse_args(argv)
    ps = pairs(args.first, args.second)
    by_factor = {f: max((abs(p["rel_diff"]) for p in ps if p["factor"] == f), default=None) for f in FACTORS}
    result = {"first": str(args.first), "second": str(args.second), "n_pairs": len(ps),
              "worst": ps[0] if ps else None, "worst_by_factor": by_factor,
              "within_5pct": all(abs(p["rel_diff"]) <= 0.05 for p in ps), "pairs": ps}
    for p in ps[: args.show]:
        print(f"{p['rel_diff']:+7.1%}  {p['factor']:32s} b{p['batch_size']} t{p['threads']}  {p['label']}  "
              f"{p['first']:.3f} -> {p['second']:.3f}")
    print(f"{len(ps)} pairs; worst by factor: " + ", ".join(f"{k} {v:.1%}" for k, v in by_factor.items() if v is not None))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
