"""A lean BERT encoder layer for inference with swapped (sparse or quantized) Linear layers.

Once the Linear layers run 5-18x faster, the rest of a BERT layer dominates: three separate
q/k/v calls, the Python of transformers' attention modules (views, transposes, dropout calls,
the attention-interface dispatch) and separate residual adds. :class:`FusedBertLayer` computes
the same function with fewer passes:

    qkv  = x W_qkv^T + b_qkv                      one kernel call for q, k and v (stacked rows)
    ctx  = softmax(q k^T / sqrt(d) + mask) v      our fused attention kernel (``_sparse_kernels.attention``,
                                                  fp32 or INT8) for key-padding masks, torch SDPA otherwise
    h    = LayerNorm1(ctx W_o^T + b_o + x)        residual and LayerNorm inside the kernel call
    y    = LayerNorm2(GELU(h W_i^T + b_i) W_2^T + b_2 + h)   GELU in the kernel; with INT8 kernels the
                                                  intermediate leaves the first kernel already quantized,
                                                  or (lean layers) never leaves one ffn_int8 call

When every product is one of our kernels (stacked q/k/v, both LayerNorms inside their calls, the
FFN activation in the first FFN kernel), the forward runs on numpy views with one kernel call per
step and no module calls or torch ops in between (``lean``; the same calls, so the same bits):
once the kernels are fast, module calls and per-call tensor bookkeeping are a visible share of a
batch-1 forward pass.

It is built only for plain encoder layers (no cross-attention, no decoder cache, no feed-forward
chunking, ``sdpa`` or ``eager`` attention, the padding mask additive or boolean as transformers
passes it to SDPA) and only in eval mode; :func:`fuse_encoder_layers` leaves any other layer as it is.
Callers check the fused model's outputs against the unfused one (``prepare`` does).
"""
from __future__ import annotations

import threading
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from accelerators import _sparse_kernels as _sk
from accelerators.base import ATTENTION_PRECISIONS
from accelerators.roles import ENCODER_LAYER_RE
from accelerators.sparse_linear import SparseLinear, state_holds

__all__ = ["ATTENTION_PRECISIONS", "FusedBertLayer", "KeyBiasCache", "LeanBertClassifier", "fuse_encoder_layers",
           "key_padding_bias", "set_attention_precision"]



def key_padding_bias(mask: Optional[torch.Tensor], batch: int, seq: int) -> Optional[torch.Tensor]:
    """The (batch, seq) float32 additive key bias equivalent to an attention mask, or None when the
    mask is not a pure key-padding mask (then it depends on the query; use SDPA).

    ``mask``: None (returns a zero bias), boolean keep-mask or additive float mask broadcastable
    to (batch, 1, seq, seq) with the same value for every query. Raises nothing.
    """
    if mask is None:
        return torch.zeros(batch, seq, dtype=torch.float32)
    if mask.dim() != 4 or mask.shape[-1] != seq or mask.shape[1] != 1 or mask.shape[0] not in (1, batch):
        return None
    first = mask[:, :, :1, :]
    if mask.shape[2] != 1 and not torch.equal(mask, first.expand_as(mask)):
        return None
    row = first.reshape(mask.shape[0], seq)
    if row.dtype == torch.bool:
        bias = torch.zeros(row.shape, dtype=torch.float32).masked_fill_(~row, float("-inf"))
    else:
        bias = row.to(torch.float32)
    return bias.expand(batch, seq).contiguous()


def _version(t: torch.Tensor) -> int:
    # inference tensors keep no version counter (and cannot change outside inference mode)
    return -1 if t.is_inference() else t._version


class KeyBiasCache:
    """:func:`key_padding_bias` computed once per mask object: every layer of one forward gets the
    same mask, so the fused layers of one model share one cache (made by
    :func:`fuse_encoder_layers`). A cached bias is reused only for the same mask object, unchanged
    since (its in-place version) and the same (batch, seq). Copying a model starts a fresh cache."""

    def __init__(self) -> None:
        self._entry: Optional[tuple[torch.Tensor, int, int, int, Optional[torch.Tensor]]] = None

    def __deepcopy__(self, memo: dict) -> "KeyBiasCache":
        return KeyBiasCache()

    def get(self, mask: Optional[torch.Tensor], batch: int, seq: int) -> Optional[torch.Tensor]:
        """The (batch, seq) float32 key bias of ``mask``, or None (see :func:`key_padding_bias`)."""
        if mask is not None and self._entry is not None:
            m, version, b, s, bias = self._entry
            if mask is m and _version(mask) == version and (b, s) == (batch, seq):
                return bias
        bias = key_padding_bias(mask, batch, seq)
        self._entry = None if mask is None else (mask, _version(mask), batch, seq, bias)
        return bias


