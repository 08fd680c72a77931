#!/usr/bin/env python
"""Could AMX tiles run a pruned model's products faster than VNNI, and faster than dense AMX?

An AMX INT8 tile product (``tdpbusd``) multiplies 16 tokens × 64 input channels of activations by 64
input × 16 output channels of weights: 16 × 16 × 64 = 16,384 multiply-adds, one every 16 cycles on a
Sapphire Rapids core (2,048 INT8 operations per cycle: Intel® 64 and IA-32 Architectures
Optimization Reference Manual, "Intel AMX"). Our VNNI kernels instead issue one ``vpdpbusd`` per
stored 1 x 4 quad and 16 tokens (64 multiply-adds; two per cycle on a core with two 512-bit FMA
units: accelerators/_csrc/README.md measured 6.5 G independent ``vpdpbusd``/s on an Intel Xeon
core, and 2.9–4.5 G/s, 45–70 % of that, inside the products). A sparse weight matrix can feed AMX
in two ways, counted here from a model's actual zeros:

- **aligned**: the weight cut into fixed 16-output × 64-input tiles, all-zero tiles skipped;
- **gathered**: the rows cut into groups of 16 output channels, each group's *union* of non-empty
  quads packed 16 quads to a tile (the activations' matching quads gathered alongside), either in
  the model's row order or after a greedy grouping of rows with similar supports (a row
  permutation is free for a kernel that writes each output row back through an index).

For every encoder Linear it counts stored quads, dense tiles and both kinds of sparse tiles, then
turns them into cycles per 16 tokens at peak issue rates: the products alone, at peak. Not
counted: tile loads, packing, the rest of the model, and for the gathered schedule the operand
each tile needs of its own (a gathered tile serves one row group only, so its 1 KiB of activations
is assembled for it: about as much work as the product, so that bound may be ~2× optimistic). The
ratios compare each schedule to dense AMX at its peak tile rate — what OpenVINO INT8 issues on a
CPU with AMX; its sparse-weights decompression saves weight traffic and still issues dense tiles.
Above 1 a schedule could beat it; below 1 it cannot beat a dense AMX kernel running at peak. A
ratio near 1 decides nothing: neither kernel runs at peak.

Input: model folders holding ``model.safetensors`` (``sparsebench export``, or the pruned-model
cache). Output: a table on stdout and, with ``--out``, JSON (a ratio of a matrix with no work is
``null``).

    python scripts/amx_tile_occupancy.py MODEL_DIR [MODEL_DIR ...] [--out tiles.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# the quad masks, the encoder's weights and the greedy grouping are quad_permutation's (same folder)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from quad_permutation import encoder_linear_weights, greedy_groups, quad_mask  # noqa: E402

TILE_ROWS = 16         # output channels per tile (the weight tile's 16 × 4-byte columns)
TILE_QUADS = 16        # 1 x 4 input quads per tile (64 input channels)
AMX_CYCLES_PER_TILE = 16.0  # tdpbusd issue interval on Sapphire Rapids (1,024 multiply-adds per cycle)


def _row_groups(quads: np.ndarray, order: np.ndarray) -> np.ndarray:
    """bool (groups, 16, nq): ``quads`` rows in ``order``, padded with empty rows to a multiple of 16."""
    padded = np.zeros((-(-quads.shape[0] // TILE_ROWS) * TILE_ROWS, quads.shape[1]), dtype=bool)
    padded[: quads.shape[0]] = quads[order]
    return padded.reshape(-1, TILE_ROWS, quads.shape[1])


def aligned_tiles(quads: np.ndarray) -> int:
    """Non-empty fixed tiles (16 rows × 16 quads) of a bool (rows, nq) quad mask; rows and quads padded
    to multiples of 16."""
    groups = np.pad(_row_groups(quads, np.arange(quads.shape[0])), ((0, 0), (0, 0), (0, -quads.shape[1] % TILE_QUADS)))
    return int(groups.reshape(groups.shape[0], TILE_ROWS, -1, TILE_QUADS).any((1, 3)).sum())


def gathered_tiles(quads: np.ndarray, order: np.ndarray) -> int:
    """Σ over 16-row groups of ceil(|union of the group's quads| / 16).

    Args:
        quads: bool (rows, nq).
        order: int (rows,), a permutation of ``range(rows)``: the groups are its consecutive 16s.
    """
    union = _row_groups(quads, order).any(1).sum(1)
    return int((-(-union // TILE_QUADS)).sum())


def greedy_row_order(quads: np.ndarray) -> np.ndarray:
    """Rows grouped 16 at a time by shared quad support (:func:`quad_permutation.greedy_groups`).

    Args:
        quads: bool (rows, nq).
    Returns:
        int64 (rows,), a permutation of ``range(rows)``.
    """
    return greedy_groups(quads, TILE_ROWS)


def count_matrix(weight: np.ndarray, greedy: bool = True) -> dict:
    """Quad and tile counts of one (out, in) weight (any dtype; non-zero = kept).

    Returns:
        ``shape``, ``nonzeros``, ``quads`` (non-empty 1 x 4 quads), ``dense_tiles``,
        ``aligned_tiles``, ``gathered_tiles`` (model row order) and ``gathered_tiles_greedy_rows``
        (None with ``greedy=False``): counts.
    """
    quads = quad_mask(weight)
    rows, nq = quads.shape
    identity = np.arange(rows)
    return {
        "shape": [int(weight.shape[0]), int(weight.shape[1])],
        "nonzeros": int((weight != 0).sum()),
        "quads": int(quads.sum()),
        "dense_tiles": -(-rows // TILE_ROWS) * -(-nq // TILE_QUADS),
        "aligned_tiles": aligned_tiles(quads),
        "gathered_tiles": gathered_tiles(quads, identity),
        "gathered_tiles_greedy_rows": gathered_tiles(quads, greedy_row_order(quads)) if greedy else None,
    }


def bounds(counts: dict, vnni_per_cycle: float) -> dict:
    """Cycles per 16 tokens at peak issue, and dense AMX ÷ each schedule.

    Returns:
        ``cycles_per_16_tokens``: cycles of ``amx_dense``, ``vnni_quads``, ``amx_aligned``,
        ``amx_gathered`` (and ``amx_gathered_greedy_rows`` when counted); ``vs_dense_amx``: × faster
        than dense AMX at peak for each of the sparse ones (None where a schedule has no work).
    """
    dense = counts["dense_tiles"] * AMX_CYCLES_PER_TILE
    cycles = {
        "vnni_quads": counts["quads"] / vnni_per_cycle,
        "amx_aligned": counts["aligned_tiles"] * AMX_CYCLES_PER_TILE,
        "amx_gathered": counts["gathered_tiles"] * AMX_CYCLES_PER_TILE,
    }
    if counts.get("gathered_tiles_greedy_rows") is not None:
        cycles["amx_gathered_greedy_rows"] = counts["gathered_tiles_greedy_rows"] * AMX_CYCLES_PER_TILE
    return {"cycles_per_16_tokens": {"amx_dense": dense, **cycles},
            "vs_dense_amx": {k: (dense / v if v else None) for k, v in cycles.items()}}


def analyse(model_dir: Path, vnni_per_cycle: float = 2.0, greedy: bool = True) -> dict:
    """Counts and bounds for every encoder Linear of one model, and for the encoder as a whole.

    Raises:
        OSError: no readable ``model.safetensors``; ValueError: not a safetensors file, or no BERT
        encoder Linear weights in it.
    """
    encoder = encoder_linear_weights(model_dir)
    per_matrix = {k: count_matrix(w, greedy) for k, w in encoder.items()}
    keys = ("nonzeros", "quads", "dense_tiles", "aligned_tiles", "gathered_tiles")
    total = {k: sum(c[k] for c in per_matrix.values()) for k in keys}
    total["gathered_tiles_greedy_rows"] = (sum(c["gathered_tiles_greedy_rows"] for c in per_matrix.values())
                                           if greedy else None)
    numel = sum(w.size for w in encoder.values())
    return {
        "model": model_dir.name,
        "encoder_sparsity": 1 - total["nonzeros"] / numel,
        # the share of the stored tiles' quad slots (16 × 16 each) that carry work
        "quad_fill_aligned": total["quads"] / (TILE_ROWS * TILE_QUADS * total["aligned_tiles"]) if total["aligned_tiles"] else None,
        "quad_fill_gathered": total["quads"] / (TILE_ROWS * TILE_QUADS * total["gathered_tiles"]) if total["gathered_tiles"] else None,
        "encoder": {**total, **bounds(total, vnni_per_cycle)},
        "matrices": {k: {**c, **bounds(c, vnni_per_cycle)} for k, c in per_matrix.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path, help="model folders with model.safetensors")
    ap.add_argument("--out", type=Path, help="write the records as JSON here")
    ap.add_argument("--vnni-per-cycle", type=float, default=2.0,
                    help="vpdpbusd (512-bit) issued per cycle at peak (default 2: cores with two 512-bit FMA "
                         "units, as measured on the Xeon of accelerators/_csrc/README.md; 1 for one)")
    ap.add_argument("--no-greedy", action="store_true", help="skip the greedy row grouping (the slow part)")
    args = ap.parse_args(argv)
    if not args.vnni_per_cycle > 0:
        ap.error(f"--vnni-per-cycle must be > 0, got {args.vnni_per_cycle}")
    records = []
    print("| model | encoder sparsity | quads | dense tiles | aligned | gathered | gathered, greedy rows "
          "| dense AMX ÷ VNNI | ÷ AMX aligned | ÷ AMX gathered | ÷ AMX gathered greedy |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for model_dir in args.models:
        try:
            r = analyse(model_dir, args.vnni_per_cycle, not args.no_greedy)
        except (OSError, ValueError) as e:
            print(f"skipped {model_dir}: {e}", file=sys.stderr)
            continue
        records.append(r)
        e, v = r["encoder"], r["encoder"]["vs_dense_amx"]

        def ratio(k: str) -> str:
            return "—" if v.get(k) is None else f"{v[k]:.2f}"

        greedy_tiles = "—" if e["gathered_tiles_greedy_rows"] is None else str(e["gathered_tiles_greedy_rows"])
        print(f"| {r['model']} | {r['encoder_sparsity']:.3f} | {e['quads']} | {e['dense_tiles']} | {e['aligned_tiles']} "
              f"| {e['gathered_tiles']} | {greedy_tiles} | {ratio('vnni_quads')} | {ratio('amx_aligned')} "
              f"| {ratio('amx_gathered')} | {ratio('amx_gathered_greedy_rows')} |")
    if args.out:
        meta = {"vnni_per_cycle": args.vnni_per_cycle, "amx_cycles_per_tile": AMX_CYCLES_PER_TILE,
                "tile": f"{TILE_ROWS} outputs x {4 * TILE_QUADS} inputs"}
        args.out.write_text(json.dumps({"assumptions": meta, "models": records}, indent=1, allow_nan=False) + "\n")
    return 0 if records else 1


if __name__ == "__main__":
    sys.exit(main())
