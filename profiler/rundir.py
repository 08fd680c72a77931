"""Run directory layout, shared by the executors and the reports (standard library only).

A local run writes ``RUN_DIR/manifest.json``, ``hardware.json``, ``idle_power.json``,
``results.jsonl`` and ``report.html``. A run on a Ray cluster writes ``RUN_DIR/manifest.json``
(config, executor, targets) and ``RUN_DIR/compare.html``, and one folder per hardware target,
``RUN_DIR/targets/<target>/``, laid out like a local run (its manifest names the target and its
label selector; its ``hardware.json`` was taken on a node of the target). ``report`` and
``compare`` therefore read a target folder as they read a local run directory.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

TARGETS_DIR = "targets"
RESULTS = "results.jsonl"


def check_new_folder(path: Path, what: str) -> None:
    """ConfigError (named by ``what``, e.g. ``--out``) unless ``path`` is absent or an empty folder:
    where an export or a new run directory may be written without mixing into something else."""
    from profiler.errors import ConfigError

    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what}: {path} is a file; give a new or empty folder")
    if path.exists() and any(path.iterdir()):
        raise ConfigError(f"{what}: {path} exists and is not empty; give a new or empty folder")


def check_writable(folder: Path, label: str, create: bool = True) -> None:
    """Check that files can be written in ``folder``; :class:`~profiler.errors.SetupError` (a
    ConfigError) naming ``label`` (e.g. ``--out``) otherwise, so work that would end in a write
    fails before it starts. An absent ``folder`` is created (parents too), or, with ``create=False``
    (a check before the run is accepted, which must leave nothing behind), only its nearest existing
    parent is checked: the folder can be created there."""
    from profiler.errors import SetupError

    if folder.exists() and not folder.is_dir():
        raise SetupError(f"{label}: {folder} is a file, not a folder")
    where = folder
    if not create:
        while not where.exists() and where.parent != where:
            where = where.parent
        if not where.is_dir():
            raise SetupError(f"{label}: {folder} cannot be created: {where} is a file, not a folder")
    try:
        where.mkdir(parents=True, exist_ok=True)
        probe = where / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise SetupError(f"{label}: {folder} is not writable: {exc.strerror or exc}") from None


def check_resumable(run_dir: Path) -> None:
    """ConfigError unless a resumed run can append to ``run_dir``: the folder, its lock and every
    results file in it (a target folder's included) writable, and ``run_dir`` not one target's folder
    of a multi-target run. Changes nothing in it."""
    from profiler.errors import ConfigError

    parent = Path(run_dir).resolve().parent
    root = parent.parent
    if parent.name == TARGETS_DIR and (root / "manifest.json").is_file():
        raise ConfigError(f"RUN_DIR: {run_dir} is one target's folder of the multi-target run {root}; resume that "
                          f"run: sparsebench run --resume {root} (it picks up every target)")
    check_writable(run_dir, "RUN_DIR")
    targets = sorted((run_dir / TARGETS_DIR).iterdir()) if (run_dir / TARGETS_DIR).is_dir() else []
    for f in (folder / name for folder in [run_dir, *targets] for name in (".lock", RESULTS)):
        if not f.exists():
            continue
        try:
            with open(f, "a"):
                pass
        except OSError as exc:
            raise ConfigError(f"RUN_DIR: {f} is not writable: {exc.strerror or exc}; "
                              "finished cells are kept, but no new one could be saved") from None


def target_dir(run_dir: Path, target: str) -> Path:
    """``RUN_DIR/targets/<target>``."""
    return Path(run_dir) / TARGETS_DIR / target


def target_dirs(run_dir: Path) -> list[Path]:
    """The target folders of a multi-target run directory that hold results, by name; [] for a
    local run directory."""
    root = Path(run_dir) / TARGETS_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / RESULTS).is_file())


def expand_run_dirs(run_dirs: Iterable[Path]) -> list[Path]:
    """Each multi-target run directory replaced by its target folders; other paths kept as given."""
    out: list[Path] = []
    for d in map(Path, run_dirs):
        out += target_dirs(d) if not (d / RESULTS).is_file() and target_dirs(d) else [d]
    return out


def write_atomic(path: Path, data: bytes) -> Path:
    """Replace ``path`` by ``data`` through a private temporary file next to it, fsync'ed and renamed
    over it (the rename fsync'ed too), so a crash or a full disk leaves the old file or the new one,
    never a truncated one. A link is followed: the file it points to is replaced, the link kept.
    Raises OSError naming ``path``, the temporary file removed."""
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename == str(tmp):
            exc.filename = str(path)  # the file asked for, not the temporary one
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself reaches the disk
    finally:
        os.close(dir_fd)
    return path
