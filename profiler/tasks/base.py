"""Task interface: model, data, metric, and the fine-tuning loop shared by every task."""
from __future__ import annotations

import copy
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Iterator

import torch
from torch import nn

from accelerators.base import logits_of
from accelerators.params import Range
from profiler.cache import DAMAGED_INFIX, partial_checkpoint, pruned_made_by
from profiler.identity import stable_hash
from pruners.training import (Checkpoints, Precision, StepClock, adamw, autocast, check_precision, discard_checkpoint,
                              index_batches, resolve_precision, warmup_linear_decay)


def default_cache_dir() -> Path:
    """``$SPARSEBENCH_CACHE`` (when set and not empty) or ``~/.cache/sparsebench``: fine-tuned and
    pruned models live here."""
    return Path(os.environ.get("SPARSEBENCH_CACHE") or Path.home() / ".cache" / "sparsebench")


@dataclass
class Example:
    """One tokenized example: ``input_ids`` (list of int token ids), an int or float ``label``, and
    ``token_type_ids`` (segment ids of a sentence pair; None = all zeros)."""

    input_ids: list[int]
    label: float
    token_type_ids: list[int] | None = None



# Fine-tuning parameters shared by every task (ranges enforced by the plugin registry; the upper
# bounds only stop a typo from becoming a run that never ends or a batch that cannot fit).
FinetuneSteps = Annotated[int, Range(0, 10_000_000)]
FinetuneBatch = Annotated[int, Range(1, 4096)]
FinetuneLR = Annotated[float, Range(0.0, 1.0, lo_open=True)]
Seed = Annotated[int, Range(0, 2**32 - 1)]
MaxLength = Annotated[int, Range(8, 512)]
#: the training pruners' ``precision`` choices, checked at config load (bf16's CPU check stays in set_finetuning)
FinetunePrecision = Precision

