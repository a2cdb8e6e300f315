"""The shim entry and the daemon as processes: start, delete, the socket's guard,
systemd readiness and watchdog, SIGTERM."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from google.protobuf import any_pb2

from agent.sandbox.state import (
    ContainerRecord,
    ProcessRecord,
    SandboxRecord,
    StateStore,
    Status,
    Stdio,
    VmRecord,
)
from api.containerd.task.v2 import shim_pb2
from api.runtimeoptions.v1 import api_pb2 as runtimeoptions
from tests.integration.shim.node import REPO, connect_as, node_env, notify_socket, stop_daemon


def test_start_runs_the_daemon_once_and_prints_its_address(tmp_path: Path) -> None:
    with node_env() as node:
        bundle = tmp_path / "bundle"
        bundle.mkdir()
        options = any_pb2.Any(
            type_url="runtimeoptions.v1.Options",
            value=runtimeoptions.Options(config_path="/etc/x.toml").SerializeToString(),
        )
        first = node.shim("-id", "c1", "start", cwd=bundle, stdin=options.SerializeToString())
        assert first.returncode == 0, first.stderr
        # containerd 1.6 dials a plain address as an abstract socket: the prefix is needed.
        address = f"unix://{node.run_dir}/ns/default.sock"
        assert first.stdout.decode() == address
        assert (bundle / "address").read_text() == address
        pid = node.daemon_pid()
        assert pid is not None and Path(f"/proc/{pid}").exists()
        for path in (node.socket, node.run_dir / "ns" / "default.sock"):
            mode = path.stat().st_mode
            assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600

        second = node.shim("-id", "c2", "start", cwd=bundle)
        assert second.returncode == 0, second.stderr
        assert node.daemon_pid() == pid  # the same daemon serves every task

        deleted = node.shim("-id", "c1", "-bundle", str(bundle), "delete", cwd=bundle)
        assert deleted.returncode == 0, deleted.stderr
        response = shim_pb2.DeleteResponse.FromString(deleted.stdout)
        assert response.exit_status == 128 + signal.SIGKILL
        assert abs(response.exited_at.seconds - time.time()) < 60

        assert stop_daemon(node) == 0
        assert not (node.run_dir / "daemon.pid").exists()
        assert not node.socket.exists()


def test_start_without_a_task_address_is_refused(tmp_path: Path) -> None:
    with node_env() as node:
        done = node.shim("-id", "c1", "start", cwd=tmp_path, extra_env={"TTRPC_ADDRESS": ""})
        assert done.returncode == 1
        assert b"refused task c1: task c1: no containerd ttrpc address" in done.stderr


def test_delete_without_a_daemon_releases_the_state_itself(tmp_path: Path) -> None:
    """The daemon is gone: delete of a sandbox kills its VM (no orphan QEMU) and drops
    its state; delete of an unknown task still answers."""
    with node_env() as node:
        console = node.root / "sandbox" / "console.log"
        vm = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)", str(console)],
            stdin=subprocess.DEVNULL,
        )
        try:
            init = ProcessRecord("", Stdio(), Status.RUNNING, pid=vm.pid)
            store = StateStore(node.state_dir)
            store.save(
                SandboxRecord(
                    namespace="default",
                    id="pod1",
                    ttrpc_address="/x",
                    config_path="/y",
                    vm=VmRecord("pod-vm", vm.pid, {"console_log": str(console)}),
                    containers=(ContainerRecord("pod1", str(tmp_path), init, is_sandbox=True),),
                )
            )
            done = node.shim("-id", "pod1", "-bundle", str(tmp_path), "delete", cwd=tmp_path)
            assert done.returncode == 0, done.stderr
            assert shim_pb2.DeleteResponse.FromString(done.stdout).exit_status == 137
            assert vm.wait(timeout=10) == -signal.SIGKILL
            assert store.load_all() == ([], [])
        finally:
            vm.kill()
            vm.wait()
        done = node.shim("-id", "gone", "-bundle", str(tmp_path), "delete", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert node.daemon_pid() is None  # delete never starts a daemon


def test_usage_errors(tmp_path: Path) -> None:
    with node_env() as node:
        assert node.shim("start", cwd=tmp_path).returncode == 2
        assert node.shim("-id", "x", cwd=tmp_path).returncode == 2


def test_other_users_are_refused_even_when_the_socket_is_open_to_them() -> None:
    with node_env() as node:
        assert node.shim("-id", "c1", "start", cwd=node.root).returncode == 0
        for folder in (node.root, node.run_dir):
            folder.chmod(0o755)
        node.socket.chmod(0o666)  # a mistake the peer check must survive
        assert connect_as(node.socket, 0) == "accepted"
        assert connect_as(node.socket, 65534) == "refused"


def test_systemd_readiness_watchdog_and_stop(tmp_path: Path) -> None:
    with node_env() as node:
        node.run_dir.mkdir(parents=True)
        notify = notify_socket(node.root / "notify")
        env = {
            **node.env,
            "NOTIFY_SOCKET": str(node.root / "notify"),
            "WATCHDOG_USEC": "200000",
        }
        daemon = subprocess.Popen(
            [sys.executable, "-m", "agent.daemon"],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            ready = notify.recv(4096).decode()
            assert ready.splitlines() == ["READY=1", f"STATUS=serving on {node.socket}"]
            assert node.socket.exists()  # ready means serving
            assert node.daemon_pid() == daemon.pid
            pings = [notify.recv(4096) for _ in range(3)]
            assert pings == [b"WATCHDOG=1"] * 3
            daemon.send_signal(signal.SIGTERM)
            while (message := notify.recv(4096)) == b"WATCHDOG=1":
                pass
            assert message == b"STOPPING=1"
            assert daemon.wait(timeout=10) == 0
        finally:
            daemon.kill()
            daemon.wait()
            notify.close()


def test_second_daemon_on_the_same_node_refuses_to_start() -> None:
    with node_env() as node:
        assert node.shim("-id", "c1", "start", cwd=node.root).returncode == 0
        done = subprocess.run(
            [sys.executable, "-m", "agent.daemon"],
            cwd=REPO, env=node.env, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert done.returncode == 1
        assert f"another node daemon is running on {node.run_dir}" in done.stderr
        assert os.path.exists(f"/proc/{node.daemon_pid()}")
