"""``SparseLinear``: the torch face of the sparse C kernels (``accelerators._sparse_kernels``).

A ``SparseLinear`` holds a pruned ``nn.Linear`` weight in a sparse format as plain buffers
(``indptr``, ``indices``, ``values``, and for INT8 the per-row ``w_scale``), so it survives
``state_dict`` round trips; the packed, validated kernel handle is built from those buffers and
rebuilt whenever they change. Inference only: no autograd through the kernels.

Formats
    ``"csr"``      fp32: unstructured, one stored weight per non-zero.
                   int8: 1 x 4 quads along the input dimension (the VNNI dot-product width),
                   a quad is stored when any of its 4 weights is non-zero.
    ``"bsr{r}x1"`` fp32 only: blocks of r consecutive output rows x 1 input column (r in
                   1, 2, 4, 8); a block is stored when any of its r weights is non-zero.
    ``"bsr{r}x4"`` int8 only: r output rows x 4 input columns (r in 1, 2, 4, 8, 16; 16 rows x 4
    columns is one row of an AMX weight tile, run on AMX tiles by the ``amx`` kernel variant).
"""
from __future__ import annotations

import re
from typing import NamedTuple, Optional

import torch
from torch import nn

from accelerators import _sparse_kernels as _sk
from accelerators.base import ACT_QUANTS

__all__ = ["QuantizedActivation", "SparseLinear", "dense_to_blocks", "parse_format", "variant_unavailable"]


class QuantizedActivation(NamedTuple):
    """An activation quantized per token: ``values`` int8 (..., features), ``scale`` float32 (tokens,)
    with x[t] ~= scale[t] * values[t] (symmetric, [-127, 127]; scale 0 for an all-zero or
    non-finite row). Produced by :meth:`SparseLinear.forward_quantized`, consumed by an int8
    ``SparseLinear`` with per-token activations."""

    values: torch.Tensor
    scale: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        return self.values.shape

    def dequantize(self) -> torch.Tensor:
        """float32 tensor of the same shape."""
        v = self.values.reshape(self.scale.shape[0], -1).to(torch.float32) * self.scale[:, None]
        return v.view(self.values.shape)

_FORMAT_RE = re.compile(r"^bsr([1-9]\d*)x([1-9]\d*)$")


def parse_format(format: str, dtype: str = "fp32", block: Optional[int] = None) -> tuple[str, int, int]:
    """Normalise a format name to ``(name, block_rows, block_cols)``.

    ``format`` is ``"csr"``, ``"bsr"`` (with ``block`` = rows, default 4) or ``"bsr{r}x{c}"``;
    fp32 needs ``c == 1``, int8 ``c == 4``. Raises ValueError for anything else.
    """
    if dtype not in ("fp32", "int8"):
        raise ValueError(f"dtype must be 'fp32' or 'int8', got {dtype!r}")
    bw = 1 if dtype == "fp32" else 4
    if format == "csr":
        bh = 1
    elif format == "bsr":
        bh = 4 if block is None else int(block)
    else:
        m = _FORMAT_RE.match(format)
        if not m:
            raise ValueError(f"unknown sparse format {format!r}; use 'csr', 'bsr' or 'bsr{{rows}}x{{cols}}'")
        bh, c = int(m.group(1)), int(m.group(2))
        if c != bw:
            raise ValueError(f"format {format!r}: {dtype} blocks have {bw} input column(s)")
        if block is not None and int(block) != bh:
            raise ValueError(f"format {format!r} conflicts with block={block}")
    rows = (1, 2, 4, 8) if dtype == "fp32" else (1, 2, 4, 8, 16)
    if bh not in rows:
        raise ValueError(f"{dtype} block rows must be one of {', '.join(map(str, rows))}, got {bh}")
    name = "csr" if (bh == 1) else f"bsr{bh}x{bw}"
    return name, bh, bw


