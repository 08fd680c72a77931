"""``sparsebench`` command line: run, report, compare, doctor, plugins, cache, export."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

from profiler.errors import ConfigError, ResultsReadError, ResultsWriteError, SetupError, SparsebenchWarning
from profiler.executors import EXECUTORS
from profiler.rundir import RESULTS

EPILOG = ("Your own model and data: task 'text-classification' (sparsebench plugins text-classification). "
          "Docs and plugin guide: README.md.")
#: the end of the help of the commands that write a run (not of those that only list or read)
OUTPUTS = " Outputs go to runs/<name>-<timestamp>/."


class _Sigint:
    """Ctrl-C recorded as well as raised. Python prints and drops a KeyboardInterrupt raised inside a
    finalizer (``__del__``, e.g. while a library imports), so a run that got past it would go on; the
    progress reports, which a run makes at every cell and training step, stop it anyway."""

    seen = False

    @classmethod
    def handler(cls, signum: int, frame: Any) -> None:
        cls.seen = True
        raise KeyboardInterrupt

    @classmethod
    def check(cls) -> None:
        if cls.seen:
            raise KeyboardInterrupt


class RichReporter:
    """Progress bars over cells and training steps on a terminal; plain lines when stderr is a file or
    pipe (a line per finished cell, and a training line every ``PLAIN_EVERY_S`` seconds)."""

    PLAIN_EVERY_S = 30.0

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=False,
        )
        self.cells = None
        self.train = None
        self.plain = not self.console.is_terminal
        self.total = 0
        self.done = 0

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def start(self, total: int, done: int) -> None:
        self.cells = self.progress.add_task("cells", total=total, completed=done, info=f"{done} already done")
        self.total, self.done = total, done

    def cell_done(self, r) -> None:
        _Sigint.check()
        from rich.markup import escape

        from profiler.labels import cell_text
        from reports.html import first_line

        target = (getattr(r, "extra", None) or {}).get("target")  # a Ray run's hardware target
        cell = f"[{target}] " if target else ""
        cell += cell_text(r)  # the rows' labels: cells of a sweep read apart
        info = f"{cell}: {r.status}" + (f" p50 {r.latency_p50_s * 1e3:.1f} ms" if r.status == "ok" else "")
        self.progress.update(self.cells, advance=1, info=escape(info))
        self.done += 1
        if self.plain:
            self.console.print(f"cell {self.done}/{self.total}: {info}", highlight=False, markup=False)
        if r.status != "ok":
            self.console.print(f"[yellow]{r.status}[/]: {escape(cell)}: {escape(first_line(r.reason, 2000))}")

    def message(self, text: str) -> None:
        self.console.print(text, markup=False)  # plain text: "[target] ..." is not a style

    def training(self, label: str) -> Callable[[int, int, float], None]:
        import time

        state = {"id": None, "printed": 0.0}

        def cb(step: int, total: int, loss: float, sparsity: float | None = None) -> None:
            _Sigint.check()
            if state["id"] is None:
                state["id"] = self.progress.add_task(label, total=total, info="")
            info = f"loss {loss:.4f}" + (f" sparsity {sparsity:.3f}" if sparsity is not None else "")
            self.progress.update(state["id"], completed=step, info=info)
            now = time.monotonic()
            if self.plain and (step >= total or now - state["printed"] >= self.PLAIN_EVERY_S):
                state["printed"] = now
                self.console.print(f"{label}: step {step}/{total} {info}", highlight=False)

        self._train_state = state
        return cb

    def training_done(self) -> None:
        state = getattr(self, "_train_state", None)
        if state and state["id"] is not None:
            self.progress.remove_task(state["id"])
            state["id"] = None


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler, `kill`) during `sparsebench run`: stop as Ctrl-C does, finished cells saved."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def _resume_command(run_dir: Path, args: argparse.Namespace) -> str:
    """The command that continues ``run_dir``: with the --address and --cache-dir this run was
    given (a resume finds the model cache in the manifest; the hint names it to be explicit)."""
    extra = [*(["--address", args.address] if args.address else []),
             *(["--cache-dir", str(args.cache_dir)] if args.cache_dir else [])]
    return shlex.join(["sparsebench", "run", "--resume", str(run_dir), *extra])


def cmd_run(args: argparse.Namespace) -> int:
    from profiler.runner import Runner

    problem = resume_flag_problem(args)
    if problem:
        print(f"sparsebench: {problem}", file=sys.stderr)
        return 2
    try:
        cfg, run_dir, executor = _prepare_run(args)
    except KeyboardInterrupt:  # while checking the config and the machine
        print("\ninterrupted before the first cell", file=sys.stderr)
        return 130
    except ConfigError as exc:
        what = "cannot resume" if args.resume else "cannot run" if isinstance(exc, SetupError) else "invalid config"
        text = str(exc).removeprefix("--resume: ") if args.resume else str(exc)  # said once
        print(f"sparsebench: {what}: {text}", file=sys.stderr)
        return 2
    previous_sigterm = (signal.signal(signal.SIGTERM, _on_sigterm)
                        if threading.current_thread() is threading.main_thread() else None)
    try:
        _Sigint.check()  # an interrupt a finalizer dropped while the config was read
        from profiler.config import expand

        with (executor.reporter if executor is not None else RichReporter()) as rep:
            n = len(executor.runs) if executor else 0
            where = f" on {n} target{'s' if n != 1 else ''}" if executor else ""
            rep.message(f"run directory: {run_dir}  ({len(expand(cfg))} cells{where})")
            if executor is not None:
                executor.run(run_dir)
            else:
                Runner(cfg, run_dir, cache_dir=args.cache_dir, reporter=rep, retry_failed=args.retry_failed).run()
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        if (Path(run_dir) / "manifest.json").is_file():
            print(f"\n{what}; finished cells are saved. Continue with: {_resume_command(run_dir, args)} (a fine-tune "
                  "or a built-in training pruner goes on from its last checkpoint, at most a few minutes back)",
                  file=sys.stderr)
        else:  # stopped before the run's files were written: a --resume would find no run there
            print(f"\n{what} before the run started: nothing to resume in {run_dir}; run the same command again",
                  file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except ConfigError as exc:  # run directory held by another process, inputs changed since the run began
        text = str(exc)
        if text.startswith("--resume: "):  # worded as the checks before the run word it
            text = "cannot resume: " + text.removeprefix("--resume: ")
        print(f"sparsebench: {text}", file=sys.stderr)
        return 2
    except ResultsWriteError as exc:
        print(f"sparsebench: {exc}. The run stops here: the rows saved before it are kept; this cell, and any timed "
              f"beside it but not saved yet, are measured again by: {_resume_command(run_dir, args)} "
              "(make room or fix the folder first)", file=sys.stderr)
        return 1
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
        if executor is not None:
            executor.close()
    return _report_run(run_dir)


def _prepare_run(args: argparse.Namespace) -> tuple[Any, Path, Any]:
    """(config, run directory, Ray executor or None) of ``sparsebench run``, after every check;
    the run directory of a new run is created last, so a rejected run writes nothing. The Ray
    executor reports through its own :class:`RichReporter`, the run's. Raises ConfigError. On a
    raise after the Ray executor connected, it is closed here."""
    from profiler.config import load_config, missing_baseline_note
    from profiler.runner import check_measure_unchanged, load_run_config, new_run_dir, preflight

    if args.resume:
        run_dir = Path(args.resume)
        cfg = load_run_config(run_dir)
        check_measure_unchanged(cfg, run_dir)  # either executor, before anything is probed
        executor = resume_executor(run_dir, args.executor)
        args.cache_dir = resume_cache_dir(run_dir, args.cache_dir)  # the resume hint names it too
    else:
        cfg = load_config(args.config)
        if args.output_dir:
            cfg.output_dir = args.output_dir
        executor = args.executor or "local"
    if args.address and executor != "ray":  # a resumed local run (a new run's flags: resume_flag_problem)
        raise ConfigError(f"--address: applies to --executor ray only; {run_dir} was run with --executor {executor}")
    preflight(cfg, args.cache_dir, check_meter=executor == "local", resume_dir=run_dir if args.resume else None)
    if not args.resume and (note := missing_baseline_note(cfg)):
        print(f"sparsebench: note: {note}", file=sys.stderr)
    if executor == "local":
        if cfg.targets is not None or "ray" in cfg.raw:
            print("sparsebench: note: [targets] and [ray] apply to --executor ray; this local run ignores them",
                  file=sys.stderr)
        return cfg, run_dir if args.resume else new_run_dir(cfg), None
    from profiler.executors.ray_driver import RayExecutor

    # the run's reporter from the start: prepare()'s warnings (a label only dead nodes carry) are printed
    # as they come, and the models built on the driver show their training progress
    ray_ex = RayExecutor(cfg, cache_dir=args.cache_dir, reporter=RichReporter(), address=args.address,
                         retry_failed=args.retry_failed)
    try:
        ray_ex.prepare(run_dir if args.resume else None)
        return cfg, run_dir if args.resume else new_run_dir(cfg), ray_ex
    except BaseException:
        ray_ex.close()
        raise


def resume_executor(run_dir: Path, given: str | None) -> str:
    """The executor a resumed run uses: the one its manifest names (``local`` for runs made
    before executors existed). Raises ConfigError when ``--executor`` names another, or the
    manifest names none that exists."""
    from profiler.runner import MANIFEST, read_run_json

    manifest = read_run_json(run_dir / MANIFEST)
    stored = manifest.get("executor", "local") if isinstance(manifest, dict) else "local"
    if stored not in EXECUTORS:
        raise ConfigError(f"{run_dir}/{MANIFEST}: executor {stored!r} is not one of {', '.join(EXECUTORS)}; "
                          "the manifest is damaged")
    if given and given != stored:
        raise ConfigError(f"--executor {given}: {run_dir} was run with --executor {stored}; resume it with the same one")
    return stored


def resume_cache_dir(run_dir: Path, given: str | None) -> str | None:
    """The model cache a resumed run uses. Its remaining cells must prune the dense model its finished
    cells used: another cache would fine-tune a new one, which can differ. So without ``--cache-dir``,
    the cache the run recorded (:func:`profiler.runner.recorded_cache_dir`) while it still exists, said in a note when
    the default ($SPARSEBENCH_CACHE or ~/.cache/sparsebench) is another; a ``--cache-dir`` given is
    used, with a warning naming both when the run recorded another. None: the default."""
    from profiler.runner import MANIFEST, read_run_json, recorded_cache_dir
    from profiler.tasks.base import default_cache_dir

    recorded = recorded_cache_dir(read_run_json(run_dir / MANIFEST))
    if recorded is None or (given is not None and Path(given).resolve() == recorded.resolve()):
        return given
    risk = "the dense model may be fine-tuned again there and differ from the one its finished cells used"
    if given is not None:
        print(f"sparsebench: warning: --cache-dir {given}: {run_dir} was run with the model cache {recorded}; "
              f"its remaining cells use {given}: {risk}", file=sys.stderr)
        return given
    if not recorded.is_dir():
        print(f"sparsebench: warning: the model cache {run_dir} was run with, {recorded}, is gone; its remaining "
              f"cells use {default_cache_dir()}: {risk}", file=sys.stderr)
        return None
    if recorded.resolve() != default_cache_dir().resolve():
        print(f"sparsebench: note: resuming with the model cache {run_dir} was run with, {recorded} "
              "(give --cache-dir to use another)", file=sys.stderr)
    return str(recorded)


def _report_run(run_dir: Path) -> int:
    """Write the report(s) of a finished run and print the summary. Exit status 1 when no cell
    measured anything (no ok row): every cell failed, some failed and the rest were skipped, or
    every cell was skipped (nothing in the matrix runs on this hardware), or a report could not be
    written (the results are kept); else 0."""
    from profiler.rundir import target_dirs
    from reports.frame import load_rows
    from reports.report import print_summary, write_report

    dirs = target_dirs(run_dir) or [run_dir]
    failed = skipped = ok = total = 0
    for d in dirs:
        try:
            path = write_report(d)
        except OSError as exc:  # a full disk after the last cell: the results are safe, the page can wait
            print(f"sparsebench: cannot write the report {exc.filename or d / 'report.html'} ({exc.strerror or exc}); "
                  f"the results are saved: write it later with `sparsebench report {d}`", file=sys.stderr)
            return 1
        print_summary(d)
        print(f"report: {path}")
        df, _ = load_rows(d)
        if not df.empty:
            failed += int((df["status"] == "failed").sum())
            skipped += int((df["status"] == "skipped").sum())
            ok += int((df["status"] == "ok").sum())
        total += len(df)
    if dirs != [run_dir]:
        from reports.compare_page import write_compare

        print(f"compare: {write_compare(dirs, run_dir / 'compare.html')}")
    if failed:
        print(f"{failed} of {total} cells failed; their reasons are in results.jsonl and the report", file=sys.stderr)
    if total and not ok:
        if not failed and skipped == total:
            print(f"no cell ran: all {total} were skipped (nothing in the matrix runs on this hardware); the reasons "
                  "are in results.jsonl and the report", file=sys.stderr)
        return 1
    return 0


def resume_flag_problem(args: argparse.Namespace) -> str | None:
    """Why the flags given to ``run`` do not fit together (None when they do): a resumed run
    takes its config and run directory from RUN_DIR, only a resumed run has failed cells, and
    ``--address`` goes with ``--executor ray``. Checked before anything is read."""
    if args.resume and args.config:
        return "give either CONFIG or --resume RUN_DIR (a resumed run uses the config stored in it)"
    if args.resume and args.output_dir:
        return "--output-dir does not apply to --resume: the run continues in RUN_DIR itself"
    if args.retry_failed and not args.resume:
        return "--retry-failed applies to --resume RUN_DIR only"
    if getattr(args, "address", None) is not None and not args.address.strip():  # "--address=" would mean "auto"
        return "--address: empty; give the head's HOST:PORT, or leave the flag out to find the cluster (RAY_ADDRESS)"
    if getattr(args, "address", None) is not None and args.executor != "ray" and not (args.resume and not args.executor):
        # a resumed run without --executor uses the one it was started with: _prepare_run checks that one
        return "--address: applies to --executor ray only"
    return None


def _results_warnings(run_dir: Path) -> int:
    """Print the damaged rows and duplicate cells of ``run_dir/results.jsonl``, and damaged run
    files (:func:`reports.frame.damaged_run_files`), to stderr; the number of valid rows."""
    from profiler.results import read_results
    from reports.frame import RUN_FILE_TYPES, damaged_run_files, load_run_file

    rf = read_results(run_dir / RESULTS)
    for line in rf.warnings():
        print(f"sparsebench: warning: {line}", file=sys.stderr)
    damaged = damaged_run_files(run_dir)
    for name in damaged:
        print(f"sparsebench: warning: {run_dir / name} is damaged (no readable JSON object): the page shows its "
              "fields as ?", file=sys.stderr)
    for name in (n for n in RUN_FILE_TYPES if n not in damaged):
        for problem in load_run_file(run_dir, name)[1]:  # a hand-edited field of the wrong type
            print(f"sparsebench: warning: {run_dir / name}: {problem}", file=sys.stderr)
    return len(rf.rows)


def _refused_output(out: str) -> bool:
    """Whether ``-o OUT`` is refused (:func:`_output_problem`), the reason printed as one line."""
    problem = _output_problem(out)
    if problem:
        print(f"sparsebench: {problem}", file=sys.stderr)
    return problem is not None


def _output_problem(out: str) -> str | None:
    """Why ``-o OUT`` must not be written, or None. The page replaces its file through a renamed
    temporary file: over a run's data (``results.jsonl``, the manifest) it would lose them, over a
    FIFO or a device node it would replace the node itself. A link is followed (the page replaces
    the file it points to)."""
    path = Path(out)
    if out.endswith(("/", os.sep)) or path.is_dir():
        return f"cannot write -o {out}: it is a folder; give the page's file name (ending in .html)"
    if path.exists():
        real = path.resolve()
        if not real.is_file():
            return f"cannot write -o {out}: it is not a regular file (a FIFO, a device or a socket); give the page's file name"
        if real.suffix.lower() not in (".html", ".htm"):
            return f"cannot write -o {out}: it exists and is not an HTML page, refusing to write over it (give a name ending in .html)"
    return None


def _write_page(write: Callable[[], Path]) -> int:
    """Run a page writer; an unwritable output path is a one-line error with exit status 2."""
    try:
        print(write())
    except OSError as exc:
        where = Path(exc.filename) if exc.filename else None
        if isinstance(exc, FileExistsError) and where and where.is_file():  # a file where a folder should be
            print(f"sparsebench: cannot write the output: {where} is a file, not a folder", file=sys.stderr)
        else:
            print(f"sparsebench: cannot write {where or 'the output'}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


def _no_results(run_dir: Path) -> str:
    """Why ``run_dir`` (a folder without a results file) cannot be read: a run stopped before its
    first cell finished (it has a manifest) is told how to go on."""
    if (run_dir / RESULTS).is_symlink() and not (run_dir / RESULTS).exists():
        return f"{run_dir / RESULTS} is a link to {os.readlink(run_dir / RESULTS)}, which does not exist"
    if not (run_dir / RESULTS).exists() and (run_dir / "manifest.json").is_file():
        return (f"{run_dir}: no cell has finished yet (the run stopped before its first result); "
                f"go on with `sparsebench run --resume {run_dir}`")
    what = "is not a file" if (run_dir / RESULTS).exists() else "is missing"
    return f"{run_dir / RESULTS} {what} (nor is there targets/*/{RESULTS})"


def cmd_report(args: argparse.Namespace) -> int:
    from profiler.rundir import target_dirs
    from reports.report import write_report

    run_dir = Path(args.run_dir)
    if args.output and _refused_output(args.output):  # before any work
        return 2
    if not run_dir.is_dir():
        print(f"sparsebench: {run_dir} {'is a file, not' if run_dir.exists() else 'does not exist: not'} a run directory",
              file=sys.stderr)
        return 2
    targets = [] if (run_dir / RESULTS).is_file() else target_dirs(run_dir)
    if not targets and not (run_dir / RESULTS).is_file():
        print(f"sparsebench: {_no_results(run_dir)}", file=sys.stderr)
        return 2
    if targets and args.output:
        print("sparsebench: -o applies to a one-target run directory; a multi-target run writes "
              "RUN_DIR/targets/<target>/report.html (and `sparsebench compare RUN_DIR` the comparison)", file=sys.stderr)
        return 2
    for d in targets or [run_dir]:
        if _results_warnings(d) == 0:
            print(f"sparsebench: warning: {d} has no valid result rows yet: the report says so and shows nothing else",
                  file=sys.stderr)
        status = _write_page(lambda: write_report(d, Path(args.output) if args.output else None))
        if status:
            return status
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from reports.compare import build_compare
    from reports.compare_page import write_compare

    from profiler.rundir import expand_run_dirs, target_dirs

    given = [Path(d) for d in args.run_dirs]
    dirs = expand_run_dirs(given)  # a multi-target run directory stands for its target folders
    if args.output is None:
        multi = len(given) == 1 and not (given[0] / RESULTS).is_file() and target_dirs(given[0])
        args.output = str(given[0] / "compare.html") if multi else "compare.html"
    if _refused_output(args.output):  # before any work
        return 2
    absent = [str(d) for d in dirs if not d.is_dir()]
    if absent:
        print(f"sparsebench: not run directories (missing, or a file): {', '.join(absent)}", file=sys.stderr)
        return 2
    missing = [d for d in dirs if not (d / RESULTS).is_file()]
    if missing:
        for d in missing:
            print(f"sparsebench: {_no_results(d)}", file=sys.stderr)
        return 2
    seen: dict[Path, Path] = {}
    empty: list[Path] = []
    for d in dirs:
        if d.resolve() in seen:
            print(f"sparsebench: warning: {d} is given twice (as {seen[d.resolve()]}); it is compared with itself",
                  file=sys.stderr)
        seen.setdefault(d.resolve(), d)
        if _results_warnings(d) == 0:
            print(f"sparsebench: warning: {d} has no valid result rows", file=sys.stderr)
            empty.append(d)
    if len(empty) == len(dirs):
        print("sparsebench: nothing to compare: no run directory has a valid result row", file=sys.stderr)
        return 2
    comparison = build_compare(dirs, allow_mixed_energy=args.allow_mixed_energy)
    for line in comparison.notes:  # the page's own notes (reports.compare.compare_notes), said here too
        print(f"sparsebench: warning: {line}", file=sys.stderr)
    return _write_page(lambda: write_compare(dirs, Path(args.output), allow_mixed_energy=args.allow_mixed_energy,
                                             comparison=comparison))


def cmd_doctor(args: argparse.Namespace) -> int:
    from profiler.doctor import doctor_report, format_doctor

    rep = doctor_report()
    print(json.dumps(rep, indent=1, default=str) if args.json else format_doctor(rep))
    return 0


def select_plugins(which: str | None) -> list[dict[str, Any]] | None:
    """:meth:`~profiler.registry.Registry.describe` of every plugin, of one kind (``task``,
    ``pruners``, ``meter``, ``energy-meter``, ...) or of one name; ``None`` when ``which`` is
    neither a kind nor a registered name."""
    from profiler.plugins import REGISTRIES

    def is_kind(registry, word: str) -> bool:
        kinds = {registry.kind, registry.section, registry.kind.split()[-1]}
        kinds |= {k + "s" for k in kinds} | {k.replace(" ", "-") for k in kinds}
        return word.lower() in kinds

    chosen = []
    for registry in REGISTRIES:
        if which is None or is_kind(registry, which):
            chosen += [registry.describe(n) for n in registry.names()]
        elif which in registry:
            chosen.append(registry.describe(which))
    return chosen or None


def _default_text(p: dict[str, Any]) -> str:
    """``required``, ``optional`` (default None: leave it out; with what that means where the plugin
    says) or ``default <TOML value>``."""
    if p["required"]:
        return "required"
    v = p["default"]
    if v is None:
        return f"optional: {p['when_omitted']}" if p.get("when_omitted") else "optional"
    return f"default {json.dumps(v) if isinstance(v, (bool, list, str)) else v}"


def format_plugins(plugins: list[dict[str, Any]], problems: list[str]) -> str:
    """Plain text of :func:`select_plugins`: a block per kind, a line per plugin and parameter."""
    out: list[str] = []
    kind = None
    for d in plugins:
        if d["kind"] != kind:
            kind = d["kind"]
            out += ["" if out else None, f"{kind}s (config section: {d['section']})".capitalize()]
        out.append(f"  {d['name']}: {d['summary'].replace('``', '') or '(no description)'}")
        if d["source"] != "built-in":
            out.append(f"      from {d['source']}")
        width = max((len(p["name"]) for p in d["params"]), default=0)
        types = [p["type"] + (" (from its default)" if p.get("type_from_default") else "") for p in d["params"]]
        twidth = max((len(t) for t in types), default=0)
        for p, t in zip(d["params"], types):
            rng = f", in {p['range']}" if "range" in p else ""
            rng += f", one of {', '.join(map(str, p['choices']))}" if "choices" in p else ""
            out.append(f"      {p['name']:<{width}}  {t:<{twidth}}  {_default_text(p)}{rng}")
        if not d["params"]:
            out.append("      (no parameters)")
    if problems:
        out += ["", "Third-party plugins not loaded:"] + [f"  {p}" for p in problems]
    return "\n".join(line for line in out if line is not None)


def cmd_plugins(args: argparse.Namespace) -> int:
    from profiler.plugins import LOAD_PROBLEMS

    plugins = select_plugins(args.which)
    if plugins is None:
        from profiler.plugins import REGISTRIES

        kinds = ", ".join(r.kind.split()[-1] for r in REGISTRIES)
        names = ", ".join(sorted({n for r in REGISTRIES for n in r.names()}))
        print(f"sparsebench: {args.which!r} is neither a plugin kind ({kinds}) nor a plugin name ({names})",
              file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"plugins": plugins, "problems": list(LOAD_PROBLEMS)}, indent=1))
    else:
        print(format_plugins(plugins, list(LOAD_PROBLEMS)))
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from profiler.cache import entries, format_entries, human_bytes, leftovers, printable, remove
    from profiler.tasks.base import default_cache_dir

    root = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if root.exists() and not root.is_dir():
        print(f"sparsebench: --cache-dir {root}: not a folder", file=sys.stderr)
        return 2
    problems: list[str] = []
    items = entries(root, problems)
    if args.remove_leftovers:
        removed, failed = remove(root, leftovers(items))
        problems += [f"not removed: {f}" for f in failed]
        freed = sum(e.size_bytes for e in removed)
        if args.json:
            print(json.dumps({"cache_dir": str(root), "removed": [e.as_dict() for e in removed], "freed_bytes": freed,
                              "problems": problems}, indent=1))
        else:
            print(f"removed {len(removed)} left-over item(s) from {root}, {human_bytes(freed)} freed"
                  + "".join(f"\n  {e.kind}/{printable(e.name)} ({e.status})" for e in removed))
    elif args.json:
        print(json.dumps({"cache_dir": str(root), "entries": [e.as_dict() for e in items], "problems": problems}, indent=1))
    else:
        print(format_entries(root, items) + ("" if root.exists() else " (the folder does not exist yet)"))
    for line in problems if not args.json else []:
        print(f"sparsebench: warning: {line}", file=sys.stderr)
    return 1 if problems else 0


def path_arg(value: str) -> str:
    """An argparse ``type`` for file and folder arguments: an empty (or blank) string is an error
    rather than a silent fallback to the default or to the current folder."""
    if not value.strip():
        raise argparse.ArgumentTypeError("empty path")
    return value


def build_parser() -> argparse.ArgumentParser:
    from profiler import __version__

    p = argparse.ArgumentParser(
        prog="sparsebench",
        description="Energy, latency and accuracy profiling of pruned and quantized transformer inference.",
        epilog=EPILOG + OUTPUTS,
    )
    p.add_argument("--version", action="version", version=f"sparsebench {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    r = sub.add_parser("run", help="run a profiling matrix (the packaged quickstart when no CONFIG is given)",
                       description="Run every cell of a profiling matrix (task × pruner × accelerator × kernel variant × threads × batch × sequence), appending one row per cell to RUN_DIR/results.jsonl, then write RUN_DIR/report.html. Cells of one shape, at every thread count, are timed side by side in interleaved rounds (measure.schedule, measure.interleave_threads), so savings factors and thread scaling are same-round ratios.",
                       epilog="Exit status: 0 when at least one cell measured (ok); 1 when none did (every cell failed or "
                              "was skipped, e.g. nothing in the matrix runs on this hardware), the results file stopped "
                              "taking rows, or the report could not be written (the results are kept); 2 for a bad config, flag or run directory; 130 on Ctrl-C, 143 on SIGTERM. "
                              "Example configs: scripts/configs/*.toml. " + EPILOG + OUTPUTS)
    r.add_argument("config", nargs="?", type=path_arg, help="TOML config file (default: packaged quickstart: SST-2, MiniLM, magnitude 0.5/0.7/0.9, torch fp32, torch INT8, sparse-cpu and sparse-int8, batch 1 and 8, seq 128, 2 threads)")
    r.add_argument("--resume", metavar="RUN_DIR", type=path_arg, help="continue a killed run with the config stored in RUN_DIR: skips cells already in its results.jsonl (a Ray run: each RUN_DIR/targets/<target>/results.jsonl); uses the model cache the run used (its models and checkpoints) while it exists, unless --cache-dir names another")
    r.add_argument("--retry-failed", action="store_true", help="with --resume: run the failed cells again (default: keep their rows)")
    r.add_argument("--output-dir", type=path_arg, help="parent folder of the run directory (default: run.output_dir of the config, 'runs')")
    r.add_argument("--cache-dir", type=path_arg, help="fine-tuned/pruned model cache (default: $SPARSEBENCH_CACHE or ~/.cache/sparsebench; with --resume, the one the run used)")
    r.add_argument("--executor", choices=EXECUTORS, help="where the cells run: local (default: this process) or ray "
                   "(every cell on every hardware target of a Ray cluster, one target per node label; "
                   "pip install 'sparsebench[ray]'). A resumed run uses the executor it was started with")
    r.add_argument("--address", metavar="HOST:PORT", help="with --executor ray: the cluster's head (GCS) address "
                   "(default: $RAY_ADDRESS, else the cluster started on this machine with `ray start --head`)")
    r.set_defaults(func=cmd_run)
    rp = sub.add_parser("report", help="write RUN_DIR/report.html (self-contained, works offline)",
                        description="Turn RUN_DIR/results.jsonl into one self-contained HTML report (plotly.js embedded).")
    rp.add_argument("run_dir", metavar="RUN_DIR", type=path_arg,
                    help="a run directory of `sparsebench run` (runs/<name>-<timestamp>/, with its results.jsonl); "
                         "a multi-target run directory (--executor ray) gets a report per target")
    rp.add_argument("-o", "--output", type=path_arg, help="output path (default: RUN_DIR/report.html)")
    rp.set_defaults(func=cmd_report)
    c = sub.add_parser("compare", help="the same cells side by side across run directories (hardware targets)",
                       description="Join rows on recipe_id (the cell without threads and kernel variant) across run directories "
                                   "(one per hardware target) into one self-contained HTML page.")
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", type=path_arg,
                   help="run directories; a multi-target run directory (--executor ray) stands for all its targets")
    c.add_argument("-o", "--output", type=path_arg, help="output HTML path (default: RUN_DIR/compare.html for one multi-target "
                                          "run directory, else compare.html)")
    c.add_argument("--allow-mixed-energy", action="store_true", help="allow energy ratios between targets whose energy methods differ (e.g. measured vs estimated)")
    c.set_defaults(func=cmd_compare)
    d = sub.add_parser("doctor", help="what this machine can measure: meters, CPU/GPU fingerprint, kernel variant",
                       description="Print each energy meter's availability and reason, what 'auto' would use, the hardware fingerprint and the sparse-kernel variant.")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.set_defaults(func=cmd_doctor)
    pl = sub.add_parser("plugins", help="every task, pruner, accelerator and energy meter, with its parameters",
                        description="List every registered plugin (built-in, and third-party from the 'sparsebench.plugins' "
                                    "entry-point group) with a one-line summary and its config parameters: type, default, "
                                    "and the range or the choices where the plugin declares them.",
                        epilog="A config names a plugin and sets its parameters, e.g. [[accelerators]] name = \"sparse-cpu\" "
                               "min_sparsity = 0.5. " + EPILOG)
    pl.add_argument("which", nargs="?", metavar="KIND|NAME",
                    help="only one kind (task, pruner, accelerator, meter) or the plugins of one name")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    pl.set_defaults(func=cmd_plugins)
    ca = sub.add_parser("cache", help="what the model cache holds; --remove-leftovers deletes unfinished trainings' checkpoints",
                        description="List the model cache: fine-tuned and pruned models, peer engines' converted models and "
                                    "distillation teachers' logits, with size, age and what made each; and what is left over: "
                                    "checkpoints of trainings that did not finish (a run of the same configuration goes on "
                                    "from them), entries that failed to load and were moved aside, and files of killed writes.")
    ca.add_argument("--cache-dir", type=path_arg, help="the cache (default: $SPARSEBENCH_CACHE or ~/.cache/sparsebench)")
    ca.add_argument("--json", action="store_true", help="machine-readable output")
    ca.add_argument("--remove-leftovers", action="store_true",
                    help="delete the left-over items (an unfinished training then starts over when its configuration runs again)")
    ca.set_defaults(func=cmd_cache)
    from profiler.export import add_parser as add_export_parser

    add_export_parser(sub, path_arg)
    p.set_defaults(subcommands=sub.choices)  # main() names a stray argument in its subcommand's usage
    return p


def warning_printer(fallback: Callable) -> Callable:
    """A ``warnings.showwarning`` that prints a :class:`SparsebenchWarning` (a :class:`PluginWarning`,
    a damaged cache entry...) or a training pruner's :class:`pruners.training.CheckpointWarning` as one
    ``sparsebench: warning:`` line and hands every other warning to ``fallback``."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        training = sys.modules.get("pruners.training")  # loaded once a pruner trains; not imported here (torch)
        if issubclass(category, SparsebenchWarning) or (training is not None and issubclass(category, training.CheckpointWarning)):
            print(f"sparsebench: warning: {message}", file=file or sys.stderr)
        else:
            fallback(message, category, filename, lineno, file, line)

    return show


def main(argv: list[str] | None = None) -> int:
    args, stray = build_parser().parse_known_args(argv)
    if stray:
        args.subcommands[args.command].error(f"unrecognized arguments: {' '.join(stray)}")
    previous = warnings.showwarning
    warnings.showwarning = warning_printer(previous)
    main_thread = threading.current_thread() is threading.main_thread()
    previous_sigint = signal.signal(signal.SIGINT, _Sigint.handler) if main_thread else None
    _Sigint.seen = False
    try:
        status = args.func(args)
        sys.stdout.flush()  # inside the try: a closed pipe found at exit would print a traceback there
        return status
    except BrokenPipeError:  # `sparsebench plugins --json | head`: the reader left; no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit would hit the closed pipe again
        return 1
    except ResultsReadError as exc:  # report, compare...: an unreadable results file is no empty run
        print(f"sparsebench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside a run's own handling (report, compare, export, ...)
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous
        if previous_sigint is not None:
            signal.signal(signal.SIGINT, previous_sigint)


if __name__ == "__main__":
    sys.exit(main())
