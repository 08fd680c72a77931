"""``sparsebench.profile``: the profiling matrix of one model and its data, from Python.

The model, tokenizer and data are written as files (a transformers folder and JSONL) and the
matrix runs through the same ``text-classification`` task, config validation and runner as
``sparsebench run``, so a notebook's rows are exactly a CLI run's rows.
"""
from __future__ import annotations

import json
import numbers
import operator
import re
import reprlib
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

from profiler.errors import ConfigError

#: the pruner and accelerator of a plain dense fp32 baseline
DEFAULT_PRUNERS: tuple[dict[str, Any], ...] = ({"name": "none"},)
DEFAULT_ACCELERATORS: tuple[dict[str, Any], ...] = ({"name": "torch-fp32"},)


def records_of(data: Any, what: str) -> list[dict[str, Any]]:
    """Rows of ``data`` as dicts: a list of dicts, a pandas DataFrame or a ``datasets.Dataset``
    (``datasets`` is optional; anything iterable of mappings works). Raises ConfigError (a
    ValueError) naming ``what`` when ``data`` is none of these (None, a string, a single dict, a
    number), empty, or not made of mappings."""
    accepted = "a list of dicts (one per example), a pandas DataFrame or a datasets.Dataset"
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # pandas DataFrame
        rows = data.to_dict("records")
    elif hasattr(data, "to_list") and hasattr(data, "column_names"):  # datasets.Dataset
        rows = data.to_list()
    elif data is None or isinstance(data, (str, bytes, dict)) or not isinstance(data, Iterable):
        # a string or a dict is iterable too, but as letters / keys: never a list of examples
        raise ConfigError(f"{what}: expected {accepted}, got {type(data).__name__}")
    else:
        rows = list(data)
    if not rows:
        raise ConfigError(f"{what}: no rows")
    if not all(isinstance(r, dict) for r in rows):
        raise ConfigError(f"{what}: expected {accepted}; got a {type(data).__name__} holding "
                          f"{type(next(r for r in rows if not isinstance(r, dict))).__name__} items")
    return rows


def jsonl_of(rows: list[dict[str, Any]], what: str) -> str:
    """``rows`` (from :func:`records_of`) as JSONL text, one object per row, for the task to read as a
    data file. numpy scalars (a DataFrame's values) become their Python value, pandas' NA null (the
    task then refuses it as text). Raises ConfigError naming ``what``, the row (from 1) and the column
    on a value JSON cannot hold (bytes, a set, a datetime ...): its ``str()`` (``"b'good movie'"``)
    would be scored as the example's text."""
    bad: list[Any] = []  # what json.dumps could not write: the message names it and its column

    def plain(v: Any) -> Any:
        if type(v).__name__ == "NAType":
            return None
        if hasattr(v, "item"):
            try:
                return v.item()  # a numpy scalar (an array of several values: ValueError)
            except (TypeError, ValueError):
                pass
        bad.append(v)
        raise TypeError(f"{type(v).__name__} is not a JSON value")

    lines = []
    for i, row in enumerate(rows, 1):
        try:
            lines.append(json.dumps(row, default=plain) + "\n")
        except (TypeError, ValueError) as exc:  # ValueError: a list that holds itself
            if not bad:  # a column name JSON cannot hold (a tuple)
                raise ConfigError(f"{what}: row {i}: {exc}") from None
            from profiler.tasks.textdata import describe_value

            where = next((f"column {k!r}" for k, v in row.items() if v is bad[-1]), "a value nested in a column")
            raise ConfigError(f"{what}: {where} (row {i}) holds {describe_value(bad[-1])}, not text, a "
                              "number, a boolean or null: decode bytes to str, convert other objects") from None
    return "".join(lines)


def _axis(name: str, value: Any) -> Any:
    """A matrix axis as a list of Python ints: one integer (numpy's too) becomes [it]; a string or
    another non-sequence is a ConfigError (the config's own check then validates the values)."""
    def plain(v: Any) -> Any:  # np.int64(8), np.arange(1, 3)'s items: the config wants int
        return operator.index(v) if isinstance(v, numbers.Integral) and not isinstance(v, bool) else v

    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # np.array(8), torch.tensor(8): one value
        value = value.item()
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return [plain(value)]
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError(f"{name}: expected an integer or a list of integers, got {value!r}")
    return [plain(v) for v in value]


