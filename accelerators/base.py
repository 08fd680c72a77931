"""The accelerator plugin interface.

An accelerator turns a (possibly pruned) model into a runnable module on some
execution path: torch fp32 eager, our sparse C kernels, INT8, ... The profiler
times whatever ``prepare`` returns; the returned module must accept the same
keyword inputs as a transformers sequence-classification model
(``input_ids``, ``attention_mask``, ``token_type_ids``) and return an object with
a ``logits`` attribute or a logits tensor (:func:`logits_of` reads either).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Literal, get_args

import torch
from torch import nn

#: ISA variants of the sparse C kernels, slowest first; ``"auto"`` (not listed) = the best this CPU has
#: short of ``"amx"`` (opt-in until timed on an AMX CPU: it differs from ``"vnni"`` only for bsr16x4)
KERNEL_VARIANTS: tuple[str, ...] = ("scalar", "avx2", "avx512", "vnni", "amx")
#: what the fused attention kernel computes in (here, not beside the kernel, so that a config is
#: checked without importing the C extension)
AttentionPrecision = Literal["fp32", "int8"]
ATTENTION_PRECISIONS: tuple[str, ...] = get_args(AttentionPrecision)
#: ``SparseLinear.act_quant`` values: int8 activation scales per token (row) or one per tensor (here
#: for the same reason: sparse-int8's ``act_quant`` takes them)
ActQuant = Literal["token", "tensor"]
ACT_QUANTS: tuple[str, ...] = get_args(ActQuant)


@dataclass(frozen=True)
class PrepareSettings:
    """What a cell asks of ``prepare``: the shape and thread count the module will be timed with,
    and what an accelerator may draw on while preparing.

    threads: intra-op thread count (>= 1). kernel_variant: ``"auto"`` or one of
    :data:`KERNEL_VARIANTS`; only the sparse C kernels read it. batch_size / seq_len: the timing
    batch's shape (sequences, tokens per sequence). calibration: ``calibration(n)`` yields up to
    ``n`` input batches of the task's training data (dicts of int64 tensors (batch, seq)) for
    post-training quantization; None = no calibration data. cache_dir: folder where an
    accelerator may cache artefacts on disk (exported models); None = its own default.
    """

    threads: int = 1
    kernel_variant: str = "auto"
    batch_size: int = 1
    seq_len: int = 128
    calibration: Callable[[int], Iterable[dict[str, torch.Tensor]]] | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        # a config is checked before any work; this catches direct API callers before an engine does
        for name in ("threads", "batch_size", "seq_len"):
            if not isinstance(getattr(self, name), numbers.Integral) or getattr(self, name) < 1:
                raise ValueError(f"PrepareSettings.{name}: expected an integer >= 1, got {getattr(self, name)!r}")
        if self.kernel_variant not in ("auto", *KERNEL_VARIANTS):
            raise ValueError(f"PrepareSettings.kernel_variant: {self.kernel_variant!r}; valid: auto, "
                             f"{', '.join(KERNEL_VARIANTS)}")

    @property
    def forced_variant(self) -> str | None:
        """The variant to force in the C kernels, or None for the module's own choice ("auto")."""
        return None if self.kernel_variant == "auto" else self.kernel_variant


@dataclass
class Prepared:
    """The result of ``prepare``: the runnable ``module`` and the flat, JSON-able ``fields`` that
    go into every result row of the cell (what the accelerator chose or found while preparing)."""

    module: nn.Module
    fields: dict[str, Any] = field(default_factory=dict)


def cpu_flags() -> set[str]:
    """The CPU's ISA flags (first ``flags`` line) from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


#: CPU flags of native bf16 dot products; without either, oneDNN emulates bf16 (slower than fp32)
BF16_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16")


def bf16_native() -> bool:
    """Whether the CPU has native bf16 dot products (``avx512_bf16`` or ``amx_bf16``)."""
    return bool(cpu_flags() & set(BF16_FLAGS))


def numerics_key(choices: dict[str, Any]) -> str:
    """A short hash of what an accelerator chose at ``prepare`` that changes its outputs (per-layer
    formats, fallbacks, fusions), for the ``numerics_key`` field: an accelerator whose choices are
    timed at the cell's shape and threads reports it, so that cells of one model whose prepared
    modules compute differently get their own accuracy pass. ``choices`` must be JSON-able."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(choices, sort_keys=True, default=str).encode()).hexdigest()[:12]


def example_tokens(example: dict[str, torch.Tensor]) -> int:
    """Tokens in one timing batch: ``example["input_ids"]`` (int64, (batch, seq_len)) has batch ×
    seq_len of them. Raises ValueError when the batch has no ``input_ids``."""
    ids = example.get("input_ids") if isinstance(example, dict) else None
    if not isinstance(ids, torch.Tensor):
        raise ValueError("example: one timing batch, a dict with an 'input_ids' tensor of shape (batch, seq_len), "
                         f"is needed; got {type(example).__name__} with keys {sorted(example) if isinstance(example, dict) else '-'}")
    return int(ids.numel())


def logits_of(out: Any) -> torch.Tensor:
    """Logits from a transformers output object (``.logits``), a tuple (first item), or a plain tensor."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    return out[0]


class Accelerator:
    """Base class. Subclasses set ``name`` and take their config as constructor keyword arguments.

    An instance holds only its config: everything ``prepare`` finds comes back in
    :class:`Prepared`, so one instance may prepare many models (for different cells) in any order.
    """

    name: ClassVar[str] = ""
    #: device the prepared module runs on ("cpu" or "cuda")
    device: ClassVar[str] = "cpu"
    #: constructor parameters added after cells were keyed by their full parameter set: left out of
    #: the canonical parameters (cell ids) while at their defaults, so earlier run directories match
    late_params: ClassVar[tuple[str, ...]] = ()
    #: number format of the prepared module's heavy arithmetic ("fp32", "bf16", "fp16", "int8");
    #: dense cells in "fp32" are the full-precision engines every savings factor is also taken
    #: against. A subclass declares it: one that does not ("unknown") is never such a reference, so
    #: an fp16 or INT8 plugin cannot become the dense fp32 baseline by omission.
    compute_precision: str = "unknown"
    #: whether outputs depend on the padding of a batch (not just on its real tokens), e.g. when
    #: activations are quantized with one scale per tensor, pad positions included: such cells'
    #: accuracy (measured with the task's own padding) and their timing (padded to seq_len) differ
    padding_sensitive: bool = False

    def availability(self, settings: PrepareSettings | None = None) -> tuple[bool, str]:
        """Return ``(ok, reason)`` for running here with ``settings`` (None = any settings);
        ``reason`` explains why not when ``ok`` is False. Never raises."""
        return True, ""

    def prepare(self, model: nn.Module, example: dict[str, torch.Tensor], settings: PrepareSettings) -> Prepared:
        """Build a new runnable module from ``model``; ``model`` itself is never mutated.

        ``example`` is one timing batch (int64 tensors of shape (batch, seq_len)); ``settings`` gives
        the thread count and kernel variant the module will be timed with. Raises RuntimeError when
        the accelerator is not available with these settings.
        """
        raise NotImplementedError
