"""Netlink records to the Kata agent's network messages, shaped as Kata's runtime sends
them (virtcontainers ``generateVCNetworkStructures``):

- ``Interface``: ``device`` and ``name`` are the pod interface's name, ``hwAddr`` its
  MAC (the guest finds its virtio-net link by it), ``mtu``, ``type`` the link kind,
  ``raw_flags`` only ``IFF_NOARP``; addresses with the prefix length as a decimal
  string, loopback addresses left out.
- ``Route``: ``dest`` as ``address/len`` or empty for a default route, ``gateway`` and
  ``source`` (the preferred source) empty when absent, ``device`` the interface name,
  ``scope`` and ``family``. Routes the kernel made itself (protocol ``kernel``, e.g.
  the connected subnet) are left out: the guest's kernel makes them again when the
  address is added.
- ``ARPNeighbor``: only permanent entries, ``lladdr`` the MAC, ``toIPAddress`` without
  a mask.

One deliberate difference: IPv6 link-local addresses are left out too. The guest's
kernel derives the same one from the same MAC, so sending it would only collide.
"""

from __future__ import annotations

import ipaddress
import socket

from agent.network.errors import NetworkError
from agent.network.read import NUD_PERMANENT, LinkState, NeighborInfo, RouteInfo
from api.kata import types_pb2

IFF_NOARP = 0x80
RTPROT_KERNEL = 2


def family(af: int) -> types_pb2.IPFamily:
    """types.IPFamily for an address family number."""
    if af == socket.AF_INET:
        return types_pb2.v4
    if af == socket.AF_INET6:
        return types_pb2.v6
    raise NetworkError(f"address family {af} is neither IPv4 nor IPv6")


def _skip_address(text: str) -> bool:
    ip = ipaddress.ip_address(text)
    return ip.is_loopback or (ip.version == 6 and ip.is_link_local)


def interface(state: LinkState) -> types_pb2.Interface:
    """The UpdateInterface message for the pod interface in ``state``."""
    link = state.link
    return types_pb2.Interface(
        device=link.name,
        name=link.name,
        IPAddresses=[
            types_pb2.IPAddress(family=family(a.family), address=a.address, mask=str(a.prefixlen))
            for a in state.addresses
            if not _skip_address(a.address)
        ],
        mtu=link.mtu,
        hwAddr=link.mac,
        type=link.kind,
        raw_flags=link.flags & IFF_NOARP,
    )


def _route(route: RouteInfo, device: str) -> types_pb2.Route:
    dest = "" if route.dst is None or route.dst_len == 0 else f"{route.dst}/{route.dst_len}"
    return types_pb2.Route(
        dest=dest,
        gateway=route.gateway or "",
        device=device,
        source=route.prefsrc or "",
        scope=route.scope,
        family=family(route.family),
    )


def routes(state: LinkState) -> list[types_pb2.Route]:
    """The UpdateRoutes entries for ``state``'s link (kernel-made routes left out)."""
    return [_route(r, state.link.name) for r in state.routes if r.protocol != RTPROT_KERNEL]


def _neighbor(neigh: NeighborInfo, device: str) -> types_pb2.ARPNeighbor:
    return types_pb2.ARPNeighbor(
        toIPAddress=types_pb2.IPAddress(family=family(neigh.family), address=neigh.address),
        device=device,
        lladdr=neigh.lladdr or "",
        state=neigh.state,
        flags=neigh.flags,
    )


def neighbors(state: LinkState) -> list[types_pb2.ARPNeighbor]:
    """The AddARPNeighbors entries for ``state``'s link: permanent entries only."""
    return [_neighbor(n, state.link.name) for n in state.neighbors if n.state == NUD_PERMANENT]