def _check_model_arg(model: Any, tokenizer: Any) -> None:
    """ConfigError naming ``model`` or ``tokenizer`` unless ``model`` is a folder path / hub id with no
    ``tokenizer``, or a model object with its tokenizer object (both with ``save_pretrained``)."""
    if isinstance(model, (str, Path)):
        if tokenizer is not None:
            raise ConfigError("tokenizer: give it only with a model object (a model folder holds its own tokenizer)")
        return
    if tokenizer is None or not hasattr(model, "save_pretrained"):
        raise ConfigError("model: give a transformers model object and its tokenizer, or a model folder path")
    if not hasattr(tokenizer, "save_pretrained"):
        # a hub id or folder here would be saved as nothing: only an object can be written next to the model
        raise ConfigError(f"tokenizer: expected the model's tokenizer object (e.g. AutoTokenizer.from_pretrained(...)), "
                          f"got {type(tokenizer).__name__} {reprlib.repr(tokenizer)}")


def _folder_arg(value: Any, name: str) -> Path | None:
    """``out`` / ``cache_dir`` as a Path (None stays None). Raises ConfigError naming ``name`` when it
    is not a str or ``os.PathLike`` of str (an int, bytes ...)."""
    if value is None:
        return None
    try:
        return Path(value)
    except TypeError:
        raise ConfigError(f"{name}: expected a folder path (str or pathlib.Path), "
                          f"got {type(value).__name__} {reprlib.repr(value)}") from None


def _model_arg(model: Any, tokenizer: Any, folder: Path) -> str:
    """A folder path or hub id for the task: ``model`` itself when a string, else ``model`` and
    ``tokenizer`` saved into ``folder`` (``save_pretrained``, safetensors), once
    :func:`_check_model_arg` has accepted them."""
    if isinstance(model, (str, Path)):
        return str(model)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _tables(entries: Any, arg: str) -> list[dict[str, Any]]:
    """``pruners`` / ``accelerators`` as config tables: a dict each, or a plugin name for ``{"name": ...}``.
    One entry may be given alone (a dict or a name, not in a list). Raises ConfigError naming ``arg``."""
    example = "{'name': 'magnitude', 'sparsity': 0.5}" if arg == "pruners" else "{'name': 'torch-fp32'}"
    if isinstance(entries, (str, dict)):  # one entry: iterating it would read its letters / its keys as entries
        entries = [entries]
    elif not isinstance(entries, Iterable):
        raise ConfigError(f"{arg}: expected a list of dicts like {example} or plugin names (or one of them), "
                          f"got {entries!r}")
    out = []
    for e in entries:
        if isinstance(e, str):
            out.append({"name": e})
        elif isinstance(e, dict):
            out.append(dict(e))
        else:
            raise ConfigError(f"{arg}: each entry is a dict like {example} or a plugin name, got {e!r}")
    return out


def _meter_table(meter: Any) -> dict[str, Any]:
    """``meter`` as the ``[meter]`` table: None for ``{"name": "auto"}``, a dict, or a meter name.
    Raises ConfigError naming ``meter`` and the meters there are."""
    if meter is None:
        return {"name": "auto"}
    if isinstance(meter, str):
        return {"name": meter}
    if isinstance(meter, dict):
        return dict(meter)
    from profiler.plugins import METERS

    raise ConfigError(f"meter: expected a dict like {{'name': 'estimate'}} or a meter name "
                      f"({', '.join(METERS.names())}), got {meter!r}")


def _measure_table(measure: Any) -> dict[str, Any] | None:
    """``measure`` as the ``[measure]`` table (None: the defaults). Raises ConfigError naming
    ``measure`` and its keys when it is not a dict (the config check validates the keys and values)."""
    if measure is None or isinstance(measure, dict):
        return dict(measure) if measure else None
    import dataclasses

    from profiler.config import MeasureSpec

    keys = ", ".join(f.name for f in dataclasses.fields(MeasureSpec))
    raise ConfigError(f"measure: expected a dict of measurement settings like {{'min_iters': 3}} (keys: {keys}), "
                      f"got {measure!r}")


