"""Result rows: one flat JSON object per cell, appended to ``results.jsonl`` and flushed."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

STATUSES = ("ok", "failed", "skipped")


@dataclass
class Result:
    """One matrix cell's outcome. Units are in the names: seconds, joules, bytes.

    ``status`` is ok | failed | skipped; ``reason`` says why for the last two. Identity
    (:mod:`profiler.identity`): ``cell_id`` (every axis), ``recipe_id`` (without threads and kernel
    variant: what ``compare`` joins on across targets), ``model_id`` (rows with equal ids share
    one accuracy pass); rows written before ``recipe_id``/``model_id`` existed have them None
    (:func:`profiler.identity.ids_of_row` recomputes them). Fields not known to this class
    (plugin-specific ones) round-trip through ``extra``.
    """

    cell_id: str
    task: str
    pruner: str
    pruner_params: dict[str, Any]
    accelerator: str
    accelerator_params: dict[str, Any]
    batch_size: int
    seq_len: int
    threads: int
    status: str
    recipe_id: str | None = None
    model_id: str | None = None
    reason: str | None = None
    kernel_variant: str | None = None
    device: str = "cpu"
    metric_name: str | None = None
    accuracy: float | None = None
    latency_mean_s: float | None = None
    latency_p50_s: float | None = None
    latency_p90_s: float | None = None
    latency_p99_s: float | None = None
    latency_n: int | None = None
    latency_iqr_over_median: float | None = None
    latency_spread_flag: bool | None = None
    throughput_per_s: float | None = None
    energy_j_per_inference: float | None = None
    energy_j_per_inference_net: float | None = None
    energy_method: str = "unavailable"
    energy_reason: str | None = None
    sparsity_prunable: float | None = None
    sparsity_all_params: float | None = None
    model_bytes: int | None = None
    hardware_id: str | None = None
    sparsebench_version: str | None = None
    timestamp: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        return {**d, **{k: v for k, v in extra.items() if k not in d}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Result":
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in names}, extra={k: v for k, v in d.items() if k not in names})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False, default=str)

    @classmethod
    def from_json(cls, line: str) -> "Result":
        return cls.from_dict(json.loads(line))


@dataclass
class ResultsFile:
    """Complete rows of a ``results.jsonl`` plus the 1-based numbers of lines that were damaged
    (e.g. a truncated last line from a run killed mid-write)."""

    rows: list[dict[str, Any]]
    damaged_lines: list[int]


def read_results(path: Path) -> ResultsFile:
    """Read every complete JSON row of ``path``; damaged lines are reported, never raised."""
    rows, damaged = [], []
    if not Path(path).exists():
        return ResultsFile(rows, damaged)
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or "cell_id" not in row:
                    raise ValueError("not a result row")
                rows.append(row)
            except ValueError:
                damaged.append(i)
    return ResultsFile(rows, damaged)


def repair_tail(path: Path) -> bool:
    """Cut a partial last line (no trailing newline, from a killed writer) so appends stay valid.

    Returns True when something was cut."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return False
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return False
    cut = data.rfind(b"\n") + 1
    with open(path, "r+b") as f:
        f.truncate(cut)
    return True


def append_result(path: Path, result: Result) -> None:
    """Append one row and flush it to disk (fsync) before returning."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(result.to_json() + "\n")
        f.flush()
        os.fsync(f.fileno())
