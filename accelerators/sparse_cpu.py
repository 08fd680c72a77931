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

import contextlib
import copy
import itertools
import json
from dataclasses import dataclass, field
from typing import Annotated, Any, Iterator, Literal, Optional, get_args

import torch
import torch.nn.functional as F
from torch import nn

from accelerators.base import Accelerator, PrepareSettings, Prepared, example_tokens, numerics_key
from accelerators.params import Range, check_ranges
from accelerators.roles import ENCODER_LAYER_RE, encoder_linears, ffn_blocks
from accelerators.timing import interleaved_timing

Fp32Format = Literal["csr", "bsr2x1", "bsr4x1", "bsr8x1"]
FP32_FORMATS: tuple[str, ...] = get_args(Fp32Format)

__all__ = ["FP32_FORMATS", "SparseCPU", "SwapRun", "encoder_linears", "fuse_ffn_gelu", "set_submodule"]


def fuse_ffn_gelu(model: nn.Module) -> int:
    """Move the FFN GELU into the kernel of a sparse ``ffn_in`` layer (BERT's ``intermediate.dense``,
    DistilBERT's ``ffn.lin1``): one pass over the output instead of two. Only where the activation
    is the exact erf GELU (checked numerically against ``F.gelu``) and the dense layer was swapped
    for a ``SparseLinear``. Returns the count."""
    from accelerators.sparse_linear import SparseLinear

    n = 0
    for block, in_attr, act_attr in ffn_blocks(model):
        dense, act = getattr(block, in_attr, None), getattr(block, act_attr, None)
        if not isinstance(dense, SparseLinear) or dense.activation != "none" or act is None:
            continue
        if is_exact_gelu(act):
            dense.activation = "gelu"
            setattr(block, act_attr, nn.Identity())
            n += 1
    return n


def is_exact_gelu(act: Any) -> bool:
    """Whether the callable ``act`` is the exact erf GELU (checked numerically against ``F.gelu``)."""
    probe = torch.linspace(-8, 8, 257)
    try:
        with torch.no_grad():
            return bool(torch.allclose(act(probe), F.gelu(probe), rtol=0, atol=1e-6))
    except Exception:
        return False


def gelu_ffn_inputs(model: nn.Module) -> set[int]:
    """``id()`` of each FFN-in Linear whose activation is the exact GELU: the layers whose sparse
    kernel would apply the GELU itself (:func:`fuse_ffn_gelu`)."""
    return {id(getattr(b, i)) for b, i, a in ffn_blocks(model)
            if isinstance(getattr(b, i, None), nn.Linear) and is_exact_gelu(getattr(b, a, None))}