def _fitted_max_length(spec: Any) -> int | None:
    """The ``max_length`` :func:`profile` gives the task ``spec`` (its config entry, without one):
    the model's number of positions (:attr:`profiler.tasks.base.Task.max_positions`, as the task reads
    them) when it is under the task's default; None (the default stands) otherwise. Raises
    ConfigError as building the task does (a model or data the task refuses)."""
    from profiler.plugins import TASKS

    task = TASKS.build(spec.name, spec.params, spec.key)
    positions = task.max_positions
    return positions if positions and positions < task.max_length else None


def profile(model: Any, tokenizer: Any, eval_data: Any, *, train_data: Any = None,
            pruners: Iterable[dict[str, Any] | str] | dict[str, Any] | str = DEFAULT_PRUNERS,
            accelerators: Iterable[dict[str, Any] | str] | dict[str, Any] | str = DEFAULT_ACCELERATORS,
            batch_size: Sequence[int] = (1, 8), seq_len: Sequence[int] = (128,), threads: Sequence[int] = (1,),
            metric: str | None = None, text_column: str = "text", text_pair_column: str | None = None,
            label_column: str = "label", finetune_steps: int = 0, max_length: int | None = None,
            measure: dict[str, Any] | None = None, meter: dict[str, Any] | str | None = None,
            out: str | Path | None = None, cache_dir: str | Path | None = None):
    """Profile ``model`` on ``eval_data``: every pruner × accelerator × batch × seq × threads cell.

    Args:
        model: a transformers sequence-classification model object (BERT, RoBERTa, XLM-R,
            DistilBERT, ELECTRA), or a model folder / hub id (then ``tokenizer`` is None).
        tokenizer: the model's tokenizer object.
        eval_data / train_data: a list of dicts, a pandas DataFrame or a ``datasets.Dataset`` with
            ``text_column`` (and ``text_pair_column``) and ``label_column``; train only for
            fine-tuning (``finetune_steps`` > 0) and the pruners that learn from training data:
            gmp, movement and obs (which trains on it with ``steps`` > 0 and takes its gradients
            from it with ``steps = 0``).
        pruners / accelerators: a list of the same dicts as the TOML tables, e.g.
            ``{"name": "magnitude", "sparsity": [0.5, 0.9]}``, or of plugin names (``"magnitude"``
            for ``{"name": "magnitude"}``); a single entry may be given without the list.
        measure: a dict of the ``[measure]`` keys (e.g. ``{"min_iters": 3}``); None = defaults.
        meter: the ``[meter]`` dict (e.g. ``{"name": "estimate"}``) or a meter name; None = ``auto``.
        batch_size / seq_len / threads: the matrix axes (sequences, tokens, intra-op threads).
        metric: accuracy | f1 | matthews | pearson | spearman (default accuracy).
        max_length: tokens each example is cut to (8..512) for fine-tuning and the accuracy pass
            (the timing batches take ``seq_len``); None = the text-classification task's default
            (128), or the model's number of position embeddings where it has fewer (a model with 64
            positions gets 64). A value longer than the model takes is a ConfigError.
        out: a new run directory to write (results.jsonl, manifest, the model and data as given): a
            folder that does not exist yet, or an empty one (ConfigError otherwise: a finished run is
            resumed with ``sparsebench run --resume``); None = a temporary one (and a temporary model
            cache), removed afterwards.
        cache_dir: fine-tuned/pruned model cache; default ``$SPARSEBENCH_CACHE`` with ``out``.

    Returns a pandas DataFrame with exactly the rows of ``results.jsonl`` (one per cell; units in
    the column names; ``latency_savings_factor`` and ``latency_savings_vs_best_dense`` always
    present, NaN where a cell has none). With ``out``, the run directory also gets its ``report.html``. Raises :class:`profiler.errors.ConfigError` (a ValueError) on bad input,
    before any work. Warns (UserWarning) when no pruner ``none`` runs under ``torch-fp32``: the rows
    then get no savings factor and no accuracy kept.
    """
    import pandas as pd

    from profiler.config import missing_baseline_note, parse_config
    from profiler.measure import SAVINGS_KEYS
    from profiler.results import read_results
    from profiler.rundir import check_new_folder, check_writable
    from profiler.runner import RESULTS, Runner, preflight

    axes = {name: _axis(name, v) for name, v in (("batch_size", batch_size), ("seq_len", seq_len), ("threads", threads))}
    # every argument's type is checked here, before a folder is made or the model saved
    eval_jsonl = jsonl_of(records_of(eval_data, "eval_data"), "eval_data")
    train_jsonl = jsonl_of(records_of(train_data, "train_data"), "train_data") if train_data is not None else None
    tables = {"pruners": _tables(pruners, "pruners"), "accelerators": _tables(accelerators, "accelerators"),
              "meter": _meter_table(meter)}
    measure_table = _measure_table(measure)
    _check_model_arg(model, tokenizer)
    out, cache_path = _folder_arg(out, "out"), _folder_arg(cache_dir, "cache_dir")
    if out is not None:
        check_new_folder(out, "out")
        check_writable(out, "out", create=False)  # creates nothing: a rejected call leaves no folder
    tmp = Path(tempfile.mkdtemp(prefix="sparsebench-")) if out is None else None
    run_dir = out if out is not None else tmp / "run"
    created = not run_dir.exists()
    started = False
    inputs = run_dir / "inputs"
    try:
        (inputs / "model").mkdir(parents=True, exist_ok=True)
        task: dict[str, Any] = {
            "name": "text-classification", "model": _model_arg(model, tokenizer, inputs / "model"),
            "text_column": text_column, "label_column": label_column, "finetune_steps": finetune_steps,
        }
        for key, jsonl, name in (("eval_file", eval_jsonl, "eval.jsonl"), ("train_file", train_jsonl, "train.jsonl")):
            if jsonl is not None:
                (inputs / name).write_text(jsonl, encoding="utf-8")
                task[key] = str(inputs / name)
        task.update({k: v for k, v in (("text_pair_column", text_pair_column), ("metric", metric),
                                       ("max_length", max_length)) if v is not None})
        raw: dict[str, Any] = {"run": {"name": "profile"}, "tasks": [task], **tables, "matrix": axes}
        if measure_table:
            raw["measure"] = measure_table
        try:
            cfg = parse_config(raw)
            if max_length is None and (fitted := _fitted_max_length(cfg.tasks[0])) is not None:
                task["max_length"] = fitted
                cfg = parse_config(raw)
            cache = cache_path if cache_dir else (tmp / "cache" if tmp else None)
            preflight(cfg, cache)
        except ConfigError as exc:  # name the caller's arguments, not the files written from them
            msg = str(exc)
            for name in ("eval_data", "train_data"):
                msg = msg.replace(str(inputs / f"{name.split('_')[0]}.jsonl"), name)
            # the files hold one row per line: line N of the file is the caller's row N
            msg = re.sub(r"\(line (\d+)\)", r"(row \1)", msg)
            msg = re.sub(r"\btrain_file\b", "train_data", msg)  # the task's key for what the caller passed as train_data
            msg = msg.replace("tasks[0].max_length", "max_length")  # the caller's argument, the one task it fills
            if task["model"] == str(inputs / "model"):  # a model object, saved there by _model_arg
                saved = str(inputs / "model")
                for said, means in ((f"model: {saved}", "model: the model object"),
                                    (f"model folder {saved}", "model: the model object (as saved by save_pretrained)"),
                                    (saved, "model")):
                    msg = msg.replace(said, means)
            raise ConfigError(msg) from None
        if note := missing_baseline_note(cfg):
            warnings.warn(note, UserWarning, stacklevel=2)
        started = True
        Runner(cfg, run_dir, cache_dir=cache).run()
        if out is not None:  # a kept run directory gets its page, as a CLI run does
            from reports.report import write_report

            write_report(run_dir)
        df = pd.DataFrame(read_results(run_dir / RESULTS).rows)
        for col in SAVINGS_KEYS:  # the same columns whether or not the matrix has its baseline cell
            if col not in df:
                df[col] = float("nan")
        return df
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        elif not started:  # bad input: leave no half-written run directory (nor files in an empty one)
            shutil.rmtree(run_dir if created else inputs, ignore_errors=True)
