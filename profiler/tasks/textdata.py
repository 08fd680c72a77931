"""Labelled text for classification and regression tasks: the packaged GLUE sets, the user's own
CSV / TSV / JSONL files, and the metrics computed on them.

One code path reads every file (GLUE's TSVs included): TSV with quoting OFF (GLUE sentences hold
unbalanced quotes), CSV with standard quoting, JSONL one object per line (text values strings,
:func:`parse_texts`); strict UTF-8. Every error is a ValueError naming the file and what is wrong,
raised before any model work.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

import torch

from pruners.augment import check_text_source

#: metric name -> True when it scores a regression head (one output), False for classification
METRICS: dict[str, bool] = {"accuracy": False, "f1": False, "matthews": False, "pearson": True, "spearman": True}
#: ``text-classification``'s ``metric`` choices, made from the keys above (see profiler.registry.choices)
Metric = Literal[tuple(METRICS)]


@dataclass(frozen=True)
class GluePreset:
    """A packaged GLUE task: its columns, headline metric and the metrics reported beside it."""

    text_column: str
    text_pair_column: str | None
    label_column: str
    metric: str
    also: tuple[str, ...]


GLUE: dict[str, GluePreset] = {
    "sst2": GluePreset("sentence", None, "label", "accuracy", ()),
    "mrpc": GluePreset("sentence1", "sentence2", "label", "f1", ("accuracy",)),
    "stsb": GluePreset("sentence1", "sentence2", "score", "spearman", ("pearson",)),
}
#: ``text-classification``'s ``glue`` choices, made from the presets' names as :data:`Metric` is
GlueTask = Literal[tuple(GLUE)]


def packaged_glue_dir(task: str) -> Path:
    """Folder of the packaged GLUE ``train.tsv``/``dev.tsv`` of ``task`` (a key of :data:`GLUE`)."""
    return Path(str(resources.files("profiler") / "data" / task))


class Row(dict):
    """A data row: a dict keyed by column, and ``line``, the file line (from 1) its record starts on."""

    line: int

    def __init__(self, fields: Any, line: int) -> None:
        super().__init__(fields)
        self.line = line


def row_lines(rows: list[dict[str, Any]]) -> list[int] | None:
    """The file lines of ``rows`` (:class:`Row`), or None when they were not read from a file."""
    return [r.line for r in rows] if rows and all(isinstance(r, Row) for r in rows) else None


def _at(i: int, lines: list[int] | None) -> str:
    """Where the ``i``-th value (from 0) sits, for an error: its file line, else its row (from 1)."""
    return f"line {lines[i]}" if lines else f"row {i + 1}"


def read_rows(path: str | Path) -> list[Row]:
    """Rows of a ``.csv``, ``.tsv`` (quoting off) or ``.jsonl`` file as dicts keyed by column, each
    with the line its record starts on (:class:`Row`).

    CSV / TSV fields are read as Python's csv module reads a file opened with ``newline=''``: a quoted
    field keeps its line breaks (``\\n``, ``\\r\\n``, U+2028 ...) as written. A JSONL line ends only at
    ``\\n`` (or ``\\r\\n``), so a raw U+2028 / U+0085 inside a JSON string stays in its text. Blank
    and whitespace-only lines are skipped, before the header as between rows, in every format; line
    numbers in errors count from 1.

    Raises ValueError naming the file (and the line) when it is missing, not a regular file (a
    device such as /dev/null), not UTF-8, of another extension, has no data rows, a CSV / TSV header
    names a column twice or a row has more or fewer fields than the header, or a JSONL line is not a
    JSON object or repeats a key.
    """
    path = Path(path)
    if not path.is_file():
        what = ("is a folder, not a file" if path.is_dir() else "does not exist" if not path.exists()
                else "is not a regular file (a device, a FIFO or a socket)")  # /dev/null exists
        raise ValueError(f"data file {path} {what}")
    kind = path.suffix.lower()
    if kind not in (".csv", ".tsv", ".jsonl"):
        raise ValueError(f"data file {path}: unknown format {kind!r}; use .csv, .tsv or .jsonl")
    try:
        # newline='': line breaks reach the csv module untranslated, as it needs for quoted fields
        with path.open(encoding="utf-8-sig", newline="") as f:  # a byte-order mark would join the first column's name
            text = f.read()
    except UnicodeDecodeError as exc:
        raise ValueError(f"data file {path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    rows = []
    if kind == ".jsonl":
        # not splitlines(): it also splits at U+2028, U+0085 ..., which JSON allows raw inside a string
        for i, line in enumerate(text.split("\n"), 1):
            if line.strip():
                try:
                    obj = json.loads(line, object_pairs_hook=_unique_keys)  # a '\r' before '\n' is JSON whitespace
                except json.JSONDecodeError as exc:
                    raise ValueError(f"data file {path} line {i}: not JSON ({exc.msg})") from None
                except ValueError as exc:  # a repeated key (_unique_keys)
                    raise ValueError(f"data file {path} line {i}: {exc}") from None
                if not isinstance(obj, dict):
                    raise ValueError(f"data file {path} line {i}: expected a JSON object per line")
                rows.append(Row(obj, i))
    else:
        quoting = csv.QUOTE_NONE if kind == ".tsv" else csv.QUOTE_MINIMAL
        consumed: list[str] = []  # the lines of the record the reader is on, as written

        def lines() -> Iterator[str]:
            for line in io.StringIO(text, newline=""):
                consumed.append(line)
                yield line

        reader = csv.reader(lines(), delimiter="\t" if kind == ".tsv" else ",", quoting=quoting)
        header: list[str] | None = None
        end = 0  # the line the previous record ended on: a quoted field may span lines
        for row in reader:
            start, end = end + 1, reader.line_num
            record = "".join(consumed)
            consumed.clear()
            if not record.strip():  # blank or spaces only, as JSONL skips them; csv reads "  " as a field
                continue
            if header is None:
                header = row
                twice = sorted({c for c in header if header.count(c) > 1})
                if twice:  # dict(zip()) would keep the last one's values silently
                    raise ValueError(f"data file {path} line {start}: the header names column {twice[0]!r} more "
                                     f"than once ({', '.join(header)}); rename or drop the copies")
                continue
            if len(row) != len(header):  # a stray delimiter would shift or drop a field silently
                hint = ("" if kind != ".csv" else
                        f"; a quote opened on line {start} may not be closed (the record runs to line {end})"
                        if end > start and len(row) < len(header) else "; quote fields that hold commas")
                raise ValueError(f"data file {path} line {start}: {len(row)} field{'s' if len(row) != 1 else ''}, "
                                 f"the header has {len(header)} ({', '.join(header)}){hint}")
            rows.append(Row(zip(header, row), start))
    if not rows:
        raise ValueError(f"data file {path} has no data rows")
    return rows


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' object_pairs_hook: the object as a dict; ValueError naming a key it repeats
    (plain ``json.loads`` keeps the last value silently)."""
    obj = dict(pairs)
    if len(obj) < len(pairs):
        key = next(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise ValueError(f"key {key!r} appears more than once in one object")
    return obj


def _source_lines(source: str) -> list[str]:
    """The lines of the ``.txt`` text source ``source`` (ended by ``\n``, ``\r\n`` or ``\r``: a U+2028 or
    U+0085 inside a line stays in its text, as in a data file; a leading byte-order mark dropped, as
    :func:`read_rows` drops it); ValueError when it is not UTF-8."""
    try:
        # utf-8-sig: str.strip() keeps a U+FEFF, which would start the first text
        return Path(source).read_text(encoding="utf-8-sig").split("\n")  # read_text made \r\n and \r into \n
    except UnicodeDecodeError as exc:
        raise ValueError(f"text source {source}: not UTF-8 text (byte {exc.start}): save it as UTF-8") from None


def unlabeled_texts(source: str) -> list[str]:
    """The distinct non-empty texts of ``source``, in first-seen order: a packaged GLUE set's training
    sentences (both sentences of a pair, labels ignored) or the lines of a UTF-8 ``.txt`` file.
    Raises ValueError as :func:`check_text_source`, for a file that is not UTF-8, or for no text."""
    check_text_source(source)
    if source in GLUE:
        preset = GLUE[source]
        rows = read_rows(packaged_glue_dir(source) / "train.tsv")
        cols = [c for c in (preset.text_column, preset.text_pair_column) if c]
        check_columns(rows, cols, f"packaged {source} train.tsv")
        texts = [row[c] for row in rows for c in cols]
    else:
        texts = _source_lines(source)
    out = list(dict.fromkeys(t.strip() for t in texts if t.strip()))
    if not out:
        raise ValueError(f"text source {source}: no text")
    return out


def unlabeled_pairs(source: str) -> list[tuple[str, str]]:
    """The distinct sentence pairs of ``source``, in first-seen order, for a pair task (MRPC, STS-B):
    a packaged GLUE pair set's training pairs (labels ignored) or the lines of a UTF-8 ``.txt`` file,
    each ``first<TAB>second`` (split at the first tab; blank lines skipped). Raises ValueError as
    :func:`check_text_source`, for a GLUE set of single sentences, a line without a tab or with an
    empty side (naming the line), a file that is not UTF-8, or no pair."""
    check_text_source(source)
    if source in GLUE:
        preset = GLUE[source]
        if not preset.text_pair_column:
            pair_sets = ", ".join(k for k, v in GLUE.items() if v.text_pair_column)
            raise ValueError(f"text source {source!r} holds single sentences, and this task reads sentence pairs: "
                             f"use {pair_sets} or a .txt file with one tab-separated pair per line")
        rows = read_rows(packaged_glue_dir(source) / "train.tsv")
        check_columns(rows, (preset.text_column, preset.text_pair_column), f"packaged {source} train.tsv")
        pairs = [(row[preset.text_column].strip(), row[preset.text_pair_column].strip()) for row in rows]
    else:
        pairs = []
        for i, line in enumerate(_source_lines(source), 1):
            if not line.strip():
                continue
            first, tab, second = line.partition("\t")
            if not tab or not first.strip() or not second.strip():
                raise ValueError(f"text source {source} line {i}: a pair task needs two tab-separated texts per line")
            pairs.append((first.strip(), second.strip()))
    out = list(dict.fromkeys(p for p in pairs if p[0] and p[1]))
    if not out:
        raise ValueError(f"text source {source}: no sentence pair")
    return out


def check_columns(rows: list[dict[str, Any]], columns: Iterable[str | None], where: str) -> None:
    """ValueError naming the missing column(s) and the ones present, unless every row has every column."""
    want = [c for c in columns if c]
    lines = row_lines(rows)
    for i, row in enumerate(rows):
        missing = [c for c in want if c not in row]
        if missing:
            raise ValueError(f"{where}: column(s) {missing} missing ({_at(i, lines)}); columns present: {sorted(row)}")


def parse_texts(values: list[Any], key: str, column: str, where: str, lines: list[int] | None = None) -> list[str]:
    """The texts of column ``column`` (the task's ``key``: ``text_column`` or ``text_pair_column``),
    stripped. A JSONL value must be a string: null, a number, a boolean, a list or an object is a
    ValueError naming ``where``, the line (``lines[i]``, the file's) or else the row (from 1) and the column, since its ``str()`` (``"None"``,
    ``"['a', 'b']"``) would be scored as if it were the example's text. CSV / TSV fields are strings.
    An empty or whitespace-only text is a ValueError named the same way: it would be scored as an
    example of special tokens only (a field left out, as ``,1`` in a CSV)."""
    out: list[str] = []
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise ValueError(f"{where}: {key} {column!r} ({_at(i, lines)}) holds {describe_value(v)}, not text; every "
                             "value of a text column must be a string")
        if not v.strip():
            raise ValueError(f"{where}: {key} {column!r} ({_at(i, lines)}) is empty; every example needs its text "
                             "(fill it in or drop the row)")
        out.append(v.strip())
    return out


def describe_value(v: Any) -> str:
    """``v`` for an error message, in JSON's words where it is a JSON value (the values reach the
    task from JSONL; the API's rows are written as JSONL): ``null``, ``a boolean True``, ``a number
    7``, ``a list [...]``, ``an object {...}``, else its Python type (``a bytes b'good'``); the repr
    is cut to 60 characters."""
    shown = repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."
    return ("null" if v is None else "a boolean " + shown if isinstance(v, bool)
            else "a number " + shown if isinstance(v, (int, float))
            else "a list " + shown if isinstance(v, list) else "an object " + shown if isinstance(v, dict)
            else f"a {type(v).__name__} {shown}")


def parse_labels(values: list[Any], regression: bool, label2id: dict[str, int], where: str,
                 lines: list[int] | None = None) -> list[float]:
    """Labels as floats (regression) or class indices (classification), one per row.

    A regression label is a finite number or a string of one. A class label is a whole number, a
    string of one, or a name in ``label2id``. Raises ValueError naming ``where`` and the file line
    (``lines[i]``), or else the row (from 1), of the first label that is neither, NaN, inf and booleans included (JSON's ``true`` / ``false``
    are refused, as in a text column, rather than read as 1 / 0).
    """
    out: list[float] = []
    for i, v in enumerate(values):
        try:
            if isinstance(v, bool):  # float(True) would read it as 1.0
                raise ValueError
            if regression:
                f = float(v)
                if not math.isfinite(f):  # a NaN or inf label makes every correlation NaN
                    raise ValueError
                out.append(f)
            elif isinstance(v, str) and v.strip() in label2id:
                out.append(label2id[v.strip()])
            else:
                f = float(v)
                if f != int(f):  # int(inf) is an OverflowError, int(nan) a ValueError
                    raise ValueError
                out.append(int(f))
        except (TypeError, ValueError, OverflowError):
            kind = ("a finite number" if regression else f"a class index or one of {sorted(label2id)}" if label2id
                    else "a class index (0, 1, ...; the model's config names no labels)")
            raise ValueError(f"{where}: label {v!r} ({_at(i, lines)}) is not {kind}") from None
    return out


def check_label_range(labels: list[float], num_labels: int, where: str) -> None:
    """ValueError when a class index lies outside the head's ``[0, num_labels)``."""
    bad = sorted({int(x) for x in labels if not 0 <= x < num_labels})
    if bad:
        raise ValueError(f"{where}: labels {bad[:10]} are outside the model head's range 0..{num_labels - 1} "
                         f"(num_labels = {num_labels})")


def compute_metric(name: str, logits: torch.Tensor, labels: torch.Tensor) -> float:
    """``name`` (a key of :data:`METRICS`) of float logits (n, num_labels) against labels (n,).

    accuracy / f1 / matthews use argmax predictions (f1 and matthews binary: class 1 is the
    positive class); pearson / spearman the single regression output. A constant prediction or label gives 0.0 correlation (not NaN).
    """
    if METRICS[name]:
        pred, gold = logits.reshape(-1).double(), labels.double()
        if name == "spearman":
            pred, gold = _ranks(pred), _ranks(gold)
        return _pearson(pred, gold)
    pred, gold = logits.argmax(-1), labels.long()
    if name == "accuracy":
        return float((pred == gold).double().mean())
    tp = float(((pred == 1) & (gold == 1)).sum())
    fp = float(((pred == 1) & (gold != 1)).sum())
    fn = float(((pred != 1) & (gold == 1)).sum())
    if name == "f1":
        return 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    tn = float(len(gold)) - tp - fp - fn  # matthews, binary
    den = ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) ** 0.5
    return (tp * tn - fp * fn) / den if den else 0.0


def _pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x - x.mean(), y - y.mean()
    den = float((x.square().sum() * y.square().sum()).sqrt())
    return float((x * y).sum()) / den if den else 0.0


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks from 1 with ties sharing their average rank (as Spearman's rho needs)."""
    from scipy.stats import rankdata

    return torch.from_numpy(rankdata(x.numpy())).double()
