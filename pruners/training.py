"""The training machinery shared by fine-tuning and every training-time pruner: numeric precision,
optimizer, learning-rate schedule, steps-per-second accounting, and checkpoints.

Precision (``"auto" | "fp32" | "bf16"``): ``bf16`` runs forward and loss under
``torch.autocast("cpu", dtype=torch.bfloat16)`` (matmuls and GELU in bfloat16 through oneDNN,
AMX tiles where the CPU has them) while the weights, their gradients and the optimizer state stay
fp32 ("fp32 master weights", Micikevicius et al. 2018; bf16 needs no loss scaling because it has
fp32's exponent range). ``auto`` picks bf16 only where the CPU has native bf16 dot products
(``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo): elsewhere oneDNN emulates bf16 and it is
slower than fp32.

Optimizer: AdamW with decoupled weight decay (Loshchilov & Hutter 2019), torch's fused CPU
kernel where the build has it (one pass over every parameter instead of a dozen element-wise
kernels per tensor: MiniLM's 11.7 M-entry word-embedding matrix alone makes the unfused update
the most expensive part of a small-batch step). Same arithmetic as the unfused AdamW.

Checkpoints: a fine-tune (:meth:`profiler.tasks.base.Task.finetune`) and a training pruner
(:class:`pruners.gmp.TrainingPruner`) save their state after a training step every
:data:`CHECKPOINT_EVERY_S` seconds (:class:`Checkpoints`: written aside, then renamed, so a file is
never half written), never after the last step, and a run of the same configuration that finds the
file goes on from it to the same final weights as a run never interrupted. What each saves, and
where, is in their docstrings; whoever stores the finished model deletes the file.
"""
from __future__ import annotations

import bisect
import contextlib
import glob
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence, get_args

import torch

from accelerators.base import BF16_FLAGS, bf16_native

#: training precision (module doc): all three on any machine, so that a config stays valid everywhere;
#: :func:`check_precision` refuses ``"bf16"`` where the CPU lacks it
Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


def check_precision(precision: str, key: str = "precision") -> str:
    """Return ``precision`` if valid. ValueError naming ``key`` and the valid values otherwise, or
    when ``"bf16"`` is asked of a CPU without native bf16 (``auto`` would pick fp32 there)."""
    if precision not in PRECISIONS:
        raise ValueError(f"{key} must be one of: {', '.join(PRECISIONS)} (got {precision!r})")
    if precision == "bf16" and not bf16_native():
        raise ValueError(f"{key} = 'bf16' needs a CPU with {' or '.join(BF16_FLAGS)} (this one has neither); "
                         "use 'auto' or 'fp32'")
    return precision


def resolve_precision(precision: str) -> str:
    """``"fp32"`` or ``"bf16"``: what ``precision`` (see :data:`PRECISIONS`) runs as on this CPU."""
    check_precision(precision)
    if precision == "auto":
        return "bf16" if bf16_native() else "fp32"
    return precision


