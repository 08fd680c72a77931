"""``sparsebench export RUN_DIR --cell CELL_ID --out DIR``: take a cell's pruned model away.

The model is rebuilt exactly as the run built it (its task, fine-tuning and pruning, from the
model cache when still there, else recomputed with the same seeds) from the config stored in the
run directory, and written as a plain transformers folder: ``save_pretrained`` (safetensors),
the tokenizer, and ``sparsity.json`` (per-layer and total sparsity, the pruner's config and
notes). The folder is loaded back with ``AutoModelForSequenceClassification.from_pretrained``
and its logits checked identical before the command reports success. ``--format onnx`` /
``openvino`` also writes the portable artefact those engines run (``model.onnx`` / ``model.xml``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

FORMATS = ("transformers", "onnx", "openvino")
#: the packages each portable format is written with
FORMAT_PACKAGES = {"transformers": (), "onnx": ("onnxruntime", "onnx"), "openvino": ("openvino",)}


def find_cell(cfg: Any, cell_id: str) -> Any:
    """The matrix cell whose id is ``cell_id`` or starts with it (unique). Raises ConfigError."""
    from profiler.config import expand
    from profiler.errors import ConfigError

    cells = {c.cell_id: c for c in expand(cfg)}
    hits = [c for cid, c in cells.items() if cid.startswith(cell_id)] if cell_id else []
    if len(hits) != 1:
        why = "matches several cells" if hits else "is not a cell of this run"
        raise ConfigError(f"--cell: {cell_id!r} {why}; cell ids are in results.jsonl (cell_id)")
    return hits[0]


def sparsity_record(model: Any, cell: Any, notes: dict[str, Any]) -> dict[str, Any]:
    """``sparsity.json``: per-layer zeros/numel of every encoder Linear layer (``per_layer``),
    totals over those layers and over all parameters, the pruner's config and its notes."""
    from pruners.base import sparsity_report

    record = {"cell_id": cell.cell_id, "task": cell.task.canonical(), "pruner": cell.pruner.canonical()}
    return {**record, **sparsity_report(model, notes=notes).to_dict()}


def check_round_trip(folder: Path, model: Any, example: dict[str, Any]) -> None:
    """RuntimeError unless plain transformers loads ``folder`` with logits identical to ``model``'s."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from accelerators.base import logits_of

    loaded = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.inference_mode():
        ref, got = logits_of(model(**example)), logits_of(loaded(**example))
    if not torch.equal(ref, got):
        raise RuntimeError(f"export check: reloaded logits differ by {(ref - got).abs().max().item():.3g}")


def export_portable(model: Any, example: dict[str, Any], fmt: str, out: Path) -> Path:
    """Write the ONNX file (``model.onnx``, batch and sequence dynamic) or OpenVINO IR
    (``openvino/model.xml``) of ``model`` into ``out``; returns its path. Raises ImportError when
    the engine's package is not installed (``pip install sparsebench[peers]``)."""
    from accelerators.peer_common import input_names

    names = input_names(model, example)
    if fmt == "onnx":
        from accelerators.peer_onnxruntime import optimized_onnx

        optimized, _ = optimized_onnx(model, example, names, out)
        optimized.unlink()  # keep the engine-neutral graph; the optimized one is ONNX Runtime's own
        return out / "model.onnx"
    from accelerators.peer_openvino import convert, save_ir

    save_ir(convert(model, example, names), out / "openvino")
    return out / "openvino" / "model.xml"


