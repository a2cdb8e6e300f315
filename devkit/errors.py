"""The development kit's exception root."""

from __future__ import annotations


class DevkitError(RuntimeError):
    """A helper service or program of the development kit failed."""


class CommandFailed(DevkitError):
    """An external program exited non-zero or timed out (its output is in the message)."""
