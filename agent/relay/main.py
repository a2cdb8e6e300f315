"""``contrast-node-relay``: the long-lived holder of containerd's shim connections.

Start-up: take ``<run dir>/relay.lock`` (one relay per node), listen for every
namespace the daemon serves, serve ``contrast.node.v1.Relay`` on ``relay.sock``,
write ``relay.pid``, tell systemd READY=1. SIGTERM/SIGINT close every containerd
connection (containerd then runs ``delete`` for its tasks, as when a shim dies) and
exit. Unsupervised, it also exits once idle (see :mod:`agent.relay.relay`).

Exit codes: 0 after a signal or when idle, 1 on a start-up failure, 2 on bad usage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from agent.daemon import entry
from agent.daemon import settings as daemon_settings
from agent.daemon.lifecycle import remove_pid_file, write_pid_file
from agent.daemon.systemd import Notifier
from agent.relay.relay import Relay, RelayError

log = logging.getLogger("agent.relay")


async def serve(config: daemon_settings.Settings, notifier: Notifier) -> int:
    """Relay until a signal, or until idle; raises RelayError at start-up."""
    relay = Relay(config)
    await relay.start()
    write_pid_file(config.relay_pid_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    notifier.notify("READY=1", f"STATUS=relaying {config.ns_dir} to {config.daemon_ns_dir}")
    log.info("relaying %s to %s", config.ns_dir, config.daemon_ns_dir)
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