def export_cell(run_dir: Path, cell_id: str, out: Path, fmt: str = "transformers", cache_dir: Path | None = None) -> Path:
    """Export cell ``cell_id`` of ``run_dir`` into the new folder ``out`` (see the module doc).

    Raises ConfigError (bad run directory, unknown cell, ``out`` not empty or not writable, the
    format's package not installed, inputs changed since the run) before any model work;
    RuntimeError when the cell's model cannot be built (its pruning fails) or the written folder does
    not give the model's logits back.
    """
    from transformers.utils import logging as hf_logging

    from profiler.errors import ConfigError
    from profiler.registry import TASKS
    from profiler.rundir import check_new_folder, check_writable
    from profiler.runner import (MANIFEST, Runner, check_inputs_unchanged, load_run_config, read_run_json,
                                 recorded_cache_dir)

    hf_logging.disable_progress_bar()  # loading and saving bars are no news to an export's caller
    if fmt not in FORMATS:
        raise ConfigError(f"--format: {fmt!r}; valid: {', '.join(FORMATS)}")
    if FORMAT_PACKAGES[fmt]:
        from accelerators.peer_common import import_status

        ok, why = import_status(*FORMAT_PACKAGES[fmt])
        if not ok:
            raise ConfigError(f"--format {fmt}: {why}")
    cfg = load_run_config(run_dir, "RUN_DIR")
    cell = find_cell(cfg, cell_id)
    check_inputs_unchanged(cfg, run_dir, "RUN_DIR")
    check_new_folder(out, "--out")
    task = TASKS.build(cell.task.name, cell.task.params, cell.task.key)
    if cache_dir is None:  # the run's own models, where it recorded them and they are still there
        recorded = recorded_cache_dir(read_run_json(Path(run_dir) / MANIFEST))
        cache_dir = recorded if recorded is not None and recorded.is_dir() else None
    runner = Runner(cfg, run_dir, cache_dir=cache_dir)
    existed = out.is_dir()  # an empty folder the user made: emptied, not removed, if the export fails
    check_writable(out, "--out")  # creates it otherwise: removed below if the export fails
    try:
        import torch

        torch.set_num_threads(runner.training_threads)  # as the run built it: same threads, same rounding
        try:
            model, report = runner.pruned(task, task.load_finetuned(runner.cache_dir), cell.pruner)
        except Exception as exc:  # the run recorded the same failure for this cell's pruning
            raise RuntimeError(f"cell {cell_id}: its model cannot be built ({cell.pruner.label()}): "
                               f"{type(exc).__name__}: {exc}") from exc
        model.eval()
        example = task.example_inputs(2, min(cell.seq_len, 32))
        model.save_pretrained(out, safe_serialization=True)
        tokenizer = getattr(task, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
        (out / "sparsity.json").write_text(json.dumps(sparsity_record(model, cell, report.notes), indent=1, default=str))
        check_round_trip(out, model, example)
        if fmt != "transformers":
            export_portable(model, example, fmt, out)
    except BaseException:
        if existed:
            for item in out.iterdir():
                if item.is_dir() and not item.is_symlink():
                    shutil.rmtree(item, ignore_errors=True)
                else:
                    item.unlink(missing_ok=True)
        else:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return out


def add_parser(sub: Any, path_type: Callable[[str], str]) -> None:
    """Register the ``export`` subcommand on the CLI's subparsers; ``path_type`` checks its path arguments."""
    e = sub.add_parser("export", help="a cell's pruned model as a transformers folder (plus ONNX / OpenVINO IR)",
                       description="Write the pruned model of one cell of RUN_DIR as a transformers folder "
                                   "(safetensors, tokenizer, sparsity.json) that plain transformers loads with "
                                   "identical logits; --format onnx|openvino adds the engine's portable file.")
    e.add_argument("run_dir", metavar="RUN_DIR", type=path_type,
                   help="the run directory of the cell (runs/<name>-<timestamp>/): its manifest.json holds the config "
                        "the model is rebuilt from")
    e.add_argument("--cell", required=True, metavar="CELL_ID", help="cell id (or a unique prefix) from results.jsonl")
    e.add_argument("--out", required=True, metavar="DIR", type=path_type, help="new (or empty) output folder")
    e.add_argument("--format", default="transformers", choices=FORMATS, help="also write ONNX or OpenVINO IR")
    e.add_argument("--cache-dir", type=path_type, help="fine-tuned/pruned model cache (default: the one the run recorded, while it exists; else "
                                                        "$SPARSEBENCH_CACHE or ~/.cache/sparsebench)")
    e.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from profiler.errors import ConfigError

    try:
        out = export_cell(Path(args.run_dir), args.cell, Path(args.out), args.format,
                          Path(args.cache_dir) if args.cache_dir else None)
    except ConfigError as exc:
        print(f"sparsebench: export: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # the model could not be built, or failed the round-trip check: nothing left behind
        print(f"sparsebench: export: failed: {exc}", file=sys.stderr)
        return 1
    print(f"exported: {out}")
    return 0
