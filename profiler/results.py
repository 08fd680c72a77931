"""Result rows: one flat JSON object per cell, appended to ``results.jsonl`` and flushed.

Rows are written with finite numbers only (a non-finite value is stored as ``null`` and named in
``null_reasons``) and read defensively: a line that is not UTF-8, not JSON or not a row of the
schema (:func:`row_problem`) is reported as damaged (file, line, why) and skipped, never raised.
"""
from __future__ import annotations

import json
import math
import os
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler.errors import ResultsReadError, ResultsWriteError
from profiler.rundir import write_atomic

if TYPE_CHECKING:
    from profiler.config import Cell

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

    def set_outcome(self, status: str, reason: str | None) -> None:
        """Set ``status`` (ok | failed | skipped), ``reason`` and ``timestamp`` (now, ISO 8601 UTC)."""
        import datetime as dt

        self.status, self.reason = status, reason
        self.timestamp = dt.datetime.now(dt.timezone.utc).isoformat()

    def to_dict(self) -> dict[str, Any]:
        """The flat row. A non-finite number (NaN, ±inf) anywhere in it becomes None, and
        ``null_reasons`` maps its dotted path to why (e.g. ``{"latency_p99_s": "measured inf"}``)."""
        d = asdict(self)
        extra = d.pop("extra")
        row = {**d, **{k: v for k, v in extra.items() if k not in d}}
        reasons: dict[str, str] = {}
        row = _finite(row, "", reasons)
        if reasons:
            row["null_reasons"] = {**(row.get("null_reasons") or {}), **reasons}
        return row

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Result":
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in names}, extra={k: v for k, v in d.items() if k not in names})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False, default=str)

    @classmethod
    def from_json(cls, line: str) -> "Result":
        return cls.from_dict(json.loads(line))


def _finite(value: Any, path: str, reasons: dict[str, str]) -> Any:
    """``value`` with every non-finite float (at any depth) replaced by None, noted in ``reasons``."""
    if isinstance(value, float) and not math.isfinite(value):
        reasons[path] = f"measured {value!r}"
        return None
    if isinstance(value, dict):
        return {k: _finite(v, f"{path}.{k}" if path else str(k), reasons) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, f"{path}[{i}]", reasons) for i, v in enumerate(value)]
    return value


@dataclass(frozen=True)
class Damaged:
    """One line of a results file that was skipped: ``file``, 1-based ``line``, and ``why``."""

    file: str
    line: int
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.why}"



#: the row's own columns (a plugin's extra fields may not take these names)
RESULT_FIELDS = frozenset(f.name for f in fields(Result)) - {"extra"}

@dataclass
class ResultsFile:
    """Valid rows of a ``results.jsonl`` (one per cell: a repeated cell keeps its last row, at
    the place of its first), the damaged lines (e.g. a truncated last line from a run killed
    mid-write, or a row of the wrong types) and the cell ids that had more than one row."""

    rows: list[dict[str, Any]]
    damaged_lines: list[int]
    damaged: list[Damaged] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)

    def warnings(self) -> list[str]:
        """One line per damaged line and one for the duplicates, for a user to read."""
        out = [f"damaged row skipped: {d}" for d in self.damaged]
        if self.duplicates:
            out.append(f"{len(self.duplicates)} cell(s) had more than one row; the last row of each is used: "
                       f"{', '.join(self.duplicates[:5])}{' …' if len(self.duplicates) > 5 else ''}")
        return out


def _schema() -> dict[str, tuple[Any, bool]]:
    """Field → (annotation, required) of :class:`Result` (``extra`` aside)."""
    hints = typing.get_type_hints(Result)
    return {f.name: (hints[f.name], f.default is MISSING and f.default_factory is MISSING)
            for f in fields(Result) if f.name != "extra"}


def _options(hint: Any) -> tuple[Any, ...]:
    """The alternatives of a Result annotation (``int | None`` → ``(int, NoneType)``)."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return typing.get_args(hint) if union else (hint,)


def _bases(hint: Any) -> list[Any]:
    """The types a Result annotation allows besides None (``int | None`` → ``[int]``)."""
    return [typing.get_origin(h) or h for h in _options(hint) if h is not type(None)]


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a Result annotation (str, int, float, bool, dict, ``X | None``);
    an integral float (``545.0``) fits an int."""
    if value is None:
        return type(None) in _options(hint)
    base = _bases(hint)
    if Any in base:
        return True
    if isinstance(value, bool):
        return bool in base
    if isinstance(value, int):
        return int in base or float in base
    if isinstance(value, float) and value.is_integer() and int in base:  # 545.0: pandas writes an int column holding a null so
        return True
    return any(isinstance(value, b) for b in base if isinstance(b, type))


