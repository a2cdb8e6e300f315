"""The one function that runs the secure mount's programs (cryptsetup, mkfs.ext4, mount).

In the guest it runs inside the agent's process, which reaps every child itself
(:mod:`guest.agent.children`), so programs are started with its ``spawn`` and waited
for through its :class:`~guest.agent.children.Reaper`, never with ``subprocess``.
Secrets go on stdin, through a pipe filled before the program starts: never on the
command line, in a file or in a log line. No shell, an explicit timeout, output
captured and attached to the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Sequence

from guest.agent.children import Reaper, Stdio, spawn
from guest.agent.errors import AgentError
from guest.securemount.errors import StepError

log = logging.getLogger(__name__)

# No udev in the guest: libdevmapper creates /dev/mapper nodes itself (as the initrd does).
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DM_DISABLE_UDEV": "1", "LC_ALL": "C"}
MAX_OUTPUT = 4000


async def run(
    reaper: Reaper,
    args: Sequence[str],
    *,
    device: str,
    step: str,
    timeout: float,
    secret: bytes | bytearray | None = None,
    ok: tuple[int, ...] = (0,),
) -> tuple[int, str]:
    """Run ``args`` to completion; return (exit code, stdout+stderr).

    ``secret`` is written to the program's stdin (a pipe; at most the pipe's capacity)
    and the pipe closed; without it stdin is /dev/null. Raises StepError naming
    ``device`` and ``step`` (with the command line, never the secret) when the program
    cannot start, exits with a code not in ``ok`` or exceeds ``timeout`` seconds.
    """
    capture = os.memfd_create("securemount-output", os.MFD_CLOEXEC)
    stdin = None
    try:
        if secret is not None:
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            stdin = read_end
            os.set_blocking(write_end, False)  # too big a secret fails instead of hanging
            try:
                if os.write(write_end, secret) != len(secret):
                    raise StepError(device, step, "the key did not fit into the pipe")
            except BlockingIOError as err:
                raise StepError(device, step, "the key did not fit into the pipe") from err
            finally:
                os.close(write_end)
        try:
            pid = spawn(args, Stdio(stdin, capture, capture), env=ENV)
        except AgentError as err:
            raise StepError(device, step, str(err)) from err
        exited = reaper.watch(pid)
        if stdin is not None:
            os.close(stdin)
            stdin = None
        try:
            code: int | None = await asyncio.wait_for(asyncio.shield(exited), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            await exited
            code = None
        output = _read_all(capture)
    finally:
        os.close(capture)
        if stdin is not None:
            os.close(stdin)
    command = " ".join(args)
    if code is None:
        raise StepError(device, step, f"{command} timed out after {timeout:.0f} s: {output}")
    if code not in ok:
        raise StepError(device, step, f"{command} exited with status {code}: {output}")
    log.debug("%s: %s: %s exited %d", device, step, command, code)
    return code, output


def _read_all(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    text = b"".join(chunks).decode(errors="replace").strip()
    return text if len(text) <= MAX_OUTPUT else "..." + text[-MAX_OUTPUT:]
