"""GPU targets: dense fp16 / bf16 on CUDA, and 2:4 semi-structured sparsity (fp16) through
``torch.sparse.to_sparse_semi_structured``.

Every prepared module is wrapped in :class:`OnDevice`: it moves the (CPU, int64) inputs it is
given to the GPU and hands logits back as fp32 on the device the inputs came from. The runner's
timed loop moves inputs to ``cuda`` itself (so no copy is timed and logits stay on the GPU; the
runner synchronises CUDA per call), while the accuracy pass feeds CPU tensors and gets CPU logits.
"""
from __future__ import annotations

import copy
from typing import Any, Literal, get_args

import torch
from torch import nn

from accelerators.base import Accelerator, PrepareSettings, Prepared, logits_of
from accelerators.roles import ENCODER_LINEAR_RE

CUDA_ABSENT = "torch.cuda.is_available() is False: no CUDA device/driver"
#: cuda-2:4's ``backend``: all of them, whatever this torch build has (``availability`` says where one is missing)
Backend24 = Literal["auto", "cutlass", "cusparselt"]
BACKENDS_24: tuple[str, ...] = get_args(Backend24)


def cuda_availability(min_capability: tuple[int, int] | None = None, what: str = "") -> tuple[bool, str]:
    """``(ok, reason)`` for a CUDA path needing ``min_capability`` (major, minor). Never raises."""
    try:
        if not torch.cuda.is_available():
            return False, CUDA_ABSENT
        if min_capability is not None:
            cc = torch.cuda.get_device_capability()
            if tuple(cc) < tuple(min_capability):
                name = torch.cuda.get_device_name()
                return False, (f"{what} needs compute capability >= {min_capability[0]}.{min_capability[1]}; "
                               f"{name} has {cc[0]}.{cc[1]}")
    except Exception as exc:  # a broken driver, a CUDA init error
        return False, f"CUDA probe failed: {type(exc).__name__}: {exc}"
    return True, ""


def _gpu_fields() -> dict[str, Any]:
    try:
        cc = torch.cuda.get_device_capability()
        return {"gpu_name": torch.cuda.get_device_name(), "gpu_compute_capability": f"{cc[0]}.{cc[1]}"}
    except Exception:
        return {}


