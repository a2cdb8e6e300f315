"""The networking component's exception root."""

from __future__ import annotations


class NetworkError(Exception):
    """Pod network setup, inspection or teardown failed; the message names what and where."""


class NetnsError(NetworkError):
    """A network namespace could not be entered (missing, not a netns, no permission)."""
