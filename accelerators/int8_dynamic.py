"""Dense INT8 through PyTorch dynamic quantization of Linear layers, and the quantized-engine
helpers every INT8 path here shares.

torch binds the quantized engine into a Linear's packed weights when they are packed (at
quantization, and again whenever the module is copied or its state loaded), and dispatches each
call on the packed weights' own type: the process-global ``torch.backends.quantized.engine`` only
matters while packing. So the engine is set once, around building the prepared model
(:func:`quantized_engine`), and restored afterwards; calls need no engine switching.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Iterable, Iterator, Literal, get_args

import torch
from torch import nn

from accelerators.base import Accelerator, PrepareSettings, Prepared

#: the x86 server engines (sparse-int8 measures these for its dense fallback)
X86QuantEngine = Literal["x86", "fbgemm", "onednn"]
#: torch's quantized engines: the x86 server engines first, then qnnpack (the mobile/ARM engine). All
#: of them, whatever this torch build supports: a config is valid on any machine, and ``availability``
#: says where an engine is missing
QuantEngine = Literal[X86QuantEngine, "qnnpack"]
QUANT_ENGINES: tuple[str, ...] = get_args(QuantEngine)
X86_QUANT_ENGINES: tuple[str, ...] = get_args(X86QuantEngine)


def supported_quant_engines(candidates: Iterable[str] = QUANT_ENGINES) -> list[str]:
    """The ``candidates`` this torch build supports, in the candidates' order ([] when unknown)."""
    try:
        supported = torch.backends.quantized.supported_engines
    except Exception:
        return []
    return [e for e in candidates if e in supported]


@contextlib.contextmanager
def quantized_engine(engine: str | None) -> Iterator[None]:
    """``torch.backends.quantized.engine`` set to ``engine`` inside the block (None: unchanged),
    restored after it. Wrap everything that packs quantized weights (quantizing, deep-copying a
    quantized model); calls to packed modules keep the engine they were packed with."""
    if engine is None:
        yield
        return
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = old


class Int8Dynamic(Accelerator):
    """``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear`` (weights INT8 per tensor,
    activations quantized dynamically per batch); embeddings and LayerNorm stay fp32.

    Args:
        engine: quantized engine the weights are packed for: one of x86, fbgemm, onednn, qnnpack.
    """

    name = "int8-dynamic"
    compute_precision = "int8"
    padding_sensitive = True  # torch's dynamic quantization: one activation scale per tensor

    def __init__(self, engine: QuantEngine = "x86") -> None:
        if engine not in QUANT_ENGINES:
            raise ValueError(f"engine must be one of: {', '.join(QUANT_ENGINES)} (got {engine!r})")
        self.engine = engine

    def availability(self, settings: PrepareSettings | None = None) -> tuple[bool, str]:
        try:
            from torch.ao.quantization import quantize_dynamic  # noqa: F401
        except Exception as exc:  # API removed in a future torch
            return False, f"torch.ao.quantization.quantize_dynamic unavailable: {exc}"
        engines = torch.backends.quantized.supported_engines
        if self.engine not in engines:
            return False, f"quantized engine {self.engine!r} not supported by this torch build (supported: {', '.join(engines)})"
        return True, ""

    def prepare(self, model: nn.Module, example: dict[str, torch.Tensor], settings: PrepareSettings) -> Prepared:
        import warnings

        from torch.ao.quantization import quantize_dynamic

        with quantized_engine(self.engine), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the API is deprecated in this torch; still the reference path
            module = quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)
        return Prepared(module, {"quant_engine": self.engine,
                                 "quant_scope": "all nn.Linear (encoder, pooler, classifier); embeddings fp32"})