class OnDevice(nn.Module):
    """Runs ``model`` on ``device``: inputs are moved there, logits come back as fp32 on the device
    of the inputs (CPU in → CPU out; CUDA in → CUDA out, nothing copied back)."""

    def __init__(self, model: nn.Module, device: str | torch.device) -> None:
        super().__init__()
        self.model = model
        self.target = torch.device(device)

    def forward(self, **inputs: Any) -> torch.Tensor:
        source = next((v.device for v in inputs.values() if isinstance(v, torch.Tensor)), self.target)
        moved = {k: v.to(self.target, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        logits = logits_of(self.model(**moved)).float()
        return logits if source == logits.device else logits.to(source)


class _CudaDense(Accelerator):
    """A deep copy of the model cast to ``dtype`` on the GPU, fp32 logits out."""

    device = "cuda"
    dtype: torch.dtype = torch.float16

    def availability(self, settings: PrepareSettings | None = None) -> tuple[bool, str]:
        return cuda_availability()

    def prepare(self, model: nn.Module, example: dict[str, torch.Tensor], settings: PrepareSettings) -> Prepared:
        ok, why = self.availability(settings)
        if not ok:
            raise RuntimeError(f"{self.name}: {why}")
        gpu = copy.deepcopy(model).eval().to(device=self.device, dtype=self.dtype)
        return Prepared(OnDevice(gpu, self.device).eval(),
                        {"gpu_dtype": str(self.dtype).replace("torch.", ""), **_gpu_fields()})


class CudaFP16(_CudaDense):
    """Dense fp16 on CUDA (tensor cores): weights and activations in half precision."""

    name = "cuda-fp16"
    compute_precision = "fp16"
    dtype = torch.float16


class CudaBF16(_CudaDense):
    """Dense bf16 on CUDA: native on compute capability >= 8.0 (Ampere and newer)."""

    name = "cuda-bf16"
    compute_precision = "bf16"
    dtype = torch.bfloat16

    def availability(self, settings: PrepareSettings | None = None) -> tuple[bool, str]:
        ok, why = cuda_availability()
        if not ok:
            return ok, why
        try:
            if not torch.cuda.is_bf16_supported(including_emulation=False):
                return False, f"bf16 is not supported natively by {torch.cuda.get_device_name()}"
        except TypeError:  # older torch without including_emulation
            if not torch.cuda.is_bf16_supported():
                return False, f"bf16 is not supported by {torch.cuda.get_device_name()}"
        return True, ""


def is_24_sparse(weight: torch.Tensor) -> bool:
    """True when every group of 4 consecutive weights along the input dimension holds at most 2
    non-zeros (the pattern semi-structured sparse tensor cores accelerate)."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    return bool(((weight.detach().reshape(-1, 4) != 0).sum(dim=1) <= 2).all())


def plan_24(model: nn.Module, min_rows: int = 32, min_cols: int = 64) -> list[str]:
    """Names of the encoder ``nn.Linear`` layers to convert to 2:4 semi-structured sparsity.

    Targeted layers are the encoder Linear layers that hold zeros (what a pruner touched); each of
    them must be exactly 2:4 along its input dimension and have a shape the sparse kernels take
    (rows a multiple of ``min_rows``, columns of ``min_cols``). Zero-free encoder layers (untouched
    by the pruner) stay dense. Raises ValueError with the offending layers otherwise, or when no
    layer is 2:4 sparse at all."""
    encoder = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and ENCODER_LINEAR_RE.search(n)}
    if not encoder:
        raise ValueError("cuda-2:4: the model has no encoder nn.Linear layers (expected a BERT-family model)")
    touched = {n: m for n, m in encoder.items() if bool((m.weight == 0).any())}
    if not touched:
        raise ValueError("cuda-2:4: no encoder Linear weight is 2:4 sparse (the model is dense); "
                         "prune it with an N:M 2:4 pruner first")
    not_24 = [n for n, m in touched.items() if not is_24_sparse(m.weight)]
    if not_24:
        dens = {n: float((touched[n].weight != 0).float().mean()) for n in not_24}
        shown = ", ".join(f"{n} ({dens[n]:.0%} non-zero)" for n in not_24[:4]) + (f" and {len(not_24) - 4} more" if len(not_24) > 4 else "")
        raise ValueError(f"cuda-2:4: targeted weights are not exactly 2:4 sparse (at most 2 non-zeros in every group of 4 "
                         f"along the input dimension): {shown}; prune with an N:M 2:4 pruner, not unstructured")
    bad_shape = [f"{n} {tuple(m.weight.shape)}" for n, m in touched.items()
                 if m.weight.shape[0] % min_rows or m.weight.shape[1] % min_cols]
    if bad_shape:
        raise ValueError(f"cuda-2:4: weight shapes must be multiples of ({min_rows}, {min_cols}) for the sparse kernels: "
                         + ", ".join(bad_shape[:4]))
    return list(touched)


class Sparse24Module(OnDevice):
    """:class:`OnDevice` whose ``state_dict`` holds the compressed 2:4 form of the converted weights
    (kept values + metadata), so stored-size accounting sees what the sparse format stores."""

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        from torch.sparse import SparseSemiStructuredTensor

        out: dict[str, Any] = {}
        for k, v in super().state_dict(*args, **kwargs).items():
            if isinstance(v, SparseSemiStructuredTensor):
                for part in ("packed", "meta", "packed_t", "meta_t", "compressed_swizzled_bitmask"):
                    t = getattr(v, part, None)
                    if isinstance(t, torch.Tensor):
                        out[f"{k}.{part}"] = t.detach().clone()
            else:
                out[k] = v
        return out


class Cuda24(Accelerator):
    """2:4 semi-structured sparse fp16 on CUDA (sparse tensor cores, compute capability >= 8.0).

    The model is cast to fp16 on the GPU and every 2:4-pruned encoder Linear weight is replaced by
    ``to_sparse_semi_structured(weight)`` (see :func:`plan_24` for which layers, and the errors a
    model that is not 2:4 sparse gets).

    Args:
        backend: ``cutlass``, ``cusparselt`` or ``auto`` (cuSPARSELt where torch has it, else CUTLASS).
    """

    name = "cuda-2:4"
    compute_precision = "fp16"
    device = "cuda"

    def __init__(self, backend: Backend24 = "auto") -> None:
        if backend not in BACKENDS_24:
            raise ValueError(f"backend must be one of: {', '.join(BACKENDS_24)} (got {backend!r})")
        self.backend = backend

    def _resolve_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        try:
            return "cusparselt" if torch.backends.cusparselt.is_available() else "cutlass"
        except Exception:
            return "cutlass"

    def availability(self, settings: PrepareSettings | None = None) -> tuple[bool, str]:
        ok, why = cuda_availability((8, 0), "2:4 semi-structured sparsity")
        if not ok:
            return ok, why
        if not hasattr(torch.sparse, "to_sparse_semi_structured"):
            return False, f"torch {torch.__version__} has no torch.sparse.to_sparse_semi_structured"
        if self.backend == "cusparselt":
            try:
                if not torch.backends.cusparselt.is_available():
                    return False, "cuSPARSELt is not available in this torch build (use backend = \"cutlass\" or \"auto\")"
            except Exception as exc:
                return False, f"cuSPARSELt probe failed: {exc}"
        return True, ""

    def prepare(self, model: nn.Module, example: dict[str, torch.Tensor], settings: PrepareSettings) -> Prepared:
        ok, why = self.availability(settings)
        if not ok:
            raise RuntimeError(f"{self.name}: {why}")
        backend = self._resolve_backend()
        cls = (torch.sparse.SparseSemiStructuredTensorCUSPARSELT if backend == "cusparselt"
               else torch.sparse.SparseSemiStructuredTensorCUTLASS)
        shape = cls._DTYPE_SHAPE_CONSTRAINTS[torch.float16]
        names = plan_24(model, shape.sparse_min_rows, shape.sparse_min_cols)  # on the CPU copy: fails before any GPU work
        gpu = copy.deepcopy(model).eval().to(device=self.device, dtype=torch.float16)
        mods = dict(gpu.named_modules())
        with torch.no_grad():
            for n in names:
                lin = mods[n]
                lin.weight = nn.Parameter(cls.from_dense(lin.weight.detach().contiguous()), requires_grad=False)
        return Prepared(Sparse24Module(gpu, self.device).eval(),
                        {"gpu_dtype": "float16", "sparse_24_layers": len(names), "sparse_24_backend": backend,
                         **_gpu_fields()})
