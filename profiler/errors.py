"""Exceptions and warnings shared across the profiler."""


def plugin_exit(exc: SystemExit, who: str) -> RuntimeError:
    """What a ``sys.exit()`` in plugin code (``who``: e.g. ``accelerator 'x' prepare()``) becomes:
    a RuntimeError naming the call, so only the cells that ran it fail. SystemExit is no Exception:
    a cell's ``except Exception`` would let it end the whole run without a word. (Ctrl-C and SIGTERM
    raise KeyboardInterrupt, which still stops the run.)"""
    return RuntimeError(f"SystemExit({exc.code!r}) raised in {who}")


class ConfigError(ValueError):
    """An invalid configuration: raised before any work starts.

    The message names the offending key (e.g. ``pruners[1].sparsity``) and, where there is a
    closed set, the valid choices.
    """


class SetupError(ConfigError):
    """The config is valid but this machine cannot run it as asked (a folder it cannot write):
    raised before any work starts, like :class:`ConfigError`, and reported as such, not as a bad config."""


class ResultsReadError(SetupError):
    """A results file that exists cannot be read (permission denied, a folder in its place). Not a
    damaged row to skip: every row of it is unknown, so a report or comparison would come out empty
    and a resume would run every cell again. The message names the file and the reason."""


class ResultsWriteError(RuntimeError):
    """A finished cell's row could not be appended to its results file (a full disk, a folder that
    went away or turned read-only). The run stops there, since no later row could be saved either;
    the rows before are on disk, and a resumed run measures this cell again."""


class SparsebenchWarning(UserWarning):
    """A warning meant for the person running sparsebench (the CLI prints it as one
    ``sparsebench: warning:`` line, without the file and line that raised it)."""


class PluginWarning(SparsebenchWarning):
    """A third-party plugin entry point was skipped; the message names the distribution, the
    entry point and why (see :mod:`profiler.plugins`)."""
