"""An exec with a terminal and stdin through containerd's Task API, as a user's
``ctr task exec -t`` makes it (and containerd's CRI does for ``kubectl exec -it``):
Exec with ``terminal`` and a stdin FIFO, Start, ResizePty, Wait, then Delete of the exec
while containerd still holds its end of the stdin FIFO open (the user never closed it).

``ctr`` needs a terminal on its own stdin: it runs on a pseudo-terminal we hold, we type
``script`` into it and read what comes back until ``ctr`` has exited.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TtyExec:
    exit_code: int
    output: bytes  # what the terminal showed: the echo of the input and the output


def tty_exec(
    socket: Path,
    namespace: str,
    container_id: str,
    exec_id: str,
    script: bytes,
    *,
    fifo_dir: Path,
    timeout: float = 300,
) -> TtyExec:
    """``ctr task exec -t --exec-id exec_id container_id sh`` with ``script`` typed in;
    raises AssertionError (with what the terminal showed) when it has not ended within
    ``timeout`` seconds."""
    fifo_dir.mkdir(parents=True, exist_ok=True)
    argv = ["ctr", "--address", str(socket), "--namespace", namespace, "task", "exec", "--tty",
            "--exec-id", exec_id, "--fifo-dir", str(fifo_dir), container_id, "sh"]  # fmt: skip
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
    finally:
        os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        os.write(master, script)
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([master], [], [], min(left, 1.0))
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError as err:  # EIO: ctr has exited, the last slave fd is gone
                if err.errno != errno.EIO:
                    raise
                break
            if not data:
                break
            output += data
        try:
            code = proc.wait(timeout=max(deadline - time.monotonic(), 1.0))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(
                f"ctr task exec -t {container_id} {exec_id} still running after {timeout:.0f} s;"
                f" the terminal showed {bytes(output)!r}"
            ) from None
    finally:
        with contextlib.suppress(OSError):
            os.close(master)
    return TtyExec(code, bytes(output))
