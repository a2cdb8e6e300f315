"""A stand-in ``systemctl`` for one unit, ``containerd.service``, that runs a real containerd.

The installer restarts containerd through ``systemctl restart`` and asks
``systemctl show --property=ActiveEnterTimestamp --timestamp=unix`` when it last
started. This machine has no systemd, so tests put this module first on ``PATH`` as
``systemctl``: ``restart`` stops the containerd it started before and starts the real
one (``$FAKE_SYSTEMD_CONTAINERD``) on the host root's current config, sandboxed into
the state directory (``devkit.containerd.sandboxed_config``), and returns once its CRI
answers, as systemd does for containerd's ``Type=notify`` unit; ``show`` prints the time
it became active. Every call is appended to ``<state>/calls``.

Environment: ``FAKE_SYSTEMD_STATE`` (a short directory: containerd's sockets live
there), ``FAKE_SYSTEMD_CONFIG`` (the host's config.toml), ``FAKE_SYSTEMD_CONTAINERD``
(a release version of ``devkit.containerd``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

from devkit.containerd import Containerd, release, sandboxed_config

UNIT = "containerd.service"


def _state() -> Path:
    return Path(os.environ["FAKE_SYSTEMD_STATE"])


def pid_of(state: Path) -> int | None:
    try:
        return int((state / "pid").read_text())
    except (OSError, ValueError):
        return None


def socket_of(state: Path) -> Path:
    return state / "c.sock"


def _running(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie nobody reaped has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop(state: Path) -> None:
    pid = pid_of(state)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _running(pid):
        os.kill(pid, signal.SIGKILL)
    (state / "pid").unlink()
    (state / "active").unlink(missing_ok=True)


def restart(state: Path) -> int:
    stop(state)
    chosen = release(os.environ["FAKE_SYSTEMD_CONTAINERD"])
    work = state / "work"
    socket = socket_of(state)
    text = Path(os.environ["FAKE_SYSTEMD_CONFIG"]).read_text()
    config = state / "containerd.toml"
    config.write_text(sandboxed_config(text, work, socket=socket, release=chosen))
    log = state / "containerd.log"
    env = {**os.environ, "PATH": chosen.path(os.environ.get("PATH", "/usr/bin:/bin"))}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [chosen.containerd, "--config", str(config), "--root", str(work / "root"),
             "--state", str(work / "state"), "--address", str(socket)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
    (state / "pid").write_text(str(proc.pid))
    daemon = Containerd(socket, log, chosen)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            print(f"containerd exited {proc.returncode}", file=sys.stderr)
            return 1
        try:
            daemon.cri_status(timeout=2)
            break
        except grpc.RpcError:
            if time.monotonic() > deadline:
                print("containerd's CRI did not answer in 60 s", file=sys.stderr)
                return 1
        time.sleep(0.1)
    (state / "active").write_text(f"{time.time():.6f}")
    return 0


def main(args: list[str]) -> int:
    state = _state()
    with open(state / "calls", "a") as calls:
        calls.write(" ".join(args) + "\n")
    if args[:1] == ["restart"] and args[1:] == [UNIT]:
        return restart(state)
    if args[:1] == ["show"] and args[-1] == UNIT:
        if "--property=LoadState" in args:
            print("loaded")
        elif "--property=ActiveEnterTimestamp" in args:
            active = state / "active"
            print(f"@{active.read_text()}" if active.exists() else "")
        return 0
    print(f"fake systemctl: unsupported call {args}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
