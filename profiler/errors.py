"""Exceptions and warnings shared across the profiler."""


class ConfigError(ValueError):
    """An invalid configuration: raised before any work starts.

    The message names the offending key (e.g. ``pruners[1].sparsity``) and, where there is a
    closed set, the valid choices.
    """


class PluginWarning(UserWarning):
    """A third-party plugin entry point was skipped; the message names the distribution, the
    entry point and why (see :mod:`profiler.plugins`)."""
