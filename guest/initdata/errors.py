"""The one exception root of the guest-side initdata code."""

from __future__ import annotations


class InitdataError(Exception):
    """An initdata document, disk, annotation or TEE report was refused or unreadable.

    The message names what was wrong and where; it is what a user reads in the
    deny-all policy, so it stays one line of plain text.
    """
