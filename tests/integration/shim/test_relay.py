"""The node relay as the shim entry starts it: containerd's socket refuses other users
like the daemon's, and a relay started anew (after the old one was SIGKILLed) serves
every namespace the daemon serves without being told."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from api.containerd.task.v2 import shim_pb2
from shim.task import SERVICE
from tests.integration.shim.node import REPO, connect_as, node_env, relay_pid
from tests.integration.shim.test_daemon_restart import wait_gone
from ttrpc import Client, NotFound, ServiceStub


def test_containerds_socket_refuses_other_users() -> None:
    with node_env() as node:
        assert node.shim("-id", "c1", "start", cwd=node.root).returncode == 0
        socket = node.run_dir / "ns" / "default.sock"
        assert socket.stat().st_mode & 0o777 == 0o600
        for folder in (node.root, node.run_dir, socket.parent):
            folder.chmod(0o755)
        socket.chmod(0o666)  # a mistake the peer check must survive
        assert connect_as(socket, 0) == "accepted"
        assert connect_as(socket, 65534) == "refused"


async def state_through(socket: Path) -> str:
    async with await Client.connect_unix(socket) as client:
        with pytest.raises(NotFound) as raised:
            await ServiceStub(client, SERVICE).State(shim_pb2.StateRequest(id="nope"))
    return str(raised.value)


def test_a_new_relay_serves_the_daemons_namespaces() -> None:
    with node_env() as node:
        for namespace in ("default", "k8s.io"):
            # The last -namespace wins (Go's flag package and ours).
            started = node.shim("-namespace", namespace, "-id", "c1", "start", cwd=node.root)
            assert started.returncode == 0, started.stderr
            assert started.stdout.decode().endswith(f"/ns/{namespace}.sock")
        old = relay_pid(node)
        assert old is not None
        os.kill(old, signal.SIGKILL)
        wait_gone(old)
        relay = subprocess.Popen(
            [sys.executable, "-m", "agent.relay"],
            cwd=REPO, env=node.env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while relay_pid(node) != relay.pid and time.monotonic() < deadline:
                time.sleep(0.05)
            assert relay_pid(node) == relay.pid
            for namespace in ("default", "k8s.io"):
                message = asyncio.run(state_through(node.run_dir / "ns" / f"{namespace}.sock"))
                assert f"in namespace {namespace}" in message  # the daemon answered
            relay.send_signal(signal.SIGTERM)
            assert relay.wait(timeout=10) == 0
            assert list((node.run_dir / "ns").iterdir()) == []
            assert not (node.run_dir / "relay.pid").exists()
        finally:
            relay.kill()
            relay.wait()