@torch.no_grad()
def dense_to_blocks(weight: torch.Tensor, bh: int, bw: int = 1):
    """Split a dense (n_out, n_in) weight into stored blocks of bh x bw.

    Returns ``(indptr int64 [n_block_rows + 1], indices int32 [nblocks], blocks [nblocks, bh, bw])``
    where ``indices`` are block-column numbers (input column for bw == 1, quad number for bw == 4)
    and ``blocks`` keeps the weight's dtype; rows/columns past the matrix are zero padded. A block
    is stored when any of its entries is non-zero.
    """
    w = weight.detach()
    n_out, n_in = w.shape
    nbr = -(-n_out // bh)
    nbc = -(-n_in // bw)
    wp = torch.zeros(nbr * bh, nbc * bw, dtype=w.dtype)
    wp[:n_out, :n_in] = w
    b = wp.reshape(nbr, bh, nbc, bw).permute(0, 2, 1, 3)  # (nbr, nbc, bh, bw)
    mask = (b != 0).flatten(2).any(-1)
    indptr = torch.zeros(nbr + 1, dtype=torch.int64)
    indptr[1:] = mask.sum(1).cumsum(0)
    r, c = mask.nonzero(as_tuple=True)
    return indptr, c.to(torch.int32), b[r, c].contiguous()


def variant_unavailable(variant: Optional[str]) -> Optional[str]:
    """Why the kernel ISA ``variant`` cannot run here, or None when it can (None: the default): not
    among :func:`supported_variants` (unknown, not compiled, not for this CPU), or refused by the
    extension itself (``check_variant``: the OS's refusal of amx's tile state)."""
    if variant is None:
        return None
    if isinstance(variant, str) and "\x00" in variant:  # C would read it only up to the NUL
        return (f"variant: {variant!r} holds a NUL character; valid: None or one of "
                f"{', '.join(_sk.supported_variants())}")
    if variant not in _sk.supported_variants():
        return (f"kernel variant {variant!r} not supported here (this CPU runs {', '.join(_sk.supported_variants())}; "
                f"compiled: {', '.join(_sk.compiled_variants())})")
    try:
        _sk.check_variant(variant)
    except ValueError as exc:
        return str(exc)
    return None


def _np(t: torch.Tensor):
    return t.detach().numpy()


def state_holds(state: list[tuple]) -> bool:
    """True while every entry of ``state`` still holds: ``("slot", dict, key, obj, version)`` —
    ``dict[key] is obj`` and, when ``version`` is not None, ``obj._version == version`` (no in-place
    change); ``("attr", holder, name, value, None)`` — ``getattr(holder, name) == value``. The
    entries of :meth:`SparseLinear.call_state` and ``FusedBertLayer.bind_state``; checking them
    in place costs about a third of building the same into a hashable key on every forward."""
    for kind, holder, name, value, version in state:
        if kind == "slot":
            if holder.get(name) is not value or (version is not None and value._version != version):
                return False
        elif getattr(holder, name) != value:
            return False
    return True


class SparseLinear(nn.Module):
    """y = act(x @ W.T + b) (+ residual) with a sparse W, computed by the C kernels.

    Build with :meth:`from_dense`. ``forward(x, residual=None, layer_norm=None)`` accepts
    (..., in_features) inputs (e.g. (batch, seq, in)), flattens the leading dims into tokens, and
    returns (..., out_features) float32 (cast back to the input's floating dtype if it was not
    float32); ``residual`` (any shape with tokens x out_features elements, ValueError naming it
    otherwise) is added in the kernel's output pass (BERT's skip connection), and ``layer_norm`` (an affine
    ``nn.LayerNorm(out_features)``) is applied to each output row inside the same call, while the
    rows are still in cache. In int8 mode ``x`` may also be a :class:`QuantizedActivation` (from
    :meth:`forward_quantized` of the previous layer). ``threads`` (attribute, settable) is the
    OpenMP thread count used per call, an int in [1, ``_sparse_kernels.thread_limit()``] (4 per
    processor; TypeError for a bool or a non-integer, ValueError outside, at construction or at the
    call); ``variant`` (attribute, settable; None = the extension's
    default) is the kernel ISA variant every call uses, so that two modules in one process can run
    different variants; ``act_quant`` (attribute, settable) is ``"token"`` or ``"tensor"`` (int8
    activation scales per row or per call). Both are checked when set (ValueError).

    Buffers (fp32): ``indptr`` int64 [n_block_rows + 1], ``indices`` int32 [nblocks],
    ``values`` float32 [nblocks, bh]; ``bias`` float32 [out] or absent.
    Buffers (int8): ``indices`` are quad numbers, ``values`` int8 [nblocks, bh, 4],
    ``w_scale`` float32 [out] (per-output-channel symmetric scale, W ~= w_scale[:, None] * W_q).
    """

    def __init__(self, in_features: int, out_features: int, indptr: torch.Tensor, indices: torch.Tensor,
                 values: torch.Tensor, bias: Optional[torch.Tensor], format: str = "csr", dtype: str = "fp32",
                 threads: int = 1, w_scale: Optional[torch.Tensor] = None, act_quant: str = "token",
                 activation: str = "none"):
        super().__init__()
        if activation not in ("none", "gelu"):
            raise ValueError("activation must be 'none' or 'gelu' (exact erf form)")
        #: epilogue applied to the output inside the kernel: "none" or "gelu" (erf-form GELU,
        #: |error| <= 2e-6 against torch's F.gelu); set by accelerators that fuse BERT's FFN GELU.
        self.activation = activation
        if in_features < 1 or out_features < 1:
            raise ValueError(f"in_features and out_features must be >= 1, got {in_features}, {out_features}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.format, self.block_rows, self.block_cols = parse_format(format, dtype)
        self.dtype_name = dtype
        # the extension's own check, the bound's one home: TypeError for a bool or a non-integer,
        # ValueError outside [1, _sk.thread_limit()] (beyond it OpenMP may fail to start the threads
        # and libgomp then exits the process). A value set later is checked by each kernel call.
        self.threads = _sk.check_threads(threads)
        self.variant: Optional[str] = None
        #: fp32 column-panel width handed to the kernel pack (-1: chosen there from the density)
        self.panel: int = -1
        self.act_quant = act_quant  # validated by the property's setter
        self.register_buffer("indptr", indptr.to(torch.int64).contiguous())
        self.register_buffer("indices", indices.to(torch.int32).contiguous())
        if dtype == "fp32":
            self.register_buffer("values", values.to(torch.float32).contiguous())
            self.w_scale = None
        else:
            if w_scale is None:
                raise ValueError("int8 SparseLinear needs w_scale")
            self.register_buffer("values", values.to(torch.int8).contiguous())
            self.register_buffer("w_scale", w_scale.to(torch.float32).contiguous())
        if bias is not None:
            self.register_buffer("bias", bias.detach().to(torch.float32).contiguous().clone())
        else:
            self.bias = None
        self._mat = None
        self._packed_state = None  # state_holds entries of the buffers the handle was packed from

    # ---------------------------------------------------------------- settable attributes
    # Properties, so a value set after construction is checked when set: an invalid act_quant would
    # otherwise run as per-tensor (the kernel gets only ``act_quant == "token"``), and a variant
    # holding a NUL would reach the C extension cut at the NUL ("avx2\x00junk" ran as avx2).
    @property
    def act_quant(self) -> str:
        """int8 activation scales: ``"token"`` (one per row) or ``"tensor"`` (one per call).
        Setting anything else raises ValueError listing the valid values."""
        return self._act_quant

    @act_quant.setter
    def act_quant(self, value: str) -> None:
        if not isinstance(value, str) or value not in ACT_QUANTS:
            raise ValueError(f"act_quant: must be one of {', '.join(map(repr, ACT_QUANTS))}, got {value!r}")
        self._act_quant = value

    @property
    def variant(self) -> Optional[str]:
        """The kernel ISA variant every call uses (``scalar``, ``avx2``, ``avx512``, ``vnni``,
        ``amx``), None = the extension's default. Setting a non-string raises TypeError, a string
        holding a NUL character ValueError; other names are checked by the extension at the call
        (ValueError naming the valid variants)."""
        return self._variant

    @variant.setter
    def variant(self, value: Optional[str]) -> None:
        if value is not None and not isinstance(value, str):
            raise TypeError(f"variant: must be a str or None, got {type(value).__name__}")
        if value is not None and "\x00" in value:
            raise ValueError(f"variant: {value!r} holds a NUL character; valid: None or one of "
                             f"{', '.join(_sk.supported_variants())}")
        self._variant = value

    # ---------------------------------------------------------------- construction
    @classmethod
    @torch.no_grad()
    def from_dense(cls, linear: nn.Linear, format: str = "csr", block: Optional[int] = None, dtype: str = "fp32",
                   threads: int = 1, act_quant: str = "token", activation: str = "none",
                   variant: Optional[str] = None) -> "SparseLinear":
        """Convert an ``nn.Linear`` (its zeros are what gets skipped).

        format/block: see the module docstring (``"csr"``, ``"bsr"`` + ``block``, ``"bsr4x1"``...).
        dtype: ``"fp32"`` (exact weights) or ``"int8"`` (per-output-channel symmetric weight
        quantization, round-to-nearest-even, range [-127, 127]; activations quantized per token at
        run time, or per tensor with ``act_quant="tensor"``: the symmetric linear quantization of
        Jacob et al. 2018, "Quantization and training of neural networks for efficient integer-
        arithmetic-only inference", eq. 1 with zero point 0, and the per-token dynamic activation
        scales of LLM.int8(), Dettmers et al. 2022, sec. 3.1). activation: ``"none"`` or ``"gelu"``
        (y = GELU(x W^T + b), fused into the kernel's output pass). variant: the kernel ISA variant
        every call of this module uses (None = the extension's default). Raises ValueError on bad
        options, and for dtype ``"int8"`` on a NaN or inf weight.
        """
        why = variant_unavailable(variant)
        if why:
            raise ValueError(why)
        m = cls._from_dense(linear, format, block, dtype, threads, act_quant, activation)
        m.variant = variant
        return m

    @classmethod
    def _from_dense(cls, linear: nn.Linear, format: str, block: Optional[int], dtype: str, threads: int,
                    act_quant: str, activation: str) -> "SparseLinear":
        name, bh, bw = parse_format(format, dtype, block)
        if linear.weight.dim() != 2:
            raise ValueError(f"from_dense needs a 2-D (out, in) weight, got shape {tuple(linear.weight.shape)}")
        w = linear.weight.detach().to(torch.float32)
        n_out, n_in = w.shape
        bias = linear.bias.detach() if linear.bias is not None else None
        if dtype == "fp32":
            indptr, indices, blocks = dense_to_blocks(w, bh, 1)
            values = blocks.reshape(-1, bh)
            return cls(n_in, n_out, indptr, indices, values, bias, name, dtype, threads, activation=activation)
        bad = (~torch.isfinite(w)).any(dim=1).nonzero()
        if len(bad):
            raise ValueError(f"from_dense: weight row {int(bad[0])} holds NaN or inf; INT8 quantization needs finite "
                             "weights")
        amax = w.abs().amax(dim=1)
        scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
        wq = torch.clamp(torch.round(w / scale[:, None]), -127, 127).to(torch.int8)
        indptr, indices, blocks = dense_to_blocks(wq, bh, 4)
        return cls(n_in, n_out, indptr, indices, blocks.reshape(-1, bh, 4), bias, name, dtype, threads,
                   w_scale=scale, act_quant=act_quant, activation=activation)

    @staticmethod
    def _stack_format(mods: "list[SparseLinear]") -> str:
        """The format a stack of ``mods`` is stored in: the most common of theirs (the first on a tie)
        whose block rows divide every layer's out_features, else the first layer's. Mixed (int8)
        formats arise when some of the stacked layers were left dense in the fallback's block format
        and the others chose ``csr``; the minority is re-blocked, so it runs in the majority's format."""
        formats = [m.format for m in mods]
        for fmt in sorted(dict.fromkeys(formats), key=lambda f: -formats.count(f)):
            bh = parse_format(fmt, mods[0].dtype_name)[1]
            if all(m.out_features % bh == 0 for m in mods):
                return fmt
        return formats[0]

    @staticmethod
    def can_stack(mods: "list[SparseLinear]") -> bool:
        """True when ``mods`` share in_features, dtype, activation and act_quant, and format (int8 layers
        may differ: :meth:`reformat` re-blocks them exactly), have out_features aligned to the stack's
        block rows, and all or none have a bias (so :meth:`stack` applies)."""
        a = mods[0]
        if any(m.dtype_name != a.dtype_name for m in mods):
            return False
        fmt = SparseLinear._stack_format(mods)
        bh = parse_format(fmt, a.dtype_name)[1]
        return all(m.in_features == a.in_features
                   and (m.format == fmt or a.dtype_name == "int8")
                   and m.activation == a.activation and m.act_quant == a.act_quant
                   and m.out_features % bh == 0 and (m.bias is None) == (a.bias is None)
                   for m in mods)

    @classmethod
    @torch.no_grad()
    def stack(cls, mods: "list[SparseLinear]") -> "SparseLinear":
        """One SparseLinear computing ``torch.cat([m(x) for m in mods], -1)`` in a single kernel call
        (e.g. BERT's q, k, v projections): the weights' block rows are stacked (int8 layers of other
        formats re-blocked into the most common one first), nothing is re-quantized, so the outputs
        are bit-identical to the separate calls. Raises ValueError when :meth:`can_stack` is False."""
        if not mods or not cls.can_stack(mods):
            raise ValueError("stack needs SparseLinear modules with the same in_features, format (int8: any), "
                             "dtype, activation and act_quant, block-aligned out_features and consistent biases")
        fmt = cls._stack_format(mods)
        mods = [m if m.format == fmt else m.reformat(fmt) for m in mods]
        a = mods[0]
        offsets = [0]
        for m in mods:
            offsets.append(offsets[-1] + int(m.indptr[-1]))
        indptr = torch.cat([a.indptr[:1]] + [m.indptr[1:] + off for m, off in zip(mods, offsets)])
        bias = torch.cat([m.bias for m in mods]) if a.bias is not None else None
        w_scale = torch.cat([m.w_scale for m in mods]) if a.w_scale is not None else None
        out = cls(a.in_features, sum(m.out_features for m in mods), indptr, torch.cat([m.indices for m in mods]),
                  torch.cat([m.values for m in mods]), bias, a.format, a.dtype_name, a.threads, w_scale=w_scale,
                  act_quant=a.act_quant, activation=a.activation)
        out.variant = a.variant
        if a.dtype_name == "fp32":
            # the column-panel width sets the order of each row's sum: one width for all, so
            # the stacked outputs stay bit-identical to the separate calls
            widths = {m.packed().panel for m in mods}
            if len(widths) > 1:
                for m in mods:
                    m.panel, m._mat = 0, None
            out.panel = widths.pop() if len(widths) == 1 else 0
        return out

    # ---------------------------------------------------------------- kernel handle
    def _buffers_state(self) -> list[tuple]:
        # each buffer in its slot at its in-place version (state_holds entries): a replaced or
        # modified buffer repacks (self._buffers directly: nn.Module.__getattr__ is slow per call)
        bufs = self._buffers
        return [("slot", bufs, name, bufs.get(name), None if bufs.get(name) is None else bufs[name]._version)
                for name in ("indptr", "indices", "values", "bias", "w_scale")]

    def _stale(self) -> bool:
        return self._mat is None or not state_holds(self._packed_state)

    def packed(self):
        """The validated kernel handle (``_sparse_kernels.SparseMatrix``), rebuilt if buffers changed."""
        if self._stale():
            shape = (self.out_features, self.in_features)
            if self.dtype_name == "fp32":
                vals = _np(self.values.contiguous())
                if self.block_rows == 1:
                    self._mat = _sk.pack_csr(_np(self.indptr), _np(self.indices), vals.reshape(-1), shape,
                                             panel=self.panel)
                else:
                    self._mat = _sk.pack_bsr(_np(self.indptr), _np(self.indices), vals, shape,
                                             block=self.block_rows, panel=self.panel)
            else:
                self._mat = _sk.pack_int8(_np(self.indptr), _np(self.indices), _np(self.values.contiguous()),
                                          _np(self.w_scale), shape, block=self.block_rows)
            self._packed_state = self._buffers_state()
            self._bias_np = _np(self.bias) if self.bias is not None else None
        return self._mat

    def __getstate__(self):
        # the packed C handle is a cache: copies and pickles rebuild it from the buffers
        state = self.__dict__.copy()
        state.update(_mat=None, _packed_state=None)
        state.pop("_bias_np", None)
        return state

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._mat = None

    # ---------------------------------------------------------------- compute
    def forward(self, x: "torch.Tensor | QuantizedActivation", residual: Optional[torch.Tensor] = None,
                layer_norm: Optional[nn.LayerNorm] = None) -> torch.Tensor:
        return self._run(x, residual, layer_norm, quantize_out=False)

    def forward_quantized(self, x: "torch.Tensor | QuantizedActivation",
                          residual: Optional[torch.Tensor] = None,
                          layer_norm: Optional[nn.LayerNorm] = None) -> "QuantizedActivation":
        """Like ``forward`` (int8 mode only), but the output leaves the kernel quantized per token
        (:class:`QuantizedActivation`), bit-identical to what the next int8 SparseLinear (per-token
        activations) would compute from the fp32 output, without the fp32 round trip through memory."""
        if self.dtype_name != "int8":
            raise ValueError("forward_quantized needs an int8 SparseLinear")
        return self._run(x, residual, layer_norm, quantize_out=True)

    def kernel(self, x, out, residual=None, layer_norm: Optional[nn.LayerNorm] = None, x_scale=None,
               out_scale=None) -> None:
        """One kernel call on 2-D numpy arrays, the per-call path of ``forward`` and of the fused
        layer: ``x`` (tokens, in_features) float32, or int8 with ``x_scale`` float32 (tokens,);
        ``out`` (tokens, out_features) float32, or int8 with ``out_scale`` float32 (tokens,)
        (int8 mode only); ``residual`` float32 like ``out`` or None; ``layer_norm`` an affine
        ``nn.LayerNorm(out_features)`` or None. Repacks first if the buffers changed. The C
        extension validates every buffer (TypeError / ValueError, never a crash)."""
        fn, args, kw = self.bound_call(x, out, residual, layer_norm, x_scale, out_scale)
        fn(*args, **kw)

    def bound_call(self, x, out, residual=None, layer_norm: Optional[nn.LayerNorm] = None, x_scale=None,
                   out_scale=None, x_amax=None, out_amax=None) -> tuple:
        """The kernel call of :meth:`kernel` (same arguments) as ``(function, args, kwargs)``, not
        run: callers that repeat a call sequence on the same buffers bind it once (see
        :class:`accelerators.fused_layer.LeanBertClassifier`). Repacks first if the buffers changed;
        the bound call then stays valid while :meth:`call_state` holds (:func:`state_holds`).
        int8 mode: ``x_amax`` float32 (tokens,) the per-token ranges max |x| of a float32 ``x``
        already known (another call's ``out_amax``; the range pass is skipped), ``out_amax``
        float32 (tokens,) receives those of a float32 ``out``; ValueError in fp32 mode."""
        mat = self.packed() if self._stale() else self._mat
        kw = {}
        if self.activation != "none":
            kw["activation"] = self.activation
        if residual is not None:
            kw["residual"] = residual
        if layer_norm is not None:
            kw.update(ln_weight=layer_norm.weight.detach().numpy(), ln_eps=float(layer_norm.eps),
                      ln_bias=layer_norm.bias.detach().numpy() if layer_norm.bias is not None else None)
        if x_scale is not None:
            kw["x_scale"] = x_scale
        if out_scale is not None:
            kw["out_scale"] = out_scale
        for name, a in (("x_amax", x_amax), ("out_amax", out_amax)):
            if a is not None:
                if self.dtype_name != "int8":
                    raise ValueError(f"{name} needs an int8 SparseLinear")
                kw[name] = a
        if self.dtype_name == "fp32":
            return _sk.spmm, (mat, x, out, self._bias_np, self.threads, self.variant), kw
        return _sk.spmm_int8, (mat, x, out, self._bias_np, self.threads, self.variant, self.act_quant == "token"), kw

    def can_fuse_ffn(self, second: "SparseLinear") -> bool:
        """True when ``self`` then ``second`` can run as one ``ffn_int8`` call (:meth:`bound_ffn_call`):
        both int8 with per-token activation scales, ``second`` without an activation of its own,
        the same threads and variant, and ``second`` takes ``self``'s output width."""
        return (isinstance(second, SparseLinear) and self.dtype_name == "int8" and second.dtype_name == "int8"
                and self.act_quant == "token" and second.act_quant == "token" and second.activation == "none"
                and self.threads == second.threads and self.variant == second.variant
                and second.in_features == self.out_features)

    def bound_ffn_call(self, second: "SparseLinear", x, out, residual=None,
                       layer_norm: Optional[nn.LayerNorm] = None, x_amax=None, out_amax=None) -> tuple:
        """``second(self(x))`` (with ``second``'s residual and LayerNorm epilogue) as one bound
        ``ffn_int8`` call: the intermediate never leaves the kernel, the same bits as
        :meth:`bound_call` of ``self`` with ``out_scale`` followed by ``second``'s with ``x_scale``.
        ``x`` (tokens, in_features) float32, ``out`` (tokens, second.out_features) float32;
        ``x_amax`` / ``out_amax`` as :meth:`bound_call`. Valid while both layers'
        :meth:`call_state` hold; ValueError unless :meth:`can_fuse_ffn`."""
        if not self.can_fuse_ffn(second):
            raise ValueError("these two layers cannot run as one ffn_int8 call (see can_fuse_ffn)")
        _, (m1, *_), kw1 = self.bound_call(x, out, x_amax=x_amax)
        _, (m2, *_), kw = second.bound_call(x, out, residual, layer_norm, out_amax=out_amax)
        kw.update((k, kw1[k]) for k in ("x_amax", "activation") if k in kw1)
        return _sk.ffn_int8, (m1, m2, x, out, self._bias_np, second._bias_np, self.threads, self.variant), kw

    def can_fuse_attention(self, threads: int, variant: Optional[str]) -> bool:
        """True when ``self`` (the stacked q | k | v layer) and INT8 attention run with ``threads``
        and ``variant`` can be one ``qkv_attention_int8`` call (:meth:`bound_qkv_attention_call`):
        int8 with per-token activation scales, no activation, the same threads and variant."""
        return (self.dtype_name == "int8" and self.act_quant == "token" and self.activation == "none"
                and self.threads == threads and self.variant == variant and self.out_features % 3 == 0)

    def bound_qkv_attention_call(self, x, out, num_heads: int, scale: float, key_bias, x_amax=None) -> tuple:
        """INT8 self-attention on ``self(x)`` (the stacked q | k | v projections) as one bound
        ``qkv_attention_int8`` call: ``x`` (batch, seq, in_features) float32, ``out`` (batch, seq,
        out_features / 3) float32, ``key_bias`` (batch, seq) float32; ``x_amax`` as
        :meth:`bound_call`. The same bits as :meth:`bound_call` followed by
        ``attention(..., precision="int8")``; valid while :meth:`call_state` holds. ValueError
        unless :meth:`can_fuse_attention` with this layer's own threads and variant."""
        if not self.can_fuse_attention(self.threads, self.variant):
            raise ValueError("this layer cannot run as one qkv_attention_int8 call (see can_fuse_attention)")
        mat = self.packed() if self._stale() else self._mat
        kw = {"key_bias": key_bias}
        if x_amax is not None:
            kw["x_amax"] = x_amax
        return (_sk.qkv_attention_int8, (mat, x, out, int(num_heads), self._bias_np, float(scale)),
                {**kw, "threads": self.threads, "variant": self.variant})

    def call_state(self) -> list[tuple]:
        """What a bound call depends on besides its arrays, as :func:`state_holds` entries: each
        weight buffer (the same tensor in its slot, at the same in-place version), activation,
        threads, variant and activation quantization."""
        self.packed()
        return self._packed_state + [("attr", self, a, getattr(self, a), None)
                                     for a in ("activation", "threads", "variant", "act_quant")]

    def _run(self, x, residual, layer_norm, quantize_out: bool):
        # Per-call path, kept lean: after a large kernel call Python and torch run with cold caches,
        # where each torch view or reshape costs ~10 us; numpy reshapes of the same memory are cheaper.
        q_in = isinstance(x, QuantizedActivation)
        if q_in and (self.dtype_name != "int8" or self.act_quant != "token"):
            raise ValueError("a QuantizedActivation input needs an int8 SparseLinear with act_quant='token'")
        shape = x.shape
        if not shape or shape[-1] != self.in_features:
            raise ValueError(f"expected last dim {self.in_features}, got shape {tuple(shape)}")
        if not q_in and not x.is_cpu:
            raise ValueError("SparseLinear runs on the CPU only")
        lead = shape[:-1]
        x_scale = out_scale_np = r_np = None
        if q_in:
            xv = x.values if x.values.is_contiguous() else x.values.contiguous()
            xn = xv.numpy()
            x_scale = x.scale.numpy()
        else:
            x2 = x.detach() if x.requires_grad else x
            if x2.dtype != torch.float32 or not x2.is_contiguous():
                x2 = x2.to(torch.float32).contiguous()
            xn = x2.numpy()
        if xn.ndim != 2:
            xn = xn.reshape(-1, self.in_features)
        tokens = xn.shape[0]
        if quantize_out:
            out = torch.empty(*lead, self.out_features, dtype=torch.int8)
            out_scale = torch.empty(tokens, dtype=torch.float32)
            out_scale_np = out_scale.numpy()
        else:
            out = torch.empty(*lead, self.out_features, dtype=torch.float32)
        on = out.numpy()
        if on.ndim != 2:
            on = on.reshape(tokens, self.out_features)
        if residual is not None:
            if residual.numel() != tokens * self.out_features:  # numpy's reshape error would name neither
                raise ValueError(f"residual: expected shape {(*lead, self.out_features)} (or another shape of "
                                 f"tokens x out_features = {tokens} x {self.out_features} elements), got shape "
                                 f"{tuple(residual.shape)}")
            r2 = residual.detach()
            if r2.dtype != torch.float32 or not r2.is_contiguous():
                r2 = r2.to(torch.float32).contiguous()
            r_np = r2.numpy().reshape(tokens, self.out_features)
        if layer_norm is not None and (tuple(layer_norm.normalized_shape) != (self.out_features,)
                                       or layer_norm.weight is None):
            raise ValueError(f"layer_norm must be an affine nn.LayerNorm({self.out_features})")
        self.kernel(xn, on, r_np, layer_norm, x_scale, out_scale_np)
        if quantize_out:
            return QuantizedActivation(out, out_scale)
        if not q_in and x.dtype != torch.float32 and x.is_floating_point():
            out = out.to(x.dtype)
        return out

    # ---------------------------------------------------------------- info
    @property
    def nnz_stored(self) -> int:
        """Stored weights including the zeros inside stored blocks."""
        return int(self.values.numel())

    def density(self) -> float:
        """Fraction of the dense weight's entries that are stored (block fill included)."""
        return self.nnz_stored / max(1, self.in_features * self.out_features)

    def _stored_dense(self) -> torch.Tensor:
        """The stored weights as a dense (out_features, in_features) tensor of ``values``' dtype
        (int8 layers: the quantized weights, unscaled)."""
        bh, bw = self.block_rows, self.block_cols
        nbr = self.indptr.numel() - 1
        nbc = -(-self.in_features // bw)
        w = torch.zeros(nbr, nbc, bh, bw, dtype=self.values.dtype)
        rows = torch.repeat_interleave(torch.arange(nbr), self.indptr[1:] - self.indptr[:-1])
        w[rows, self.indices.long()] = self.values.reshape(-1, bh, bw)
        return w.permute(0, 2, 1, 3).reshape(nbr * bh, nbc * bw)[: self.out_features, : self.in_features]

    def to_dense(self) -> torch.Tensor:
        """The (dequantized for int8) dense weight, float32 (out_features, in_features)."""
        w = self._stored_dense().to(torch.float32)
        if self.w_scale is not None:
            w = w * self.w_scale[:, None]
        return w.contiguous()

    @torch.no_grad()
    def reformat(self, format: str) -> "SparseLinear":
        """This int8 layer stored in INT8 ``format`` (``csr``, ``bsr2x4`` ... ``bsr16x4``): the
        same int8 weights and scales re-blocked, nothing re-quantized, so the outputs are the same
        bits (the kernels' int32 sums are exact in any order); ``self`` when already in it. Raises
        ValueError for an fp32 layer (its sums' order, and so its rounding, follows the format) or
        an unknown format."""
        if self.dtype_name != "int8":
            raise ValueError(f"reformat needs an int8 layer (fp32 rounding depends on the format), got {self.dtype_name}")
        name, bh, bw = parse_format(format, "int8")
        if name == self.format:
            return self
        indptr, indices, blocks = dense_to_blocks(self._stored_dense(), bh, bw)
        out = type(self)(self.in_features, self.out_features, indptr, indices, blocks.reshape(-1, bh, bw), self.bias,
                         name, "int8", self.threads, w_scale=self.w_scale.clone(), act_quant=self.act_quant,
                         activation=self.activation)
        out.variant = self.variant
        return out

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, format={self.format}, "
                f"dtype={self.dtype_name}, density={self.density():.3f}, threads={self.threads}, "
                f"activation={self.activation}")
