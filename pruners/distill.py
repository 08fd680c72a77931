"""Knowledge distillation from the dense fine-tuned teacher (Hinton et al. 2015), for any
training-time pruner::

    L = α · T² · KL( softmax(z_t / T) ‖ softmax(z_s / T) ) + (1 − α) · L_task(z_s, y)

with teacher logits ``z_t``, student logits ``z_s``, temperature ``T`` and distillation weight
``α``. The T² factor keeps the soft-target gradients on the scale of the hard-target ones. The
teacher is a frozen deep copy of the dense model taken before pruning starts (eval mode, no
gradients). Movement pruning (Sanh et al. 2020) uses T = 2, α = 0.9.

With a hidden-state weight β > 0 (TinyBERT, Jiao et al. 2020, eq. 8; CoFi, Xia et al. 2022, eq. 6),
the loss adds the mean over the encoder layers l = 1..L of the mean squared error between the
student's and the teacher's hidden states at the non-padding tokens::

    L += β · (1/L) Σ_l  MSE_tokens( h_s^l, h_t^l )

(student and teacher have the same width, so no projection). These targets depend on the whole
sequence of activations, so the teacher runs on every batch for them (its logits still come from
the cache).

With a self-attention weight γ > 0 (MiniLM, Wang et al. 2020, eqs. 2–5), the loss adds, per encoder
layer l and head a (MiniLM transfers only the teacher's last layer, into a smaller student; here student
and teacher have the same depth, so every layer is matched, as TinyBERT's layer-wise attention loss does), the KL divergence of the student's attention distributions from the teacher's
and of its value relations from the teacher's, averaged over layers, heads and real (non-padding)
query tokens::

    L += γ · (1/L) Σ_l (1/A) Σ_a  mean_queries [ KL( A_t ‖ A_s ) + KL( VR_t ‖ VR_s ) ]
    A  = softmax( Q Kᵀ / √d_k + mask ),   VR = softmax( V Vᵀ / √d_k + mask )

with Q, K, V the layer's query, key and value projections split into heads of width d_k and the
padding keys masked out. Attention distributions constrain how every layer mixes tokens, not
only what it outputs; the projections are read with forward hooks (:class:`AttentionTap`), so any
attention implementation (eager, SDPA) serves.

Because the teacher is frozen and in eval mode (dropout off), its logits for a training example
never change: :class:`TeacherLogits` computes them once per example (fp32, no autocast) and keeps
them, in memory for the run and on disk under a key of the teacher's weights and the training
data, so every later pruner distilled from the same dense model skips the teacher's forward pass.

An ensemble teacher (``members``: dense models fine-tuned from other seeds) gives the mean of its
members' logits as ``z_t`` — the arithmetic mean of the logits, i.e. the normalised geometric mean of
the members' softmax outputs (Hinton et al. 2015, §2: soft targets of an ensemble; Furlanello et al.
2018 and Allen-Zhu & Li 2023 on why an ensemble's soft labels carry more than any member's). Each
member's logits are cached as above under its own key. Hidden-state targets come from the first
teacher only: members are trained apart, so their hidden spaces do not line up.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from accelerators.base import logits_of as default_logits_of
from pruners.training import autocast


def check_distill(temperature: float, alpha: float) -> None:
    """ValueError unless ``temperature`` is a finite number > 0 and ``alpha`` a number in [0, 1]."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0 or math.isinf(temperature):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")


def check_teacher_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    """``teacher_seeds`` as a tuple: distinct ints in [0, 2**32 − 1]; ValueError otherwise."""
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence):
        raise ValueError(f"teacher_seeds must be a list of seeds, got {seeds!r}")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= 2**32 - 1:
            raise ValueError(f"teacher_seeds: each seed must be an integer in [0, 4294967295], got {s!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"teacher_seeds: a seed given twice would weigh one model double: {list(seeds)}")
    return tuple(int(s) for s in seeds)


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, task_loss: torch.Tensor, temperature: float, alpha: float) -> torch.Tensor:
    """``α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1−α)·task_loss``: Hinton et al. 2015, "Distilling the
    knowledge in a neural network", sec. 2 (the T² keeps the soft term's gradient scale as T changes).
    A regression head (``num_labels = 1``, e.g. STS-B) has no distribution to soften — the KL of two
    one-way softmaxes is 0 — so its soft term is the mean squared error to the teacher's prediction,
    ``α·MSE(s, t) + (1−α)·task_loss`` (no temperature), as TinyBERT's code distils regression tasks
    (Jiao et al. 2020).

    student_logits, teacher_logits: (batch, num_labels), any float dtype; task_loss: a scalar.
    Returns a scalar (KL or MSE averaged over the batch)."""
    if student_logits.shape[-1] == 1:
        return alpha * F.mse_loss(student_logits.float(), teacher_logits.float()) + (1.0 - alpha) * task_loss
    T = float(temperature)
    kl = F.kl_div(F.log_softmax(student_logits / T, dim=-1), F.log_softmax(teacher_logits / T, dim=-1), reduction="batchmean", log_target=True)
    return alpha * T * T * kl + (1.0 - alpha) * task_loss


