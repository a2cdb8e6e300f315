"""The one function through which the installer runs external programs."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from installer.errors import CommandError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completed:
    """A finished command: its exit code and captured output."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    """What code that runs programs depends on, so tests can hand in a recording double."""

    def __call__(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        ok_codes: Collection[int] = (0,),
    ) -> Completed: ...


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    ok_codes: Collection[int] = (0,),
) -> Completed:
    """Run ``argv`` (no shell) with stdin from /dev/null and output captured.

    Raises CommandError when the program is missing, times out, or exits with a code
    outside ``ok_codes``; the error carries the command line, exit code and output.
    """
    args = [str(a) for a in argv]
    log.debug("running %s", args)
    try:
        proc = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as err:
        raise CommandError(args, "program not found") from err
    except subprocess.TimeoutExpired as err:
        output = _text(err.stdout) + _text(err.stderr)
        raise CommandError(args, f"timed out after {timeout:g} s", output=output) from err
    except OSError as err:
        raise CommandError(args, f"could not start: {err}") from err
    if proc.returncode not in ok_codes:
        raise CommandError(
            args,
            f"exited with code {proc.returncode}",
            returncode=proc.returncode,
            output=proc.stderr + proc.stdout,
        )
    return Completed(tuple(args), proc.returncode, proc.stdout, proc.stderr)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data
