"""Restarting containerd (or k3s/rke2) through the host's systemd, only when needed."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from installer.errors import CommandError, InstallerError
from installer.host import Host

log = logging.getLogger(__name__)

SYSTEMCTL_TIMEOUT = 30.0
RESTART_TIMEOUT = 300.0


def unit_loaded(host: Host, unit: str) -> bool:
    """Whether systemd knows ``unit`` (a unit file exists for it)."""
    out = host.run(
        ["systemctl", "show", "--property=LoadState", "--value", unit], timeout=SYSTEMCTL_TIMEOUT
    )
    return out.stdout.strip() == "loaded"


def pick_unit(host: Host, candidates: Sequence[str]) -> str:
    """The first of ``candidates`` that exists (k3s vs k3s-agent); raises InstallerError."""
    if len(candidates) == 1:
        return candidates[0]
    for unit in candidates:
        if unit_loaded(host, unit):
            return unit
    raise InstallerError(f"none of the units {', '.join(candidates)} exists on this host")


def active_since(host: Host, unit: str) -> float | None:
    """When ``unit`` last became active (unix seconds); None if never or unknown."""
    try:
        out = host.run(
            [
                "systemctl",
                "show",
                "--property=ActiveEnterTimestamp",
                "--timestamp=unix",
                "--value",
                unit,
            ],
            timeout=SYSTEMCTL_TIMEOUT,
        )
    except CommandError as err:
        # systemd before 251 has no --timestamp=unix; then we cannot tell and restart.
        log.warning("cannot read when %s started (%s); assuming it predates the config", unit, err)
        return None
    value = out.stdout.strip()
    if not value.startswith("@"):
        return None  # empty or "n/a": the unit has not been active since boot
    try:
        return float(value[1:])
    except ValueError:
        log.warning("unexpected ActiveEnterTimestamp %r for %s", value, unit)
        return None


def needs_restart(host: Host, unit: str, config_mtime: float) -> bool:
    """True unless ``unit`` became active after the config was last written.

    A run killed between writing the config and restarting leaves a config newer than
    the running service; the next run sees that here and restarts.
    """
    since = active_since(host, unit)
    if since is None:
        return True
    log.info("%s active since %.3f, config written at %.3f", unit, since, config_mtime)
    return since <= config_mtime


def restart(host: Host, unit: str) -> None:
    """``systemctl restart unit`` on the host; raises CommandError."""
    log.info("restarting %s", unit)
    host.run(["systemctl", "restart", unit], timeout=RESTART_TIMEOUT)
