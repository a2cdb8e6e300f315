"""The whole data path without QEMU: the pod netns's tap is wired by a user-space relay
to a tap in a "guest" netns (the VM's virtio-net stand-in, with the pod's MAC), the
guest side is configured by guest.agent.netconfig from the host's messages, and HTTP
flows both ways between that guest and a peer namespace on the pod network."""

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from agent.network import netns, pod
from agent.network.tap import open_tap
from devkit.topology import (
    GATEWAY,
    MTU,
    PEER_IP,
    POD_IP,
    POD_MAC,
    STATIC_NEIGHBOR,
    Topology,
    add_netns,
    delete_netns,
    in_ns,
    ip,
)
from guest.agent import netconfig
from tests.integration.network.relay import Relay, fetch_argv, server_argv


@contextmanager
def server(ns: str, host: str, port: int, token: str) -> Iterator[None]:
    proc = subprocess.Popen(
        in_ns(ns, server_argv(host, port, token)), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == "listening\n", proc.stderr.read() if proc.stderr else line
        yield
    finally:
        proc.kill()
        proc.wait(10)


def fetch(ns: str, url: str) -> str:
    result = subprocess.run(
        in_ns(ns, fetch_argv(url)), stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


async def test_guest_behind_tap_talks_http_both_ways(topo: Topology) -> None:
    guest = topo.pod.replace("cpod", "cguest")
    add_netns(guest)
    result = await pod.setup(topo.path(topo.pod), "sb-data")
    assert result is not None
    network, pod_fd = result
    guest_fd = netns.run(topo.path(guest), lambda: open_tap("ens3"))
    try:
        ip("-n", guest, "link", "set", "ens3", "address", POD_MAC)  # what QEMU's mac= does
        with Relay(pod_fd, guest_fd) as relay:
            gpath = topo.path(guest)
            (iface,) = network.interfaces
            shown = netns.run(gpath, lambda: netconfig.update_interface(iface))
            assert (shown.name, shown.mtu, shown.hwAddr) == ("eth0", MTU, POD_MAC)
            assert (POD_IP, "24") in [(a.address, a.mask) for a in shown.IPAddresses]
            routes = netns.run(gpath, lambda: netconfig.update_routes(network.routes))
            assert ("", GATEWAY, "eth0") in [(r.dest, r.gateway, r.device) for r in routes]
            netns.run(gpath, lambda: netconfig.add_arp_neighbors(network.neighbors))
            neigh = ip("-n", guest, "neigh", "show", STATIC_NEIGHBOR[0])
            assert STATIC_NEIGHBOR[1] in neigh and "PERMANENT" in neigh
            listed = netns.run(gpath, netconfig.list_interfaces)
            assert {i.name for i in listed} == {"lo", "eth0"}

            # Guest -> peer: the server sees the pod's address as the source.
            with server(topo.peer, PEER_IP, 8080, "peer"):
                assert fetch(guest, f"http://{PEER_IP}:8080/") == f"peer {POD_IP}"
            # Peer -> guest: a listener on the pod's address answers from the guest.
            with server(guest, POD_IP, 8081, "guest"):
                assert fetch(topo.peer, f"http://{POD_IP}:8081/") == f"guest {PEER_IP}"
            assert relay.frames > 0
    finally:
        os.close(guest_fd)
        delete_netns(guest)
        await pod.teardown(network, "sb-data")
        os.close(pod_fd)
    assert pod.TAP_NAME not in ip("-n", topo.pod, "link")
    tc = subprocess.run(["tc", "-n", topo.pod, "qdisc", "show", "dev", "eth0"],
                        capture_output=True, text=True, check=True, timeout=10).stdout  # fmt: skip
    assert "ingress" not in tc
