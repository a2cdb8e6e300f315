"""The one exception root of the host-side initdata code."""

from __future__ import annotations


class InitdataError(Exception):
    """A pod's initdata was refused or its launch material could not be prepared.

    Sandbox creation fails with this message: it names the annotation and the problem.
    """
