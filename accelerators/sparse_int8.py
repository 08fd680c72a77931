"""``sparse-int8``: sparse INT8 C kernels (VNNI) for pruned encoder Linear layers, dense INT8 elsewhere.

Weights are quantized per output channel (symmetric, [-127, 127]); activations per token at run
time (``act_quant="token"``, default) or per tensor; products accumulate exactly in int32 and are
rescaled to fp32 with the bias. Each encoder Linear layer is measured at the example's token count
and thread count: our sparse INT8 kernel in each candidate layout against the dense fallback
(torch dynamic INT8 with the fastest quantized engine, by default), and the faster one is kept.
A final whole-model check falls back to the all-dense-INT8 model if the mix is slower.
Embeddings, LayerNorm, attention (our fused fp32 kernel, see ``fuse_layers``), pooler and
classifier stay fp32.
"""
from __future__ import annotations

import copy
import warnings
from typing import Any, Optional

import torch
from torch import nn

from accelerators.sparse_cpu import _SparseSwap, encoder_linears, interleaved_timing, set_submodule

INT8_FORMATS = ("csr", "bsr2x4", "bsr4x4", "bsr8x4")
ENGINES = ("x86", "fbgemm", "onednn")


def quad_block_fill(weight: torch.Tensor, bh: int) -> float:
    """Non-zeros in stored (bh x 4) blocks / non-zeros in stored 1 x 4 quads (1.0: perfect bh-row blocks)."""
    n_out, n_in = weight.shape
    nbr, nq = -(-n_out // bh), -(-n_in // 4)
    wp = torch.zeros(nbr * bh, nq * 4, dtype=weight.dtype)
    wp[:n_out, :n_in] = weight
    quads = (wp.reshape(nbr * bh, nq, 4) != 0).any(-1)
    blocks = quads.reshape(nbr, bh, nq).any(1)
    return float(quads.sum().item()) / max(1, int(blocks.sum().item()) * bh)


class EngineInt8Linear(nn.Module):
    """A torch dynamic-INT8 Linear that selects its quantized engine on every call."""

    def __init__(self, linear: nn.Linear, engine: str, per_channel: bool = True):
        super().__init__()
        from torch.ao.quantization import per_channel_dynamic_qconfig, default_dynamic_qconfig, quantize_dynamic

        self.engine = engine
        torch.backends.quantized.engine = engine
        qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.q = quantize_dynamic(nn.Sequential(copy.deepcopy(linear)), {nn.Linear: qconfig},
                                      dtype=torch.qint8)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.backends.quantized.engine != self.engine:
            torch.backends.quantized.engine = self.engine
        return self.q(x)


class SparseInt8(_SparseSwap):
    """Sparse INT8 kernels (per-channel weights, dynamic per-token activations) where measured faster.

    Args:
        format: ``"auto"`` (measure ``csr`` = 1x4 quads and, where the pruning left whole blocks,
            ``bsr4x4`` / ``bsr8x4``) or one fixed format from ``csr, bsr2x4, bsr4x4, bsr8x4``.
        act_quant: ``"token"`` (one scale per token) or ``"tensor"`` (one per call).
        dense_fallback: ``"torch-int8"`` (torch dynamic INT8, per-channel weights) or ``"fp32"``
            (keep nn.Linear) for layers where sparse is not faster.
        engine: quantized engine for the torch fallback, ``"auto"`` = the fastest measured of
            x86 / fbgemm / onednn on the first layer.
        min_speedup, min_sparsity, calibrate, repeats, min_time_s, check_model, variant, fuse_gelu,
            fuse_layers: as sparse-cpu (fused layers kept when the logits agree within 1e-2 of their max).
    """

    name = "sparse-int8"
    dtype = "int8"
    #: a ~1e-6 difference in the attention output can move an activation across an INT8 rounding
    #: boundary of the next layer (1/127 of its range), so fused and unfused logits agree to ~1e-3
    fuse_tolerance = 1e-2

    def __init__(self, format: str = "auto", act_quant: str = "token", dense_fallback: str = "torch-int8",
                 engine: str = "auto", min_speedup: float = 1.05, min_sparsity: float = 0.3,
                 calibrate: bool = True, repeats: int = 7, min_time_s: float = 0.004, check_model: bool = True,
                 variant: Optional[str] = None, fuse_gelu: bool = True, fuse_layers: bool = True) -> None:
        if act_quant not in ("token", "tensor"):
            raise ValueError("act_quant must be 'token' or 'tensor'")
        if dense_fallback not in ("torch-int8", "fp32"):
            raise ValueError("dense_fallback must be 'torch-int8' or 'fp32'")
        if engine != "auto" and engine not in ENGINES:
            raise ValueError(f"engine must be 'auto' or one of {', '.join(ENGINES)}")
        self.act_quant = act_quant
        self.dense_fallback = dense_fallback
        self.engine = engine
        self._engine_used: Optional[str] = None
        super().__init__(format=format, min_speedup=min_speedup, min_sparsity=min_sparsity, calibrate=calibrate,
                         repeats=repeats, min_time_s=min_time_s, check_model=check_model, variant=variant,
                         fuse_gelu=fuse_gelu, fuse_layers=fuse_layers)

    def _validate_format(self) -> None:
        if self.format != "auto" and self.format not in INT8_FORMATS:
            raise ValueError(f"format must be 'auto' or one of {', '.join(INT8_FORMATS)} (got {self.format!r})")

    def _engines(self) -> list[str]:
        try:
            supported = torch.backends.quantized.supported_engines
        except Exception:
            return []
        return [e for e in ENGINES if e in supported]

    def availability(self) -> tuple[bool, str]:
        ok, reason = super().availability()
        if not ok:
            return ok, reason
        if self.dense_fallback == "torch-int8":
            try:
                from torch.ao.quantization import quantize_dynamic  # noqa: F401
            except Exception as exc:
                return False, f"dense INT8 fallback needs torch.ao.quantization.quantize_dynamic: {exc}"
            engines = self._engines()
            if not engines:
                return False, "no torch quantized engine (x86/fbgemm/onednn) for the dense INT8 fallback"
            if self.engine != "auto" and self.engine not in engines:
                return False, f"quantized engine {self.engine!r} not supported here (supported: {engines})"
        return True, ""

    def _candidates(self, weight: torch.Tensor) -> list[str]:
        if self.format != "auto":
            return [self.format]
        cands = ["csr"]
        for fmt, bh in (("bsr4x4", 4), ("bsr8x4", 8)):
            if quad_block_fill(weight, bh) >= 0.6:
                cands.append(fmt)
        return cands

    def _make_sparse(self, lin: nn.Linear, fmt: str, threads: int) -> nn.Module:
        from accelerators.sparse_linear import SparseLinear

        m = SparseLinear.from_dense(lin, fmt, dtype="int8", threads=threads, act_quant=self.act_quant)
        m.variant = self.variant
        return m

    def _make_dense(self, lin: nn.Linear, threads: int) -> Optional[nn.Module]:
        if self.dense_fallback == "fp32":
            return None
        return EngineInt8Linear(lin, self._engine_used or "x86")

    def _tolerance(self) -> float:
        return 5e-2  # int8 vs fp32: max abs error relative to the output's max

    @torch.no_grad()
    def prepare(self, model: nn.Module, example: dict[str, torch.Tensor], threads: int) -> nn.Module:
        ok, reason = self.availability()
        if not ok:
            raise RuntimeError(reason)
        self._engine_used = None
        if self.dense_fallback == "torch-int8":
            engines = self._engines() if self.engine == "auto" else [self.engine]
            if len(engines) == 1:
                self._engine_used = engines[0]
            else:
                layers = encoder_linears(model)
                if layers:
                    lin = max((m for _, m in layers), key=lambda m: m.weight.numel())
                    tokens = int(example["input_ids"].numel())
                    x = torch.randn(tokens, lin.in_features)
                    old = torch.get_num_threads()
                    torch.set_num_threads(threads)
                    try:
                        mods = {e: EngineInt8Linear(lin, e) for e in engines}
                        t = interleaved_timing({e: (lambda m=m: m(x)) for e, m in mods.items()},
                                               max(3, self.repeats // 2), self.min_time_s)
                    finally:
                        torch.set_num_threads(old)
                    self._engine_used = min(t, key=t.get)
                else:
                    self._engine_used = engines[0]
        return super().prepare(model, example, threads)

    def _dense_model(self, dense_model: nn.Module, threads: int) -> nn.Module:
        if self.dense_fallback == "fp32":
            return dense_model
        m = copy.deepcopy(dense_model)
        for name, lin in encoder_linears(m):
            set_submodule(m, name, EngineInt8Linear(lin, self._engine_used or "x86"))
        return m

    def row_fields(self) -> dict[str, Any]:
        f = super().row_fields()
        f.update(sparse_act_quant=self.act_quant, sparse_dense_fallback=self.dense_fallback,
                 quant_engine=self._engine_used,
                 quant_scope="encoder Linear layers int8 (weights per channel, activations per "
                             f"{self.act_quant}); embeddings, attention, LayerNorm, pooler, classifier fp32")
        return f
