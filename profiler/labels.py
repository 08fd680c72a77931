"""Short human labels for plugin configs (used in result rows and reports; no torch import)."""
from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

# parameter → how it shows when it differs from the plain default
_SHOWN = ("sparsity", "engine", "format", "precision")
_UNLESS_DEFAULT = {"structure": "unstructured", "scope": "layer", "lr_schedule": "linear"}
# accelerator parameters that change the numbers: (default, how a set value shows)
_ACCEL_UNLESS_DEFAULT = {"dense_fallback": ("kernel-int8", "fallback {}"), "attention": ("int8", "attention {}"),
                         "fuse_layers": (True, "unfused"), "dense_format": ("auto", "dense {}"),
                         "per_channel": (False, "per-channel")}


def plugin_label(name: str, params: dict[str, Any] | None) -> str:
    """E.g. ``magnitude 0.9 1x4``, ``gmp 0.9 KD``, ``int8-dynamic onednn``, ``openvino int8``,
    ``sparse-int8 fallback fp32``."""
    params = params or {}
    parts = [name] + [str(params[k]) for k in _SHOWN if k in params and params[k] != "auto"]
    parts += [str(params[k]) for k, d in _UNLESS_DEFAULT.items() if k in params and params[k] != d]
    parts += [fmt.format(params[k]) for k, (d, fmt) in _ACCEL_UNLESS_DEFAULT.items() if k in params and params[k] != d]
    if name == "movement":  # both variants named: the default changed from hard to soft
        parts += [str(params[k]) for k in ("variant",) if k in params]
        parts += ["from pretrained"] if params.get("init") == "pretrained" else []
        if params.get("final_lambda") not in (None, 400, 400.0):  # 400: the paper's, the default
            parts.append(f"lambda {params['final_lambda']:g}")
        if params.get("final_threshold") is not None:
            parts.append(f"tau {params['final_threshold']:g}")
    if params.get("distill") is True and params.get("steps") != 0:  # steps = 0: one-shot OBS, nothing trained
        parts.append("KD")
        if params.get("hidden_distill"):
            parts.append(f"+hidden {params['hidden_distill']:g}")
        if params.get("attention_distill"):
            parts.append(f"+attention {params['attention_distill']:g}")
    if params.get("distill_text_share"):
        parts.append(f"+text {params['distill_text_share']:g}")
    if params.get("ema_decay"):
        parts.append(f"ema {params['ema_decay']:g}")
    if params.get("sparse_weights_rate") is not None:
        parts.append(f"sparse-weights {params['sparse_weights_rate']:g}")
    return " ".join(parts)


def cell_text(r: Any) -> str:
    """A result row's cell in one line, as the rows, the report and the final table label it:
    ``magnitude 0.9 + sparse-cpu min_speedup=2.0 b1 s32 t1`` (the kernel variant where it is not
    "auto"). The labels are those the runner stored (told apart across the config by
    :func:`distinct_labels`, so swept cells never read alike); a row without them is labelled
    by :func:`plugin_label`."""
    extra = getattr(r, "extra", None) or {}
    pruner = extra.get("pruner_label") or plugin_label(r.pruner, getattr(r, "pruner_params", None))
    accelerator = extra.get("accelerator_label") or plugin_label(r.accelerator, getattr(r, "accelerator_params", None))
    variant = getattr(r, "kernel_variant", None) or "auto"
    return (f"{pruner} + {accelerator} b{r.batch_size} s{r.seq_len} t{r.threads}"
            + (f" kernel {variant}" if variant != "auto" else ""))


def distinct_labels(items: list[tuple[str, dict[str, Any] | None]]) -> list[str]:
    """:func:`plugin_label` of each ``(name, params)``, with ``key=value`` added for the parameters
    that tell apart entries which would otherwise share a label (a sweep over a parameter the label
    does not show, e.g. a third-party plugin's): rows of different configurations never look alike."""
    def text(v: Any) -> str:
        return json.dumps(v, sort_keys=True, default=str)

    params = [p if isinstance(p, dict) else {} for _, p in items]
    labels = [plugin_label(n, p) for (n, _), p in zip(items, params)]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        groups[label].append(i)
    for label, idx in groups.items():
        if len({text(params[i]) for i in idx}) < 2:
            continue
        keys = sorted({k for i in idx for k in params[i]})
        differ = [k for k in keys if len({text(params[i].get(k)) for i in idx}) > 1]
        for i in idx:
            labels[i] = " ".join([label] + [f"{k}={params[i].get(k)}" for k in differ])
    return labels
