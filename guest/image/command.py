"""The one way the recipe runs external programs."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from guest.image.errors import CommandError

log = logging.getLogger(__name__)


def run(
    args: Sequence[str | Path],
    *,
    timeout: float,
    data: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run ``args`` (no shell), return its stdout+stderr as text.

    stdin is /dev/null unless ``data`` is given. Raises CommandError on a non-zero
    exit or a timeout, with the captured output attached.
    """
    argv = [os.fspath(a) for a in args]
    log.debug("running %s", argv)
    full_env = dict(os.environ) if env is None else {**os.environ, **env}
    try:
        proc = subprocess.run(
            argv,
            input=data,
            stdin=subprocess.DEVNULL if data is None else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            env=full_env,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        out = err.output.decode(errors="replace") if err.output else ""
        raise CommandError(argv, None, out) from err
    except OSError as err:
        raise CommandError(argv, None, str(err)) from err
    output = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        raise CommandError(argv, proc.returncode, output)
    return output
