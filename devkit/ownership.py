"""Who owns a helper process or network namespace, and the sweep that removes what a
dead owner left behind.

A test run killed with SIGKILL (or a timeout) cannot clean up: its QEMUs, node daemon,
docker-registry, containerd and netns outlive it. Everything the development kit starts
therefore names its owner, the process running the kit (a pytest session, a demo run),
by a token ``<pid>-<start time>`` (the start time, in clock ticks since boot, tells a
reused pid apart):

- processes: ``claim()`` puts the token into ``os.environ`` under ``MARKER``, so every
  program started afterwards inherits it, including QEMUs started by a daemon started by
  a shim started by containerd;
- network namespaces: ``record_netns`` writes the owner's token to ``NETNS/<name>``
  before the namespace exists.

``sweep()`` kills the marked processes and deletes the recorded namespaces whose owner
no longer runs, and nothing of an owner that does: other sessions run concurrently.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devkit.command import run
from devkit.errors import CommandFailed

log = logging.getLogger(__name__)

MARKER = "CONTRAST_DEVKIT_OWNER"
STATE = Path("/run/contrast-devkit")
# One empty file per claimed owner: a process that owns things is never swept itself,
# even when its own environment carries a dead owner's marker it inherited.
OWNERS = STATE / "owners"
NETNS = STATE / "netns"
PROC = Path("/proc")
RUN_NETNS = Path("/var/run/netns")


def token_of(pid: int) -> str | None:
    """``<pid>-<start time>`` of a running process, None when there is no such process."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 22 (starttime); the command name in parentheses may contain spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    return f"{pid}-{fields[19]}"


def alive(token: str) -> bool:
    """Whether the process the token names still runs (the same one, not a reused pid)."""
    pid, _, _start = token.partition("-")
    return pid.isdigit() and token_of(int(pid)) == token


def claim(*, force: bool = False) -> str:
    """This process's owner token, set in os.environ so that children inherit it.

    An inherited marker of a live owner is kept (the demo run by a test belongs to the
    test's session) unless ``force``: a pytest session owns what it starts.
    """
    current = os.environ.get(MARKER)
    if current is not None and not force and alive(current):
        return current
    own = token_of(os.getpid())
    assert own is not None
    try:
        OWNERS.mkdir(parents=True, exist_ok=True)
        (OWNERS / own).touch()
    except PermissionError:
        # Not root (/run is root's): what we start still carries the marker; only the
        # guard that keeps a live owner with an inherited dead marker is lost.
        log.debug("cannot record owner %s under %s (not root)", own, OWNERS)
    os.environ[MARKER] = own
    return own


def release(token: str) -> None:
    """The owner ``token`` has cleaned up and ends: forget its claim."""
    (OWNERS / token).unlink(missing_ok=True)


def record_netns(name: str, owner: str | None = None) -> None:
    """Record that ``owner`` (default: this process's owner) creates the netns ``name``."""
    NETNS.mkdir(parents=True, exist_ok=True)
    (NETNS / name).write_text(owner or claim())


def forget_netns(name: str) -> None:
    (NETNS / name).unlink(missing_ok=True)


def marker_of(pid: int) -> str | None:
    """The owner marker in a process's initial environment, if any."""
    try:
        environ = (PROC / str(pid) / "environ").read_bytes()
    except OSError:  # gone, or a kernel thread
        return None
    prefix = MARKER.encode() + b"="
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


@dataclass(frozen=True)
class Swept:
    """What a sweep removed: ``"<pid> <command line>"`` per process, netns names."""

    processes: tuple[str, ...]
    netns: tuple[str, ...]


def sweep(timeout: float = 10.0) -> Swept:
    """Kill the processes and delete the netns whose recorded owner no longer runs."""
    live_owners = _live_owners()
    protected = set(_ancestors(os.getpid()))
    killed: list[str] = []
    for pid in _pids():
        if pid in protected:
            continue
        marker = marker_of(pid)
        if marker is None or alive(marker) or token_of(pid) in live_owners:
            continue
        with _pidfd(pid, marker) as fd:
            if fd is None:
                continue
            command = _command_line(pid)
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            _wait_exit(fd, timeout)
            killed.append(f"{pid} {command}")
            log.warning("killed %s %s: owner %s no longer runs", pid, command, marker)
    removed: list[str] = []
    for record in sorted(NETNS.glob("*")) if NETNS.is_dir() else []:
        owner = record.read_text().strip()
        if alive(owner):
            continue
        if (RUN_NETNS / record.name).exists():
            try:
                run(["ip", "netns", "delete", record.name], timeout=10)
            except CommandFailed as err:
                log.warning("cannot delete orphaned netns %s: %s", record.name, err)
                continue
        record.unlink(missing_ok=True)
        removed.append(record.name)
        log.warning("deleted netns %s: owner %s no longer runs", record.name, owner)
    return Swept(tuple(killed), tuple(removed))


def _live_owners() -> set[str]:
    live = set()
    for path in OWNERS.glob("*") if OWNERS.is_dir() else []:
        if alive(path.name):
            live.add(path.name)
        else:
            path.unlink(missing_ok=True)
    return live


def _pids() -> Iterator[int]:
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def _ancestors(pid: int) -> Iterator[int]:
    while pid > 0:
        yield pid
        try:
            stat = (PROC / str(pid) / "stat").read_text()
        except OSError:
            return
        pid = int(stat[stat.rindex(")") + 2 :].split()[1])


@contextlib.contextmanager
def _pidfd(pid: int, marker: str) -> Iterator[int | None]:
    """A pidfd for ``pid`` if it is still the marked process (no signal to a reused pid)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        yield None
        return
    try:
        yield fd if marker_of(pid) == marker else None
    finally:
        os.close(fd)


def _command_line(pid: int) -> str:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:200]


def _wait_exit(fd: int, timeout: float) -> None:
    # A pidfd becomes readable when its process exits (reaped or not).
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while time.monotonic() < deadline and not poller.poll(100):
        pass
