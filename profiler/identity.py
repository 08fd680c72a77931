"""Identity of a matrix cell and of the things cells share; pure standard library, so that
reports/ (which never imports torch) computes the same ids as the profiler.

- ``cell_id``: the whole cell (every axis); resume and same-config joins are exact.
- ``recipe_id``: the cell without its target axes (threads, kernel variant): the same recipe run
  on another machine, thread count or ISA variant; ``compare`` joins on it.
- ``model_id``: what determines the prepared model's predictions (task, pruner, accelerator,
  kernel variant); cells with equal ``model_id`` share one accuracy pass, unless the accelerator
  reports a ``numerics_key`` (choices timed at the cell's shape) that differs between them.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any

#: the seed's baseline: the dense (unpruned) model under torch fp32 eager; every row's savings
#: factors are also taken against the fastest dense fp32 cell of its shape (the best dense engine)
BASELINE_PRUNER = "none"
BASELINE_ACCELERATOR = "torch-fp32"


def is_dense_fp32(pruner: Any, accelerator: Any, compute_precision: Any) -> bool:
    """Whether a cell is a dense full-precision engine (the candidates for "best dense"): pruner
    none and fp32 arithmetic. Rows written before ``compute_precision`` existed (``None``) count
    only the torch-fp32 baseline."""
    if pruner != BASELINE_PRUNER:
        return False
    if isinstance(compute_precision, str):
        return compute_precision == "fp32"
    return accelerator == BASELINE_ACCELERATOR


def stable_hash(obj: Any, n: int = 12) -> str:
    """First ``n`` hex digits of the sha256 of ``obj``'s canonical JSON (sorted keys, no spaces,
    ``str()`` for anything JSON cannot encode); stable across runs, processes and machines."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def cell_id(canonical_cell: dict[str, Any]) -> str:
    """Id of a cell from its canonical dict (task, pruner, accelerator, batch_size, seq_len,
    threads, kernel_variant)."""
    return stable_hash(canonical_cell, 12)


def recipe_id(task: dict[str, Any], pruner: dict[str, Any], accelerator: dict[str, Any],
              batch_size: int, seq_len: int) -> str:
    """Id of a cell without threads and kernel variant. Plugins are ``{"name": .., "params": ..}``."""
    return stable_hash({"task": task, "pruner": pruner, "accelerator": accelerator,
                        "batch_size": int(batch_size), "seq_len": int(seq_len)}, 12)


def model_id(task: dict[str, Any], pruner: dict[str, Any], accelerator: dict[str, Any], kernel_variant: str) -> str:
    """Id of the prepared model's predictions: equal ids share one accuracy value."""
    return stable_hash([task, pruner, accelerator, kernel_variant])


def _params(v: Any) -> Any:
    """A row's params value as stored (dict), or None when missing or not a dict (e.g. NaN in a frame)."""
    return v if isinstance(v, dict) else None


def _plugin(row: Any, kind: str) -> dict[str, Any]:
    return {"name": row[kind], "params": _params(row.get(f"{kind}_params"))}


def ids_of_row(row: Any) -> dict[str, str]:
    """``{"recipe_id": .., "model_id": ..}`` recomputed from a result row's own fields (a dict or a
    pandas Series with task, pruner, accelerator, their ``*_params``, batch_size, seq_len,
    kernel_variant), for rows written before these ids were stored."""
    task, pruner, acc = _plugin(row, "task"), _plugin(row, "pruner"), _plugin(row, "accelerator")
    variant = row.get("kernel_variant")
    if variant is None or (isinstance(variant, float) and math.isnan(variant)):
        variant = "auto"
    return {
        "recipe_id": recipe_id(task, pruner, acc, row["batch_size"], row["seq_len"]),
        "model_id": model_id(task, pruner, acc, variant),
    }