def layer_outputs(model: nn.Module, example: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Hidden states (batch, seq, hidden) float32 after each encoder layer, in layer order, for one
    forward pass on ``example`` (forward hooks, removed afterwards)."""
    outs: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: outs.append(o[0] if isinstance(o, tuple) else o))
             for n, m in model.named_modules() if ENCODER_LAYER_RE.search(n)]
    try:
        model(**example)
    finally:
        for h in hooks:
            h.remove()
    return outs


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got − ref| ÷ max |ref| (a tiny floor keeps an all-zero reference finite)."""
    return ((got.float() - ref.float()).abs().max() / (ref.float().abs().max() + 1e-12)).item()


#: calibration sentences the fused encoder layers (and lower-precision attention) are checked on
CHECK_SEQUENCES = 8


def check_inputs(settings: PrepareSettings, pad_id: int = 0) -> list[dict[str, torch.Tensor]]:
    """The batches the fused encoder layers (and lower-precision attention) are checked on: the
    first :data:`CHECK_SEQUENCES` calibration sentences, each a batch of one at its own length (no
    padding), then, where they differ in length, the same sentences as one right-padded batch
    (:func:`padded_batch`, padded ``input_ids`` = ``pad_id``): the path of the timed and evaluated
    batches (batch > 1, padded keys masked), which a sentence alone never takes. [] without
    calibration data. Dicts of int64 tensors: (1, length) for each sentence, (n, longest) for the
    padded batch."""
    if settings.calibration is None:
        return []
    sentences = list(itertools.islice(settings.calibration(CHECK_SEQUENCES), CHECK_SEQUENCES))
    padded = padded_batch(sentences, pad_id)
    return sentences if padded is None else [*sentences, padded]


def padded_batch(sentences: list[dict[str, torch.Tensor]], pad_id: int = 0) -> Optional[dict[str, torch.Tensor]]:
    """``sentences`` (dicts of int64 (1, length) tensors: ``input_ids``, ``attention_mask``, maybe
    ``token_type_ids``; every dict the same keys, else KeyError) stacked into one batch, right-padded
    to the longest: int64 (n, longest) tensors, padded positions ``pad_id`` in ``input_ids`` and 0 in
    the others (``attention_mask`` 0, ``token_type_ids`` 0; a sentence without ``attention_mask`` is
    taken as all real). None with fewer than two sentences or all of one length: nothing is padded."""
    lengths = {x["input_ids"].shape[1] for x in sentences}
    if len(sentences) < 2 or len(lengths) < 2:
        return None
    longest = max(lengths)
    rows = [{"attention_mask": torch.ones_like(x["input_ids"]), **x} for x in sentences]
    return {k: torch.cat([F.pad(r[k], (0, longest - r[k].shape[1]), value=pad_id if k == "input_ids" else 0)
                          for r in rows]) for k in rows[0]}


def sequence_errors(got: torch.Tensor, ref: torch.Tensor) -> list[float]:
    """:func:`relative_error` of each sequence apart (dim 0 of (batch, seq, hidden) tensors),
    each relative to its own largest |activation|: what a batch of sequences says of each one
    does not depend on which other sequences share the batch."""
    g, r = got.float().flatten(1), ref.float().flatten(1)
    return ((g - r).abs().amax(1) / (r.abs().amax(1) + 1e-12)).tolist()


def real_sequence_errors(got: torch.Tensor, ref: torch.Tensor,
                         attention_mask: Optional[torch.Tensor]) -> list[float]:
    """:func:`sequence_errors` of the real positions only: where ``attention_mask`` (integer
    (batch, seq); None = every position real) is 0, both (batch, seq, hidden) tensors are set to 0
    first, so a padded position neither counts as an error nor sets the sequence's largest
    |activation|. Its hidden state is meaningless (its key is masked: no real position reads it)
    and engines legitimately differ there."""
    if attention_mask is not None:
        pad = (attention_mask == 0)[..., None]
        got, ref = got.masked_fill(pad, 0.0), ref.masked_fill(pad, 0.0)
    return sequence_errors(got, ref)


def set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at qualified ``name`` of ``root`` by ``new`` (in place)."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside the block, restored after it."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def block_fill(weight: torch.Tensor, bh: int) -> float:
    """nnz / stored entries when stored as bh x 1 blocks (1.0 = perfectly block-structured)."""
    n_out, n_in = weight.shape
    nbr = -(-n_out // bh)
    wp = torch.zeros(nbr * bh, n_in, dtype=weight.dtype)
    wp[:n_out] = weight
    stored = (wp.reshape(nbr, bh, n_in) != 0).any(1).sum().item() * bh
    return float((weight != 0).sum().item()) / max(1, stored)


# Calibration parameters of the sparse swaps (ranges enforced by the plugin registry): the
# upper bounds keep a typo (1e9 repeats, a 1e6 s minimum) from turning into an endless prepare.
MinSpeedup = Annotated[float, Range(1.0, 1000.0)]
MinSparsity = Annotated[float, Range(0.0, 1.0)]
Repeats = Annotated[int, Range(1, 1000)]
MinTime = Annotated[float, Range(0.0, 10.0)]


def _short_layer_name(name: str) -> str:
    return (name.replace("encoder.layer.", "L").replace("transformer.layer.", "L").replace("attention.self.", "att.")
            .replace("attention.output.dense", "att.out").replace("intermediate.dense", "ffn.in")
            .replace("output.dense", "ffn.out"))


def _stacked_qkv_formats(model: nn.Module) -> dict[str, str]:
    """Short layer name -> format of each fused encoder layer's stacked q | k | v SparseLinear."""
    from accelerators.fused_layer import FusedBertLayer

    return {_short_layer_name(name): m.qkv.format for name, m in model.named_modules()
            if isinstance(m, FusedBertLayer) and m.qkv is not None}


@dataclass
class SwapRun:
    """Everything one ``prepare`` call decides, handed through its steps and turned into the row
    fields at the end (an accelerator instance keeps none of it).

    threads: OpenMP/intra-op threads. variant: the kernel variant forced on every swapped module
    (None = the extension's default). engine: sparse-int8's quantized engine for the dense fallback.
    dense_format: the format our INT8 kernel runs a layer left dense in (sparse-int8's ``kernel-int8``
    fallback).
    choices: per-layer records (choice, sparsity, timings in seconds, speed-up or why dense).
    """

    threads: int
    variant: Optional[str]
    engine: Optional[str] = None
    dense_format: Optional[str] = None
    choices: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_speedup: Optional[float] = None
    fell_back: bool = False
    #: the whole-model fallback ran through :meth:`_SparseSwap._finish` too (its kernel fuses)
    fallback_finished: bool = False
    #: layer -> (format, sparse module) for layers timed faster dense though a sparse module was accepted
    alternatives: dict[str, tuple[str, nn.Module]] = field(default_factory=dict)
    #: "per-layer" or "all-sparse" when both whole models were timed; mix time / all-sparse time
    whole_model_choice: Optional[str] = None
    all_sparse_speedup: Optional[float] = None
    #: the batches the fused layers are checked on (:func:`check_inputs`)
    check_inputs: list[dict[str, torch.Tensor]] = field(default_factory=list)
    fused_gelu: int = 0
    fused_layers: int = 0
    fuse_note: str = ""
    #: short layer name -> the format its stacked q | k | v layer runs in (fused layers only): the
    #: per-layer choices of q, k and v may name another, re-blocked into the stack's (SparseLinear.stack)
    qkv_formats: dict[str, str] = field(default_factory=dict)
    attention_precision: str = "fp32"
    attention_note: str = ""
    lean_note: str = "not fused"

    @property
    def any_sparse(self) -> bool:
        return any(r["choice"] != "dense" for r in self.choices.values())


class _SparseSwap(Accelerator):
    """Shared machinery of ``sparse-cpu`` and ``sparse-int8``: per-layer measured swaps."""

    dtype: str = "fp32"
    #: fused vs unfused encoder layer outputs, max abs difference relative to the largest
    #: |activation| of the layer's sequence: the attention kernel's rounding differs from torch's SDPA by ~1e-6
    fuse_tolerance: float = 1e-4
    #: what the fused layers' attention kernel computes in (sparse-int8 lets the user choose)
    attention: str = "fp32"
    #: extra error (same measure) allowed to a lower-precision attention kernel
    attention_tolerance: float = 2.5e-2
    #: blocked formats timed beside ``csr`` under ``format = "auto"``: (format, block height)
    blocked_formats: tuple[tuple[str, int], ...] = (("bsr4x1", 4), ("bsr8x1", 8))
    #: non-zeros / entries stored when stored in blocks of a given height (1.0: perfectly block-structured)
    block_fill = staticmethod(block_fill)

    # ``format`` is annotated with sparse-cpu's choices: this is sparse-cpu's constructor (the registry
    # reads it as its schema); a subclass of other formats declares its own in its own constructor and
    # checks them in _validate_format
    def __init__(self, format: Literal["auto", Fp32Format] = "auto", min_speedup: MinSpeedup = 1.05,
                 min_sparsity: MinSparsity = 0.3, calibrate: bool = True, repeats: Repeats = 7,
                 min_time_s: MinTime = 0.004, check_model: bool = True, fuse_gelu: bool = True,
                 fuse_layers: bool = True) -> None:
        # min_speedup >= 1: the swap must never be slower than dense
        check_ranges(_SparseSwap.__init__, {"min_speedup": min_speedup, "min_sparsity": min_sparsity,
                                            "repeats": repeats, "min_time_s": min_time_s})
        self.format = format
        self.min_speedup = float(min_speedup)
        self.min_sparsity = float(min_sparsity)
        self.calibrate = bool(calibrate)
        self.repeats = int(repeats)
        self.min_time_s = float(min_time_s)
        self.check_model = bool(check_model)
        self.fuse_gelu = bool(fuse_gelu)
        self.fuse_layers = bool(fuse_layers)
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
        for fmt, bh in self.blocked_formats:
            if self.block_fill(weight, bh) >= 0.6:
                cands.append(fmt)
        return cands

    def _make_sparse(self, lin: nn.Linear, fmt: str, run: SwapRun) -> nn.Module:
        from accelerators.sparse_linear import SparseLinear

        return SparseLinear.from_dense(lin, fmt, dtype="fp32", threads=run.threads, variant=run.variant)

    def _make_dense(self, lin: nn.Linear, run: SwapRun) -> Optional[nn.Module]:
        """The dense fallback; None = keep the original nn.Linear."""
        return None

    def _fallback_format(self, run: SwapRun) -> Optional[str]:
        """The sparse format the dense fallback itself runs (None: a dense module). Where it is a
        candidate, the fallback is not timed apart and that candidate needs no margin over it."""
        return None

    def _dense_model(self, dense_model: nn.Module, run: SwapRun) -> nn.Module:
        """Whole-model dense fallback (fp32 copy here; int8 subclass quantizes)."""
        return dense_model

    def _tolerance(self) -> float:
        return 1e-4

    def _start(self, model: nn.Module, example: dict[str, torch.Tensor], settings: PrepareSettings) -> SwapRun:
        """The decisions taken before any layer is swapped (int8: the fallback's engine)."""
        return SwapRun(threads=int(settings.threads), variant=settings.forced_variant)

    @contextlib.contextmanager
    def _building(self, run: SwapRun) -> Iterator[None]:
        """Process state the prepared model must be built under (int8: the quantized engine)."""
        yield

    # -- Accelerator API --------------------------------------------------------------------
    def availability(self, settings: PrepareSettings | None = None) -> tuple[bool, str]:
        try:
            from accelerators.sparse_linear import variant_unavailable  # imports the C extension
        except Exception as exc:
            if str(exc).startswith("SPARSEBENCH_KERNEL_VARIANT="):  # built; the variable names what cannot run
                return False, str(exc)
            return False, f"C extension accelerators._sparse_kernels not importable: {exc} (run pip install -e .)"
        why = variant_unavailable(settings.forced_variant if settings is not None else None)
        return (False, why) if why else (True, "")

    @torch.no_grad()
    def prepare(self, model: nn.Module, example: dict[str, torch.Tensor], settings: PrepareSettings) -> Prepared:
        ok, reason = self.availability(settings)
        if not ok:
            raise RuntimeError(reason)
        tokens = example_tokens(example)
        run = self._start(model, example, settings)
        # the check's padded batch is padded as the task pads (with the tokenizer's pad id, the
        # model config's); padded positions are masked, so any valid id would do
        pad_id = getattr(getattr(model, "config", None), "pad_token_id", None) or 0
        run.check_inputs = check_inputs(settings, pad_id)
        dense_model = copy.deepcopy(model).eval()
        new = copy.deepcopy(model).eval()
        with self._building(run), intra_op_threads(run.threads):
            self._swap_layers(new, tokens, run)
            alt = self._all_sparse(new, run)
            new = self._finish(new, dense_model, example, run)
            if alt is not None:
                new, run = self._faster_model(new, run, *alt, dense_model, example)
            if self.check_model and self.calibrate and run.any_sparse:
                new = self._check_whole_model(new, dense_model, example, run)
        fields = self._fields(run)
        # per-layer choices, fallbacks and fusions are timed at this cell's shape and threads
        fields["numerics_key"] = numerics_key({
            "choices": {k: r["choice"] for k, r in run.choices.items()},
            **{k: fields.get(k) for k in NUMERICS_FIELDS}})
        return Prepared(new, fields)

    def _finish(self, new: nn.Module, dense_model: nn.Module, example: dict[str, torch.Tensor],
                run: SwapRun) -> nn.Module:
        """GELU into the FFN kernels, fused encoder layers, the lean classifier (each where it applies)."""
        run.fused_gelu = fuse_ffn_gelu(new) if self.fuse_gelu else 0
        # a fallback that runs our kernel fuses as well as sparse layers do
        if self.fuse_layers and (run.any_sparse or self._fallback_format(run) is not None):
            new = self._fuse_layers(new, dense_model, example, run)
            new = self._lean_model(new, example, run)
        return new

    def _all_sparse(self, new: nn.Module, run: SwapRun) -> Optional[tuple[nn.Module, SwapRun]]:
        """``new`` with every layer the per-layer timing left dense (though a sparse module was within
        tolerance) swapped to its fastest sparse module, and its run record; None when there is none.

        Timed alone, a dense layer can beat our kernel; in the model it also cuts the INT8 chain, the
        fused GELU and the lean layer path, so the whole model may be faster all sparse."""
        if not run.alternatives:
            return None
        alternatives, run.alternatives = run.alternatives, {}
        alt, alt_run = copy.deepcopy(new), copy.deepcopy(run)
        for name, (fmt, mod) in alternatives.items():
            set_submodule(alt, name, mod)
            alt_run.choices[name] = {**run.choices[name], "choice": fmt,
                                     "why": "whole model all sparse measured faster than the per-layer mix"}
        return alt, alt_run

    def _faster_model(self, new: nn.Module, run: SwapRun, alt: nn.Module, alt_run: SwapRun, dense_model: nn.Module,
                      example: dict[str, torch.Tensor]) -> tuple[nn.Module, SwapRun]:
        """The faster whole model of the per-layer mix ``new`` and the all-sparse ``alt`` (finished
        here), timed side by side on ``example``, with its run record."""
        alt = self._finish(alt, dense_model, example, alt_run)
        t = interleaved_timing({"mix": lambda: new(**example), "all": lambda: alt(**example)},
                               max(5, self.repeats), self.min_time_s)
        run.all_sparse_speedup = alt_run.all_sparse_speedup = t["mix"] / t["all"]
        if t["all"] < t["mix"]:
            alt_run.whole_model_choice = "all-sparse"
            return alt, alt_run
        run.whole_model_choice = "per-layer"
        return new, run

    # -- the steps of prepare ---------------------------------------------------------------
    def _swap_layers(self, new: nn.Module, tokens: int, run: SwapRun) -> None:
        """Swap each encoder Linear layer of ``new`` (in place) for the fastest accepted module."""
        gen = torch.Generator().manual_seed(0)
        xs: dict[int, torch.Tensor] = {}
        gelu_in = gelu_ffn_inputs(new) if self.fuse_gelu else set()
        for name, lin in encoder_linears(new):
            w = lin.weight.detach()
            sparsity = 1.0 - float((w != 0).sum().item()) / max(1, w.numel())
            rec: dict[str, Any] = {"sparsity": round(sparsity, 4), "shape": list(w.shape)}
            if sparsity < self.min_sparsity:
                rec.update(choice="dense", why=f"sparsity<{self.min_sparsity}")
                self._keep_dense(new, name, lin, rec, run)
                continue
            if lin.in_features not in xs:
                xs[lin.in_features] = torch.randn(tokens, lin.in_features, generator=gen)
            self._swap_layer(new, name, lin, xs[lin.in_features], sparsity, rec, run, id(lin) in gelu_in)

    def _accepted_candidates(self, lin: nn.Linear, x: torch.Tensor, rec: dict[str, Any], run: SwapRun) -> dict[str, nn.Module]:
        """Format -> sparse module, for the candidates whose output on ``x`` is within tolerance."""
        ref = F.linear(x, lin.weight, lin.bias)
        cands = {}
        for fmt in self._candidates(lin.weight.detach()):
            mod = self._make_sparse(lin, fmt, run)
            err = ((mod(x) - ref).abs().max() / (ref.abs().max() + 1e-12)).item()
            if not err <= self._tolerance():  # a NaN error fails too
                rec.setdefault("rejected", {})[fmt] = f"error {err:.1e}"
                continue
            cands[fmt] = mod
        return cands

    def _swap_layer(self, new: nn.Module, name: str, lin: nn.Linear, x: torch.Tensor, sparsity: float,
                    rec: dict[str, Any], run: SwapRun, gelu: bool = False) -> None:
        """Swap one layer for its fastest accepted module. ``gelu``: the layer feeds an exact GELU
        that the sparse kernel would apply itself, so both sides are timed with it (dense: a
        separate GELU pass; sparse: the kernel's epilogue)."""
        cands = self._accepted_candidates(lin, x, rec, run)
        if not cands:
            rec.update(choice="dense", why="no candidate within tolerance")
            return self._keep_dense(new, name, lin, rec, run)
        if not self.calibrate:
            fmt = next(iter(cands))
            if sparsity >= 0.7:
                rec.update(choice=fmt, why="rule: sparsity>=0.7")
                self._keep_sparse(new, name, cands[fmt], rec, run)
            else:
                rec.update(choice="dense", why="rule: sparsity<0.7")
                self._keep_dense(new, name, lin, rec, run)
            return None
        same = self._fallback_format(run)
        same = same if same in cands else None
        if same is not None and len(cands) == 1:  # nothing to choose: the fallback's own kernel
            rec.update(choice=same, why=f"the dense fallback runs {same}")
            self._keep_sparse(new, name, cands[same], rec, run)
            return None
        fns = {}
        if same is None:
            dense_mod = self._make_dense(lin, run) or lin
            fns["dense"] = (lambda m=dense_mod: F.gelu(m(x))) if gelu else (lambda m=dense_mod: m(x))
        if gelu:
            for m in cands.values():
                m.activation = "gelu"
        fns.update({fmt: (lambda m=m: m(x)) for fmt, m in cands.items()})
        try:
            t = interleaved_timing(fns, self.repeats, self.min_time_s)
        finally:
            for m in cands.values():  # fuse_ffn_gelu moves the activation in, once the layer is chosen
                m.activation = "none"
        if gelu:
            rec["timed_with_gelu"] = True
        best = min(cands, key=lambda f: t[f])
        rec.update({f"{f}_s": t[f] for f in cands})
        if same is not None:
            # the fallback would run this very kernel: another format must beat it by min_speedup
            if t[best] * self.min_speedup > t[same]:
                best = same
            rec.update(choice=best, speedup=round(t[same] / t[best], 3), why=f"the dense fallback runs {same}")
            self._keep_sparse(new, name, cands[best], rec, run)
            return None
        rec["dense_s"] = t["dense"]
        if t[best] * self.min_speedup <= t["dense"]:
            rec.update(choice=best, speedup=round(t["dense"] / t[best], 3))
            self._keep_sparse(new, name, cands[best], rec, run)
        else:
            rec.update(choice="dense", why=f"sparse {t['dense'] / t[best]:.2f}x < {self.min_speedup}x")
            run.alternatives[name] = (best, cands[best])
            self._keep_dense(new, name, lin, rec, run, dense_mod)
        return None

    @staticmethod
    def _keep_sparse(root: nn.Module, name: str, module: nn.Module, rec: dict[str, Any], run: SwapRun) -> None:
        set_submodule(root, name, module)
        run.choices[name] = rec

    def _keep_dense(self, root: nn.Module, name: str, lin: nn.Linear, rec: dict[str, Any], run: SwapRun,
                    dense_mod: Optional[nn.Module] = None) -> None:
        dm = dense_mod if dense_mod is not None else self._make_dense(lin, run)
        if dm is not None and dm is not lin:
            set_submodule(root, name, dm)
            rec["dense_impl"] = type(dm).__name__
        run.choices[name] = rec

    def _fuse_layers(self, model: nn.Module, fp32: nn.Module, example: dict[str, torch.Tensor],
                     run: SwapRun) -> nn.Module:
        """The model with lean fused encoder layers (fused q/k/v, our attention kernel, residuals in
        the kernels) when fusing adds no error of its own; else ``model``.

        Both paths are compared, layer by layer, with the fp32 model ``fp32`` (hidden states after
        each encoder layer, max abs difference relative to that layer's largest |activation|): the
        fused layer is kept where its error is at most the unfused path's error plus
        :attr:`fuse_tolerance` (or twice it), in every sequence of every batch of
        ``run.check_inputs`` (:func:`check_inputs`: the calibration sentences alone, then as one
        padded batch, which takes the masked path of the timed batches; the same whatever the cell's
        shape, so the model's numerics do not depend on the timing batch; ``example`` without
        calibration data), each relative to its own largest activation, on its real positions only
        (:func:`real_sequence_errors`: padded positions' hidden states mean nothing). So the INT8
        rounding both paths share never counts against fusing, and the decision does not depend on
        the classifier head's scale."""
        from accelerators.fused_layer import fuse_encoder_layers, set_attention_precision

        fused = copy.deepcopy(model)
        run.attention_precision = "fp32"
        try:
            n, why = fuse_encoder_layers(fused, run.threads, run.variant)
            checks = run.check_inputs or [example]
            refs = [layer_outputs(fp32, x) for x in checks] if n else []
            plains = [[real_sequence_errors(h, r, x.get("attention_mask"))
                       for h, r in zip(layer_outputs(model, x), ref)] for x, ref in zip(checks, refs)]

            def first_error(tolerance: float, factor: float = 2.0) -> str:
                for x, ref, plain in zip(checks, refs, plains):
                    err = self._fused_error(fused, x, ref, plain, tolerance, factor)
                    if err:
                        return err
                return ""

            if n:
                why = first_error(self.fuse_tolerance)
                n = 0 if why else n
            if n and self.attention != "fp32":
                # lower-precision attention adds its own rounding: kept within attention_tolerance
                set_attention_precision(fused, self.attention)
                att_why = first_error(self.attention_tolerance, 1.0)
                if att_why:
                    set_attention_precision(fused, "fp32")
                    run.attention_note = f"{self.attention} attention rejected: {att_why}"
                else:
                    run.attention_precision = self.attention
        except Exception as exc:  # a model layout the fused layer does not reproduce
            n, why = 0, f"{type(exc).__name__}: {exc}"[:200]
        run.fused_layers, run.fuse_note = n, why
        run.qkv_formats = _stacked_qkv_formats(fused) if n else {}
        return fused if n else model

    @staticmethod
    def _lean_model(model: nn.Module, example: dict[str, torch.Tensor], run: SwapRun) -> nn.Module:
        """``model`` behind :class:`accelerators.fused_layer.LeanBertClassifier` when it applies and
        gives the same logits bit for bit on ``example`` (with and without inference mode)."""
        from accelerators.base import logits_of
        from accelerators.fused_layer import LeanBertClassifier

        lean, why = LeanBertClassifier.wrap(model)
        if lean is not model:
            for ctx in (torch.no_grad, torch.inference_mode):
                with ctx():
                    if not torch.equal(logits_of(lean(**example)), logits_of(model(**example))):
                        lean, why = model, "the lean forward's logits differ from the model's"
                        break
        run.lean_note = why
        return lean

    @staticmethod
    def _fused_error(fused: nn.Module, example: dict[str, torch.Tensor], ref: list[torch.Tensor],
                     plain: list[list[float]], tolerance: float, factor: float = 2.0) -> str:
        """'' when every fused layer's error in every sequence of ``example`` (:func:`real_sequence_errors`
        against the fp32 hidden states ``ref``, (batch, seq, hidden) per layer: positions whose
        ``attention_mask`` is 0 do not count) is at most the unfused path's error ``plain`` (per
        layer, per sequence) in that sequence plus ``tolerance`` (or ``factor`` times it), with and
        without inference mode; else which layer and sequence is not (and the batch size, where the
        batch is padded)."""
        mask = example.get("attention_mask")
        padded = mask is not None and not bool(mask.all())
        with torch.inference_mode():  # the runner times and evaluates in inference mode
            got_inf = [h.clone() for h in layer_outputs(fused, example)]
        for got in (layer_outputs(fused, example), got_inf):
            for i, (g, r, es) in enumerate(zip(got, ref, plain)):
                for b, (err, e) in enumerate(zip(real_sequence_errors(g, r, mask), es)):
                    if not err <= max(e + tolerance, factor * e):  # a NaN error fails too
                        where = f"padded batch of {len(mask)}, sequence {b}" if padded else f"sequence {b}"
                        return (f"fused layer {i} is {err:.1e} from fp32 against the unfused path's "
                                f"{e:.1e} ({where}, relative to its max)")
        return ""

    def _check_whole_model(self, new: nn.Module, dense_model: nn.Module, example: dict[str, torch.Tensor],
                           run: SwapRun) -> nn.Module:
        fmt = self._fallback_format(run)
        if fmt is not None and all(r["choice"] in (fmt, "dense") for r in run.choices.values()):
            # every layer runs the fallback's own format on the same weights: the two models are one,
            # and a race between them would only decide the row's labels by timing noise
            return new
        fallback, fb_run = self._dense_model(dense_model, run), None
        if fmt is not None:  # our kernel: fused like the mix, so the race is even
            fb_run = copy.copy(run)
            fallback = self._finish(fallback, dense_model, example, fb_run)
        t = interleaved_timing({"dense": lambda: fallback(**example), "sparse": lambda: new(**example)},
                               max(5, self.repeats), self.min_time_s)
        run.model_speedup = t["dense"] / t["sparse"]
        if t["sparse"] > t["dense"]:
            run.fell_back = True
            if fb_run is not None:
                for f in ("fused_gelu", "fused_layers", "fuse_note", "qkv_formats", "attention_precision", "attention_note",
                          "lean_note"):
                    setattr(run, f, getattr(fb_run, f))
                run.fallback_finished = True
            return fallback
        return new

    def _fields(self, run: SwapRun) -> dict[str, Any]:
        """The row fields of one prepare: what ran (kernel variant, layer counts, per-layer choices)."""
        from accelerators import _sparse_kernels as sk

        n_sparse = sum(1 for r in run.choices.values() if r["choice"] != "dense")
        n_dense = len(run.choices) - n_sparse
        if run.fell_back:
            n_dense, n_sparse = len(run.choices), 0
        plain = run.fell_back and not run.fallback_finished  # the fallback model as _dense_model built it
        # a kernel of ours ran: a sparse layer, a fallback in our format, or a fused layer's attention
        kernel_ran = not plain and bool(n_sparse or self._fallback_format(run) is not None or run.fused_layers)
        compact = {_short_layer_name(k): (r["choice"] if "speedup" not in r else f"{r['choice']}:{r['speedup']:.2f}x")
                   for k, r in run.choices.items()}
        return {
            "kernel_variant_used": (run.variant or sk.kernel_variant()) if kernel_ran else None,
            "sparse_format": self.format,
            "sparse_dtype": self.dtype,
            "sparse_layers": n_sparse,
            "dense_layers": n_dense,
            "sparse_min_speedup": self.min_speedup,
            "sparse_model_check_speedup": round(run.model_speedup, 3) if run.model_speedup else None,
            "sparse_whole_model_choice": run.whole_model_choice,
            "sparse_all_sparse_speedup": round(run.all_sparse_speedup, 3) if run.all_sparse_speedup else None,
            "sparse_fell_back_to_dense": run.fell_back,
            "sparse_fused_gelu_layers": 0 if plain else run.fused_gelu,
            "fused_encoder_layers": 0 if plain else run.fused_layers,
            "fused_encoder_note": run.fuse_note or None,
            "fused_qkv_formats": (json.dumps(run.qkv_formats, separators=(",", ":"))
                                  if run.qkv_formats and not plain else None),
            "attention_precision": run.attention_precision if run.fused_layers and not plain else None,
            "attention_note": run.attention_note or None,
            "lean_model": not run.lean_note and not plain,
            "lean_model_note": run.lean_note or ("the whole model fell back to the plain dense model" if plain else None),
            "sparse_layer_choices": json.dumps(compact, separators=(",", ":")),
        }


#: the row fields of a prepare that, with the per-layer choices, determine what the module computes
NUMERICS_FIELDS = ("sparse_fell_back_to_dense", "sparse_whole_model_choice", "sparse_fused_gelu_layers",
                   "fused_encoder_layers", "fused_qkv_formats", "attention_precision", "sparse_dense_format",
                   "quant_engine")


class SparseCPU(_SparseSwap):
    """Our fp32 sparse kernels (CSR / 4x1 blocks) in place of encoder Linear layers, where measured faster.

    The kernel ISA variant comes from the cell (``PrepareSettings.kernel_variant``, the matrix's
    ``kernel_variant`` axis) and is set on every swapped module; the one that ran is recorded as
    ``kernel_variant_used``.

    Args:
        format: ``"auto"`` (measure CSR and, where the pruning left whole blocks, bsr4x1 / bsr8x1;
            keep the fastest) or one fixed format (``csr``, ``bsr2x1``, ``bsr4x1``, ``bsr8x1``).
        min_speedup: a layer goes sparse only when its measured speed-up over dense is >= this.
        min_sparsity: layers below this sparsity stay dense without measuring.
        calibrate: measure (default); False = rule of thumb (sparse when sparsity >= 0.7).
        repeats / min_time_s: interleaved repeats per layer and seconds per repeat and competitor.
        check_model: time the whole prepared model against dense at the end; fall back to dense if slower.
        fuse_gelu: apply BERT's FFN GELU inside the sparse ``intermediate.dense`` kernel (exact erf
            form, |error| <= ~1e-6), saving a full pass over the largest activation.
        fuse_layers: replace each BERT encoder layer by :class:`accelerators.fused_layer.FusedBertLayer`
            (q/k/v in one kernel call, our fp32 attention kernel, residual adds inside the output
            pass), kept only if, layer by layer, the fused hidden states are no further from the fp32
            model's than the unfused path's are, plus :attr:`fuse_tolerance` (1e-4 relative to the
            layer's largest activation, each sequence apart, real positions only, on the calibration
            sentences alone and as one padded batch) or within twice the unfused error. Rows record how many
            layers were fused (``fused_encoder_layers``) and why not (``fused_encoder_note``).
    """

    name = "sparse-cpu"
    compute_precision = "fp32"
