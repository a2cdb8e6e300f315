"""Readiness, watchdog and journal logging under systemd (``Type=notify``).

Only when systemd says so: ``NOTIFY_SOCKET`` for notifications, ``WATCHDOG_USEC``
(and ``WATCHDOG_PID``, when set, naming us) for the watchdog, ``JOURNAL_STREAM`` for
the journal. Elsewhere none of this runs and logs go to stderr (started detached: to a
size-capped file, :mod:`agent.daemon.logfile`). Under systemd,
systemd-python (``pip install contrast-node[systemd]``) is required.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from agent.daemon.logfile import FORMAT


class SystemdError(Exception):
    """systemd integration was asked for but is not available."""


def _module(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise SystemdError(
            f"running under systemd needs systemd-python ({name}): "
            "pip install 'contrast-node[systemd]'"
        ) from err


class Notifier:
    """sd_notify(3) through systemd-python; does nothing without ``NOTIFY_SOCKET``."""

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self._daemon = _module("systemd.daemon") if self.enabled else None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        ours = not pid or pid == str(os.getpid())
        self.watchdog_seconds = int(usec) / 1e6 if usec.isdigit() and ours and self.enabled else 0.0

    def notify(self, *states: str) -> None:
        if self._daemon is not None:
            self._daemon.notify("\n".join(states))

    async def watchdog(self) -> None:
        """Ping the watchdog at half its interval until cancelled (no-op without one)."""
        if not self.watchdog_seconds:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_seconds / 2)


def setup_logging(
    level: int, env: Mapping[str, str] = os.environ, identifier: str = "contrast-node-daemon"
) -> None:
    """The journal (structured fields, ``identifier`` as SYSLOG_IDENTIFIER) under
    systemd, else stderr."""
    root = logging.getLogger()
    root.setLevel(level)
    if env.get("JOURNAL_STREAM"):
        journal = _module("systemd.journal")
        handler: logging.Handler = journal.JournalHandler(SYSLOG_IDENTIFIER=identifier)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
