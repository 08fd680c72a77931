"""The contracts the runner holds plugins to, checked where a plugin hands something back.

A pruner's model keeps every parameter name and shape, carries no ``torch.nn.utils.prune``
reparametrization, and its sparsity is counted, not taken from its report
(:func:`check_pruned_model`, :func:`counted_report`; a cached copy is checked against what was
stored: :func:`cached_model_problem`). An accelerator's ``prepare`` leaves the model it was given
as it was (:func:`model_digest` before and after) and its row fields never take a name the runner
writes itself (:func:`plugin_fields`). Each breach fails the cell with a reason naming the contract.
"""
from __future__ import annotations

import json
import warnings
from typing import Any

import torch
from torch import nn

from profiler.config import PluginSpec
from profiler.errors import SparsebenchWarning
from profiler.measure import SAVINGS_KEYS, THREAD_SCALING_KEY
from profiler.results import RESULT_FIELDS
from profiler.tasks.base import Task
from pruners.base import PruneReport

#: extra row fields the runner (or an executor) writes itself, beside the Result columns
#: (:data:`~profiler.results.RESULT_FIELDS`): a plugin's Prepared.fields may not take these names
RUNNER_FIELDS: frozenset[str] = frozenset({
    "task_params", "pruner_label", "accelerator_label", "pruner_training", "pruner_weight_average", "dense_finetune",
    "sparsity_flag", "compute_precision", "accuracy_padding", "timing_padding", "padding_flag", "cpu_affinity",
    "affinity_cpus", "torch_threads", "thread_env", "interleave_group_id", "null_reasons", "latency_rounds",
    "latency_round_medians_s", "idle_power_w", "baseline_cell_id", "best_dense_cell_id", "best_dense_label",
    "thread_scaling_reference_threads", "other_busy_cpus", "contention_flag", "collapsed", "collapse_reason",
    "target", "executor", "label_selector", "ray_node_id", "node_labels", "executor_outcome",
    *(f"{k}{suffix}" for k in (*SAVINGS_KEYS, THREAD_SCALING_KEY) for suffix in ("", "_low", "_high", "_rounds")),
})
#: prefixes of the runner's own families of fields: every metric (``metric_<name>``), the energy
#: window's fields (``energy_<meter>_*``), where a Ray run built the model
RUNNER_PREFIXES: tuple[str, ...] = ("metric_", "energy_", "model_built_on")
#: columns of the built-in accelerators that state what our own code ran: a third-party plugin may
#: not claim them
BUILT_IN_ONLY_FIELDS: frozenset[str] = frozenset({"kernel_variant_used"})


def plugin_fields(fields: dict[str, Any], who: str, built_in: bool = False) -> dict[str, Any]:
    """The ``Prepared.fields`` of accelerator ``who`` that may go into its rows. Dropped with one
    :class:`SparsebenchWarning` each kind: names the runner writes itself (:data:`RESULT_FIELDS`,
    :data:`RUNNER_FIELDS`, :data:`RUNNER_PREFIXES`; a third-party plugin also
    :data:`BUILT_IN_ONLY_FIELDS`), non-string names, and values that are not JSON (they would be
    stored as their repr)."""
    def reserved(k: Any) -> bool:
        return (not isinstance(k, str) or k in RESULT_FIELDS or k in RUNNER_FIELDS or k.startswith(RUNNER_PREFIXES)
                or (not built_in and k in BUILT_IN_ONLY_FIELDS))

    taken = sorted(map(str, filter(reserved, fields)))
    if taken:
        warnings.warn(f"accelerator {who!r}: prepare() fields {taken} are row columns of their own; "
                      "dropped (name them otherwise)", SparsebenchWarning)
    out, refused = {}, []
    for k, v in fields.items():
        if reserved(k):
            continue
        try:
            json.dumps(v)  # NaN / inf pass: the row writes them as null with a reason
        except (TypeError, ValueError, RecursionError):
            refused.append(k)
            continue
        out[k] = v
    if refused:
        warnings.warn(f"accelerator {who!r}: prepare() fields {sorted(refused)} are not JSON values (numbers, strings, "
                      "booleans, null, lists, objects); dropped", SparsebenchWarning)
    return out


def num_labels(model: nn.Module, task: Task) -> int:
    """Logits per example of ``model``: its ``config.num_labels`` (a transformers model), else the task's."""
    n = getattr(getattr(model, "config", None), "num_labels", None)
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else int(getattr(task, "num_labels", 2))


_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def model_digest(model: nn.Module) -> list[tuple]:
    """A cheap fingerprint of ``model``'s parameters and buffers: per tensor its name, shape, dtype
    and the wrapping integer sum of its bit patterns (exact in any summation order, so any zeroed,
    scaled or replaced tensor shows; a permutation within one tensor does not). One read of every
    tensor and no copy of the model, summed in the tensor's own width (widening each element to
    64 bits would double the memory traffic); the runner takes it once per model and once after
    each prepare."""
    out = []
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        d = t.detach()
        try:
            bits = d.reshape(-1).view(_INT_OF_SIZE[d.element_size()])
            if bits.element_size() < 4:  # int8 / int16 would wrap too often: widen (small or half-size tensors)
                bits = bits.to(torch.int32)
            total = int(bits.sum(dtype=bits.dtype)) if d.numel() else 0
        except (KeyError, RuntimeError, TypeError):  # an exotic tensor (quantized, meta): its shape only
            total = None
        out.append((name, tuple(d.shape), str(d.dtype), total))
    return out