def row_problem(row: Any) -> str | None:
    """Why ``row`` is not a valid result row (not an object, a required field missing, a field of
    the wrong type, a non-finite number, an unknown status, a count below 1), or None."""
    if not isinstance(row, dict):
        return f"not a JSON object but {type(row).__name__}"
    for name, (hint, required) in SCHEMA.items():
        if name not in row:
            if required:
                return f"field {name!r} is missing"
            continue
        if not _fits(row[name], hint):
            return f"field {name!r} has the wrong type ({type(row[name]).__name__}: {str(row[name])[:40]!r})"
    if not row["cell_id"]:
        return "field 'cell_id' is empty"
    if row["status"] not in STATUSES:
        return f"field 'status' is {row['status']!r}, not one of {', '.join(STATUSES)}"
    small = next((k for k in ("batch_size", "seq_len", "threads") if row[k] < 1), None)
    return f"field {small!r} is {row[small]!r}, below 1" if small else None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _finite_float(text: str) -> float:
    """A JSON number as a float; ValueError for one that overflows to inf (``1e999``), which
    ``parse_constant`` never sees."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"non-finite number {text[:40]}")
    return value


def _parse_line(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(row, None) for a valid row, (None, why) otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (byte {exc.start} of the line)"
    try:  # a byte-order mark (an editor's) is no part of the row
        row = json.loads(text.removeprefix("\ufeff"), parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        return None, "not JSON: nested too deeply"
    except ValueError as exc:
        return None, f"not JSON ({str(exc).splitlines()[0][:80]})"
    why = row_problem(row)
    if why:
        return None, why
    for name, (hint, _) in SCHEMA.items():  # a count written as 545.0 is the count 545
        if isinstance(row.get(name), float) and float not in _bases(hint):
            row[name] = int(row[name])
    return row, None


def read_results(path: Path) -> ResultsFile:
    """Read every valid row of ``path`` (see :class:`ResultsFile`); damaged lines are reported in
    the result, never raised. A missing file has no rows. Raises
    :class:`~profiler.errors.ResultsReadError` naming the file and the reason when it exists but
    cannot be read: report, compare and resume all read rows here, and none may take an unreadable
    file for an empty one."""
    path = Path(path)
    out = ResultsFile([], [])
    if not path.exists():
        return out
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ResultsReadError(f"cannot read {path}: {exc.strerror or exc}") from None
    where: dict[str, int] = {}
    for i, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        row, why = _parse_line(raw)
        if row is None:
            out.damaged_lines.append(i)
            out.damaged.append(Damaged(str(path), i, why or "damaged"))
        elif row["cell_id"] in where:
            out.rows[where[row["cell_id"]]] = row
            if row["cell_id"] not in out.duplicates:
                out.duplicates.append(row["cell_id"])
        else:
            where[row["cell_id"]] = len(out.rows)
            out.rows.append(row)
    return out


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
    """Append one row and flush it to disk (fsync) before returning. Raises
    :class:`~profiler.errors.ResultsWriteError` (naming the file, the cause and the cell) when the
    file cannot take it; a row cut short by a full disk is a damaged last line, which a resumed run
    repairs (:func:`repair_tail`)."""
    line = result.to_json() + "\n"
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise ResultsWriteError(f"cannot append to {path} ({type(exc).__name__}: {exc.strerror or exc}): cell "
                                f"{result.cell_id} ({result.pruner} / {result.accelerator}, b{result.batch_size}, "
                                f"{result.threads} thread(s)) was measured but not saved") from exc


def rewrite_without(path: Path, cell_ids: set[str]) -> int:
    """Remove every row of ``cell_ids`` from ``path``, atomically: the kept lines (damaged ones
    too, byte for byte) replace it through :func:`~profiler.rundir.write_atomic`, so a crash
    leaves either the old file or the new one. Returns the number of lines removed."""
    path = Path(path)
    if not cell_ids or not path.exists():
        return 0
    kept, removed = [], 0
    for raw in path.read_bytes().splitlines(keepends=True):
        row, _ = _parse_line(raw.rstrip(b"\n"))
        if row is not None and row["cell_id"] in cell_ids:
            removed += 1
        else:
            kept.append(raw)
    if removed:
        write_atomic(path, b"".join(kept))
    return removed


#: rows with this ``executor_outcome`` stand for cells that never ran; ``--resume`` runs them again
NO_LIVE_NODE = "no-live-node"


def cells_to_run(rows: list[dict[str, Any]], cells: list[Cell], retry_failed: bool) -> tuple[set[str], list[Cell], set[str]]:
    """(cell ids that keep their row, cells to run, cell ids whose rows are to be removed first):
    a cell runs when it has no row, when its row says it never ran (``no-live-node``) or, with
    ``retry_failed``, when it failed."""
    redo = {r["cell_id"] for r in rows if r.get("executor_outcome") == NO_LIVE_NODE
            or (retry_failed and r["status"] == "failed")}
    done = {r["cell_id"] for r in rows} - redo
    return done, [c for c in cells if c.cell_id not in done], redo


SCHEMA: dict[str, tuple[Any, bool]] = _schema()
