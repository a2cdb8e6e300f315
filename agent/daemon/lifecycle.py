"""Process plumbing shared by the node daemon, the relay and the shim entry.

One instance per run directory (an ``flock``), a pid file written atomically, the peer
check of every root-only socket, and the one way a node process is started in the
background (:func:`spawn_detached`: the shim starts the relay and the daemon, the relay
restarts a daemon that died).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from agent.daemon import logfile
from agent.daemon import settings as daemon_settings
from ttrpc import PeerCredentials

# Variables with which systemd describes *its* service to the service's main process.
# containerd (Type=notify) passes its own on to the shims it runs; a node process a shim
# starts is no service: it would notify, and log to the journal, in containerd's name
# (inside the DaemonSet's mount namespace, to sockets that do not even exist there).
SERVICE_MANAGER_ENV = frozenset(
    {
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "JOURNAL_STREAM",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "INVOCATION_ID",
    }
)


class InstanceError(Exception):
    """Another process of the same kind holds the run directory."""


def root_only(peer: PeerCredentials) -> bool:
    """Peers must be root (containerd, the shim entry), or our own uid when we are not."""
    return peer.uid in {0, os.geteuid()}


@contextlib.contextmanager
def single_instance(run_dir: Path, lock_name: str, what: str) -> Iterator[None]:
    """Hold ``lock_name`` in ``run_dir``; InstanceError when another ``what`` holds it."""
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(run_dir / lock_name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise InstanceError(f"another {what} is running on {run_dir}") from err
        yield
    finally:
        os.close(fd)


def lock_held(path: Path, locks: Path = Path("/proc/locks")) -> bool:
    """Somebody holds an ``flock`` on ``path`` (read from ``/proc/locks``, without
    touching the lock: probing it could make a daemon starting that instant fail)."""
    try:
        st = path.stat()
        table = locks.read_text()
    except OSError:
        return False
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == key:
            return True
    return False


def write_pid_file(path: Path) -> None:
    """Our pid into ``path``, atomically."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as out:
        out.write(f"{os.getpid()}\n")
        out.flush()
        os.fsync(out.fileno())
    Path(tmp).chmod(0o644)
    Path(tmp).rename(path)


def remove_pid_file(path: Path) -> None:
    """Remove ``path`` if it still names us (a successor may have replaced it)."""
    with contextlib.suppress(OSError):
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()


def spawn_detached(
    module: str, run_dir: Path, log_name: str, limits: logfile.LogLimits | None = None
) -> subprocess.Popen[bytes]:
    """``python -m module --log-file <run_dir>/<log_name>`` in its own session, cwd
    ``/``, its output appended to that file (rotated first when over ``limits``,
    default: from our environment); the child keeps the file bounded itself
    (:mod:`agent.daemon.logfile`). The caller may reap
    it (the relay does) or exit and leave it to init (the shim entry does). Raises
    OSError, SubprocessError, SettingsError (limits from a bad environment).

    Our environment is passed on without :data:`SERVICE_MANAGER_ENV`: the child is not
    our service manager's service."""
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = run_dir / log_name
    limits = limits if limits is not None else daemon_settings.log_limits()
    with logfile.open_for_child(path, limits) as log:
        return subprocess.Popen(
            [sys.executable, "-m", module, "--log-file", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            cwd="/",
            env={k: v for k, v in os.environ.items() if k not in SERVICE_MANAGER_ENV},
            close_fds=True,
        )
