"""The one way the development kit runs a program."""

from __future__ import annotations

import subprocess

from devkit.errors import CommandFailed


def run(args: list[str], *, timeout: float = 300, stdin: bytes | None = None) -> str:
    """Run ``args`` (stdin /dev/null unless given); its stdout, or CommandFailed with
    the command, exit code and output."""
    try:
        done = subprocess.run(
            args,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise CommandFailed(f"{args[0]} timed out after {timeout}s: {err.stderr!r}") from err
    if done.returncode != 0:
        raise CommandFailed(
            f"{' '.join(args)} exited {done.returncode}:\n{done.stdout.decode(errors='replace')}"
            f"\n{done.stderr.decode(errors='replace')}"
        )
    return done.stdout.decode(errors="replace")