def autocast(precision: str) -> contextlib.AbstractContextManager[Any]:
    """The context the forward pass and loss run in: bf16 autocast for ``"bf16"``, nothing for ``"fp32"``.
    ``precision`` must be resolved (:func:`resolve_precision`)."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"autocast precision must be 'fp32' or 'bf16', got {precision!r}")


def adamw(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW (β = 0.9, 0.999, ε = 1e-8), fused where this torch build supports it on the CPU."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def linear_decay_factor(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """``step → learning-rate multiplier``: ``(s+1)/warmup`` for the first ``warmup_steps`` steps,
    then linear decay to 0 at ``total_steps`` (the BERT fine-tuning schedule, Devlin et al. 2019)."""
    warm, total = int(warmup_steps), int(total_steps)
    return lambda s: (s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm))


def warmup_linear_decay(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler of :func:`linear_decay_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, linear_decay_factor(warmup_steps, total_steps))


#: learning-rate schedules of the training pruners (``TrainingPruner``'s ``lr_schedule``)
LrSchedule = Literal["linear", "cyclic"]
LR_SCHEDULES: tuple[str, ...] = get_args(LrSchedule)
CYCLE_FLOOR = 0.1  # oBERT's recipes: each cycle from init_lr to final_lr = init_lr / 10


def check_lr_schedule(lr_schedule: str) -> str:
    """Return ``lr_schedule`` if it is one of :data:`LR_SCHEDULES`; ValueError naming the valid values."""
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of: {', '.join(LR_SCHEDULES)} (got {lr_schedule!r})")
    return lr_schedule


def cyclic_linear_factor(restarts: Sequence[int], total_steps: int, warmup_steps: int = 0,
                         floor: float = CYCLE_FLOOR) -> Callable[[int], float]:
    """``step → learning-rate multiplier`` with rewinding at every mask update: 1 at step 0 and at
    each step of ``restarts``, decaying linearly towards ``floor``, which it would reach at the next
    restart (or at ``total_steps`` for the last cycle): a cycle from a to b gives
    1 − (1 − floor)·(s − a)/(b − a) at step s. The ``cyclic_linear`` schedule of the oBERT recipes (Kurtic
    et al. 2022: one cycle per pruning interval, 8e-5 → 8e-6), after learning-rate rewinding (Renda
    et al. 2020). A linear warm-up over the first ``warmup_steps`` multiplies every step below
    ``warmup_steps``, in whichever cycles those steps fall.

    Args:
        restarts: optimizer steps (0-based) where a cycle starts; any order, out-of-range ones ignored.
        total_steps: steps in all (>= 1). floor: the end of each cycle as a fraction of the peak, in [0, 1].
    Raises ValueError for ``total_steps < 1`` or ``floor`` outside [0, 1].
    """
    total, warm = int(total_steps), int(warmup_steps)
    if total < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps!r}")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must be in [0, 1], got {floor!r}")
    bounds = sorted({0, *(int(r) for r in restarts if 0 <= int(r) < total)}) + [total]

    def factor(s: int) -> float:
        i = min(max(0, bisect.bisect_right(bounds, s) - 1), len(bounds) - 2)
        a, b = bounds[i], bounds[i + 1]
        f = 1.0 - (1.0 - floor) * min(1.0, (s - a) / max(1, b - a))
        return f * ((s + 1) / warm if s < warm else 1.0)

    return factor


class StepClock:
    """Steps per second of a training loop, wall clock (``time.perf_counter``), mask updates and
    evaluation included: what a user waits for. A loop resumed from a checkpoint counts the steps
    and seconds of the run before the interruption too (:meth:`load_state_dict`)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.steps = 0
        self.before_s = 0.0  # wall time of the runs before a resume

    def tick(self) -> None:
        self.steps += 1

    @property
    def wall_s(self) -> float:
        return self.before_s + time.perf_counter() - self.t0

    def state_dict(self) -> dict[str, Any]:
        """``{"steps", "wall_s"}`` so far, for a checkpoint."""
        return {"steps": self.steps, "wall_s": self.wall_s}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Count on from a checkpoint's :meth:`state_dict`: its steps and seconds are added to this run's."""
        self.steps, self.before_s = int(state["steps"]), float(state["wall_s"])

    def describe(self, precision: str) -> dict[str, Any]:
        """``{"precision", "threads", "steps", "wall_time_s", "steps_per_s"}`` for reports (threads: torch's, now)."""
        wall = self.wall_s
        return {"precision": precision, "threads": torch.get_num_threads(), "steps": self.steps, "wall_time_s": round(wall, 1),
                "steps_per_s": round(self.steps / wall, 3) if wall > 0 else None}


def index_batches(n: int, lengths: list[int], batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless shuffled batches of example indices in ``range(n)``, length-bucketed: each chunk of
    50 batches is sorted by ``lengths`` before being cut, so padding stays small; batches are then
    shuffled. Deterministic for a given seed. ValueError for ``n < 1`` (an empty epoch would never
    yield)."""
    if n < 1:
        raise ValueError(f"index_batches needs at least one example, got n = {n!r}")
    rng = random.Random(seed)
    while True:
        order = list(range(n))
        rng.shuffle(order)
        chunk = batch_size * 50
        batches: list[list[int]] = []
        for s in range(0, n, chunk):
            part = sorted(order[s : s + chunk], key=lambda i: lengths[i])
            batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
        rng.shuffle(batches)
        yield from batches


#: seconds of training between two checkpoints, for fine-tunes and training pruners alike (one write
#: costs about the weights and the AdamW state: ~3× the model's size)
CHECKPOINT_EVERY_S = 120.0


class CheckpointWarning(UserWarning):
    """A training checkpoint (a fine-tune's or a training pruner's) cannot be used (unreadable,
    or saved by another configuration: training starts from the beginning) or written (training
    goes on without checkpoints). The CLI prints it as one warning line."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save(state)`` into a private file next to ``path`` (its folder created), then one
    rename: a reader never sees half a file, and a process killed while writing leaves the previous
    checkpoint whole; the data reach the disk (fsync) before the rename, so a power loss cannot leave
    an empty file in place of the previous checkpoint. Raises OSError for a full, read-only or
    otherwise failing disk (torch's own write errors included), the private file removed."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "wb") as f:  # a Python file: a failing write raises OSError, not torch's RuntimeError
            try:
                torch.save(state, f)
            except RuntimeError as exc:  # torch's serializer reports some write failures this way
                raise OSError(f"writing {tmp}: {exc}") from exc
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C or a full disk mid-write: no stray half file beside the cache entries
        tmp.unlink(missing_ok=True)
        raise
    remove_orphans(path)


def discard_checkpoint(path: Path) -> None:
    """Delete the checkpoint at ``path`` (the training it saved is stored) and what killed saves
    of it left (:func:`remove_orphans`)."""
    Path(path).unlink(missing_ok=True)
    remove_orphans(path)


#: seconds without a write after which a killed writer's private checkpoint file is removed
ORPHAN_AGE_S = 600.0


def remove_orphans(path: Path) -> list[Path]:
    """Delete the private files a killed :func:`save_checkpoint` left next to ``path``: those whose
    writer (the pid in the name) no longer runs on this machine and that nothing wrote to for
    :data:`ORPHAN_AGE_S` (a writer on another machine sharing the folder is never cut off
    mid-write). Returns the files removed; one that cannot be removed stays."""
    removed = []
    for stale in Path(path).parent.glob(f"{glob.escape(Path(path).name)}.tmp-*"):
        try:
            if not abandoned_write(stale):
                continue
            stale.unlink()
            removed.append(stale)
        except OSError:
            continue
    return removed


def writer_pid(name: str) -> int | None:
    """The pid in ``<name>.tmp-<pid>[-<tag>]``, the name of a private file or folder that a writer
    renames into place when done; None for any other name."""
    pid = name.rsplit(".tmp-", 1)[1].split("-")[0] if ".tmp-" in name else ""
    return int(pid) if pid.isdigit() else None


def abandoned_write(path: Path) -> bool:
    """Whether ``path``, a private file or folder of a writer (:func:`writer_pid`), was left by a killed
    one: its pid no longer runs on this machine and nothing wrote to it for :data:`ORPHAN_AGE_S`.
    Raises OSError when ``path`` cannot be read."""
    path = Path(path)
    pid = writer_pid(path.name)
    return pid is not None and not _running(pid) and time.time() - path.stat().st_mtime >= ORPHAN_AGE_S


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process, or no pid at all: keep the file
    return True


def brief(exc: BaseException, limit: int = 160) -> str:
    """``Type: first line of the message``, cut at ``limit`` characters (torch's unpickling errors run to a page)."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Checkpoints:
    """When a training loop saves its state, and the save: a step boundary at least
    :data:`CHECKPOINT_EVERY_S` seconds (read at each call) after the loop started or last saved,
    never after the last step; ``path`` None = never. ``what`` names the training in the warning a
    failing write gives (then no more checkpoints: a full or read-only disk costs them, not the training)."""

    def __init__(self, path: Path | None, what: str = "training") -> None:
        self.path = Path(path) if path is not None else None
        self.what = what
        self._saved_at = time.monotonic()

    def due(self, done: int, total: int) -> bool:
        """Whether to save after ``done`` of ``total`` steps."""
        return (self.path is not None and done < total
                and time.monotonic() - self._saved_at >= CHECKPOINT_EVERY_S)

    def save(self, state: dict[str, Any]) -> None:
        """:func:`save_checkpoint` to :attr:`path`, and the interval starts again. An OSError is a
        :class:`CheckpointWarning` and turns the checkpoints off (:meth:`due` says False from then on)."""
        assert self.path is not None
        try:
            save_checkpoint(self.path, state)
        except OSError as exc:
            warnings.warn(f"training checkpoint {self.path} could not be written ({brief(exc)}); "
                          f"{self.what} goes on without checkpoints", CheckpointWarning, stacklevel=3)
            self.path = None
        self._saved_at = time.monotonic()


def rng_state() -> dict[str, Any]:
    """The global random states a training step may draw from: torch's CPU generator (dropout),
    Python's ``random`` and NumPy's legacy one, in types ``torch.load(weights_only=True)`` reads."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    try:
        import numpy as np

        name, keys, pos, has_gauss, gauss = np.random.get_state()
        state["numpy"] = (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))
    except ImportError:
        pass
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state.get("numpy") is not None:
        import numpy as np

        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
