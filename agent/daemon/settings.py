"""Where the daemon keeps things, shared by the daemon and the shim entry.

The environment decides (containerd passes its environment to the shim, which passes
it on to a daemon it starts): ``CONTRAST_RUN_DIR`` (default ``/run/contrast``: the
socket, the pid file, each sandbox's sockets and logs), ``CONTRAST_STATE_DIR``
(default ``/var/lib/contrast``: persisted sandbox state), ``CONTRAST_BACKEND``
(``pod-vm``, the default, or ``local-agent`` with ``CONTRAST_AGENT_SOCKET``: a guest
agent on a host unix socket, for development and tests), ``CONTRAST_DAEMON_SUPERVISED``
(``1``: a service manager restarts the daemon, so the relay must not; see
:mod:`agent.relay`), ``CONTRAST_RELAY_EXIT_IDLE`` (``1``: a supervised relay,
started on demand by a shim as in the DaemonSet, still leaves once no containerd
connection and no sandbox remain; the systemd unit's relay is a service and stays),
``CONTRAST_GC_SECONDS`` (how often the daemon asks containerd whether each sandbox's
container still exists, default 60; ``0``: never, :mod:`agent.sandbox.gc`),
``CONTRAST_LOG_MAX_BYTES`` and ``CONTRAST_LOG_BACKUPS`` (size of
``daemon.log``/``relay.log`` and how many rotated files are kept, when a shim or the
relay started the process detached: :mod:`agent.daemon.logfile`; under systemd the
journal has its own limits).

Sockets in the run directory: ``daemon.sock`` (the daemon: Shim and Task),
``daemon-ns/<namespace>.sock`` (the daemon's Task service per containerd namespace,
dialled only by the relay), ``relay.sock`` (the relay's control service) and
``ns/<namespace>.sock`` (the relay: what containerd dials).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class LogLimits:
    """Size of one log file and how many older ones are kept (both at least 1); used by
    :mod:`agent.daemon.logfile`."""

    max_bytes: int = 4 * 1024 * 1024
    backups: int = 3


SOCKET = "daemon.sock"
PID_FILE = "daemon.pid"
LOCK_FILE = "daemon.lock"
LOG_FILE = "daemon.log"
DAEMON_NS_DIR = "daemon-ns"
RELAY_SOCKET = "relay.sock"
RELAY_PID_FILE = "relay.pid"
RELAY_LOCK_FILE = "relay.lock"
RELAY_LOG_FILE = "relay.log"
NS_DIR = "ns"
BACKENDS = ("pod-vm", "local-agent")


class SettingsError(Exception):
    """An environment setting is invalid; names the variable."""


@dataclass(frozen=True)
class Settings:
    run_dir: Path
    state_dir: Path
    backend: str
    agent_socket: Path | None
    supervised: bool = False
    log_limits: LogLimits = field(default_factory=LogLimits)
    relay_exit_idle: bool = False
    gc_seconds: float = 60.0

    @property
    def socket(self) -> Path:
        return self.run_dir / SOCKET

    @property
    def pid_file(self) -> Path:
        return self.run_dir / PID_FILE

    @property
    def daemon_ns_dir(self) -> Path:
        return self.run_dir / DAEMON_NS_DIR

    @property
    def relay_socket(self) -> Path:
        return self.run_dir / RELAY_SOCKET

    @property
    def relay_pid_file(self) -> Path:
        return self.run_dir / RELAY_PID_FILE

    @property
    def ns_dir(self) -> Path:
        return self.run_dir / NS_DIR


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "")
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise SettingsError(f"{name}={text!r}: expected a positive integer")
    return int(text)


def _flag(env: Mapping[str, str], name: str) -> bool:
    text = env.get(name, "")
    if text not in ("", "0", "1"):
        raise SettingsError(f"{name}={text!r}: expected 0 or 1")
    return text == "1"


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "")
    if not text:
        return default
    if not text.isdigit():
        raise SettingsError(f"{name}={text!r}: expected a whole number of seconds (0: never)")
    return float(text)


def log_limits(env: Mapping[str, str] = os.environ) -> LogLimits:
    """The log file limits in ``env``; raises SettingsError."""
    default = LogLimits()
    return LogLimits(
        _positive(env, "CONTRAST_LOG_MAX_BYTES", default.max_bytes),
        _positive(env, "CONTRAST_LOG_BACKUPS", default.backups),
    )


def from_env(env: Mapping[str, str] = os.environ) -> Settings:
    """The settings in ``env``; raises SettingsError."""
    run_dir = Path(env.get("CONTRAST_RUN_DIR", "/run/contrast"))
    state_dir = Path(env.get("CONTRAST_STATE_DIR", "/var/lib/contrast"))
    for name, path in (("CONTRAST_RUN_DIR", run_dir), ("CONTRAST_STATE_DIR", state_dir)):
        if not path.is_absolute():
            raise SettingsError(f"{name}={path} is not an absolute path")
    backend = env.get("CONTRAST_BACKEND", "pod-vm")
    if backend not in BACKENDS:
        raise SettingsError(f"CONTRAST_BACKEND={backend!r}: expected one of {', '.join(BACKENDS)}")
    socket = env.get("CONTRAST_AGENT_SOCKET")
    if backend == "local-agent" and not socket:
        raise SettingsError("CONTRAST_BACKEND=local-agent needs CONTRAST_AGENT_SOCKET")
    return Settings(
        run_dir,
        state_dir,
        backend,
        Path(socket) if socket else None,
        _flag(env, "CONTRAST_DAEMON_SUPERVISED"),
        log_limits(env),
        _flag(env, "CONTRAST_RELAY_EXIT_IDLE"),
        _seconds(env, "CONTRAST_GC_SECONDS", 60.0),
    )
