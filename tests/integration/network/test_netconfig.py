"""guest.agent.netconfig against a real kernel, in a netns standing in for the guest:
route order, replace semantics, neighbours, and errors that name what was wrong."""

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.network import netns
from api.kata import types_pb2
from devkit.topology import add_netns, delete_netns, ip
from guest.agent import netconfig

MAC = "02:00:0a:32:00:05"


@pytest.fixture
def guest() -> Iterator[tuple[str, Path]]:
    name = f"cnc-{secrets.token_hex(3)}"
    add_netns(name)
    try:
        # The "NIC" the host's message describes (found by MAC), and its link partner.
        ip("-n", name, "link", "add", "ens3", "address", MAC, "type", "veth", "peer", "name", "x")
        ip("-n", name, "link", "set", "x", "up")
        yield name, Path("/var/run/netns") / name
    finally:
        delete_netns(name)


def interface(*addresses: tuple[str, str]) -> types_pb2.Interface:
    return types_pb2.Interface(
        name="eth0", device="eth0", hwAddr=MAC.upper(), mtu=1450,
        IPAddresses=[types_pb2.IPAddress(address=a, mask=m) for a, m in addresses],
    )  # fmt: skip


def routes_of(ns: str) -> list[str]:
    return [" ".join(line.split()) for line in ip("-n", ns, "route", "show").splitlines()]


def test_interface_routes_and_replacement(guest: tuple[str, Path]) -> None:
    name, path = guest
    shown = netns.run(path, lambda: netconfig.update_interface(interface(("10.50.0.5", "24"))))
    assert (shown.name, shown.mtu, shown.hwAddr) == ("eth0", 1450, MAC)
    assert "<BROADCAST,MULTICAST,UP" in ip("-n", name, "-o", "link", "show", "eth0")
    assert "<LOOPBACK,UP" in ip("-n", name, "-o", "link", "show", "lo")
    # The gateway is only reachable through the link route that comes after it in the
    # request: applied in request order this would fail with "Nexthop has invalid gateway".
    wanted = [
        types_pb2.Route(dest="10.9.0.0/16", gateway="10.60.0.1", device="eth0"),
        types_pb2.Route(gateway="10.60.0.1", device="eth0"),
        types_pb2.Route(dest="10.60.0.0/24", device="eth0", scope=253),
    ]
    netns.run(path, lambda: netconfig.update_routes(wanted))
    table = routes_of(name)
    assert "default via 10.60.0.1 dev eth0" in table
    assert "10.9.0.0/16 via 10.60.0.1 dev eth0" in table
    assert "10.60.0.0/24 dev eth0 scope link" in table
    assert "10.50.0.0/24 dev eth0 proto kernel scope link src 10.50.0.5" in table

    # A second UpdateRoutes replaces: the old gateway routes are gone, the kernel's stays.
    listed = netns.run(path, lambda: netconfig.update_routes(
        [types_pb2.Route(gateway="10.50.0.1", device="eth0")]))  # fmt: skip
    assert routes_of(name) == [
        "default via 10.50.0.1 dev eth0",
        "10.50.0.0/24 dev eth0 proto kernel scope link src 10.50.0.5",
    ]
    v4_eth0 = [(r.dest, r.gateway) for r in listed if r.device == "eth0" and r.family == 0]
    assert v4_eth0 == [("", "10.50.0.1"), ("10.50.0.0/24", "")]
    assert ("fe80::/64", "eth0") in [(r.dest, r.device) for r in listed]

    # A second UpdateInterface replaces the addresses.
    netns.run(path, lambda: netconfig.update_interface(interface(("10.70.0.5", "16"))))
    addresses = ip("-n", name, "-4", "-o", "addr", "show", "eth0")
    assert "10.70.0.5/16" in addresses and "10.50.0.5" not in addresses


def test_neighbors_and_listing(guest: tuple[str, Path]) -> None:
    name, path = guest
    netns.run(path, lambda: netconfig.update_interface(interface(("10.50.0.5", "24"))))
    neighbor = types_pb2.ARPNeighbor(
        toIPAddress=types_pb2.IPAddress(address="10.50.0.9"), device="eth0",
        lladdr="02:00:00:00:00:09", state=0x80,
    )  # fmt: skip
    netns.run(path, lambda: netconfig.add_arp_neighbors([neighbor]))
    netns.run(path, lambda: netconfig.add_arp_neighbors([neighbor]))  # replace, not EEXIST
    assert "10.50.0.9 dev eth0 lladdr 02:00:00:00:00:09 PERMANENT" in ip(
        "-n", name, "neigh", "show"
    )
    listed = netns.run(path, netconfig.list_interfaces)
    eth0 = next(i for i in listed if i.name == "eth0")
    assert ("10.50.0.5", "24") in [(a.address, a.mask) for a in eth0.IPAddresses]


def test_errors_name_the_problem(guest: tuple[str, Path]) -> None:
    _, path = guest
    missing = types_pb2.Interface(name="eth0", hwAddr="02:00:00:00:00:77")
    with pytest.raises(
        netconfig.NetconfigError, match="no network link with MAC 02:00:00:00:00:77"
    ):
        # The guest loads virtio_net at boot; here the MAC is simply absent (short wait).
        netns.run(path, lambda: netconfig.update_interface(missing, timeout=0.2))
    with pytest.raises(netconfig.NetconfigError, match="no device 'eth9'"):
        netns.run(path, lambda: netconfig.update_routes(
            [types_pb2.Route(gateway="10.0.0.1", device="eth9")]))  # fmt: skip
    with pytest.raises(netconfig.BadRequest, match="route dest 'nonsense' is not a network"):
        netns.run(path, lambda: netconfig.update_routes(
            [types_pb2.Route(dest="nonsense", device="ens3")]))  # fmt: skip
