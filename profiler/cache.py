"""What the model cache holds, and the leftovers that can go (``sparsebench cache``).

Layout of the cache folder (``--cache-dir``, ``$SPARSEBENCH_CACHE`` or ``~/.cache/sparsebench``):

- ``finetuned/<task>-<hash>/``: a fine-tuned dense model (``sparsebench_task.json`` says how it was made)
- ``pruned/<task>-<pruner>-<hash>/``: a pruned model (``prune_report.json``)
- ``peers/<engine>-<precision>-<hash>/``: a peer engine's converted model (OpenVINO IR)
- ``teacher_logits/<hash>.pt``: a distillation teacher's logits per training example
- ``<entry>.partial.pt`` beside an entry: the training checkpoint of a fine-tune or pruning that has not
  finished; a resumed run goes on from it, and it is deleted once the model is stored
- ``<entry>.damaged-<unix time>``: an entry that failed to load, moved aside and rebuilt
- ``<name>.tmp-<pid>...``: a file or folder being written, renamed into place when done

A partial checkpoint whose configuration is never run again stays until removed; so does a damaged
entry, and the private file of a write whose process was killed (:func:`pruners.training.abandoned_write`).
:func:`leftovers` picks them out and :func:`remove` deletes them.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pruners.training import ORPHAN_AGE_S, abandoned_write, writer_pid

PARTIAL_SUFFIX = ".partial.pt"
DAMAGED_INFIX = ".damaged-"
KINDS = {
    "finetuned": "dense model",  # fine-tuned, or as given (finetune_steps = 0): its description says
    "pruned": "pruned model",
    "peers": "peer engine model",
    "teacher_logits": "teacher logits",
}


def partial_checkpoint(entry: Path) -> Path:
    """Where the training that makes cache entry ``entry`` keeps its checkpoint until it finishes."""
    return entry.with_name(f"{entry.name}{PARTIAL_SUFFIX}")


def pruned_made_by(report: Any) -> str:
    """What made a pruned entry, from its ``prune_report.json``: e.g. "schedule one-shot, sparsity 0.9,
    structure unstructured" ("a pruned model" when the report's notes do not say)."""
    notes = report.get("notes") if isinstance(report, dict) else None
    if not isinstance(notes, dict):
        return "a pruned model"
    notes = dict(notes)
    if "sparsity" not in notes and "final_sparsity" in notes:  # a training pruner's target
        notes["sparsity"] = notes["final_sparsity"]
    return ", ".join(f"{k} {notes[k]}" for k in ("schedule", "sparsity", "structure") if k in notes) or "a pruned model"


@dataclass(frozen=True)
class Entry:
    """One item of the cache. ``status``: ``stored`` (a model or file a run reuses), ``partial`` (an
    unfinished training's checkpoint), ``damaged`` (moved aside after failing to load) or ``orphan``
    (the private file of a write whose process was killed)."""

    kind: str
    name: str
    status: str
    size_bytes: int
    modified_s: float  # Unix time of the last change
    about: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _size(path: Path) -> int:
    """Bytes of a file or folder, links not followed (a link's own size: what removing it frees)."""
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_symlink() or p.is_file())


def _about(kind: str, path: Path) -> str:
    try:
        if kind == "finetuned":
            meta = json.loads((path / "sparsebench_task.json").read_text())
            # a model used as given is stored with "training": null
            steps = 0 if "training" in meta and meta["training"] is None else (meta.get("training") or {}).get("steps")
            tuned = ([f"{steps:,} fine-tuning steps" if steps else "as given, not fine-tuned"]
                     if isinstance(steps, int) else [])
            return ", ".join([" / ".join(str(meta[k]) for k in ("task", "model") if meta.get(k))] + tuned)
        if kind == "pruned":
            return pruned_made_by(json.loads((path / "prune_report.json").read_text()))
    except (OSError, ValueError, AttributeError, TypeError):
        return "no readable description"
    return ""


