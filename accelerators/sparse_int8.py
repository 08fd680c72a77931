"""``sparse-int8``: sparse INT8 C kernels (VNNI, or AVX2 without it) for pruned encoder Linear layers, dense INT8 elsewhere.

Weights are quantized per output channel (symmetric, [-127, 127]); activations per token at run
time (``act_quant="token"``, default) or per tensor; products accumulate exactly in int32 and are
rescaled to fp32 with the bias. Each encoder Linear layer is measured at the example's token count
and thread count: our sparse INT8 kernel in each candidate layout against the dense fallback
(by default our INT8 kernel on the layer as it is, in the layout measured fastest on a dense
matrix, activations per token; or torch dynamic INT8 with the fastest quantized engine, or fp32),
and the faster one is kept.
Layers left dense that way are also tried all sparse, as one whole model against the mix (a dense
layer cuts the INT8 chain and the fused layer path), and the faster model is kept; a final
whole-model check falls back to the all-dense-INT8 model if that is slower.
Attention runs in our fused kernel (``fuse_layers``), in INT8 by default (``attention``);
embeddings, LayerNorm, pooler and classifier stay fp32.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from typing import Any, Iterator, Literal, Optional, get_args

import torch
from torch import nn

from accelerators.base import (ACT_QUANTS, ATTENTION_PRECISIONS, ActQuant, AttentionPrecision, PrepareSettings,
                               example_tokens)
from accelerators.int8_dynamic import X86_QUANT_ENGINES, X86QuantEngine, quantized_engine, supported_quant_engines
from accelerators.roles import encoder_linears
from accelerators.sparse_cpu import MinSparsity, MinSpeedup, MinTime, Repeats, SwapRun, _SparseSwap, intra_op_threads, set_submodule
from accelerators.timing import interleaved_timing

Int8Format = Literal["csr", "bsr2x4", "bsr4x4", "bsr8x4", "bsr16x4"]
INT8_FORMATS: tuple[str, ...] = get_args(Int8Format)
#: ``format`` and ``dense_format``: measured (``"auto"``) or fixed
Int8FormatChoice = Literal["auto", Int8Format]
#: what can run a layer left dense (see :class:`SparseInt8`) -> what ``quant_scope`` adds for it
DENSE_FALLBACK_SCOPE = {"torch-int8": "; layers left dense: torch dynamic INT8, activations per call",
                        "kernel-int8": "", "fp32": "; layers left dense: fp32"}
#: ``dense_fallback``'s choices, made from the keys above (see profiler.registry.choices)
DenseFallback = Literal[tuple(DENSE_FALLBACK_SCOPE)]
DENSE_FALLBACKS: tuple[str, ...] = get_args(DenseFallback)


def quad_block_fill(weight: torch.Tensor, bh: int) -> float:
    """Fill of ``bh``-row INT8 blocks for a weight (out, in): non-zero 1 x 4 quads / quad slots stored
    by (bh x 4) blocks (1.0: every stored block holds bh non-zero quads; lower: padding quads)."""
    n_out, n_in = weight.shape
    nbr, nq = -(-n_out // bh), -(-n_in // 4)
    wp = torch.zeros(nbr * bh, nq * 4, dtype=weight.dtype)
    wp[:n_out, :n_in] = weight
    quads = (wp.reshape(nbr * bh, nq, 4) != 0).any(-1)
    blocks = quads.reshape(nbr, bh, nq).any(1)
    return float(quads.sum().item()) / max(1, int(blocks.sum().item()) * bh)


class EngineInt8Linear(nn.Module):
    """A torch dynamic-INT8 Linear (per-channel weights by default) packed for quantized ``engine``.

    The engine is bound into the packed weights when they are packed (here, under
    :func:`~accelerators.int8_dynamic.quantized_engine`), and each call dispatches on the packed
    weights' type, so calls never touch torch's process-global engine. Copying the module re-packs
    its weights under the global engine: copy it inside ``quantized_engine(module.engine)``.
    Input (..., in_features) float32; output (..., out_features) float32.
    """

    def __init__(self, linear: nn.Linear, engine: str, per_channel: bool = True):
        super().__init__()
        from torch.ao.quantization import per_channel_dynamic_qconfig, default_dynamic_qconfig, quantize_dynamic

        self.engine = engine
        qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
        with quantized_engine(engine), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.q = quantize_dynamic(nn.Sequential(copy.deepcopy(linear)), {nn.Linear: qconfig},
                                      dtype=torch.qint8)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q(x)


class SparseInt8(_SparseSwap):
    """Sparse INT8 kernels (per-channel weights, dynamic per-token activations) where measured faster.

    Args:
        format: ``"auto"`` (measure ``csr`` = 1x4 quads and, where the pruning left whole blocks,
            ``bsr4x4`` / ``bsr8x4`` / ``bsr16x4``) or one fixed format from ``csr, bsr2x4, bsr4x4,
            bsr8x4, bsr16x4``. ``bsr16x4`` (16 rows x 4 columns: one row of an AMX weight tile) runs on
            AMX tiles with the ``amx`` kernel variant, as 16-row ``vpdpbusd`` blocks on ``vnni``, as two
            8-row slices on ``avx2`` / ``avx512``, padding blocks included (slower than the other
            formats there: ``auto`` times it).
        act_quant: ``"token"`` (one scale per token) or ``"tensor"`` (one per call).
        dense_fallback: for layers where sparse is not faster: ``"kernel-int8"`` (default: our INT8
            kernel on the layer as it is, in ``dense_format``, the sparse layers' quantization,
            activations per ``act_quant``; where that format is a layer's candidate too, the layer
            runs it unless another format beats it by ``min_speedup``, and counts as sparse),
            ``"torch-int8"`` (torch dynamic INT8: per-channel weights, one activation scale per
            call) or ``"fp32"`` (keep
            nn.Linear). One activation scale per call is the coarsest: BERT's FFN-output inputs carry
            outlier tokens (Dettmers et al. 2022, LLM.int8()); on a pruned MiniLM it cost 0.9 points
            of SST-2 accuracy where per-token scales cost 0.2 (docs/results.md).
        dense_format: the layout ``kernel-int8`` runs a layer left dense in: ``"auto"`` (default: the
            fastest of ``csr, bsr2x4, bsr4x4, bsr8x4, bsr16x4`` on a dense matrix of the largest encoder layer's
            shape at the example's token count, timed once per prepare; ``csr`` without ``calibrate``)
            or one of them. Blocks of 2-8 rows reuse each activation load across rows, which pays on
            VNNI and not in the AVX2 variant (docs/results.md), hence measured; the timing costs a few
            tens of ms per prepare, also when every layer ends up sparse. All formats give the same
            bits (exact int32 sums). Only with ``dense_fallback = "kernel-int8"``.
        engine: quantized engine for the torch fallback, ``"auto"`` = the fastest measured of
            x86 / fbgemm / onednn on the largest encoder layer.
        attention: ``"int8"`` (default; the fused layers' attention kernel computes Q K^T and P V in
            INT8 with VNNI where the CPU has it, kept only when every layer's hidden states stay
            within :attr:`attention_tolerance` (relative to the largest activation of each sequence) of the
            unfused path's error against the fp32 model) or ``"fp32"``. Rows say
            which ran (``attention_precision``) and why not (``attention_note``).
        min_speedup, min_sparsity, calibrate, repeats, min_time_s, check_model, fuse_gelu,
            fuse_layers: as sparse-cpu (with :attr:`fuse_tolerance` 1e-2: the INT8 layers' own rounding).
    """

    name = "sparse-int8"
    late_params = ("dense_format",)
    compute_precision = "int8"
    dtype = "int8"
    #: a ~1e-6 difference in the attention output can move an activation across an INT8 rounding
    #: boundary of the next kernel (1/127 of its range), so fused and unfused layer outputs agree to
    #: about one quantization step, not to float rounding
    fuse_tolerance = 1e-2
    #: 1 x 4 quads stacked 4 or 8 rows high (the VNNI block), or 16 (one row of an AMX weight tile)
    blocked_formats = (("bsr4x4", 4), ("bsr8x4", 8), ("bsr16x4", 16))
    block_fill = staticmethod(quad_block_fill)

    # engine: every x86 engine, whatever this torch build supports (availability() says where one is missing)
    def __init__(self, format: Int8FormatChoice = "auto", act_quant: ActQuant = "token",
                 dense_fallback: DenseFallback = "kernel-int8", dense_format: Int8FormatChoice = "auto",
                 engine: Literal["auto", X86QuantEngine] = "auto", min_speedup: MinSpeedup = 1.05,
                 min_sparsity: MinSparsity = 0.3,
                 calibrate: bool = True, repeats: Repeats = 7, min_time_s: MinTime = 0.004, check_model: bool = True,
                 fuse_gelu: bool = True, fuse_layers: bool = True, attention: AttentionPrecision = "int8") -> None:
        if attention not in ATTENTION_PRECISIONS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_PRECISIONS)} (got {attention!r})")
        self.attention = attention
        if act_quant not in ACT_QUANTS:
            raise ValueError(f"act_quant must be one of {', '.join(ACT_QUANTS)} (got {act_quant!r})")
        if dense_fallback not in DENSE_FALLBACKS:
            raise ValueError(f"dense_fallback must be one of {', '.join(DENSE_FALLBACKS)} (got {dense_fallback!r})")
        if dense_format != "auto" and dense_format not in INT8_FORMATS:
            raise ValueError(f"dense_format must be 'auto' or one of {', '.join(INT8_FORMATS)} (got {dense_format!r})")
        if dense_format != "auto" and dense_fallback != "kernel-int8":
            raise ValueError(f"dense_format = {dense_format!r} needs dense_fallback = 'kernel-int8' "
                             f"(got {dense_fallback!r}): only our kernel runs a dense layer in one of its formats")
        if engine != "auto" and engine not in X86_QUANT_ENGINES:
            raise ValueError(f"engine must be 'auto' or one of {', '.join(X86_QUANT_ENGINES)}")
        self.act_quant = act_quant
        # one activation scale per call (per tensor, or torch's dynamic INT8 for the dense layers):
        # pad positions and the batch's other sequences move it
        self.padding_sensitive = act_quant == "tensor" or dense_fallback == "torch-int8"
        self.dense_fallback = dense_fallback
        self.dense_format = dense_format
        self.engine = engine
        super().__init__(format=format, min_speedup=min_speedup, min_sparsity=min_sparsity, calibrate=calibrate,
                         repeats=repeats, min_time_s=min_time_s, check_model=check_model,
                         fuse_gelu=fuse_gelu, fuse_layers=fuse_layers)

    def _validate_format(self) -> None:
        if self.format != "auto" and self.format not in INT8_FORMATS:
            raise ValueError(f"format must be 'auto' or one of {', '.join(INT8_FORMATS)} (got {self.format!r})")

    def availability(self, settings: PrepareSettings | None = None) -> tuple[bool, str]:
        ok, reason = super().availability(settings)
        if not ok:
            return ok, reason
        if self.dense_fallback == "torch-int8":
            try:
                from torch.ao.quantization import quantize_dynamic  # noqa: F401
            except Exception as exc:
                return False, f"dense INT8 fallback needs torch.ao.quantization.quantize_dynamic: {exc}"
            engines = supported_quant_engines(X86_QUANT_ENGINES)
            if not engines:
                return False, "no torch quantized engine (x86/fbgemm/onednn) for the dense INT8 fallback"
            if self.engine != "auto" and self.engine not in engines:
                return False, f"quantized engine {self.engine!r} not supported here (supported: {engines})"
        return True, ""

    def _make_sparse(self, lin: nn.Linear, fmt: str, run: SwapRun) -> nn.Module:
        from accelerators.sparse_linear import SparseLinear

        return SparseLinear.from_dense(lin, fmt, dtype="int8", threads=run.threads, act_quant=self.act_quant,
                                       variant=run.variant)

    def _make_dense(self, lin: nn.Linear, run: SwapRun) -> Optional[nn.Module]:
        if self.dense_fallback == "fp32":
            return None
        if self.dense_fallback == "kernel-int8":
            from accelerators.sparse_linear import SparseLinear

            return SparseLinear.from_dense(lin, run.dense_format or "csr", dtype="int8", threads=run.threads,
                                           act_quant=self.act_quant, variant=run.variant)
        return EngineInt8Linear(lin, run.engine or "x86")

    def _fallback_format(self, run: SwapRun) -> Optional[str]:
        return run.dense_format if self.dense_fallback == "kernel-int8" else None

    def _tolerance(self) -> float:
        return 5e-2  # int8 vs fp32: max abs error relative to the output's max

    def _start(self, model: nn.Module, example: dict[str, torch.Tensor], settings: PrepareSettings) -> SwapRun:
        run = super()._start(model, example, settings)
        if self.dense_fallback == "torch-int8":
            run.engine = self._pick_engine(model, example, run.threads)
        elif self.dense_fallback == "kernel-int8":
            run.dense_format = self._pick_dense_format(model, example, run)
        return run

    def _pick_dense_format(self, model: nn.Module, example: dict[str, torch.Tensor], run: SwapRun) -> str:
        """The configured ``dense_format``, or with ``"auto"`` the fastest of :data:`INT8_FORMATS` on a
        dense random matrix of the largest encoder layer's shape at the example's token count
        (``csr`` without ``calibrate`` or encoder layers)."""
        from accelerators.sparse_linear import SparseLinear

        if self.dense_format != "auto":
            return self.dense_format
        layers = encoder_linears(model)
        if not self.calibrate or not layers:
            return "csr"
        lin = max((m for _, m in layers), key=lambda m: m.weight.numel())
        gen = torch.Generator().manual_seed(0)
        dense = nn.utils.skip_init(nn.Linear, lin.in_features, lin.out_features)  # no draw from the global RNG
        with torch.no_grad():
            dense.weight.copy_(torch.randn(dense.weight.shape, generator=gen))
            dense.bias.zero_()
        x = torch.randn(example_tokens(example), lin.in_features, generator=gen)
        mods = {f: SparseLinear.from_dense(dense, f, dtype="int8", threads=run.threads, act_quant=self.act_quant,
                                           variant=run.variant) for f in INT8_FORMATS}
        t = interleaved_timing({f: (lambda m=m: m(x)) for f, m in mods.items()},
                               max(3, self.repeats // 2), self.min_time_s)
        return min(t, key=t.get)

    def _pick_engine(self, model: nn.Module, example: dict[str, torch.Tensor], threads: int) -> str:
        """The configured engine, or with ``"auto"`` the fastest supported one on the largest
        encoder layer at the example's token count."""
        engines = supported_quant_engines(X86_QUANT_ENGINES) if self.engine == "auto" else [self.engine]
        layers = encoder_linears(model)
        if len(engines) == 1 or not layers:
            return engines[0]
        lin = max((m for _, m in layers), key=lambda m: m.weight.numel())
        x = torch.randn(example_tokens(example), lin.in_features, generator=torch.Generator().manual_seed(0))
        with intra_op_threads(threads):
            mods = {e: EngineInt8Linear(lin, e) for e in engines}
            t = interleaved_timing({e: (lambda m=m: m(x)) for e, m in mods.items()},
                                   max(3, self.repeats // 2), self.min_time_s)
        return min(t, key=t.get)

    @contextlib.contextmanager
    def _building(self, run: SwapRun) -> Iterator[None]:
        # copies of the model made while preparing (fused layers) re-pack the fallback's weights
        with quantized_engine(run.engine):
            yield

    def _dense_model(self, dense_model: nn.Module, run: SwapRun) -> nn.Module:
        if self.dense_fallback == "fp32":
            return dense_model
        m = copy.deepcopy(dense_model)
        for name, lin in encoder_linears(m):
            set_submodule(m, name, self._make_dense(lin, run))
        return m

    def _fields(self, run: SwapRun) -> dict[str, Any]:
        f = super()._fields(run)
        f.update(sparse_act_quant=self.act_quant, sparse_dense_fallback=self.dense_fallback,
                 sparse_dense_format=run.dense_format,
                 quant_engine=run.engine,
                 quant_scope="encoder Linear layers int8 (weights per channel, activations per "
                             f"{self.act_quant}{DENSE_FALLBACK_SCOPE[self.dense_fallback]}); attention "
                             f"{f['attention_precision'] or 'fp32'}; embeddings, LayerNorm, pooler, classifier fp32")
        return f
