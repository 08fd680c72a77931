"""``sparse-cpu``: swap pruned encoder Linear layers for our sparse fp32 C kernels where faster.

For every encoder Linear layer (BERT roles: attention query/key/value, attention output,
FFN intermediate, FFN output; the pooler and classifier stay untouched) ``prepare`` measures, at
the example's token count (batch x seq) and the given thread count, the dense ``F.linear`` against
each candidate sparse format, interleaved, best of repeats, and swaps in a ``SparseLinear`` only
when it is at least ``min_speedup`` times faster. Finally it times the whole prepared model against
the dense copy on the example batch and falls back to the dense copy if the swap did not pay off,
so the result is never slower than dense (within measurement noise). Choices are recorded per layer.
"""
from __future__ import annotations

import copy
import json
import re
import time
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from accelerators.base import Accelerator
from profiler.tasks.base import logits_of

#: encoder Linear layers by role (BERT-family naming)
ENCODER_LINEAR_RE = re.compile(
    r"(?:^|\.)encoder\.layer\.\d+\."
    r"(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)$"
)

FP32_FORMATS = ("csr", "bsr2x1", "bsr4x1", "bsr8x1")

_INTERMEDIATE_RE = re.compile(r"(?:^|\.)encoder\.layer\.\d+\.intermediate$")


def fuse_ffn_gelu(model: nn.Module) -> int:
    """Move BERT's FFN GELU into the kernel of a sparse ``intermediate.dense`` (one pass over the
    output instead of two). Only where the activation is the exact erf GELU (checked numerically
    against ``F.gelu``) and the dense layer was swapped for a ``SparseLinear``. Returns the count."""
    from accelerators.sparse_linear import SparseLinear

    probe = torch.linspace(-8, 8, 257)
    n = 0
    for name, mod in model.named_modules():
        if not _INTERMEDIATE_RE.search(name):
            continue
        dense, act = getattr(mod, "dense", None), getattr(mod, "intermediate_act_fn", None)
        if not isinstance(dense, SparseLinear) or dense.activation != "none" or act is None:
            continue
        try:
            with torch.no_grad():
                ok = torch.allclose(act(probe), F.gelu(probe), rtol=0, atol=1e-6)
        except Exception:
            ok = False
        if ok:
            dense.activation = "gelu"
            mod.intermediate_act_fn = nn.Identity()
            n += 1
    return n


