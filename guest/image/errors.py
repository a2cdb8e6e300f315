"""Errors of the guest image recipe."""

from __future__ import annotations

from collections.abc import Sequence


class ImageError(Exception):
    """Root of every error raised by the image recipe."""


class CommandError(ImageError):
    """An external program failed; carries the command line and its output."""

    def __init__(self, args: Sequence[str], returncode: int | None, output: str) -> None:
        self.args_list = list(args)
        self.returncode = returncode
        self.output = output
        status = "timed out" if returncode is None else f"exited {returncode}"
        tail = output[-2000:]
        super().__init__(f"{' '.join(self.args_list)} {status}: {tail}")


class ManifestError(ImageError):
    """A manifest file is missing or malformed."""