def param_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Name → shape of every tensor of ``model``'s state_dict (parameters and persistent buffers):
    what a saved model must keep to load back strictly."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_pruned_model(model: nn.Module, shapes: dict[str, tuple[int, ...]], spec: PluginSpec) -> None:
    """Raise ValueError unless the model pruner ``spec`` returned keeps the pruner contract: plain
    weights (no ``torch.nn.utils.prune`` hooks, ``weight_orig`` / ``weight_mask`` tensors or
    parametrizations left) and every name and shape of ``shapes`` (:func:`param_shapes` of the model
    it was given), since the pruned model is cached, loaded back strictly and compared with the dense one."""
    from pruners.masks import assert_plain

    try:
        assert_plain(model)
    except RuntimeError as exc:
        raise ValueError(f"pruner {spec.name!r} left torch.nn.utils.prune reparametrization (call prune.remove on "
                         f"each pruned module before returning): {exc}") from None
    now = param_shapes(model)
    changes = [f"{k} missing" for k in shapes if k not in now] + [f"{k} added" for k in now if k not in shapes]
    changes += [f"{k} {list(shapes[k])} → {list(now[k])}" for k in shapes if k in now and now[k] != shapes[k]]
    if changes:
        more = f" (and {len(changes) - 3} more)" if len(changes) > 3 else ""
        raise ValueError(f"pruner {spec.name!r} changed the model's parameter names or shapes: {'; '.join(changes[:3])}"
                         f"{more}; a pruner zeroes weights in place and keeps every name and shape")


#: |claimed − counted| sparsity above which a pruner's own PruneReport is said to be wrong (rounding of
#: a claim is below it; one weight in a million miscounted is not a finding)
SPARSITY_CLAIM_TOLERANCE = 1e-4


def count_sparsity(model: nn.Module, pruner: Any, notes: dict[str, Any]) -> PruneReport:
    """:func:`pruners.base.sparsity_report` of ``model`` over the pruner's ``roles`` (all roles
    without valid ones), with ``notes``."""
    from pruners.base import ALL_ROLES, ROLE_PATTERNS, sparsity_report

    roles = getattr(pruner, "roles", ALL_ROLES)
    if isinstance(roles, str) or not isinstance(roles, (list, tuple)) or not roles or \
            not all(r in ROLE_PATTERNS for r in roles):
        roles = ALL_ROLES
    return sparsity_report(model, roles, notes=notes)


def cached_model_problem(model: nn.Module, stored: PruneReport, pruner: Any) -> str | None:
    """Why a pruned model loaded from the cache is not the one stored there, or None: weights
    that are not finite, or zeros other than the counted sparsity stored with it (the entry's
    files changed since)."""
    if any(not bool(torch.isfinite(p).all()) for p in model.parameters()):
        return "its weights hold NaN or inf"
    now = count_sparsity(model, pruner, {})
    for what in ("sparsity_prunable", "sparsity_all_params"):
        was = getattr(stored, what, None)
        if not isinstance(was, (int, float)) or abs(was - getattr(now, what)) > SPARSITY_CLAIM_TOLERANCE:
            return f"its {what} is {getattr(now, what):.6f}, stored with it as {was!r}"
    return None


def counted_report(model: nn.Module, claim: PruneReport, pruner: Any, spec: PluginSpec) -> PruneReport:
    """The sparsity of ``model`` counted from its weights' exact zeros
    (:func:`pruners.base.sparsity_report` over the pruner's ``roles``, all roles without them),
    with the notes of ``claim``, the pruner's own :class:`PruneReport`. Where the claim differs
    from the count by more than :data:`SPARSITY_CLAIM_TOLERANCE` (prunable or all parameters), the
    count stands and ``notes["sparsity_claim_mismatch"]`` says what was claimed (the rows carry it
    as ``sparsity_flag``), with a warning: numbers in rows are measured, not claimed."""
    counted = count_sparsity(model, pruner, claim.notes)
    counted.notes.pop("sparsity_claim_mismatch", None)
    try:
        claimed = (claim.sparsity_prunable, claim.sparsity_all_params)
    except Exception:  # counts that do not divide (a string, ...): a claim of nothing
        claimed = (None, None)
    off = [(what, c, n) for what, c, n in (
        ("sparsity_prunable", claimed[0], counted.sparsity_prunable),
        ("sparsity_all_params", claimed[1], counted.sparsity_all_params))
        if isinstance(c, bool) or not (isinstance(c, (int, float)) and abs(c - n) <= SPARSITY_CLAIM_TOLERANCE)]
    if off:
        text = "; ".join(f"{what} claimed {c!r}, counted {n:.6f}" for what, c, n in off)
        counted.notes["sparsity_claim_mismatch"] = (f"pruner {spec.name!r} reported other sparsity than its model's "
                                                    f"exact zeros ({text}); the count is recorded")
        warnings.warn(counted.notes["sparsity_claim_mismatch"], SparsebenchWarning)
    return counted