def entries(root: Path, problems: list[str] | None = None) -> list[Entry]:
    """Every item of the cache at ``root`` (none when it does not exist), by kind then name; links
    are listed as links (not followed). Folders other than :data:`KINDS` are not the cache's and are
    left out; a kind's folder that cannot be read is skipped, with a line in ``problems``."""
    out: list[Entry] = []
    for kind in KINDS:
        folder = Path(root) / kind
        if not folder.exists():
            continue
        try:
            paths = sorted(folder.iterdir())
        except OSError as exc:
            if problems is not None:
                problems.append(f"{folder}: cannot be read ({exc.strerror or exc})")
            continue
        for path in paths:
            name = path.name
            try:
                if writer_pid(name) is not None:
                    if not abandoned_write(path):
                        continue  # being written now (or lately): not ours to list or remove
                    status, about = "orphan", "a write whose process was killed"
                elif name.endswith(PARTIAL_SUFFIX):
                    status, about = "partial", "unfinished training: a run of the same configuration goes on from it"
                elif DAMAGED_INFIX in name:
                    status, about = "damaged", "failed to load; moved aside and rebuilt"
                else:
                    status, about = "stored", _about(kind, path)
                out.append(Entry(kind, name, status, _size(path), path.lstat().st_mtime, about))
            except OSError:  # removed while listed (a run finishing beside this one)
                continue
    return out


def in_use(e: Entry, now_s: float | None = None) -> bool:
    """A partial checkpoint written in the last :data:`~pruners.training.ORPHAN_AGE_S` seconds: its
    training (which saves every few minutes) may be running. (A time as far in the future is a
    clock's error, not a sign of use.)"""
    return e.status == "partial" and abs((time.time() if now_s is None else now_s) - e.modified_s) < ORPHAN_AGE_S


def leftovers(items: list[Entry], now_s: float | None = None) -> list[Entry]:
    """Of ``items`` (:func:`entries`), the partial checkpoints (but those :func:`in_use`), damaged
    entries and orphans: what ``sparsebench cache --remove-leftovers`` deletes."""
    return [e for e in items if e.status != "stored" and not in_use(e, now_s)]


def remove(root: Path, items: list[Entry]) -> tuple[list[Entry], list[str]]:
    """Delete ``items`` (from :func:`entries` of ``root``; a link is removed, not what it points to).
    Returns the items removed and one line per item that could not be (the others still go). A partial
    checkpoint removed while its training runs is written again at its next save."""
    removed, failed = [], []
    for e in items:
        path = Path(root) / e.kind / e.name
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            failed.append(f"{path}: {exc.strerror or exc}")
            continue
        removed.append(e)
    return removed, failed


def printable(name: str) -> str:
    """A file name on one line: control characters (a newline in a name) escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in name)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def format_entries(root: Path, items: list[Entry], now_s: float | None = None) -> str:
    """A table for the terminal: kind, status, size, age and what each entry is, then the total."""
    if not items:
        return f"model cache {root}: empty"
    now_s = time.time() if now_s is None else now_s
    lines = [f"model cache {root}:"]
    for e in items:
        age_h = max(0.0, now_s - e.modified_s) / 3600
        age = f"{age_h:.1f} h" if age_h < 48 else f"{age_h / 24:.0f} d"
        about = e.about + (f"; written in the last {ORPHAN_AGE_S / 60:.0f} minutes, so its training may be running: kept"
                           if in_use(e, now_s) else "")
        lines.append(f"  {KINDS[e.kind]:<18} {e.status:<8} {human_bytes(e.size_bytes):>9} {age:>7} ago  {printable(e.name)}"
                     + (f"  ({about})" if about else ""))
    left = leftovers(items, now_s)
    lines.append(f"total {human_bytes(sum(e.size_bytes for e in items))}"
                 + (f"; {len(left)} left over (partial, damaged or orphan), {human_bytes(sum(e.size_bytes for e in left))}: "
                    "`sparsebench cache --remove-leftovers` deletes them" if left else ""))
    return "\n".join(lines)
