"""The BERT-family role map: which module of an encoder layer plays which part.

Layer roles follow nn_pruning: the encoder Linear layers are addressed by role (attention q/k/v,
attention output, FFN in/out), so "ffn only" means the same on any model with transformers' BERT
naming (BERT, MiniLM, RoBERTa, XLM-R, ELECTRA). Pruners pick their targets by role; the sparse
accelerators swap exactly these layers, fuse the GELU of the FFN's intermediate block and rebuild
whole encoder layers. Embeddings, LayerNorm, pooler and classifier have no role.

All patterns are regexes searched (``re.search``) in a module's qualified name from
``named_modules()``; each one is anchored at a name boundary and at the end.
"""
from __future__ import annotations

import re

from torch import nn

#: qualified name of one encoder layer (``...encoder.layer.<i>``)
ENCODER_LAYER = r"(?:^|\.)encoder\.layer\.\d+"

#: role -> module path inside an encoder layer
ROLE_PATHS: dict[str, str] = {
    "attn_q": "attention.self.query",
    "attn_k": "attention.self.key",
    "attn_v": "attention.self.value",
    "attn_out": "attention.output.dense",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
}

#: role -> regex of its Linear layers' qualified names
ROLE_PATTERNS: dict[str, str] = {role: ENCODER_LAYER + r"\." + re.escape(path) + "$" for role, path in ROLE_PATHS.items()}
ALL_ROLES: tuple[str, ...] = tuple(ROLE_PATTERNS)

#: any role's Linear layer
ENCODER_LINEAR_RE = re.compile(ENCODER_LAYER + r"\.(?:" + "|".join(re.escape(p) for p in ROLE_PATHS.values()) + ")$")
#: a whole encoder layer (what the fused layer replaces)
ENCODER_LAYER_RE = re.compile(ENCODER_LAYER + "$")
#: the FFN's intermediate block (holds ``dense`` = ffn_in and ``intermediate_act_fn``)
INTERMEDIATE_RE = re.compile(ENCODER_LAYER + r"\.intermediate$")


def linears_by_role(model: nn.Module, roles: tuple[str, ...] | list[str] = ALL_ROLES) -> dict[str, nn.Linear]:
    """Qualified name -> ``nn.Linear`` for every encoder Linear layer whose role is in ``roles``
    (names in ``named_modules()`` order). Raises KeyError on an unknown role."""
    patterns = [re.compile(ROLE_PATTERNS[r]) for r in roles]
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and any(p.search(n) for p in patterns)}


def encoder_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """``(qualified name, module)`` of every encoder Linear layer (all roles), in ``named_modules()`` order."""
    return list(linears_by_role(model).items())
