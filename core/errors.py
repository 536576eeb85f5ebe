"""Errors megafc reports to users as one paragraph instead of a traceback."""

from __future__ import annotations


class MegafcError(Exception):
    """A problem the user can fix: bad input, bad config, a misbehaving plugin.

    The message must name the file, field or config key involved and what was expected;
    the app prints it without a traceback and exits non-zero.
    """

    #: True unless the error came after the results were committed (a partial failure), so the
    #: app does not tell the user that nothing was written.
    nothing_written: bool = True


class ConfigError(MegafcError):
    """A configuration value or combination megafc cannot run with."""


class InputError(MegafcError):
    """An input file or table that does not have the expected content."""


class PluginError(MegafcError):
    """A plugin that failed to load, is registered twice, or returned something malformed."""
