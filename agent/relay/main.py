"""``contrast-node-relay``: the long-lived holder of containerd's shim connections.

Start-up: take ``<run dir>/relay.lock`` (one relay per node), listen for every
namespace the daemon serves, serve ``contrast.node.v1.Relay`` on ``relay.sock``,
write ``relay.pid``, tell systemd READY=1. SIGTERM/SIGINT close every containerd
connection (containerd then runs ``delete`` for its tasks, as when a shim dies) and
exit. Unsupervised, it also exits once idle (see :mod:`agent.relay.relay`).

The relay works in its run directory (its cwd) by relative paths, and keeps the state
directory open (:mod:`agent.relay.relay`): started by a shim in a DaemonSet's daemon
container, it outlives the mount namespace it started in. When containerd removes that
container (the pod replaced by a rollout, or a dead container collected), it deletes
the container's root, and the kernel detaches, in our namespace too, every mount
whose mount point it deletes: the host's ``/run/contrast`` and ``/var/lib/contrast``
bound there among them. Absolute paths then lead nowhere (the next daemon's sockets
were out of reach: a rollout hung every held call), while a working directory and an
open directory keep their mount and go on reaching the host's directories.

Exit codes: 0 after a signal or when idle, 1 on a start-up failure, 2 on bad usage.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from pathlib import Path

from agent.daemon import entry
from agent.daemon import settings as daemon_settings
from agent.daemon.lifecycle import remove_pid_file, write_pid_file
from agent.daemon.systemd import Notifier
from agent.relay.relay import Relay, RelayError

log = logging.getLogger("agent.relay")


def pinned(config: daemon_settings.Settings) -> daemon_settings.Settings:
    """``config`` with the run directory made our working directory and ``.``, and our
    log file there (``--log-file``) named relative to it; raises RelayError when we
    cannot enter it."""
    try:
        os.chdir(config.run_dir)
    except OSError as err:
        raise RelayError(f"cannot enter the run directory {config.run_dir}: {err}") from err
    run_dir = config.run_dir
    for handler in logging.getLogger().handlers:
        # Our log file in the run directory (--log-file): rotated and reopened by name
        # from now on, relative to the run directory, not by its absolute path.
        if isinstance(handler, logging.FileHandler):
            path = Path(handler.baseFilename)
            if path.parent == run_dir:
                handler.baseFilename = path.name
    return dataclasses.replace(config, run_dir=Path())


async def serve(config: daemon_settings.Settings, notifier: Notifier) -> int:
    """Relay until a signal, or until idle; raises RelayError at start-up."""
    where = config
    config = pinned(config)
    relay = Relay(config, public_run_dir=where.run_dir)
    await relay.start()
    write_pid_file(config.relay_pid_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    notifier.notify("READY=1", f"STATUS=relaying {where.ns_dir} to {where.daemon_ns_dir}")
    log.info("relaying %s to %s", where.ns_dir, where.daemon_ns_dir)
    background = [
        asyncio.create_task(notifier.watchdog()),
        asyncio.create_task(relay.watch_idle()),
    ]
    stopped = asyncio.create_task(stop.wait())
    idle = asyncio.create_task(relay.idle.wait())
    try:
        await asyncio.wait([stopped, idle], return_when=asyncio.FIRST_COMPLETED)
    finally:
        notifier.notify("STOPPING=1")
        for task in (*background, stopped, idle):
            task.cancel()
        for task in (*background, stopped, idle):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        remove_pid_file(config.relay_pid_file)
        await relay.close()
    return 0


PROGRAM = entry.Program(
    name="contrast-node-relay",
    description="Hold containerd's shim connections to the node daemon across its restarts.",
    lock_file=daemon_settings.RELAY_LOCK_FILE,
    what="node relay",
    errors=(RelayError,),
)


def main(argv: list[str] | None = None) -> int:
    return entry.run(PROGRAM, serve, argv)
