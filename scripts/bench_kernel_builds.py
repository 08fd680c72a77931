#!/usr/bin/env python
"""Two builds of the C extension side by side: what a kernel change costs or buys, op by op.

Loads the ``_sparse_kernels`` shared object of each build (``--base``: e.g. one built from an
earlier commit with ``python setup.py build_ext --build-lib DIR``; ``--new``: default, this
checkout's) into one process and times the same calls on the same buffers in interleaved rounds
(the order alternates per round; each round's time is the best of ``--repeats`` calls). The ratio
of a case is the median over rounds of the same-round ratio new ÷ base (< 1: the new build is
faster), with its range over the rounds.

Cases (random data, 12 heads of 32 channels, sequence 128, batch ``--batch``, ``--threads``):

* ``attention_int8``: ``attention(qkv, precision="int8")`` on fp32 q | k | v rows (MiniLM's 384).
* ``qkv_attention_int8``: the stacked q / k / v product (90 % sparse in 1x4 blocks, int8 weights)
  and INT8 attention in one call.
* ``spmm_int8``: the product alone into fp32 rows.

Output: a table on stdout and JSON (``--out``, default runs/bench_kernel_builds-<time>.json) with
the CPU, the command line, both shared objects and one record per case.

    python scripts/bench_kernel_builds.py --base BASE_BUILD/accelerators/_sparse_kernels*.so
"""
from __future__ import annotations

import argparse
import datetime as dt
import glob
import hashlib
import importlib.util
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HEADS, HEAD_DIM, SEQ, DENSITY = 12, 32, 128, 0.1


def load_build(path: str, alias: str) -> Any:
    """The extension module in the shared object ``path`` (its init function fixes the module
    name, so each build is loaded from its own spec and kept apart by the caller)."""
    matches = glob.glob(path)
    if len(matches) != 1:
        raise SystemExit(f"{alias}: {path!r} matches {len(matches)} files; give one shared object")
    spec = importlib.util.spec_from_file_location("_sparse_kernels", matches[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pack_qkv(sk: Any, w: np.ndarray) -> Any:
    """``w`` (int8 (3H, H), zeros in whole 1x4 blocks) as the build's int8 1x4 matrix."""
    n_out, n_in = w.shape
    quads = w.reshape(n_out, n_in // 4, 4)
    rows = [np.flatnonzero(quads[o].any(1)) for o in range(n_out)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    return sk.pack_int8(indptr, np.concatenate(rows).astype(np.int32),
                        np.concatenate([quads[o][r] for o, r in enumerate(rows)]).astype(np.int8),
                        np.full(n_out, 0.01, np.float32), (n_out, n_in))


def cases(sk: Any, batch: int, threads: int, rng_seed: int = 0) -> dict[str, Callable[[], None]]:
    """Each case's call on this build, over buffers made from ``rng_seed`` (the same for both builds)."""
    rng = np.random.default_rng(rng_seed)
    hidden = HEADS * HEAD_DIM
    qkv = rng.standard_normal((batch, SEQ, 3 * hidden)).astype(np.float32)
    x = rng.standard_normal((batch, SEQ, hidden)).astype(np.float32)
    keep = rng.random((3 * hidden, hidden // 4)) < DENSITY
    w = (rng.integers(-127, 128, (3 * hidden, hidden)) * np.repeat(keep, 4, axis=1)).astype(np.int8)
    mat = pack_qkv(sk, w)
    out = np.empty((batch, SEQ, hidden), np.float32)
    rows = np.empty((batch * SEQ, 3 * hidden), np.float32)
    return {
        "attention_int8": lambda: sk.attention(qkv, out, HEADS, precision="int8", threads=threads),
        "qkv_attention_int8": lambda: sk.qkv_attention_int8(mat, x, out, HEADS, threads=threads),
        "spmm_int8": lambda: sk.spmm_int8(mat, x.reshape(-1, hidden), rows, threads=threads),
    }


def best_of(call: Callable[[], None], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the base build's shared object (a glob matching one file)")
    ap.add_argument("--new", default=str(ROOT / "accelerators" / "_sparse_kernels*.so"),
                    help="the new build's shared object (default: this checkout's)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=31)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    builds = {"base": load_build(args.base, "--base"), "new": load_build(args.new, "--new")}
    calls = {k: cases(sk, args.batch, args.threads) for k, sk in builds.items()}
    records = []
    for case in calls["new"]:
        for k in builds:
            calls[k][case]()  # warm-up: scratch buffers, page faults
        times: dict[str, list[float]] = {"base": [], "new": []}
        for r in range(args.rounds):
            for k in (("base", "new") if r % 2 == 0 else ("new", "base")):
                times[k].append(best_of(calls[k][case], args.repeats))
        ratios = [n / b for n, b in zip(times["new"], times["base"])]
        records.append({"case": case, "batch": args.batch, "seq_len": SEQ, "threads": args.threads,
                        "base_median_s": statistics.median(times["base"]), "new_median_s": statistics.median(times["new"]),
                        "new_over_base": statistics.median(ratios), "new_over_base_min": min(ratios),
                        "new_over_base_max": max(ratios), "rounds": args.rounds})
        rec = records[-1]
        print(f"{case:20s} base {rec['base_median_s'] * 1e3:8.2f} ms  new {rec['new_median_s'] * 1e3:8.2f} ms  "
              f"new/base {rec['new_over_base']:.3f} ({rec['new_over_base_min']:.3f}-{rec['new_over_base_max']:.3f})")
    from profiler.hardware import cpu_display_name, fingerprint

    out = args.out or ROOT / "runs" / f"bench_kernel_builds-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    # the builds by content, not by where they lay on this machine
    shown = {k: {"file": Path(glob.glob(getattr(args, k))[0]).name,
                 "sha256": hashlib.sha256(Path(glob.glob(getattr(args, k))[0]).read_bytes()).hexdigest()[:16]}
             for k in builds}
    # the builds as placeholders (their file names and hashes are in "builds"); --new only when given
    given_new = args.new != ap.get_default("new")
    command = ["python", "scripts/bench_kernel_builds.py", "--base", "BASE.so", *(["--new", "NEW.so"] if given_new else []),
               *[f"--{k}={getattr(args, k)}" for k in ("batch", "threads", "rounds", "repeats")]]
    out.write_text(json.dumps({"cpu": cpu_display_name(fingerprint()), "python": platform.python_version(),
                               "command": shlex.join(command), "builds": shown, "records": records}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