log = logging.getLogger(__name__)


def hidden_mse(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
               attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over layers of the per-token mean squared error of hidden states.

    Args:
        student, teacher: the encoder layers' outputs, each (batch, seq, hidden); equal counts and shapes.
        attention_mask: (batch, seq), 1 at real tokens, 0 at padding (padding does not count).
    Returns a float32 scalar. Raises ValueError on mismatched counts or shapes.
    """
    if len(student) != len(teacher) or not student:
        raise ValueError(f"hidden states: student has {len(student)} layers, teacher {len(teacher)}")
    m = attention_mask.to(torch.float32).unsqueeze(-1)
    tokens = m.sum().clamp_min(1.0)
    total = torch.zeros((), dtype=torch.float32)
    for hs, ht in zip(student, teacher):
        if hs.shape != ht.shape:
            raise ValueError(f"hidden states: student {tuple(hs.shape)} vs teacher {tuple(ht.shape)}")
        d = (hs.float() - ht.float()) * m
        total = total + d.pow(2).sum() / (tokens * hs.shape[-1])
    return total / len(student)


def attention_kl(student: Sequence[Sequence[torch.Tensor]], teacher: Sequence[Sequence[torch.Tensor]],
                 attention_mask: torch.Tensor, heads: int) -> torch.Tensor:
    """Mean over layers of KL(attention_t ‖ attention_s) + KL(value-relation_t ‖ value-relation_s)
    (MiniLM, Wang et al. 2020, eqs. 2–5; module doc), each averaged over heads and real query tokens.

    Args:
        student, teacher: per encoder layer the (query, key, value) projections, each (batch, seq,
            hidden) with hidden = heads · d_k; equal layer counts and shapes.
        attention_mask: (batch, seq), 1 at real tokens, 0 at padding (masked as keys, not counted as queries).
        heads: attention heads per layer (hidden must be a multiple).
    Returns a float32 scalar (computed in float32 whatever the inputs' dtype). Raises ValueError on
    mismatched counts or shapes, or a width not divisible by ``heads``.
    """
    if len(student) != len(teacher) or not student:
        raise ValueError(f"attention: student has {len(student)} layers, teacher {len(teacher)}")
    m = attention_mask.to(torch.float32)
    key_bias = (1.0 - m)[:, None, None, :] * -1e4  # padding keys get no weight; -inf would make 0 · inf
    queries = (m.sum() * heads).clamp_min(1.0)
    total = torch.zeros((), dtype=torch.float32)
    for s_qkv, t_qkv in zip(student, teacher):
        for xs, xt in zip(s_qkv, t_qkv):
            if xs.shape != xt.shape:
                raise ValueError(f"attention: student {tuple(xs.shape)} vs teacher {tuple(xt.shape)}")
        b, n, width = t_qkv[0].shape
        if width % heads:
            raise ValueError(f"attention: width {width} is not a multiple of {heads} heads")
        d = width // heads

        def split(x: torch.Tensor) -> torch.Tensor:  # (batch, heads, seq, d_k)
            return x.float().reshape(b, n, heads, d).transpose(1, 2)

        for (a, c) in ((0, 1), (2, 2)):  # Q Kᵀ, V Vᵀ
            log_t = F.log_softmax(split(t_qkv[a]) @ split(t_qkv[c]).transpose(-1, -2) / math.sqrt(d) + key_bias, dim=-1)
            log_s = F.log_softmax(split(s_qkv[a]) @ split(s_qkv[c]).transpose(-1, -2) / math.sqrt(d) + key_bias, dim=-1)
            kl = F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(-1)  # (batch, heads, seq)
            total = total + (kl * m[:, None, :]).sum() / queries
    return total / len(student)


class AttentionTap:
    """Forward hooks that keep the query, key and value projections of every self-attention layer
    of a BERT-family model (modules with ``query``, ``key`` and ``value`` submodules, or
    DistilBERT's ``q_lin``, ``k_lin`` and ``v_lin``, in model order) during the passes inside
    ``with tap:``; :attr:`outputs` then holds, per layer, the (query, key, value) outputs of the last
    pass, each (batch, seq, hidden), with their autograd graph. Raises ValueError for a model
    without such layers."""

    NAMES = (("query", "key", "value"), ("q_lin", "k_lin", "v_lin"))

    def __init__(self, model: nn.Module) -> None:
        self.layers = [tuple(getattr(m, a) for a in names) for m in model.modules() for names in self.NAMES
                       if all(isinstance(getattr(m, a, None), nn.Module) for a in names)]
        if not self.layers:
            raise ValueError(f"attention distillation needs self-attention layers with query / key / value "
                             f"projections; {type(model).__name__} has none")
        self.outputs: list[list[torch.Tensor | None]] = []
        self._hooks: list = []

    def __enter__(self) -> "AttentionTap":
        self.outputs = [[None, None, None] for _ in self.layers]
        for i, mods in enumerate(self.layers):
            for j, mod in enumerate(mods):
                self._hooks.append(mod.register_forward_hook(self._keeper(i, j)))
        return self

    def _keeper(self, i: int, j: int) -> Callable:
        def keep(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            self.outputs[i][j] = output
        return keep

    def __exit__(self, *exc: object) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []


def weights_key(model: nn.Module, data: Sequence[Sequence[int]]) -> str:
    """SHA-256 (24 hex digits) of ``model``'s state dict (names, dtypes, shapes, bytes) and the
    token ids of the training examples ``data``: equal keys mean equal teacher logits."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().contiguous().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-dim buffers too
    for ids in data:
        h.update(len(ids).to_bytes(4, "little"))
        h.update(torch.tensor(ids, dtype=torch.int32).numpy().tobytes())
    return h.hexdigest()[:24]


class TeacherLogits:
    """Teacher logits per training example: computed on first use, then looked up.

    Args:
        teacher: the frozen teacher (eval mode).
        n_examples: number of training examples (indices are in ``range(n_examples)``).
        logits_of: maps the teacher's output to its logits tensor (:func:`accelerators.base.logits_of`).
        file: where the logits persist (``torch.save`` of ``{"key", "logits", "have"}``); None = memory only.
        key: :func:`weights_key` of the teacher and the data; a file with another key is ignored.

    The logits tensor is float32 ``(n_examples, num_labels)``; ``have`` marks the computed rows.
    """

    def __init__(self, teacher: nn.Module, n_examples: int, logits_of: Callable, file: Path | None = None, key: str = "") -> None:
        self.teacher, self.n, self._logits_of = teacher, int(n_examples), logits_of
        self.file, self.key = (Path(file) if file else None), key
        self.logits: torch.Tensor | None = None
        self.have = torch.zeros(self.n, dtype=torch.bool)
        self.computed = 0
        self.loaded = 0
        if self.file is not None and self.file.exists():
            self._load()

    def _load(self) -> None:
        try:
            saved = torch.load(self.file, weights_only=True)
        except Exception as exc:  # a damaged file only costs recomputation
            log.warning("teacher logits %s unreadable (%s); recomputing", self.file, exc)
            return
        if saved.get("key") == self.key and saved["have"].shape == (self.n,):
            self.logits, self.have = saved["logits"].float(), saved["have"].bool()
            self.loaded = int(self.have.sum())

    def __call__(self, indices: Sequence[int], inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``(len(indices), num_labels)`` float32 of the examples ``indices``, whose collated
        batch is ``inputs``; rows not seen before run through the teacher (sub-batch of ``inputs``)."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        miss = ~self.have[idx]
        if bool(miss.any()):
            sub = {k: v[miss] for k, v in inputs.items()}
            with torch.inference_mode(), torch.autocast("cpu", enabled=False):
                t = self._logits_of(self.teacher(**sub)).float()
            if self.logits is None:
                self.logits = torch.zeros(self.n, t.shape[-1])
            self.logits[idx[miss]] = t
            self.have[idx[miss]] = True
            self.computed += int(miss.sum())
        assert self.logits is not None
        return self.logits[idx].clone()

    def save(self) -> None:
        """Write the logits to :attr:`file` (atomically) when new rows were computed."""
        if self.file is None or not self.computed or self.logits is None:
            return
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_name(f"{self.file.name}.tmp-{os.getpid()}")  # processes sharing the cache write apart
        torch.save({"key": self.key, "logits": self.logits, "have": self.have}, tmp)
        tmp.replace(self.file)

    def state_dict(self) -> dict[str, Any]:
        """The logits computed or loaded so far, which rows hold one, and the counters: a resumed
        run looks up the very values (and reports the very counts) of a run never interrupted."""
        return {"key": self.key, "logits": self.logits, "have": self.have, "computed": self.computed, "loaded": self.loaded}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["key"] != self.key or state["have"].shape != self.have.shape:
            raise ValueError("teacher logits: saved for another teacher or training set")
        self.logits = state["logits"].float() if state["logits"] is not None else None
        self.have = state["have"].bool()
        self.computed, self.loaded = int(state["computed"]), int(state["loaded"])

    def describe(self) -> dict:
        return {"teacher_logits": "cached per example", "teacher_forward_examples": self.computed,
                "teacher_logits_reused": self.loaded}


class Distiller:
    """Holds the frozen teacher; ``loss(inputs, student_logits, task_loss, indices)`` gives the mixed loss.

    With ``examples`` (the training set's token ids, one list per example) the teacher's logits are cached per training example (:class:`TeacherLogits`,
    persisted under ``cache_dir/teacher_logits/`` when ``cache_dir`` is given, keyed by the teacher's
    weights and ``examples``); ``loss`` then needs the batch's example ``indices``. Without, or with
    ``indices=None``, the teacher runs on every batch. ``hidden_weight`` β > 0 adds hidden-state
    distillation (module doc), the teacher's hidden states computed at ``precision`` (see
    :func:`pruners.training.autocast`); ValueError for a negative or non-finite β. ``members``: more
    dense models of the same task (same labels; e.g. fine-tuned from other seeds) whose logits are
    averaged with the first teacher's (module doc, ensemble teacher), each cached under its own key.
    ``attention_weight`` γ > 0 adds self-attention distillation (module doc; the first teacher's
    attention, computed in the same teacher pass as the hidden states); ValueError for a negative or
    non-finite γ, or a teacher without query / key / value projections.
    """

    def __init__(self, dense: nn.Module, temperature: float = 2.0, alpha: float = 0.9, logits_of: Callable | None = None,
                 examples: Sequence[Sequence[int]] | None = None, cache_dir: Path | None = None, hidden_weight: float = 0.0,
                 precision: str = "fp32", members: Sequence[nn.Module] = (), attention_weight: float = 0.0) -> None:
        check_distill(temperature, alpha)
        for key, w in (("hidden_distill", hidden_weight), ("attention_distill", attention_weight)):
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= w < math.inf:
                raise ValueError(f"{key} must be a finite number >= 0, got {w!r}")
        self.hidden_weight, self.attention_weight, self.precision = float(hidden_weight), float(attention_weight), precision
        self.teachers = [_frozen(m) for m in (dense, *members)]
        self.teacher = self.teachers[0]
        self._teacher_tap = AttentionTap(self.teacher) if self.attention_weight > 0 else None
        self.heads = int(getattr(getattr(dense, "config", None), "num_attention_heads", 0) or 0)
        if self._teacher_tap is not None and self.heads < 1:
            raise ValueError("attention_distill needs the model's config.num_attention_heads")
        self.temperature, self.alpha = float(temperature), float(alpha)
        self._logits_of = logits_of or default_logits_of
        self.caches: list[TeacherLogits] = []
        if examples is not None:
            for teacher in self.teachers:
                key = weights_key(teacher, examples) if cache_dir else ""
                file = Path(cache_dir) / "teacher_logits" / f"{key}.pt" if cache_dir else None
                self.caches.append(TeacherLogits(teacher, len(examples), self._logits_of, file, key))

    @property
    def cache(self) -> TeacherLogits | None:
        """The first teacher's logit cache (None without ``examples``)."""
        return self.caches[0] if self.caches else None

    def teacher_logits(self, inputs: dict[str, torch.Tensor], indices: Sequence[int] | None = None,
                       live: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher logits (batch, num_labels) float32 — the mean over the ensemble's teachers — from
        the caches when ``indices`` are given, except at the rows where the bool ``(batch,)`` mask
        ``live`` is True (inputs that are not the indexed examples, e.g. augmented copies): those run
        through the teachers and are not cached."""
        if not self.caches or indices is None:
            return self._mean(self._live_logits(t, inputs) for t in self.teachers)
        if live is None or not bool(live.any()):
            return self._mean(c(indices, inputs) for c in self.caches)
        keep = ~live
        out = self._mean(self._live_logits(t, {k: v[live] for k, v in inputs.items()}) for t in self.teachers)
        full = out.new_empty((live.numel(), out.shape[-1]))
        full[live] = out
        if bool(keep.any()):
            kept = [i for i, k in zip(indices, keep.tolist()) if k]
            full[keep] = self._mean(c(kept, {k: v[keep] for k, v in inputs.items()}) for c in self.caches)
        return full

    @staticmethod
    def _mean(logits: Iterable[torch.Tensor]) -> torch.Tensor:
        stacked = list(logits)
        return stacked[0] if len(stacked) == 1 else torch.stack(stacked).mean(0)

    def _live_logits(self, teacher: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            return self._logits_of(teacher(**inputs)).float()

    @property
    def wants_hidden(self) -> bool:
        """True when :meth:`loss` needs the student's hidden states (``output_hidden_states=True``)."""
        return self.hidden_weight > 0.0

    @property
    def wants_attention(self) -> bool:
        """True when :meth:`loss` needs the student's attention projections (an :class:`AttentionTap`'s outputs)."""
        return self.attention_weight > 0.0

    def teacher_hidden(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The teacher's encoder-layer outputs (embeddings excluded), each (batch, seq, hidden), computed
        at the training loop's ``precision`` (the targets need no more precision than the student)."""
        return self.teacher_internals(inputs)[0]

    def teacher_internals(self, inputs: dict[str, torch.Tensor]) -> tuple[tuple[torch.Tensor, ...], list]:
        """One teacher pass at ``precision``: its encoder-layer outputs (as :meth:`teacher_hidden`) and,
        when :attr:`wants_attention`, its per-layer (query, key, value) projections (else [])."""
        with torch.no_grad(), autocast(self.precision):
            if self._teacher_tap is None:
                return tuple(self.teacher(**inputs, output_hidden_states=True).hidden_states[1:]), []
            with self._teacher_tap as tap:
                out = self.teacher(**inputs, output_hidden_states=True)
            return tuple(out.hidden_states[1:]), tap.outputs

    def loss(self, inputs: dict[str, torch.Tensor], student_logits: torch.Tensor, task_loss: torch.Tensor,
             indices: Sequence[int] | None = None, student_hidden: Sequence[torch.Tensor] | None = None,
             live: torch.Tensor | None = None, student_attention: Sequence[Sequence[torch.Tensor]] | None = None) -> torch.Tensor:
        """The mixed loss; ``student_hidden`` (the encoder layers' outputs) is required when
        :attr:`wants_hidden` and ``student_attention`` (per layer the (query, key, value) projections,
        :class:`AttentionTap`) when :attr:`wants_attention` (ValueError otherwise), each ignored when
        not; ``live``: see :meth:`teacher_logits`."""
        t = self.teacher_logits(inputs, indices, live)
        loss = distill_loss(student_logits.float(), t, task_loss, self.temperature, self.alpha)
        if self.wants_hidden and student_hidden is None:
            raise ValueError("hidden-state distillation needs the student's hidden states")
        if self.wants_attention and student_attention is None:
            raise ValueError("attention distillation needs the student's attention projections")
        if self.wants_hidden or self.wants_attention:
            teacher_hidden, teacher_attention = self.teacher_internals(inputs)
            if self.wants_hidden:
                loss = loss + self.hidden_weight * hidden_mse(student_hidden, teacher_hidden, inputs["attention_mask"])
            if self.wants_attention:
                loss = loss + self.attention_weight * attention_kl(student_attention, teacher_attention,
                                                                   inputs["attention_mask"], self.heads)
        return loss

    def state_dict(self) -> dict[str, Any]:
        """What distillation carries across training steps: the teacher logits cached so far, per
        teacher (:meth:`TeacherLogits.state_dict`); the teachers are frozen, the rest is per batch."""
        return {"caches": [c.state_dict() for c in self.caches]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["caches"]) != len(self.caches):
            raise ValueError(f"distillation: {len(state['caches'])} teacher caches saved, {len(self.caches)} here")
        for c, st in zip(self.caches, state["caches"]):
            c.load_state_dict(st)

    def save(self) -> None:
        """Persist newly computed teacher logits (no-op without a cache file)."""
        for c in self.caches:
            c.save()

    def describe(self) -> dict:
        if self.caches:
            d = {"teacher_logits": "cached per example",
                 "teacher_forward_examples": sum(c.computed for c in self.caches),
                 "teacher_logits_reused": sum(c.loaded for c in self.caches)}
        else:
            d = {"teacher_logits": "live teacher every step"}
        if len(self.teachers) > 1:
            d["teacher_ensemble_size"] = len(self.teachers)
        if self.wants_hidden:
            d["teacher_hidden_states"] = "live teacher every step" + (" (first teacher)" if len(self.teachers) > 1 else "")
        if self.wants_attention:
            d["teacher_attention"] = "live teacher every step" + (" (first teacher)" if len(self.teachers) > 1 else "")
        return d


def _frozen(model: nn.Module) -> nn.Module:
    """A frozen eval-mode deep copy of ``model`` (no gradients)."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
