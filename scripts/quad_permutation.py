#!/usr/bin/env python
"""Would permuting the FFN's intermediate channels pack unstructured non-zeros into fuller INT8 quads?

The INT8 kernels store a pruned matrix as 1 x 4 quads (four consecutive input columns of one row:
the operand of one VNNI ``vpdpbusd``); a quad with one non-zero costs as much as one with four.
Permuting a layer's FFN intermediate channels — the rows of ``intermediate.dense`` (and its bias)
and the columns of ``output.dense`` by one permutation — leaves the model's function exactly as it
is, and changes which non-zeros of ``output.dense`` share a quad. This script counts, for each
model, the quads ``output.dense`` stores as pruned, after a greedy grouping of its columns (each
group of four starts from the densest column left and adds the column that adds the fewest new
(row, quad) pairs, the densest of those on a tie), and after a random permutation (the baseline a
mask without column correlation gives), with the per-row lower bound (each row's non-zeros packed
four to a quad, which one shared column permutation cannot reach in general). Counting stored quads, not time: the products' work
is proportional to them; ``the encoder`` share bounds what the whole model could gain.

Input: model folders holding ``model.safetensors`` (``sparsebench export RUN_DIR CELL_ID OUT``, or
the pruned-model cache). Output: a table on stdout and, with ``--out``, JSON.

    python scripts/quad_permutation.py MODEL_DIR [MODEL_DIR ...] [--out quads.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def quad_mask(weight: np.ndarray) -> np.ndarray:
    """bool (out, ceil(in / 4)): which 1 x 4 quads of a (out, in) weight hold a non-zero (any dtype;
    columns padded to a multiple of 4, as the kernels' packing does)."""
    rows, cols = weight.shape
    padded = np.zeros((rows, -(-cols // 4) * 4), dtype=bool)
    padded[:, :cols] = weight != 0
    return padded.reshape(rows, -1, 4).any(-1)


def stored_quads(nonzero: np.ndarray) -> int:
    """Non-empty 1 x 4 quads of a (rows, cols) mask or weight; cols padded to a multiple of 4."""
    return int(quad_mask(nonzero).sum())


def greedy_groups(support: np.ndarray, size: int) -> np.ndarray:
    """An order of the items (rows of ``support``) that groups them ``size`` at a time by shared
    support: each group starts from the densest item left and adds, ``size - 1`` times, the item
    that adds the fewest features to the group's union, the densest of those on a tie (greedy;
    items² · features / size multiply-adds).

    Args:
        support: bool (items, features).
        size: items per group (4 columns to a quad, 16 rows to an AMX tile).
    Returns:
        int64 (items,), a permutation of ``range(items)``.
    """
    weights = support.astype(np.float32)
    density = support.sum(1).astype(np.int64)
    left = np.ones(support.shape[0], dtype=bool)
    order: list[int] = []
    while left.any():
        candidates = np.flatnonzero(left)
        item = int(candidates[np.argmax(density[candidates])])
        union = weights[item].copy()
        left[item] = False
        order.append(item)
        for _ in range(size - 1):
            if not left.any():
                break
            # features each item would add to the union (counts, exact in float32 below 2^24)
            added = density - np.rint(weights @ union).astype(np.int64)
            # ties (items adding nothing, such as the rows of a pruned-away block) go to the densest
            # item: one with the union's own support before a subset of it, so that the rows of one
            # block stay together; added and density are at most the feature count, so the key
            # orders by added first
            key = np.where(left, added * (support.shape[1] + 1) - density, np.iinfo(np.int64).max)
            item = int(np.argmin(key))
            left[item] = False
            order.append(item)
            union = np.maximum(union, weights[item])
    return np.asarray(order, dtype=np.int64)


def greedy_order(nonzero: np.ndarray) -> np.ndarray:
    """A column order grouping columns four at a time by shared row support (:func:`greedy_groups`).

    Args:
        nonzero: bool (rows, cols).
    Returns:
        int64 (cols,), a permutation of ``range(cols)``.
    """
    return greedy_groups(nonzero.T, 4)


def encoder_linear_weights(model_dir: Path) -> dict[str, np.ndarray]:
    """The 2-D ``…encoder.layer.N.….weight`` arrays of ``model_dir/model.safetensors``, by name (sorted).

    Raises:
        OSError: no readable file; ValueError: not a safetensors file, or no such weights in it.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        weights = load_file(str(model_dir / "model.safetensors"))
    except SafetensorError as e:
        raise ValueError(f"{model_dir / 'model.safetensors'}: {e}") from e
    encoder = {k: w for k, w in sorted(weights.items())
               if ".encoder.layer." in k and k.endswith(".weight") and w.ndim == 2}
    if not encoder:
        raise ValueError(f"{model_dir}: no BERT encoder Linear weights (…encoder.layer.N.….weight)")
    return encoder


def analyse(model_dir: Path, seed: int = 0) -> dict:
    """Quad counts of one model's FFN output matrices, as pruned / greedy / random / lower bound."""
    encoder = encoder_linear_weights(model_dir)
    ffn_out = sorted(k for k in encoder if k.endswith(".output.dense.weight") and ".attention." not in k)
    if not ffn_out:
        raise ValueError(f"{model_dir}: no BERT encoder FFN output matrices (…encoder.layer.N.output.dense.weight)")
    rng = np.random.default_rng(seed)
    as_pruned = greedy = random = bound = nonzeros = 0
    for key in ffn_out:
        nz = encoder[key] != 0
        nonzeros += int(nz.sum())
        as_pruned += stored_quads(nz)
        greedy += stored_quads(nz[:, greedy_order(nz)])
        random += stored_quads(nz[:, rng.permutation(nz.shape[1])])
        bound += int(np.ceil(nz.sum(1) / 4).sum())
    encoder_quads = sum(stored_quads(w != 0) for w in encoder.values())
    encoder_numel = sum(w.size for w in encoder.values())
    return {
        "model": model_dir.name, "encoder_sparsity": 1 - sum(int((w != 0).sum()) for w in encoder.values()) / encoder_numel,
        "ffn_out_matrices": len(ffn_out), "ffn_out_nonzeros": nonzeros,
        "ffn_out_quads_as_pruned": as_pruned, "ffn_out_quads_greedy": greedy,
        "ffn_out_quads_random_permutation": random, "ffn_out_quads_row_lower_bound": bound,
        "quad_fill_as_pruned": nonzeros / (4 * as_pruned) if as_pruned else 1.0,
        "quad_fill_greedy": nonzeros / (4 * greedy) if greedy else 1.0,
        "encoder_quads": encoder_quads,
        # the share of the encoder's stored quads the greedy order removes: what the products could gain
        "encoder_quads_saved_share": (as_pruned - greedy) / encoder_quads if encoder_quads else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path, help="model folders with model.safetensors")
    ap.add_argument("--out", type=Path, help="write the records as JSON here")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random-permutation baseline")
    args = ap.parse_args(argv)
    records = []
    print("| model | encoder sparsity | FFN-out quads as pruned | greedy | random | row bound | fill as pruned → greedy | encoder quads saved |")
    print("|---|---|---|---|---|---|---|---|")
    for model_dir in args.models:
        try:
            r = analyse(model_dir, args.seed)
        except (OSError, ValueError) as e:
            print(f"skipped {model_dir}: {e}", file=sys.stderr)
            continue
        records.append(r)
        print(f"| {model_dir.name} | {r['encoder_sparsity']:.3f} | {r['ffn_out_quads_as_pruned']} | {r['ffn_out_quads_greedy']} "
              f"| {r['ffn_out_quads_random_permutation']} | {r['ffn_out_quads_row_lower_bound']} "
              f"| {r['quad_fill_as_pruned']:.2f} → {r['quad_fill_greedy']:.2f} | {100 * r['encoder_quads_saved_share']:.1f} % |")
    if args.out:
        args.out.write_text(json.dumps(records, indent=1) + "\n")
    return 0 if records else 1


if __name__ == "__main__":
    sys.exit(main())