def encoder_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """``(qualified name, module)`` of the encoder Linear layers matched by :data:`ENCODER_LINEAR_RE`."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and ENCODER_LINEAR_RE.search(n)]


def set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def interleaved_timing(fns: dict[str, Callable[[], Any]], repeats: int, min_time_s: float) -> dict[str, float]:
    """Seconds per call of each fn: timed round-robin, each repeat a loop lasting >= min_time_s;
    returns the fastest repeat's mean per fn. The minimum over repeats is the estimator least
    disturbed by other tenants of a shared machine (interference only ever adds time), and the
    round-robin order exposes every candidate to the same conditions."""
    loops = {}
    for k, f in fns.items():
        f()
        t0 = time.perf_counter()
        f()
        loops[k] = max(1, int(min_time_s / max(time.perf_counter() - t0, 1e-7)))
    res: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter_ns()
            for _ in range(loops[k]):
                f()
            res[k].append((time.perf_counter_ns() - t0) * 1e-9 / loops[k])
    return {k: min(v) for k, v in res.items()}


#: backwards-compatible name
interleaved_median = interleaved_timing


def block_fill(weight: torch.Tensor, bh: int) -> float:
    """nnz / stored entries when stored as bh x 1 blocks (1.0 = perfectly block-structured)."""
    n_out, n_in = weight.shape
    nbr = -(-n_out // bh)
    wp = torch.zeros(nbr * bh, n_in, dtype=weight.dtype)
    wp[:n_out] = weight
    stored = (wp.reshape(nbr, bh, n_in) != 0).any(1).sum().item() * bh
    return float((weight != 0).sum().item()) / max(1, stored)


class _SparseSwap(Accelerator):
    """Shared machinery of ``sparse-cpu`` and ``sparse-int8``: per-layer measured swaps."""

    dtype: str = "fp32"
    #: fused vs unfused logits, max abs difference relative to their max: the attention kernel's
    #: rounding differs from torch's SDPA by ~1e-6
    fuse_tolerance: float = 1e-4

    def __init__(self, format: str = "auto", min_speedup: float = 1.05, min_sparsity: float = 0.3,
                 calibrate: bool = True, repeats: int = 7, min_time_s: float = 0.004, check_model: bool = True,
                 variant: Optional[str] = None, fuse_gelu: bool = True, fuse_layers: bool = True) -> None:
        if min_speedup < 1.0:
            raise ValueError("min_speedup must be >= 1.0 (the swap must never be slower than dense)")
        if not 0.0 <= min_sparsity <= 1.0:
            raise ValueError("min_sparsity must be in [0, 1]")
        if repeats < 1:
            raise ValueError("repeats must be >= 1")
        if min_time_s < 0:
            raise ValueError(f"min_time_s must be >= 0, got {min_time_s!r}")
        if variant is not None and variant not in KERNEL_VARIANTS:
            # a known variant this CPU lacks is reported by availability(), so one config serves many machines
            raise ValueError(f"variant must be one of: {', '.join(KERNEL_VARIANTS)} (got {variant!r})")
        self.format = format
        self.min_speedup = float(min_speedup)
        self.min_sparsity = float(min_sparsity)
        self.calibrate = bool(calibrate)
        self.repeats = int(repeats)
        self.min_time_s = float(min_time_s)
        self.check_model = bool(check_model)
        self.variant = variant
        self.fuse_gelu = bool(fuse_gelu)
        self.fuse_layers = bool(fuse_layers)
        self._fused_gelu = 0
        self._fused_layers = 0
        self._fuse_note = ""
        self._choices: dict[str, dict[str, Any]] = {}
        self._model_speedup: Optional[float] = None
        self._fell_back = False
        self._threads: Optional[int] = None
        self._validate_format()

    # -- subclass hooks ---------------------------------------------------------------------
    def _validate_format(self) -> None:
        if self.format != "auto" and self.format not in FP32_FORMATS:
            raise ValueError(f"format must be 'auto' or one of {', '.join(FP32_FORMATS)} (got {self.format!r})")

    def _candidates(self, weight: torch.Tensor) -> list[str]:
        if self.format != "auto":
            return [self.format]
        cands = ["csr"]
        # blocked formats only pay off when the pruning left (mostly) whole blocks
        for fmt, bh in (("bsr4x1", 4), ("bsr8x1", 8)):
            if block_fill(weight, bh) >= 0.6:
                cands.append(fmt)
        return cands

    def _make_sparse(self, lin: nn.Linear, fmt: str, threads: int) -> nn.Module:
        from accelerators.sparse_linear import SparseLinear

        m = SparseLinear.from_dense(lin, fmt, dtype="fp32", threads=threads)
        m.variant = self.variant
        return m

    def _make_dense(self, lin: nn.Linear, threads: int) -> Optional[nn.Module]:
        """The dense fallback; None = keep the original nn.Linear."""
        return None

    def _tolerance(self) -> float:
        return 1e-4

    # -- Accelerator API --------------------------------------------------------------------
    def availability(self) -> tuple[bool, str]:
        try:
            from accelerators import _sparse_kernels as sk
        except Exception as exc:  # not built
            return False, f"C extension accelerators._sparse_kernels not importable: {exc} (run pip install -e .)"
        if self.variant is not None and self.variant not in sk.supported_variants():
            return False, f"kernel variant {self.variant!r} not supported here (supported: {sk.supported_variants()})"
        return True, ""

    @torch.no_grad()
    def prepare(self, model: nn.Module, example: dict[str, torch.Tensor], threads: int) -> nn.Module:
        ok, reason = self.availability()
        if not ok:
            raise RuntimeError(reason)
        self._threads = int(threads)
        self._choices = {}
        self._model_speedup = None
        self._fell_back = False
        self._fused_gelu = 0
        self._fused_layers = 0
        self._fuse_note = ""
        dense_model = copy.deepcopy(model).eval()
        new = copy.deepcopy(model).eval()
        tokens = int(example["input_ids"].numel()) if "input_ids" in example else int(
            next(iter(example.values())).numel())
        old_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            gen = torch.Generator().manual_seed(0)
            xs: dict[int, torch.Tensor] = {}
            for name, lin in encoder_linears(new):
                w = lin.weight.detach()
                sparsity = 1.0 - float((w != 0).sum().item()) / max(1, w.numel())
                rec: dict[str, Any] = {"sparsity": round(sparsity, 4), "shape": list(w.shape)}
                if sparsity < self.min_sparsity:
                    rec.update(choice="dense", why=f"sparsity<{self.min_sparsity}")
                    self._keep_dense(new, name, lin, rec, threads)
                    continue
                if lin.in_features not in xs:
                    xs[lin.in_features] = torch.randn(tokens, lin.in_features, generator=gen)
                x = xs[lin.in_features]
                ref = F.linear(x, lin.weight, lin.bias)
                cands = {}
                for fmt in self._candidates(w):
                    mod = self._make_sparse(lin, fmt, threads)
                    err = ((mod(x) - ref).abs().max() / (ref.abs().max() + 1e-12)).item()
                    if err > self._tolerance():
                        rec.setdefault("rejected", {})[fmt] = f"error {err:.1e}"
                        continue
                    cands[fmt] = mod
                if not cands:
                    rec.update(choice="dense", why="no candidate within tolerance")
                    self._keep_dense(new, name, lin, rec, threads)
                    continue
                if not self.calibrate:
                    fmt = next(iter(cands))
                    if sparsity >= 0.7:
                        rec.update(choice=fmt, why="rule: sparsity>=0.7")
                        set_submodule(new, name, cands[fmt])
                    else:
                        rec.update(choice="dense", why="rule: sparsity<0.7")
                        self._keep_dense(new, name, lin, rec, threads)
                    self._choices[name] = rec
                    continue
                dense_mod = self._make_dense(lin, threads) or lin
                fns = {"dense": (lambda m=dense_mod: m(x))}
                fns.update({fmt: (lambda m=m: m(x)) for fmt, m in cands.items()})
                t = interleaved_timing(fns, self.repeats, self.min_time_s)
                best = min(cands, key=lambda f: t[f])
                rec["dense_s"] = t["dense"]
                rec.update({f"{f}_s": t[f] for f in cands})
                if t[best] * self.min_speedup <= t["dense"]:
                    rec.update(choice=best, speedup=round(t["dense"] / t[best], 3))
                    set_submodule(new, name, cands[best])
                else:
                    rec.update(choice="dense", why=f"sparse {t['dense'] / t[best]:.2f}x < {self.min_speedup}x")
                    self._keep_dense(new, name, lin, rec, threads, dense_mod)
                self._choices[name] = rec
            self._fused_gelu = fuse_ffn_gelu(new) if self.fuse_gelu else 0
            if self.fuse_layers and any(r["choice"] != "dense" for r in self._choices.values()):
                new = self._fuse_layers(new, example, threads)
            if self.check_model and self.calibrate and any(r["choice"] != "dense" for r in self._choices.values()):
                new = self._check_whole_model(new, dense_model, example, threads)
        finally:
            torch.set_num_threads(old_threads)
        return new

    def _fuse_layers(self, model: nn.Module, example: dict[str, torch.Tensor], threads: int) -> nn.Module:
        """The model with lean fused encoder layers (fused q/k/v, our attention kernel, residuals in
        the kernels) when they give the same logits as ``model`` (within :attr:`fuse_tolerance` of
        their max); else ``model``."""
        from accelerators.fused_layer import fuse_encoder_layers

        fused = copy.deepcopy(model)
        try:
            n, why = fuse_encoder_layers(fused, threads)
            if n:
                ref = logits_of(model(**example))
                with torch.inference_mode():  # the runner times and evaluates in inference mode
                    got_inf = logits_of(fused(**example)).clone()
                got = logits_of(fused(**example))
                err = max(((g - ref).abs().max() / (ref.abs().max() + 1e-12)).item() for g in (got, got_inf))
                if not err <= self.fuse_tolerance:
                    n, why = 0, f"fused logits differ by {err:.1e} (relative)"
        except Exception as exc:  # a model layout the fused layer does not reproduce
            n, why = 0, f"{type(exc).__name__}: {exc}"[:200]
        self._fused_layers, self._fuse_note = n, why
        return fused if n else model

    def _keep_dense(self, root, name, lin, rec, threads, dense_mod=None):
        dm = dense_mod if dense_mod is not None else self._make_dense(lin, threads)
        if dm is not None and dm is not lin:
            set_submodule(root, name, dm)
            rec["dense_impl"] = type(dm).__name__
        self._choices[name] = rec

    def _dense_model(self, dense_model: nn.Module, threads: int) -> nn.Module:
        """Whole-model dense fallback (fp32 copy here; int8 subclass quantizes)."""
        return dense_model

    def _check_whole_model(self, new, dense_model, example, threads):
        fallback = self._dense_model(dense_model, threads)
        t = interleaved_timing({"dense": lambda: fallback(**example), "sparse": lambda: new(**example)},
                               max(5, self.repeats), self.min_time_s)
        self._model_speedup = t["dense"] / t["sparse"]
        if t["sparse"] > t["dense"]:
            self._fell_back = True
            return fallback
        return new

    def row_fields(self) -> dict[str, Any]:
        from accelerators import _sparse_kernels as sk

        n_sparse = sum(1 for r in self._choices.values() if r["choice"] != "dense")
        n_dense = len(self._choices) - n_sparse
        if self._fell_back:
            n_dense, n_sparse = len(self._choices), 0
        compact = {k.replace("encoder.layer.", "L").replace("attention.self.", "att.")
                   .replace("attention.output.dense", "att.out").replace("intermediate.dense", "ffn.in")
                   .replace("output.dense", "ffn.out"): (r["choice"] if "speedup" not in r
                                                          else f"{r['choice']}:{r['speedup']:.2f}x")
                   for k, r in self._choices.items()}
        return {
            "kernel_variant": self.variant or sk.kernel_variant(),
            "sparse_format": self.format,
            "sparse_dtype": self.dtype,
            "sparse_layers": n_sparse,
            "dense_layers": n_dense,
            "sparse_min_speedup": self.min_speedup,
            "sparse_model_check_speedup": round(self._model_speedup, 3) if self._model_speedup else None,
            "sparse_fell_back_to_dense": self._fell_back,
            "sparse_fused_gelu_layers": 0 if self._fell_back else self._fused_gelu,
            "fused_encoder_layers": 0 if self._fell_back else self._fused_layers,
            "fused_encoder_note": self._fuse_note or None,
            "sparse_layer_choices": json.dumps(compact, separators=(",", ":")),
        }

    def layer_choices(self) -> dict[str, dict[str, Any]]:
        """Per-layer records of the last ``prepare`` (choice, sparsity, timings, speedup or reason)."""
        return copy.deepcopy(self._choices)


KERNEL_VARIANTS = ("scalar", "avx2", "avx512", "vnni")


class SparseCPU(_SparseSwap):
    """Our fp32 sparse kernels (CSR / 4x1 blocks) in place of encoder Linear layers, where measured faster.

    Args:
        format: ``"auto"`` (measure CSR and, where the pruning left whole blocks, bsr4x1 / bsr8x1;
            keep the fastest) or one fixed format (``csr``, ``bsr2x1``, ``bsr4x1``, ``bsr8x1``).
        min_speedup: a layer goes sparse only when its measured speed-up over dense is >= this.
        min_sparsity: layers below this sparsity stay dense without measuring.
        calibrate: measure (default); False = rule of thumb (sparse when sparsity >= 0.7).
        repeats / min_time_s: interleaved repeats per layer and seconds per repeat and competitor.
        check_model: time the whole prepared model against dense at the end; fall back to dense if slower.
        variant: force a kernel ISA variant (scalar, avx2, avx512, vnni); None = the module default.
        fuse_gelu: apply BERT's FFN GELU inside the sparse ``intermediate.dense`` kernel (exact erf
            form, |error| <= ~1e-6), saving a full pass over the largest activation.
        fuse_layers: replace each BERT encoder layer by :class:`accelerators.fused_layer.FusedBertLayer`
            (q/k/v in one kernel call, our fp32 attention kernel, residual adds inside the output
            pass), kept only if the logits match the unfused model within 1e-4 (relative to their max).
            The per-layer records land in ``fused_encoder_layers`` / ``fused_encoder_note``.
    """

    name = "sparse-cpu"
