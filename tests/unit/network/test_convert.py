"""Netlink records to Kata agent messages, in the shapes Kata's runtime sends."""

import socket

import pytest

from agent.network import convert
from agent.network.errors import NetworkError
from agent.network.read import (
    NUD_PERMANENT,
    AddressInfo,
    LinkInfo,
    LinkState,
    NeighborInfo,
    RouteInfo,
)
from api.kata import types_pb2

IFF_UP, IFF_BROADCAST, IFF_NOARP = 0x1, 0x2, 0x80
LINK = LinkInfo(index=2, name="eth0", mac="02:00:0a:d5:2f:02", mtu=1400, kind="veth",
                flags=IFF_UP | IFF_BROADCAST)  # fmt: skip
V4, V6 = socket.AF_INET, socket.AF_INET6


def route(**kw: object) -> RouteInfo:
    base: dict[str, object] = {
        "family": V4, "dst": None, "dst_len": 0, "gateway": None, "prefsrc": None,
        "scope": 0, "protocol": 3, "table": 254,
    }  # fmt: skip
    base.update(kw)
    return RouteInfo(**base)  # type: ignore[arg-type]


def state(**kw: object) -> LinkState:
    base: dict[str, object] = {"link": LINK, "addresses": (), "routes": (), "neighbors": ()}
    base.update(kw)
    return LinkState(**base)  # type: ignore[arg-type]


def test_interface_fields() -> None:
    addresses = (
        AddressInfo(V4, "10.1.2.3", 24, 0),
        AddressInfo(V6, "fd00::3", 64, 0),
        AddressInfo(V6, "fe80::1", 64, 253),  # link-local: the guest derives its own
        AddressInfo(V4, "127.0.0.1", 8, 254),
    )
    iface = convert.interface(state(addresses=addresses))
    assert iface == types_pb2.Interface(
        device="eth0",
        name="eth0",
        IPAddresses=[
            types_pb2.IPAddress(family=types_pb2.v4, address="10.1.2.3", mask="24"),
            types_pb2.IPAddress(family=types_pb2.v6, address="fd00::3", mask="64"),
        ],
        mtu=1400,
        hwAddr="02:00:0a:d5:2f:02",
        type="veth",
        raw_flags=0,
    )


def test_only_noarp_flag_is_carried() -> None:
    link = LinkInfo(2, "eth0", "02:00:0a:d5:2f:02", 1500, "veth", IFF_UP | IFF_NOARP)
    assert convert.interface(state(link=link)).raw_flags == IFF_NOARP


def test_routes_skip_kernel_ones_and_render_dest() -> None:
    routes = (
        route(dst="10.1.2.0", dst_len=24, protocol=2, scope=253, prefsrc="10.1.2.3"),
        route(gateway="10.1.2.1"),
        route(dst="10.9.0.0", dst_len=16, gateway="10.1.2.1", prefsrc="10.1.2.3"),
        route(family=V6, dst="fd01::", dst_len=64, scope=253),
    )
    assert convert.routes(state(routes=routes)) == [
        types_pb2.Route(dest="", gateway="10.1.2.1", device="eth0", family=types_pb2.v4),
        types_pb2.Route(dest="10.9.0.0/16", gateway="10.1.2.1", device="eth0",
                        source="10.1.2.3", family=types_pb2.v4),
        types_pb2.Route(dest="fd01::/64", device="eth0", scope=253, family=types_pb2.v6),
    ]  # fmt: skip


def test_neighbors_only_permanent() -> None:
    neighbors = (
        NeighborInfo(V4, "10.1.2.9", "02:00:00:00:00:09", NUD_PERMANENT, 0),
        NeighborInfo(V4, "10.1.2.1", "02:00:00:00:00:01", 0x02, 0),  # reachable: learnt
        NeighborInfo(V6, "fd00::9", None, NUD_PERMANENT, 0),
    )
    assert convert.neighbors(state(neighbors=neighbors)) == [
        types_pb2.ARPNeighbor(
            toIPAddress=types_pb2.IPAddress(family=types_pb2.v4, address="10.1.2.9"),
            device="eth0", lladdr="02:00:00:00:00:09", state=NUD_PERMANENT,
        ),
        types_pb2.ARPNeighbor(
            toIPAddress=types_pb2.IPAddress(family=types_pb2.v6, address="fd00::9"),
            device="eth0", state=NUD_PERMANENT,
        ),
    ]  # fmt: skip


def test_unknown_family_is_an_error() -> None:
    with pytest.raises(NetworkError, match="address family 17"):
        convert.routes(state(routes=(route(family=17),)))


def test_json_keys_match_kata() -> None:
    # Policies see the request as JSON with protobuf field names: these must match Kata's.
    from google.protobuf.json_format import MessageToDict

    iface = convert.interface(state(addresses=(AddressInfo(V4, "10.1.2.3", 24, 0),)))
    keys = set(MessageToDict(iface, preserving_proto_field_name=True))
    assert keys == {"device", "name", "IPAddresses", "mtu", "hwAddr", "type"}
