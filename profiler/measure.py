"""Timing and metering of prepared modules: one cell alone (``sequential``) or a group of cells side
by side in interleaved rounds (``interleaved``, :mod:`profiler.interleave`), and the row fields that
come out of it (latency percentiles, energy per inference, same-round savings factors).

Seconds and joules throughout. Warm-up calls are never timed.
"""
from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from typing import Callable, Hashable, Mapping

import torch
from torch import nn

from accelerators.base import logits_of
from profiler.config import MeasureSpec
from profiler.errors import plugin_exit
from profiler.energy import MIN_RESOLUTION_MULTIPLE, EnergyResult, EnergyWindow, IdlePower, VisitWindows
from profiler.interleave import CellSamples, RoundPlan, VisitHooks, median_ratio, run_rounds, same_round_ratios
from profiler.results import Result
from profiler.timing import LatencyStats, timed_loop


@dataclass
class Timed:
    """What timing one cell produced: per-call ``samples`` (seconds), its ``energy`` over the
    timed calls, and its per-round median latencies when timed in rounds (else ``None``)."""

    samples: list[float]
    energy: EnergyResult
    round_medians: list[float | None] | None = None


def make_call(module: nn.Module, example: dict[str, torch.Tensor], device: str,
              expect_logits: tuple[int, int] | None = None, who: str = "the module") -> Callable[[], None]:
    """One inference on the timing batch, synchronised on CUDA so the clock sees the whole call.

    With ``expect_logits`` = (batch, labels), the first call checks that the logits have that shape
    and raises ValueError naming ``who`` and the contract otherwise (a module of another shape would
    fail later in the accuracy pass with torch's broadcasting error, far from the cause)."""
    inputs = {k: v.to(device) for k, v in example.items()} if device != "cpu" else example
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    unchecked = [expect_logits] if expect_logits is not None else []

    def call() -> None:
        try:  # free when nothing is raised: no cost inside the timed loop
            logits = logits_of(module(**inputs))
        except SystemExit as exc:  # the prepared module is plugin code: only its cell fails
            raise plugin_exit(exc, f"{who}'s forward") from exc
        if unchecked:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else None
            if shape != tuple(unchecked[0]):
                got = f"shape {list(shape)}" if shape is not None else type(logits).__name__
                raise ValueError(f"{who} returned logits of {got}; it must return logits of shape (batch, num_labels) "
                                 f"= {list(unchecked[0])} (a tensor, or an object with .logits)")
            unchecked.clear()
        sync()

    return call


def harness_overhead_s(seconds: float = 0.2) -> float:
    """Median seconds per call of the timing loop around a module that does no work (the ``null``
    accelerator's module on a one-token batch): the floor every measured latency includes."""
    from accelerators.null import ConstantLogits

    call = make_call(ConstantLogits(2), {"input_ids": torch.zeros(1, 1, dtype=torch.long)}, "cpu")
    with torch.inference_mode():
        for _ in range(100):
            call()
        samples = timed_loop(call, 1000, seconds)
    return statistics.median(samples)


def measure_one(call: Callable[[], None], m: MeasureSpec, meter, idle: IdlePower | None, batch_size: int) -> Timed:
    """Warm-up, then a timed loop inside one energy window.

    ``call`` runs one batch of ``batch_size`` sequences; ``meter`` is an energy meter
    (:class:`profiler.meters.base.EnergyMeter`). The loop runs at least ``m.min_iters`` calls and
    ``m.min_seconds`` (``m.max_seconds`` bounds only the interleaved schedule); both are raised to the window's minimum (10× the
    meter's resolution) so that the energy reading is valid. Returns the per-call samples (seconds
    per batch) and the window's energy divided over ``len(samples) · batch_size`` inferences
    (joules per sequence)."""
    with torch.inference_mode():
        for _ in range(m.warmup_iters):
            call()
        with EnergyWindow(meter, idle) as win:
            samples = timed_loop(call, m.min_iters, max(m.min_seconds, win.min_duration_s),
                                 max(m.max_seconds, win.min_duration_s))
    return Timed(samples, win.result(n_inferences=len(samples) * batch_size))


class _GroupHooks(VisitHooks):
    """Each visit runs at its cell's torch thread count and counts in its cell's energy window."""

    def __init__(self, windows: Mapping[Hashable, VisitWindows], threads: Mapping[Hashable, int]) -> None:
        self.windows = windows
        self.threads = threads

    def start(self, key: Hashable) -> None:
        if key in self.threads:
            torch.set_num_threads(self.threads[key])

    def begin(self, key: Hashable) -> None:
        self.windows[key].begin()

    def end(self, key: Hashable, n_calls: int) -> None:
        self.windows[key].end()


class CallFailed(Exception):
    """A call of one cell of an interleaved group raised: ``key`` names the cell, the cell's own
    error is the ``__cause__``. The other cells did nothing wrong: time them again without it."""

    def __init__(self, key: Hashable, exc: BaseException) -> None:
        super().__init__(f"{type(exc).__name__}: {exc}")
        self.key = key


