"""kubectl port-forward's path into a pod-VM (agent.network.portforward) on real netns
and iptables, without a VM: the "VM" is a server in the topology's peer netns, dialled
from the node netns as the daemon dials the pod's address."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import AsyncIterator

import pytest

from agent.network import netns, portforward
from agent.network.errors import NetworkError
from devkit.topology import PEER_IP, Topology
from tests.conftest import require_programs


def _listen(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((PEER_IP, port))
    sock.listen()
    sock.setblocking(False)
    return sock


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    port = writer.get_extra_info("sockname")[1]
    data = await reader.read(100)
    writer.write(b"vm port %d says: %s" % (port, data))
    await writer.drain()
    writer.close()


@pytest.fixture
async def vm_servers(topo: Topology) -> AsyncIterator[None]:
    servers = []
    for port in (8080, 8081):
        sock = await netns.run_async(topo.path(topo.peer), lambda p=port: _listen(p))  # type: ignore[misc]
        servers.append(await asyncio.start_server(_answer, sock=sock))
    yield
    for server in servers:
        server.close()


def client(port: int, payload: bytes) -> bytes:
    """What containerd does: connect to localhost:<port> inside the pod's netns."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(1000):
            chunks.append(chunk)
        return b"".join(chunks)


def rules(topo: Topology) -> list[str]:
    out = subprocess.run(
        ["ip", "netns", "exec", topo.pod, "iptables", "-w", "-t", "nat", "-S", "OUTPUT"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    return [line for line in out.splitlines() if "REDIRECT" in line]


async def test_localhost_in_the_pod_netns_leads_to_the_pods_address(
    topo: Topology, vm_servers: None
) -> None:
    require_programs("iptables", "nsenter")
    pod = topo.path(topo.pod)

    async def dial(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = await netns.run_async(
            topo.path(topo.node), lambda: socket.create_connection((PEER_IP, port), timeout=10)
        )
        sock.setblocking(False)
        return await asyncio.open_connection(sock=sock)

    async def ask(port: int, payload: bytes) -> bytes:
        return await netns.run_async(pod, lambda: client(port, payload))

    forward = await portforward.start(pod, "pod1", dial)
    try:
        # Each connection reaches the port it was addressed to.
        assert await ask(8080, b"ping") == b"vm port 8080 says: ping"
        assert await ask(8081, b"pong") == b"vm port 8081 says: pong"
        # Nothing on that port in the VM: the forwarded connection just ends.
        assert await ask(8082, b"x") == b""
        # A restarted daemon sets it up again: one rule, still working.
        await forward.close()
        forward = await portforward.start(pod, "pod1", dial)
        assert len(rules(topo)) == 1, rules(topo)
        assert await ask(8080, b"again") == b"vm port 8080 says: again"
    finally:
        await forward.close()
    with pytest.raises(ConnectionRefusedError):
        await ask(8080, b"closed")


async def test_no_iptables_is_a_network_error(
    topo: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(portforward, "IPTABLES", "/nonexistent/iptables")
    with pytest.raises(NetworkError, match=r"port-forward: nsenter .* exited"):
        await portforward.start(topo.path(topo.pod), "pod1", portforward.dial_to(PEER_IP))
