"""The demo's exception root."""

from __future__ import annotations


class DemoError(Exception):
    """A step of the demo found something wrong (the message says what)."""
