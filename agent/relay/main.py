"""``contrast-node-relay``: the long-lived holder of containerd's shim connections.

Start-up: take ``<run dir>/relay.lock`` (one relay per node), listen for every
namespace the daemon serves, serve ``contrast.node.v1.Relay`` on ``relay.sock``,
write ``relay.pid``, tell systemd READY=1. SIGTERM/SIGINT close every containerd
connection (containerd then runs ``delete`` for its tasks, as when a shim dies) and
exit. Unsupervised, it also exits once idle (see :mod:`agent.relay.relay`).

Exit codes: 0 after a signal or when idle, 1 on a start-up failure, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from agent.daemon import settings as daemon_settings
from agent.daemon.lifecycle import InstanceError, remove_pid_file, single_instance, write_pid_file
from agent.daemon.logfile import log_to_file
from agent.daemon.systemd import Notifier, SystemdError, setup_logging
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="contrast-node-relay",
        description="Hold containerd's shim connections to the node daemon across its restarts.",
    )
    parser.add_argument("--debug", action="store_true", help="log at debug level")
    parser.add_argument(
        "--log-file",
        type=Path,
        help="log to this size-capped, rotated file (stdout and stderr too) instead of "
        "stderr (set by the shim or relay that starts us detached)",
    )
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.INFO
    try:
        setup_logging(level, identifier="contrast-node-relay")
        notifier = Notifier()
        config = daemon_settings.from_env()
        with single_instance(config.run_dir, daemon_settings.RELAY_LOCK_FILE, "node relay"):
            if args.log_file is not None:  # only the holder of the lock rotates it
                log_to_file(args.log_file, level, config.log_limits)
            return asyncio.run(serve(config, notifier))
    except (RelayError, InstanceError, SystemdError, daemon_settings.SettingsError, OSError) as err:
        print(f"contrast-node-relay: {err}", file=sys.stderr)
        log.error("start-up failed: %s", err)  # noqa: TRY400 (the message says it all)
        return 1