class Task:
    """Base class for tasks. Subclasses set ``name``/``metric_name`` and implement the data and
    model hooks; fine-tuning, evaluation and batching live here once.

    Subclass hooks: :meth:`fingerprint`, :meth:`check`, :meth:`base_model`, :meth:`train_examples`,
    :meth:`eval_examples`, :meth:`metric`. ``pad_id`` is the padding token id.
    """

    name: ClassVar[str] = ""
    metric_name: str = "accuracy"
    pad_id: int = 0
    num_labels: int = 2
    #: whether the model takes ``token_type_ids`` (DistilBERT does not)
    uses_token_types: bool = True
    #: the longest sequence (tokens) the model's position embeddings take; None = not known
    max_positions: int | None = None

    # fine-tuning hyper-parameters, set by subclasses' constructors
    finetune_steps: int = 0
    finetune_batch_size: int = 32
    finetune_lr: float = 5e-5
    seed: int = 0
    max_length: int = 128
    finetune_precision: FinetunePrecision = "auto"
    #: how the dense model was fine-tuned (steps, precision, wall time, steps/s), set by
    #: :meth:`load_finetuned`; None before, or for a model used as given
    finetune_report: dict[str, Any] | None = None

    def set_finetuning(self, steps: int, batch_size: int, lr: float, seed: int, max_length: int,
                       precision: FinetunePrecision = "auto") -> None:
        """Check and store the fine-tuning hyper-parameters (constructors call this).

        Raises ValueError unless steps >= 0, batch_size >= 1, lr > 0, 8 <= max_length <= 512 and
        ``precision`` is valid on this CPU (:func:`pruners.training.check_precision`)."""
        if steps < 0 or batch_size < 1 or not 8 <= max_length <= 512:
            raise ValueError("finetune_steps must be >= 0, finetune_batch_size >= 1, max_length in [8, 512] "
                             f"(got {steps}, {batch_size}, {max_length})")
        if not lr > 0:
            raise ValueError(f"finetune_lr must be > 0, got {lr}")
        self.finetune_steps, self.finetune_batch_size, self.finetune_lr = steps, batch_size, lr
        self.seed, self.max_length = seed, max_length
        self.finetune_precision = check_precision(precision, "finetune_precision")

    def precision_fingerprint(self) -> dict[str, str]:
        """``{"precision": "bf16"}`` when fine-tuning runs in bf16, else ``{}`` (fp32 fine-tunes keep
        the cache keys they had before the precision option existed)."""
        p = resolve_precision(self.finetune_precision)
        return {} if p == "fp32" or self.finetune_steps == 0 else {"precision": p}

    # ---- hooks -----------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """Everything that determines the task's rows: the fine-tuned dense model and what it is
        evaluated on (a run's task key: a resume refuses a task whose fingerprint changed)."""
        raise NotImplementedError

    def model_fingerprint(self) -> dict[str, Any]:
        """What determines the fine-tuned dense model alone: its cache key (default:
        :meth:`fingerprint`). A task whose fingerprint also names what only evaluation reads (the
        eval file, the metric) leaves it out here, so changing that does not fine-tune again."""
        return self.fingerprint()

    def check(self) -> None:
        """Raise ValueError if the task cannot run (missing data file, missing model package)."""

    def has_training_data(self) -> bool:
        """Whether the task has training examples (fine-tuning and training pruners need them)."""
        return True

    def base_model(self) -> nn.Module:
        """A fresh (not yet fine-tuned) sequence-classification model."""
        raise NotImplementedError

    def train_examples(self) -> list[Example]:
        raise NotImplementedError

    def eval_examples(self) -> list[Example]:
        raise NotImplementedError

    def augment_vocab(self) -> tuple[list[int], list[int]] | None:
        """``(words, pieces)`` for data augmentation (:mod:`pruners.augment`): the token ids it may
        replace and use as replacements (whole words: no special tokens, no continuation pieces)
        and the ids that continue a word; None where the task's vocabulary is unknown (then
        ``augment`` is refused)."""
        return None

    def unlabeled_texts(self, source: str) -> list[str] | list[tuple[str, str]]:
        """The distinct texts of a ``distill_text`` source (:func:`profiler.tasks.textdata.unlabeled_texts`:
        a packaged GLUE set's training sentences or a ``.txt`` file's lines), what :meth:`encode_texts`
        takes; a sentence-pair task returns pairs instead."""
        from profiler.tasks.textdata import unlabeled_texts

        return unlabeled_texts(source)

    def encode_texts(self, texts: list[str] | list[tuple[str, str]]) -> list[Example] | None:
        """Texts of :meth:`unlabeled_texts` tokenized as the model's inputs, label 0 (not a label: for
        unlabeled distillation data, which the teacher labels; :class:`pruners.augment.ExtraText`);
        None where the task cannot tokenize text (then ``distill_text`` is refused)."""
        return None

    def metric(self, logits: torch.Tensor, labels: torch.Tensor) -> float:
        """Accuracy of argmax predictions (override for regression tasks)."""
        return float((logits.argmax(-1) == labels.long()).float().mean())

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, labels.long())

    # ---- batching ----------------------------------------------------------------------------
    def collate(self, examples: list[Example], pad_to: int | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Pad ``examples`` to their longest (or ``pad_to``) length; padding masked with attention_mask=0.

        Returns ``(inputs, labels)``: int64 tensors (batch, seq) for ``input_ids``,
        ``attention_mask`` and (when :attr:`uses_token_types`) ``token_type_ids``, and labels (batch,).
        """
        length = pad_to or max(len(e.input_ids) for e in examples)
        ids = torch.full((len(examples), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(examples), length), dtype=torch.long)
        types = torch.zeros_like(ids)
        for i, e in enumerate(examples):
            seq = e.input_ids[:length]
            ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[i, : len(seq)] = 1
            if e.token_type_ids is not None:
                types[i, : len(seq)] = torch.tensor(e.token_type_ids[:length], dtype=torch.long)
        labels = torch.tensor([e.label for e in examples])
        inputs = {"input_ids": ids, "attention_mask": mask}
        if self.uses_token_types:
            inputs["token_type_ids"] = types
        return inputs, labels

    def example_inputs(self, batch_size: int, seq_len: int) -> dict[str, torch.Tensor]:
        """A timing batch: the first ``batch_size`` eval examples padded/truncated to exactly ``seq_len``."""
        ex = self.eval_examples()
        picked = [ex[i % len(ex)] for i in range(batch_size)]
        return self.collate(picked, pad_to=seq_len)[0]

    def calibration_inputs(self, n: int) -> Iterator[dict[str, torch.Tensor]]:
        """The first ``n`` training examples, one per batch (int64 tensors (1, length)): the
        calibration data of post-training quantization."""
        for e in self.calibration_examples()[:n]:
            yield self.collate([e])[0]

    def calibration_examples(self) -> list[Example]:
        """Where :meth:`calibration_inputs` draws from: the training examples."""
        return self.train_examples()

    def train_index_batches(self, batch_size: int, seed: int | None = None) -> Iterator[list[int]]:
        """Endless shuffled batches of indices into :meth:`train_examples`, length-bucketed (chunks
        of 50 batches sorted by length) so padding stays small; deterministic for a given seed."""
        data = self.train_examples()
        return index_batches(len(data), [len(e.input_ids) for e in data], batch_size, self.seed if seed is None else seed)

    def train_batches(self, batch_size: int, seed: int | None = None) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """The batches of :meth:`train_index_batches`, collated."""
        data = self.train_examples()
        for idx in self.train_index_batches(batch_size, seed):
            yield self.collate([data[i] for i in idx])

    # ---- fine-tuning and evaluation -----------------------------------------------------------
    def model_cache_path(self, cache_dir: Path) -> Path:
        return Path(cache_dir) / "finetuned" / f"{self.name}-{stable_hash(self.model_fingerprint())}"

    def load_finetuned(self, cache_dir: Path | None = None, progress: Callable[[int, int, float], None] | None = None) -> nn.Module:
        """The fine-tuned dense model, from the on-disk cache or fine-tuned now and cached
        (``save_pretrained``, safetensors). ``progress(step, total, loss)`` is called per step."""
        path = self.model_cache_path(cache_dir or default_cache_dir())
        cached = load_cached(path, self.load_saved, "config.json")
        if cached is not None:
            self.finetune_report = _saved_training(path, self.finetune_steps)
            return cached
        model = self.base_model()
        checkpoint = partial_checkpoint(path)
        training = self.finetune(model, self.finetune_steps, progress, checkpoint) if self.finetune_steps > 0 else None
        self.finetune_report = training
        model.eval()
        def write(folder: Path) -> None:
            model.save_pretrained(folder, safe_serialization=True)
            (folder / "sparsebench_task.json").write_text(json.dumps({**self.model_fingerprint(), "training": training},
                                                                     indent=1, default=str))

        publish_cached(path, write)
        discard_checkpoint(checkpoint)
        return model

    def load_finetuned_seed(self, seed: int, cache_dir: Path | None = None,
                            progress: Callable[[int, int, float], None] | None = None) -> nn.Module:
        """The dense model fine-tuned as this task's (:meth:`load_finetuned`: same steps, batch, lr,
        precision) but from ``seed`` — batch order, dropout, classifier initialisation; cached
        under its own fingerprint. A member of an ensemble teacher (``teacher_seeds``); this task's
        own seed and :attr:`finetune_report` are left as they are."""
        self.train_examples(), self.eval_examples()  # cached first: a task whose data derive from its seed shares them
        other = copy.copy(self)
        other.seed = int(seed)
        return other.load_finetuned(cache_dir, progress)

    def load_cached_pruned(self, entry: str, cache_dir: Path | None = None) -> tuple[nn.Module, str]:
        """A pruned model a run cached for this task: ``entry`` names a folder of ``CACHE/pruned``
        (``<task>-<pruner>-<hash>``). Returns the model and what made it (e.g. "schedule one-shot,
        sparsity 0.9, structure unstructured", from its prune report). Raises ValueError listing this
        task's entries when ``entry`` is not one of them."""
        root = Path(cache_dir or default_cache_dir()) / "pruned"
        path = root / entry
        if not (entry.startswith(f"{self.name}-") and "/" not in entry and (path / "prune_report.json").is_file()):
            entries = sorted(p.name for p in root.glob(f"{self.name}-*") if (p / "prune_report.json").is_file())
            raise ValueError(f"{entry!r}: not a pruned {self.name} model in {root}; {self.name} entries there: "
                             f"{', '.join(entries) or '(none)'}")
        return self.load_saved(path), pruned_made_by(json.loads((path / "prune_report.json").read_text()))

    def load_saved(self, path: Path) -> nn.Module:
        """Load a model saved with ``save_pretrained`` (strict: missing/unexpected keys raise), in
        float32 whatever dtype it was saved in: the torch-fp32 baseline every factor divides by, and
        the accelerators' starting point, is fp32 (bf16 / fp16 weights widen exactly)."""
        from transformers import AutoModelForSequenceClassification

        model, info = AutoModelForSequenceClassification.from_pretrained(path, output_loading_info=True)
        bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        if bad:
            raise RuntimeError(f"checkpoint {path} did not load strictly: {bad}")
        return model.float().eval()

    def finetune(self, model: nn.Module, steps: int, progress: Callable[[int, int, float], None] | None = None,
                 checkpoint: Path | None = None) -> dict[str, Any]:
        """Fine-tune ``model`` in place: AdamW (lr :attr:`finetune_lr`, weight decay 0.01), linear
        warm-up over 6 % of the steps then linear decay, gradient clipping at 1.0, the task loss, in
        :attr:`finetune_precision` (see :mod:`pruners.training`). Returns ``{"precision", "steps",
        "wall_time_s", "steps_per_s"}`` (``resumed_from_step`` too after a resume).

        With ``checkpoint`` (a file path), the state after a step — weights, AdamW and schedule
        state, torch's RNG, the step — is saved there every
        :data:`pruners.training.CHECKPOINT_EVERY_S` seconds (:class:`pruners.training.Checkpoints`:
        written aside, then renamed; never after the last step), and a fine-tune of the same steps
        that finds it goes on from it: an interrupted run loses at most that much, and ends with
        the same weights as one that was never interrupted (same batches, same dropout draws)."""
        precision = resolve_precision(self.finetune_precision)
        clock = StepClock()
        torch.manual_seed(self.seed)
        model.train()
        opt = adamw(model.parameters(), self.finetune_lr, 0.01)
        sched = warmup_linear_decay(opt, max(1, int(0.06 * steps)), steps)
        start, wall_before = self._resume_finetune(checkpoint, steps, model, opt, sched)
        batches = self.train_batches(self.finetune_batch_size)
        for _ in range(start):  # the batch order is a function of the seed: skip what was trained
            next(batches)
        checkpoints = Checkpoints(checkpoint, f"fine-tuning {self.name}")
        for step in range(start, steps):
            inputs, labels = next(batches)
            with autocast(precision):
                logits = logits_of(model(**inputs))
            loss = self.loss(logits.float(), labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            clock.tick()
            if checkpoints.due(step + 1, steps):
                checkpoints.save({"steps": steps, "step": step + 1, "model": model.state_dict(),
                                  "optimizer": opt.state_dict(), "schedule": sched.state_dict(),
                                  "rng": torch.get_rng_state(), "wall_s": wall_before + clock.wall_s})
            if progress:
                progress(step + 1, steps, loss.detach().item())
        model.eval()
        report = clock.describe(precision)
        if start:  # the whole fine-tune's time and speed, the run before the interruption included
            report.update(steps=steps, wall_time_s=round(wall_before + clock.wall_s, 1), resumed_from_step=start,
                          steps_per_s=round(steps / (wall_before + clock.wall_s), 3))
        return report

    @staticmethod
    def _resume_finetune(checkpoint: Path | None, steps: int, model: nn.Module, opt: torch.optim.Optimizer,
                         sched: Any) -> tuple[int, float]:
        """(first step, seconds already trained) from ``checkpoint`` when it holds a fine-tune of
        ``steps`` steps of this model (its state loaded into model, optimizer, schedule and torch's
        RNG), else (0, 0). A file that cannot be read, or holds other weights' names or shapes, is
        warned about and ignored before anything is changed."""
        if checkpoint is None or not checkpoint.is_file():
            return 0, 0.0
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            if state.get("steps") != steps:
                return 0, 0.0
            own = model.state_dict()
            theirs = state["model"]
            if set(theirs) != set(own) or any(theirs[k].shape != own[k].shape for k in own):
                raise ValueError("its weights are not this model's")
            step, wall = int(state["step"]), float(state["wall_s"])
        except Exception as exc:  # a damaged or foreign checkpoint costs the time it saved, nothing else
            import warnings

            from pruners.training import CheckpointWarning, brief

            warnings.warn(f"fine-tuning checkpoint {checkpoint} could not be used ({brief(exc)}); "
                          "fine-tuning from the start", CheckpointWarning)
            return 0, 0.0
        model.load_state_dict(theirs)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"])
        return step, wall

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Every metric the task reports, headline (:attr:`metric_name`) first; default: the headline only."""
        return {self.metric_name: self.metric(logits, labels)}

    def evaluate(self, module: nn.Module, batch_size: int = 64) -> float:
        """The headline metric (:attr:`metric_name`) over the whole eval split (see :meth:`evaluate_metrics`)."""
        return self.evaluate_metrics(module, batch_size)[self.metric_name]

    @torch.inference_mode()
    def evaluate_metrics(self, module: nn.Module, batch_size: int = 64) -> dict[str, float]:
        """Every metric of :meth:`metrics` over the whole eval split, in a fixed order, padding masked.

        Examples are batched in length order (dynamic padding), which changes no prediction because
        padding positions are masked out of attention. Raises ValueError when the eval split is
        empty, or when any logit is NaN or ±inf: argmax would read such a row as class 0 and score a
        broken model as if it answered.
        """
        ex = self.eval_examples()
        if not ex:
            raise ValueError(f"task {self.name!r} has no evaluation examples: eval_examples() returned none")
        order = sorted(range(len(ex)), key=lambda i: len(ex[i].input_ids))
        logits = [None] * len(ex)
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            inputs, _ = self.collate([ex[i] for i in idx])
            out = logits_of(module(**inputs)).float()
            for j, i in enumerate(idx):
                logits[i] = out[j]
        labels = torch.tensor([e.label for e in ex])
        stacked = torch.stack(logits)
        bad = int((~torch.isfinite(stacked)).flatten(1).any(dim=1).sum())
        if bad:
            raise ValueError(f"{bad} of {len(ex)} evaluation examples gave non-finite logits (NaN or inf): "
                             "no metric for this model")
        return self.metrics(stacked, labels)


def _saved_training(path: Path, steps: int) -> dict[str, Any] | None:
    """The fine-tune's ``training`` record saved beside a cached model (older entries have none:
    then only the step count is known)."""
    if steps == 0:
        return None
    try:
        saved = json.loads((path / "sparsebench_task.json").read_text()).get("training")
    except (OSError, ValueError, AttributeError):
        saved = None
    return saved or {"steps": steps}


def publish_cached(path: Path, write: Callable[[Path], None]) -> None:
    """Build a cache entry in a private folder (``write(folder)``) and move it to ``path`` in one
    rename, so that processes sharing the cache never see a half-written entry nor write into one
    folder together; when another process published ``path`` first, its entry stays and ours is
    dropped (both come from the same inputs)."""
    import shutil
    import uuid

    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        try:
            write(tmp)
        except Exception as exc:  # a full disk, a file-size limit (safetensors' own error type, not OSError)
            raise RuntimeError(f"cannot write the model cache entry {path} ({type(exc).__name__}: {exc}); make room "
                               "there or choose another cache (--cache-dir / SPARSEBENCH_CACHE)") from exc
        os.rename(tmp, path)  # atomic; fails when path exists (a non-empty folder)
    except OSError:
        if not path.exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_cached(path: Path, loader: Callable[[Path], Any], marker: str) -> Any | None:
    """``loader(path)`` if a cache entry is there; a damaged entry — one that fails to load, or
    one without its ``marker`` file (entries are published whole, by :func:`publish_cached`, so a
    folder without it was changed since: it would block every rebuild from being published) — is
    moved aside (and a warning issued) so that it is rebuilt instead of failing every cell."""
    if not (path / marker).exists():
        if path.exists():
            move_aside(path, f"its {marker} is missing")
        return None
    try:
        return loader(path)
    except Exception as exc:
        move_aside(path, f"it could not be loaded ({type(exc).__name__}: {exc})")
        return None


def move_aside(path: Path, why: str) -> None:
    """Rename the damaged cache entry ``path`` to ``<name>.damaged-<time>`` with a warning saying ``why``."""
    import warnings

    from profiler.errors import SparsebenchWarning

    aside = path.with_name(f"{path.name}{DAMAGED_INFIX}{int(time.time())}")
    path.rename(aside)
    warnings.warn(f"cache entry {path}: {why}; moved to {aside} and rebuilding", SparsebenchWarning)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