def _linear_add_norm(mod: nn.Module, x: torch.Tensor, residual: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """norm(mod(x) + residual): inside the kernel call for a SparseLinear, torch ops otherwise."""
    if isinstance(mod, SparseLinear) and isinstance(norm, nn.LayerNorm) and norm.weight is not None \
            and tuple(norm.normalized_shape) == (mod.out_features,):
        return mod(x, residual=residual, layer_norm=norm)
    return norm(mod(x) + residual)


class FusedBertLayer(nn.Module):
    """Inference-only replacement for a transformers ``BertLayer`` (same weights, same outputs).

    Input ``hidden_states`` (batch, seq, hidden) float32 and the layer's ``attention_mask`` (None,
    or broadcastable to (batch, heads, seq, seq): additive float or boolean keep-mask, as
    transformers passes it to SDPA). Returns (batch, seq, hidden) float32, or a 1-tuple when the
    original layer returned tuples (transformers 4.x). Raises RuntimeError in training mode.

    ``threads`` / ``variant``: OpenMP threads and kernel ISA variant (None = the extension's default)
    of the attention kernel; ``key_bias``: the cache shared by the layers of one model (a new one
    when None); ``attention_precision``: ``"fp32"`` or ``"int8"`` (Q K^T and P V with exact int32
    sums: see ``_sparse_kernels.attention``; query-dependent masks always take fp32 SDPA).
    Raises ValueError for another precision.

    ``fuse_ffn`` / ``hand_ranges`` / ``fuse_attention`` (class defaults True; set on an instance to
    compare, as ``scripts/bench_ffn.py`` does): lean layers run an INT8 FFN as one ``ffn_int8``
    call, hand per-token ranges from the kernel that writes a hidden state to the one that
    quantizes it, and run INT8 q / k / v with INT8 attention as one ``qkv_attention_int8`` call (see
    :meth:`bind`); False gives the chained calls, the same bits.
    """

    fuse_ffn = True
    hand_ranges = True
    fuse_attention = True

    def __init__(self, layer: nn.Module, returns_tuple: bool = False, threads: int = 1,
                 variant: Optional[str] = None, key_bias: Optional[KeyBiasCache] = None,
                 attention_precision: str = "fp32") -> None:
        super().__init__()
        if attention_precision not in ATTENTION_PRECISIONS:
            raise ValueError(f"attention_precision must be one of {', '.join(ATTENTION_PRECISIONS)} "
                             f"(got {attention_precision!r})")
        self.threads = int(threads)
        self.variant = variant
        self.attention_precision = attention_precision
        self.key_bias = key_bias if key_bias is not None else KeyBiasCache()
        att = layer.attention.self
        self.num_heads = int(att.num_attention_heads)
        self.head_dim = int(att.attention_head_size)
        self.scaling = float(getattr(att, "scaling", self.head_dim ** -0.5))
        q, k, v = att.query, att.key, att.value
        if all(isinstance(m, SparseLinear) for m in (q, k, v)) and SparseLinear.can_stack([q, k, v]):
            self.qkv: Optional[nn.Module] = SparseLinear.stack([q, k, v])
            self.q = self.k = self.v = None
        else:
            self.qkv = None
            self.q, self.k, self.v = q, k, v
        self.att_out = layer.attention.output.dense
        self.ln1 = layer.attention.output.LayerNorm
        self.ffn_in = layer.intermediate.dense
        self.act = layer.intermediate.intermediate_act_fn
        self.ffn_out = layer.output.dense
        self.ln2 = layer.output.LayerNorm
        # INT8 FFN with GELU in the kernel: the intermediate activation (4x hidden wide, the largest
        # tensor of the layer) stays int8 between the two kernels (bit-identical outputs)
        self.int8_ffn = (isinstance(self.ffn_in, SparseLinear) and isinstance(self.ffn_out, SparseLinear)
                         and self.ffn_in.dtype_name == "int8" and self.ffn_out.dtype_name == "int8"
                         and self.ffn_out.act_quant == "token" and isinstance(self.act, nn.Identity))
        # every product in our kernels, both LayerNorms inside their calls, the FFN activation in the
        # first FFN kernel: the forward then runs on numpy views, without module calls or torch ops
        self.lean = (self.qkv is not None
                     and all(isinstance(m, SparseLinear) for m in (self.att_out, self.ffn_in, self.ffn_out))
                     and all(isinstance(n, nn.LayerNorm) and n.weight is not None
                             and tuple(n.normalized_shape) == (self.att_out.out_features,) for n in (self.ln1, self.ln2))
                     and isinstance(self.act, nn.Identity))
        self.returns_tuple = returns_tuple
        self.train(layer.training)

    def forward(self, hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                *args: Any, **kwargs: Any):
        if self.training:
            raise RuntimeError("FusedBertLayer is inference-only; call .eval()")
        B, S, H = hidden_states.shape
        nh, dh = self.num_heads, self.head_dim
        x = hidden_states.reshape(B * S, H)
        if x.dtype != torch.float32 or not x.is_contiguous():
            x = x.to(torch.float32).contiguous()
        kb = self.key_bias.get(attention_mask, B, S)
        if self.lean and kb is not None and x.device.type == "cpu":
            y = self._lean_forward(x.detach().numpy(), kb, B, S, H)
            return (y,) if self.returns_tuple else y
        if self.qkv is not None:
            qkv = self.qkv(x)
        else:
            qkv = torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)
        if kb is not None:
            ctx = torch.empty(B * S, H, dtype=torch.float32)
            _sk.attention(qkv.view(B, S, 3 * H).numpy(), ctx.view(B, S, H).numpy(), nh, self.scaling,
                          kb.numpy(), self.threads, self.variant, self.attention_precision)
        else:
            q, k, v = qkv.view(B, S, 3, nh, dh).permute(2, 0, 3, 1, 4)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, scale=self.scaling)
            ctx = ctx.transpose(1, 2).reshape(B * S, H)
        h = _linear_add_norm(self.att_out, ctx, x, self.ln1)
        i = self.ffn_in.forward_quantized(h) if self.int8_ffn else self.act(self.ffn_in(h))
        y = _linear_add_norm(self.ffn_out, i, h, self.ln2).view(B, S, H)
        return (y,) if self.returns_tuple else y

    def _lean_forward(self, x: np.ndarray, kb: torch.Tensor, B: int, S: int, H: int) -> torch.Tensor:
        """The layer on numpy views of (B * S, H) float32 ``x`` (:attr:`lean` layers): one kernel
        call per step (:meth:`bind`), intermediates as numpy arrays, the (B, S, H) float32 output a
        new tensor. The same kernel calls as the general path, so the same bits."""
        y = torch.empty(B, S, H, dtype=torch.float32)
        for fn, args, kw in self.bind(x, y.numpy().reshape(B * S, H), kb.numpy(), B, S):
            fn(*args, **kw)
        return y

    @property
    def takes_x_amax(self) -> bool:
        """True when :meth:`bind` can take ``x_amax``, the input's per-token ranges (INT8 q/k/v)."""
        return self.lean and self.hand_ranges and self.qkv.dtype_name == "int8"

    @property
    def gives_y_amax(self) -> bool:
        """True when :meth:`bind` can write ``y_amax``, the output's per-token ranges (INT8 FFN output)."""
        return self.lean and self.hand_ranges and self.ffn_out.dtype_name == "int8"

    def bind(self, x: np.ndarray, y: np.ndarray, kb: np.ndarray, B: int, S: int,
             work: Optional[dict] = None, x_amax: Optional[np.ndarray] = None,
             y_amax: Optional[np.ndarray] = None) -> list[tuple]:
        """The kernel calls of one lean forward, bound to arrays and not run: ``x`` the (B * S, H)
        float32 input, ``y`` the (B * S, H) float32 output (not overlapping ``x``), ``kb`` the
        (B, S) float32 key bias. Intermediates (stacked q/k/v, attention context, the
        post-attention hidden state, the FFN intermediate) come from ``work`` (a dict reused by
        every layer of one model: arrays of the same name, shape and dtype are shared) or are
        allocated. ``x_amax`` (only where :attr:`takes_x_amax`): float32 (B * S,), max |x| per
        token, written by the previous layer's calls before these run; ``y_amax`` (only where
        :attr:`gives_y_amax`): float32 (B * S,) that receives max |y| per token, for the next
        layer. Between the kernels of the layer, the post-attention hidden state's ranges pass
        the same way. Returns ``[(function, args, kwargs), ...]`` to call in order; the calls
        stay valid while :meth:`bind_state` holds. Lean layers only (RuntimeError otherwise)."""
        if not self.lean:
            raise RuntimeError("bind needs a lean layer (every product one of our kernels)")
        work = {} if work is None else work

        def buf(name: str, shape: tuple, dtype=np.float32) -> np.ndarray:
            a = work.get(name)
            if a is None or a.shape != shape or a.dtype != dtype:
                a = work[name] = np.empty(shape, dtype)
            return a

        if (x_amax is not None and not self.takes_x_amax) or (y_amax is not None and not self.gives_y_amax):
            raise ValueError("x_amax / y_amax where the layer's first / last kernel is not INT8")
        H, T, inter = self.att_out.out_features, B * S, self.ffn_in.out_features
        ctx, h = buf("ctx", (T, H)), buf("h", (T, H))
        # h's ranges from the attention output's LayerNorm to the first FFN kernel, when both are INT8
        h_amax = buf("h_amax", (T,)) if self.hand_ranges and self.att_out.dtype_name == "int8" \
            and self.ffn_in.dtype_name == "int8" else None
        if self.fuse_attention and self.attention_precision == "int8" \
                and self.qkv.can_fuse_attention(self.threads, self.variant):
            calls = [self.qkv.bound_qkv_attention_call(x.reshape(B, S, -1), ctx.reshape(B, S, H), self.num_heads,
                                                       self.scaling, kb, x_amax=x_amax)]
        else:
            qkv = buf("qkv", (T, 3 * H))
            calls = [self.qkv.bound_call(x, qkv, x_amax=x_amax),
                     (_sk.attention, (qkv.reshape(B, S, 3 * H), ctx.reshape(B, S, H), self.num_heads, self.scaling,
                                      kb, self.threads, self.variant, self.attention_precision), {})]
        calls.append(self.att_out.bound_call(ctx, h, x, self.ln1, out_amax=h_amax))
        if self.int8_ffn and self.fuse_ffn and self.ffn_in.can_fuse_ffn(self.ffn_out):
            calls.append(self.ffn_in.bound_ffn_call(self.ffn_out, h, y, h, self.ln2, x_amax=h_amax, out_amax=y_amax))
        elif self.int8_ffn:
            iq, isc = buf("ffn_int8", (T, inter), np.int8), buf("ffn_scale", (T,))
            calls += [self.ffn_in.bound_call(h, iq, out_scale=isc, x_amax=h_amax),
                      self.ffn_out.bound_call(iq, y, h, self.ln2, x_scale=isc, out_amax=y_amax)]
        else:
            i = buf("ffn_fp32", (T, inter))
            calls += [self.ffn_in.bound_call(h, i, x_amax=h_amax), self.ffn_out.bound_call(i, y, h, self.ln2,
                                                                                           out_amax=y_amax)]
        return calls

    def bind_state(self) -> list[tuple]:
        """What the calls of :meth:`bind` depend on besides their arrays, as
        :func:`accelerators.sparse_linear.state_holds` entries: attention settings, each kernel's
        :meth:`SparseLinear.call_state`, the LayerNorm parameters (the same tensors; their values
        are read through the bound arrays) and eps."""
        st = [("attr", self, a, getattr(self, a), None)
              for a in ("lean", "int8_ffn", "fuse_ffn", "hand_ranges", "fuse_attention", "attention_precision",
                        "threads", "variant", "num_heads", "scaling")]
        for n in (self.ln1, self.ln2):
            st += [("slot", n._parameters, "weight", n.weight, None), ("slot", n._parameters, "bias", n.bias, None),
                   ("attr", n, "eps", n.eps, None)]
        for m in (self.qkv, self.att_out, self.ffn_in, self.ffn_out):
            st += m.call_state()
        return st


