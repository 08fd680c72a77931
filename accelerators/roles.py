"""The BERT-family role maps: which module of an encoder layer plays which part, per architecture.

Layer roles follow nn_pruning: the encoder Linear layers are addressed by role (attention q/k/v,
attention output, FFN in/out), so "ffn only" means the same on every supported architecture.
Pruners pick their targets by role; the sparse accelerators swap exactly these layers, fuse the
GELU of the FFN's intermediate block and rebuild whole encoder layers. Embeddings, LayerNorm,
pooler and classifier have no role.

One :class:`RoleMap` per architecture (transformers' ``config.model_type``): BERT naming
(``encoder.layer.<i>.attention.self.query`` ...) is shared by BERT, MiniLM, RoBERTa, XLM-R and
ELECTRA; DistilBERT names its layers ``transformer.layer.<i>.attention.q_lin`` ... A model whose
config names another architecture is rejected by :func:`role_map_of` with the supported list; a
plain module without a transformers config is read with BERT naming (tests build such modules).

All patterns are regexes searched (``re.search``) in a module's qualified name from
``named_modules()``; each one is anchored at a name boundary and at the end.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

#: the role names, in layer order
ALL_ROLES: tuple[str, ...] = ("attn_q", "attn_k", "attn_v", "attn_out", "ffn_in", "ffn_out")


@dataclass(frozen=True, eq=False)  # compared by identity: several model types share one map
class RoleMap:
    """Where the roles live in one architecture's encoder layers.

    layer: regex of one encoder layer's qualified name (unanchored at the end). paths: role ->
    module path inside the layer. ffn_block: path of the block holding ``ffn_in`` and the
    activation; ffn_in_attr / act_attr: their attribute names in that block (GELU fusion).
    fusable: whether :class:`accelerators.fused_layer.FusedBertLayer` has this layer layout.
    """

    layer: str
    paths: dict[str, str]
    ffn_block: str
    ffn_in_attr: str
    act_attr: str
    fusable: bool

    def pattern(self, role: str) -> str:
        """Regex of the Linear layers playing ``role``. Raises KeyError on an unknown role."""
        return self.layer + r"\." + re.escape(self.paths[role]) + "$"


BERT_ROLES = RoleMap(
    layer=r"(?:^|\.)encoder\.layer\.\d+",
    paths={"attn_q": "attention.self.query", "attn_k": "attention.self.key", "attn_v": "attention.self.value",
           "attn_out": "attention.output.dense", "ffn_in": "intermediate.dense", "ffn_out": "output.dense"},
    ffn_block="intermediate", ffn_in_attr="dense", act_attr="intermediate_act_fn", fusable=True,
)
DISTILBERT_ROLES = RoleMap(
    layer=r"(?:^|\.)transformer\.layer\.\d+",
    paths={"attn_q": "attention.q_lin", "attn_k": "attention.k_lin", "attn_v": "attention.v_lin",
           "attn_out": "attention.out_lin", "ffn_in": "ffn.lin1", "ffn_out": "ffn.lin2"},
    ffn_block="ffn", ffn_in_attr="lin1", act_attr="activation", fusable=False,
)

#: transformers ``model_type`` -> its role map (the supported architectures)
ROLE_MAPS: dict[str, RoleMap] = {
    "bert": BERT_ROLES, "roberta": BERT_ROLES, "xlm-roberta": BERT_ROLES, "electra": BERT_ROLES,
    "distilbert": DISTILBERT_ROLES,
}
SUPPORTED_ARCHITECTURES: tuple[str, ...] = tuple(ROLE_MAPS)

#: role -> regex of its Linear layers' qualified names with BERT naming (kept for role validation)
ROLE_PATTERNS: dict[str, str] = {role: BERT_ROLES.pattern(role) for role in ALL_ROLES}

_MAPS = tuple(dict.fromkeys(ROLE_MAPS.values()))
#: any role's Linear layer, any architecture
ENCODER_LINEAR_RE = re.compile("|".join(
    "(?:" + m.layer + r"\.(?:" + "|".join(re.escape(p) for p in m.paths.values()) + "))$" for m in _MAPS))
#: a whole encoder layer (what the fused layer replaces), any architecture
ENCODER_LAYER_RE = re.compile("|".join("(?:" + m.layer + ")$" for m in _MAPS))


def role_map_of(model: nn.Module) -> RoleMap:
    """The role map of ``model``'s architecture (``model.config.model_type``); BERT naming for a
    module without a transformers config. Raises ValueError naming the supported architectures."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type is None:
        return BERT_ROLES
    if model_type not in ROLE_MAPS:
        raise ValueError(f"unsupported architecture {model_type!r}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
    return ROLE_MAPS[model_type]


def linears_by_role(model: nn.Module, roles: tuple[str, ...] | list[str] = ALL_ROLES) -> dict[str, nn.Linear]:
    """Qualified name -> ``nn.Linear`` for every encoder Linear layer whose role is in ``roles``
    (names in ``named_modules()`` order). Raises KeyError on an unknown role, ValueError on an
    unsupported architecture."""
    rmap = role_map_of(model)
    patterns = [re.compile(rmap.pattern(r)) for r in roles]
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and any(p.search(n) for p in patterns)}


def encoder_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """``(qualified name, module)`` of every encoder Linear layer (all roles), in ``named_modules()`` order."""
    return list(linears_by_role(model).items())


def ffn_blocks(model: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """``(block, ffn_in attribute, activation attribute)`` for every encoder layer's FFN block
    (BERT's ``intermediate``, DistilBERT's ``ffn``), in layer order."""
    rmap = role_map_of(model)
    pat = re.compile(rmap.layer + r"\." + re.escape(rmap.ffn_block) + "$")
    return [(m, rmap.ffn_in_attr, rmap.act_attr) for n, m in model.named_modules() if pat.search(n)]
