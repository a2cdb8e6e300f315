"""Fixtures shared by the shim's integration tests."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_programs
from tests.integration.shim.node import Node, guest_agent_on_host, node_env
from tests.integration.shim.podvm import qemus_under
from tests.unit.shim.sinks import socket_dir


@pytest.fixture
def node_with_agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    """A node whose daemon runs sandboxes on the real guest agent, served on the host."""
    require_programs("containerd", "ctr")
    with node_env("local-agent") as node:
        agent_socket = node.root / "agent.sock"
        node.env["CONTRAST_AGENT_SOCKET"] = str(agent_socket)
        # containerd passes its environment on to the shim, which passes it to the daemon.
        for key, value in node.env.items():
            if key != "TTRPC_ADDRESS":
                monkeypatch.setenv(key, value)
        with guest_agent_on_host(agent_socket):
            yield node


@pytest.fixture
def sockets() -> Iterator[Path]:
    """A short directory (unix socket paths are limited to 107 bytes). A test that fails
    while its pod-VM runs leaves the VM to the fixture, which kills it: its QEMU's
    command line names a path under the folder."""
    with socket_dir() as folder:
        yield folder
        for line in qemus_under(folder):
            pid = int(line.split()[0])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