def set_attention_precision(model: nn.Module, precision: str) -> int:
    """Set the attention precision of every :class:`FusedBertLayer` in ``model``; returns the count.
    Raises ValueError for a precision not in :data:`ATTENTION_PRECISIONS`."""
    if precision not in ATTENTION_PRECISIONS:
        raise ValueError(f"attention precision must be one of {', '.join(ATTENTION_PRECISIONS)} (got {precision!r})")
    layers = [m for m in model.modules() if isinstance(m, FusedBertLayer)]
    for m in layers:
        m.attention_precision = precision
    return len(layers)


def _fusable(layer: nn.Module) -> str:
    """'' when ``layer`` looks like a plain BERT encoder layer FusedBertLayer reproduces, else why not."""
    try:
        att = layer.attention
        cfg = att.self.config
    except AttributeError:  # e.g. DistilBERT's TransformerBlock (q_lin/k_lin/v_lin, sa_layer_norm)
        return f"{type(layer).__name__} does not have the BERT layer layout the fused layer reproduces"
    if getattr(layer, "add_cross_attention", False) or getattr(layer, "is_decoder", False):
        return "decoder / cross-attention layer"
    if getattr(layer, "chunk_size_feed_forward", 0):
        return "feed-forward chunking"
    if getattr(cfg, "_attn_implementation", "eager") not in ("sdpa", "eager", None):
        return f"attention implementation {cfg._attn_implementation!r}"
    if getattr(cfg, "position_embedding_type", "absolute") != "absolute":
        return "relative position embeddings"
    for name in ("query", "key", "value"):
        if not hasattr(att.self, name):
            return "no q/k/v projections"
    return ""