def _tagged(key: Hashable, call: Callable[[], None]) -> Callable[[], None]:
    """``call``, its errors raised as :class:`CallFailed` naming ``key``."""
    def run() -> None:
        try:
            call()
        except Exception as exc:
            raise CallFailed(key, exc) from exc
    return run


def measure_group(calls: Mapping[Hashable, Callable[[], None]], batch_size: int, m: MeasureSpec, meter,
                  idle: IdlePower | None, seed: int, on_round: Callable[[int], None] | None = None,
                  threads: Mapping[Hashable, int] | None = None) -> dict[Hashable, Timed]:
    """Warm every call up, then time them in interleaved rounds (:func:`profiler.interleave.run_rounds`,
    order seeded by ``seed``); each cell's energy counts its own visits only. Samples are seconds per
    batch of ``batch_size`` sequences, energy is divided per sequence, as in :func:`measure_one`.

    ``threads``: torch's thread count (``torch.set_num_threads``) for the warm-up and every visit
    of a call (calls not named keep the count they find), so that cells of several thread counts
    share rounds and their thread scaling is a same-round ratio too.

    Raises :class:`CallFailed` (naming the cell) when a call raises, in the warm-up or a round."""
    calls = {k: _tagged(k, call) for k, call in calls.items()}
    windows = {k: VisitWindows(meter, idle) for k in calls}
    min_energy_s = MIN_RESOLUTION_MULTIPLE * float(meter.resolution_s)  # each cell's visits add up to a valid window
    plan = RoundPlan(visit_seconds=m.visit_seconds, min_rounds=m.min_rounds, min_iters=m.min_iters,
                     min_seconds=max(m.min_seconds, min_energy_s), max_seconds=max(m.max_seconds, min_energy_s))
    hooks = _GroupHooks(windows, threads or {})
    with torch.inference_mode():
        for key, call in calls.items():
            hooks.start(key)
            for _ in range(m.warmup_iters):
                call()
        cells, _ = run_rounds(calls, plan, rng=random.Random(seed), hooks=hooks, on_round=on_round)
    return {k: _timed(cells[k], windows[k], batch_size) for k in calls}


def _timed(c: CellSamples, w: VisitWindows, batch_size: int) -> Timed:
    return Timed(c.all, w.result(n_inferences=len(c.all) * batch_size), c.round_medians())


def fill_measurements(row: Result, t: Timed) -> None:
    """Latency percentiles (seconds per batch; p90 / p99 None, with a reason, from too few calls), throughput (sequences per second: batch size ÷ mean
    latency) and energy fields (joules per sequence, with their method) of ``row`` from ``t``.
    Raises ValueError when ``t`` holds no samples."""
    stats = LatencyStats.from_samples(t.samples)
    row.latency_mean_s, row.latency_p50_s, row.latency_p90_s, row.latency_p99_s = stats.mean_s, stats.p50_s, stats.p90_s, stats.p99_s
    row.latency_n, row.latency_iqr_over_median, row.latency_spread_flag = stats.n, stats.iqr_over_median, stats.spread_flag
    if stats.null_reasons:  # a tail percentile of too few calls (Result.to_dict merges these with its own)
        row.extra["null_reasons"] = {**(row.extra.get("null_reasons") or {}), **stats.null_reasons}
    row.throughput_per_s = row.batch_size / stats.mean_s
    energy = t.energy.row_fields()
    row.energy_j_per_inference = energy.pop("energy_j_per_inference", None)
    row.energy_j_per_inference_net = energy.pop("energy_j_per_inference_net", None)
    row.energy_method = energy.pop("energy_method", "unavailable")
    row.energy_reason = energy.pop("energy_reason", None)
    row.extra.update(energy)
    if t.round_medians is not None:
        row.extra["latency_rounds"] = len(t.round_medians)
        # per round, so that any two cells of one interleaved group can be divided round by round
        row.extra["latency_round_medians_s"] = list(t.round_medians)


#: the same-round savings factors every timed row carries: against the dense torch-fp32 cell, and
#: against the fastest dense fp32 cell of its round
SAVINGS_KEYS = ("latency_savings_factor", "latency_savings_vs_best_dense")
#: the row field of a cell's latency at the matrix's fewest threads ÷ its own (same rounds)
THREAD_SCALING_KEY = "thread_scaling_factor"


def savings_fields(cell: Timed, ref: Timed | None, key: str, seed: int = 0) -> dict[str, float | int | None]:
    """Same-round latency savings factor of ``cell`` against ``ref`` (ref's median latency ÷ the
    cell's, per round; median over rounds with a bootstrap 95 % interval): ``{key}``,
    ``{key}_low``, ``{key}_high`` and ``{key}_rounds`` (``None``/0 without common rounds, or
    without ``ref``: a cell timed on its own has no same-round partner)."""
    ratios = same_round_ratios(ref.round_medians or [], cell.round_medians or []) if ref is not None else []
    r = median_ratio(ratios, seed=seed)
    return {key: r.median if r else None, f"{key}_low": r.low if r else None,
            f"{key}_high": r.high if r else None, f"{key}_rounds": r.n_rounds if r else 0}
