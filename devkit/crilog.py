"""Waiting for a line in a container's CRI log file (parsed by devkit.cri.read_log)."""

from __future__ import annotations

import time
from pathlib import Path

from devkit.cri import read_log
from devkit.errors import DevkitError


class LogTimeout(DevkitError):
    """The awaited line did not appear in the log in time."""


def wait_for_line(path: Path, prefix: str, timeout: float, poll: float = 0.05) -> list[str]:
    """The log's lines (both streams, in order) up to and including the first one
    starting with ``prefix`` (``""``: the first line at all). Raises LogTimeout, or
    DevkitError for a file that is not a CRI log."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line.text for line in read_log(path)] if path.exists() else []
        for index, line in enumerate(lines):
            if line.startswith(prefix):
                return lines[: index + 1]
        if time.monotonic() > deadline:
            raise LogTimeout(
                f"no line starting {prefix!r} in {path} within {timeout:.0f} s: {lines}"
            )
        time.sleep(poll)
