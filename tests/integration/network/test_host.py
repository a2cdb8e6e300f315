"""Host side in a real pod netns: tap + tc mirror, messages read from the netns,
teardown, refusal to touch somebody else's ingress qdisc, no-netns pods."""

import asyncio
import logging
import os
import subprocess
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from agent.network import mirror, netns, pod
from agent.network.errors import NetnsError, NetworkError
from api.kata import types_pb2
from devkit.topology import (
    GATEWAY,
    MTU,
    POD_IP,
    POD_MAC,
    STATIC_NEIGHBOR,
    Topology,
    ip,
)


def qdiscs(topo: Topology, dev: str) -> list[str]:
    def read() -> list[str]:
        with IPRoute() as ipr:
            indexes = ipr.link_lookup(ifname=dev)
            return mirror.qdisc_kinds(ipr, indexes[0]) if indexes else []

    return netns.run(topo.path(topo.pod), read)


def links(topo: Topology) -> list[str]:
    out = ip("-n", topo.pod, "-o", "link")
    return [line.split(": ")[1].split("@")[0] for line in out.splitlines()]


async def test_setup_reads_netns_mirrors_and_tears_down(topo: Topology) -> None:
    own_netns = os.readlink("/proc/thread-self/ns/net")
    result = await pod.setup(topo.path(topo.pod), "sb-host")
    assert result is not None
    network, fd = result
    try:
        # The daemon's own thread never moved into the pod's netns.
        assert os.readlink("/proc/thread-self/ns/net") == own_netns
        assert network.mac == POD_MAC
        assert network.mtu == MTU
        assert network.nic().mac == POD_MAC and network.nic().mtu == MTU
        (iface,) = network.interfaces
        assert (iface.name, iface.device, iface.hwAddr, iface.mtu, iface.type) == (
            "eth0", "eth0", POD_MAC, MTU, "veth",
        )  # fmt: skip
        assert [(a.family, a.address, a.mask) for a in iface.IPAddresses] == [
            (types_pb2.v4, POD_IP, "24")
        ]
        # The connected /24 is the kernel's own route: left out, the guest makes it again.
        assert [(r.dest, r.gateway, r.device, r.family) for r in network.routes] == [
            ("", GATEWAY, "eth0", types_pb2.v4)
        ]
        (neigh,) = network.neighbors
        assert (neigh.toIPAddress.address, neigh.lladdr, neigh.device) == (
            STATIC_NEIGHBOR[0], STATIC_NEIGHBOR[1], "eth0",
        )  # fmt: skip
        assert len(network.update_routes_request().routes.Routes) == 1

        assert pod.TAP_NAME in links(topo)
        tap_mtu = ip("-n", topo.pod, "-o", "link", "show", pod.TAP_NAME).split(" mtu ")[1]
        assert tap_mtu.split()[0] == str(MTU)
        assert "ingress" in qdiscs(topo, "eth0")
        assert "ingress" in qdiscs(topo, pod.TAP_NAME)
        tc = subprocess.run(
            ["tc", "-n", topo.pod, "filter", "show", "dev", "eth0", "ingress"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout  # fmt: skip
        assert f"Egress Redirect to device {pod.TAP_NAME}" in tc
    finally:
        await pod.teardown(network, "sb-host")
        os.close(fd)
    assert pod.TAP_NAME not in links(topo)
    assert "ingress" not in qdiscs(topo, "eth0")
    await pod.teardown(network, "sb-host")  # again: nothing left, no error


async def test_netns_of_a_process(topo: Topology) -> None:
    # CRI hands a path like /proc/<pid>/ns/net as often as a /var/run/netns one.
    holder = subprocess.Popen(["ip", "netns", "exec", topo.pod, "sleep", "60"])
    try:
        path = Path(f"/proc/{holder.pid}/ns/net")
        for _ in range(100):  # until ip has entered the netns and exec'd sleep
            if path.stat().st_ino == topo.path(topo.pod).stat().st_ino:
                break
            await asyncio.sleep(0.05)
        else:  # never touch the host's own netns
            raise AssertionError(f"pid {holder.pid} never entered {topo.pod}")
        result = await pod.setup(path, "sb-proc")
        assert result is not None
        network, fd = result
        os.close(fd)
        assert network.mac == POD_MAC
        await pod.teardown_netns(path, "sb-proc")
        assert "ingress" not in qdiscs(topo, "eth0")
    finally:
        holder.kill()
        holder.wait()


async def test_foreign_ingress_qdisc_is_refused_and_kept(topo: Topology) -> None:
    subprocess.run(["tc", "-n", topo.pod, "qdisc", "add", "dev", "eth0", "ingress"],
                   check=True, timeout=10)  # fmt: skip
    with pytest.raises(NetworkError, match="ingress qdisc"):
        await pod.setup(topo.path(topo.pod), "sb-foreign")
    assert pod.TAP_NAME not in links(topo)  # nothing of ours left behind
    assert "ingress" in qdiscs(topo, "eth0")
    network = pod.PodNetwork(topo.path(topo.pod), "eth0", pod.TAP_NAME, POD_MAC, MTU, (), (), ())
    await pod.teardown(network, "sb-foreign")
    assert "ingress" in qdiscs(topo, "eth0")  # not ours: teardown leaves it


async def test_missing_interface_is_named(topo: Topology) -> None:
    with pytest.raises(NetworkError, match="no interface 'net1'"):
        await pod.setup(topo.path(topo.pod), "sb-x", interface="net1")


async def test_pod_without_netns_gets_no_network(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assert await pod.setup(None, "sb-nonet") is None
    assert "sandbox sb-nonet: no network namespace path" in caplog.text


async def test_bad_netns_paths(tmp_path: Path) -> None:
    with pytest.raises(NetnsError, match="cannot open netns"):
        await pod.setup(tmp_path / "missing", "sb-y")
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(NetnsError, match="not a network namespace"):
        await pod.setup(plain, "sb-y")
    with pytest.raises(NetnsError, match="not absolute"):
        await pod.setup(Path("relative/ns"), "sb-y")
