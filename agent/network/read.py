"""A netns's link, addresses, routes and neighbours as typed records (pyroute2).

Run these on a thread inside the netns (see :mod:`.netns`) with a synchronous
``pyroute2.IPRoute`` opened there. The records are plain data so that the conversion
into agent messages (:mod:`.convert`) is tested without netlink.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from agent.network.errors import NetworkError

RT_TABLE_MAIN = 254
NUD_PERMANENT = 0x80


@dataclass(frozen=True)
class LinkInfo:
    index: int
    name: str
    mac: str
    mtu: int
    kind: str  # IFLA_INFO_KIND ("veth", "tun", ...); "" when the link has none
    flags: int  # ifi_flags (IFF_UP, IFF_NOARP, ...)


@dataclass(frozen=True)
class AddressInfo:
    family: int  # socket.AF_INET or socket.AF_INET6
    address: str
    prefixlen: int
    scope: int


@dataclass(frozen=True)
class RouteInfo:
    family: int
    dst: str | None  # None for a default route
    dst_len: int
    gateway: str | None
    prefsrc: str | None
    scope: int
    protocol: int
    table: int


@dataclass(frozen=True)
class NeighborInfo:
    family: int
    address: str
    lladdr: str | None
    state: int
    flags: int


@dataclass(frozen=True)
class LinkState:
    """Everything the guest needs to know about one pod interface."""

    link: LinkInfo
    addresses: tuple[AddressInfo, ...]
    routes: tuple[RouteInfo, ...]
    neighbors: tuple[NeighborInfo, ...]


def _link(msg: Any) -> LinkInfo:
    return LinkInfo(
        index=int(msg["index"]),
        name=str(msg.get_attr("IFLA_IFNAME")),
        mac=str(msg.get_attr("IFLA_ADDRESS") or ""),
        mtu=int(msg.get_attr("IFLA_MTU") or 0),
        kind=str(msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""),
        flags=int(msg["flags"]),
    )


def link_by_name(ipr: Any, name: str) -> LinkInfo:
    """The link called ``name``; NetworkError when the netns has none."""
    indexes = ipr.link_lookup(ifname=name)
    if not indexes:
        raise NetworkError(f"no interface {name!r} in the netns")
    return _link(ipr.get_links(indexes[0])[0])


def link_state(ipr: Any, link: LinkInfo) -> LinkState:
    """The addresses, main-table routes and neighbours of ``link``."""
    addresses = tuple(
        AddressInfo(
            family=int(m["family"]),
            address=str(m.get_attr("IFA_ADDRESS")),
            prefixlen=int(m["prefixlen"]),
            scope=int(m["scope"]),
        )
        for m in ipr.get_addr(index=link.index)
    )
    routes = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for m in ipr.get_routes(family=family, oif=link.index, table=RT_TABLE_MAIN):
            dst = m.get_attr("RTA_DST")
            gateway = m.get_attr("RTA_GATEWAY")
            prefsrc = m.get_attr("RTA_PREFSRC")
            routes.append(
                RouteInfo(
                    family=int(m["family"]),
                    dst=None if dst is None else str(dst),
                    dst_len=int(m["dst_len"]),
                    gateway=None if gateway is None else str(gateway),
                    prefsrc=None if prefsrc is None else str(prefsrc),
                    scope=int(m["scope"]),
                    protocol=int(m["proto"]),
                    table=int(m.get_attr("RTA_TABLE") or m["table"]),
                )
            )
    neighbors = tuple(
        NeighborInfo(
            family=int(m["family"]),
            address=str(m.get_attr("NDA_DST")),
            lladdr=None if m.get_attr("NDA_LLADDR") is None else str(m.get_attr("NDA_LLADDR")),
            state=int(m["state"]),
            flags=int(m["flags"]),
        )
        for m in ipr.get_neighbours(ifindex=link.index)
        if m.get_attr("NDA_DST") is not None
    )
    return LinkState(link, addresses, tuple(routes), neighbors)