def fuse_encoder_layers(model: nn.Module, threads: int = 1, variant: Optional[str] = None,
                        attention_precision: str = "fp32") -> tuple[int, str]:
    """Replace every plain BERT encoder layer of ``model`` (in place) by a :class:`FusedBertLayer`
    whose attention kernel runs with ``threads``, ``variant`` (None = the extension's default) and
    ``attention_precision``.

    Returns ``(layers fused, reason none were)``; the reason is '' when at least one was fused.
    """
    import transformers

    returns_tuple = int(transformers.__version__.split(".")[0]) < 5
    names = [n for n, _ in model.named_modules() if ENCODER_LAYER_RE.search(n)]
    key_bias = KeyBiasCache()
    why = "no encoder layers"
    n = 0
    for name in names:
        layer = model.get_submodule(name)
        why = _fusable(layer)
        if why:
            continue
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, FusedBertLayer(layer, returns_tuple, threads, variant, key_bias,
                                                                  attention_precision))
        n += 1
    return n, "" if n else why


class LeanBertClassifier(nn.Module):
    """Inference-only forward of a transformers ``BertForSequenceClassification`` whose encoder
    layers are all lean :class:`FusedBertLayer` s: embeddings (word + token type + position,
    LayerNorm, in transformers' order), the padding mask as one key bias, the fused layers
    (called as modules, so forward hooks still fire), pooler and classifier, without the
    transformers model's per-call machinery (mask construction, output records, decorators),
    which costs as much as a few kernel calls at batch 1.

    Without hooks on the encoder layers, the encoder runs as a *plan*: every layer's kernel calls
    bound once per input shape (:meth:`FusedBertLayer.bind`) to arrays the plan owns (the hidden
    states alternate between two buffers, the layers share their intermediates) and replayed in one
    loop; the plan is rebuilt when a layer's :meth:`FusedBertLayer.bind_state` no longer holds.
    Between two large kernel calls the Python of a layer runs with caches the kernel has just
    evicted, a large share of a batch-1 forward pass; the plan leaves a tuple unpacking per call.
    The same calls on the same values, so the same bits. The plan's arrays are the model's state:
    concurrent forwards from several threads take the per-layer path while another holds the plan.

    ``forward(input_ids, attention_mask=None, token_type_ids=None)`` with int64 (batch, seq)
    tensors returns a ``SequenceClassifierOutput`` with ``logits`` (batch, num_labels) float32; any
    other argument (``labels``, ``position_ids``, ``output_hidden_states``, ...) is passed to the
    wrapped model unchanged. ``model`` is kept as a submodule (its attributes read through the
    wrapper); build with :meth:`wrap`.
    """

    #: encoder plans kept (one per input shape, most recent first)
    MAX_PLANS = 4

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.layers = list(model.bert.encoder.layer)
        self._plans: list = []  # [(B, S, state, x0, kb, out, calls)], most recent first
        self._plan_lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        # the wrapped model's attributes (``bert``, ``classifier``, ...) read through the wrapper
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("model")  # absent while copying or unpickling
            if inner is None or name.startswith("__"):
                raise
            return getattr(inner, name)

    @staticmethod
    def wrap(model: nn.Module) -> tuple[nn.Module, str]:
        """(the wrapper, '') when ``model`` is a BERT sequence classifier in eval mode with absolute
        positions and only lean fused layers, else (``model``, why not)."""
        bert = getattr(model, "bert", None)
        if type(model).__name__ != "BertForSequenceClassification" or bert is None:
            return model, f"{type(model).__name__} is not a BertForSequenceClassification"
        if getattr(model.config, "position_embedding_type", "absolute") != "absolute" or bert.pooler is None:
            return model, "relative positions or no pooler"
        if not all(isinstance(m, FusedBertLayer) and m.lean for m in bert.encoder.layer):
            return model, "not every encoder layer is a lean fused layer"
        if model.training:
            return model, "training mode"
        return LeanBertClassifier(model), ""

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None, **kwargs: Any):
        from transformers.modeling_outputs import SequenceClassifierOutput

        if kwargs or input_ids is None or input_ids.dim() != 2:
            return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                              **kwargs)
        emb = self.model.bert.embeddings
        B, S = input_ids.shape
        position_ids = emb.position_ids[:, :S]
        if token_type_ids is None:
            token_type_ids = emb.token_type_ids[:, :S].expand(B, S) if hasattr(emb, "token_type_ids") else \
                torch.zeros_like(input_ids)
        h = emb.word_embeddings(input_ids) + emb.token_type_embeddings(token_type_ids)
        h = emb.LayerNorm(h + emb.position_embeddings(position_ids))
        # one (batch, 1, 1, seq) additive key mask: every layer's KeyBiasCache turns it into the key bias once
        mask = None if attention_mask is None else \
            torch.zeros(B, 1, 1, S, dtype=torch.float32).masked_fill_(attention_mask[:, None, None, :] == 0, float("-inf"))
        if self._plannable() and h.dtype == torch.float32 and self._plan_lock.acquire(blocking=False):
            try:  # the last hidden state is the plan's buffer: pool it before another forward may run
                pooled = self.model.bert.pooler(self._run_plan(h, mask, B, S))
            finally:
                self._plan_lock.release()
        else:
            for layer in self.layers:
                h = layer(h, mask)
                if isinstance(h, tuple):
                    h = h[0]
            pooled = self.model.bert.pooler(h)
        return SequenceClassifierOutput(logits=self.model.classifier(pooled))

    def _plannable(self) -> bool:
        """Every layer lean and in eval mode, and no forward hook that the plan would skip."""
        from torch.nn.modules import module as m

        if m._global_forward_hooks or m._global_forward_pre_hooks:
            return False
        return all(layer.lean and not layer.training and not layer._forward_hooks and not layer._forward_pre_hooks
                   for layer in self.layers)

    def _run_plan(self, h: torch.Tensor, mask: Optional[torch.Tensor], B: int, S: int) -> torch.Tensor:
        """The encoder as the bound kernel calls of every layer (see the class doc); ``h`` the
        (B, S, H) float32 embeddings. Returns the last hidden state, (B, S, H) float32 (the plan's
        buffer: read it before the next forward)."""
        plan = next((p for p in self._plans if p[0] == B and p[1] == S), None)
        if plan is not None and not state_holds(plan[2]):
            self._plans.remove(plan)
            plan = None
        if plan is None:
            H = h.shape[-1]
            bufs = [np.empty((B * S, H), np.float32), np.empty((B * S, H), np.float32)]
            # each hidden state's per-token ranges, from the layer that writes it to the next one
            amax = [np.empty(B * S, np.float32), np.empty(B * S, np.float32)]
            kb = np.zeros((B, S), np.float32)
            work: dict = {}
            calls, state = [], []
            n = len(self.layers)
            for i, layer in enumerate(self.layers):
                hand_in = i > 0 and self.layers[i - 1].gives_y_amax and layer.takes_x_amax
                hand_out = i + 1 < n and layer.gives_y_amax and self.layers[i + 1].takes_x_amax
                calls += layer.bind(bufs[i % 2], bufs[(i + 1) % 2], kb, B, S, work,
                                    x_amax=amax[i % 2] if hand_in else None,
                                    y_amax=amax[(i + 1) % 2] if hand_out else None)
                state += layer.bind_state()
            plan = (B, S, state, bufs[0], kb, bufs[len(self.layers) % 2], calls)
        self._plans = [plan] + [p for p in self._plans if p is not plan][: self.MAX_PLANS - 1]
        _, _, _, x0, kb, out, calls = plan
        np.copyto(x0, h.detach().reshape(B * S, -1).numpy())
        np.copyto(kb, key_padding_bias(mask, B, S).numpy())
        for fn, args, kw in calls:
            fn(*args, **kw)
        return torch.from_numpy(out).view(B, S, -1)

    def __getstate__(self):
        # plans hold arrays bound to this process's kernel handles, and a lock: copies rebuild them
        state = self.__dict__.copy()
        state.update(_plans=[], _plan_lock=None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._plan_lock = threading.Lock()
