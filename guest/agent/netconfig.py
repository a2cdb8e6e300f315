"""Guest side of pod networking: apply what the host sends (UpdateInterface,
UpdateRoutes, AddARPNeighbors) over rtnetlink (guest/agent/rtnetlink.py: not
pyroute2, whose import alone takes about 2 s of a pod's start under TCG), list what is
configured (ListInterfaces, ListRoutes), and write the pod's DNS settings.

Every function here is blocking (one netlink socket each, answers awaited): call them
from the agent with
``await asyncio.to_thread(netconfig.update_interface, request.interface)``.
Failures raise :class:`NetconfigError`, whose message names the device and value;
the agent maps it to a ttrpc status (INVALID_ARGUMENT for :class:`BadRequest`,
INTERNAL otherwise).

DNS: :func:`resolv_conf_text` validates CreateSandboxRequest.dns and renders it; the
agent's sandbox (guest/agent/sandbox.py) writes the result with the pod's other files.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from collections.abc import Iterable, Sequence

from api.kata import types_pb2
from guest.agent.rtnetlink import Address, Link, Netlink, NetlinkError, Route

RT_TABLE_MAIN = 254
RTPROT_KERNEL = 2
RTPROT_BOOT = 3
RTN_UNICAST = 1
IFF_UP = 0x1
IFF_NOARP = 0x80
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}\Z")
_RESOLV_KEYWORDS = ("nameserver", "search", "domain", "options", "sortlist")


class NetconfigError(Exception):
    """Applying or reading the guest's network configuration failed."""


class BadRequest(NetconfigError):
    """The request itself is malformed (nothing was changed)."""


def _family(family: int) -> int:
    return socket.AF_INET6 if family == types_pb2.v6 else socket.AF_INET


def _pb_family(af: int) -> types_pb2.IPFamily:
    return types_pb2.v6 if af == socket.AF_INET6 else types_pb2.v4


def _check_address(address: str, family: int, what: str) -> None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError as err:
        raise BadRequest(f"{what}: {address!r} is not an IP address") from err
    if (ip.version == 6) != (family == types_pb2.v6):
        raise BadRequest(f"{what}: {address} does not match family {family}")


def _prefixlen(mask: str, address: str) -> int:
    limit = 128 if ":" in address else 32
    if not mask.isdigit() or not 0 <= int(mask) <= limit:
        raise BadRequest(f"address {address}: mask {mask!r} is not a prefix length 0..{limit}")
    return int(mask)


def _find_mac(nl: Netlink, mac: str) -> Link | None:
    for link in nl.links():
        if link.mac == mac:
            return link
    return None


def _link_by_mac(nl: Netlink, mac: str, timeout: float) -> Link:
    # The NIC's driver (virtio_net) is loaded at boot by contrast-init, in the
    # background: the link may appear a moment after the agent started serving. The
    # agent itself runs no program outside its one reaper (guest/agent/children.py).
    deadline = time.monotonic() + timeout
    while (link := _find_mac(nl, mac)) is None:
        if time.monotonic() >= deadline:
            raise NetconfigError(
                f"no network link with MAC {mac} after {timeout:g} s "
                "(is its driver, virtio_net, loaded? contrast-init loads it at boot)"
            )
        time.sleep(0.1)
    return link


def _check_interface(iface: types_pb2.Interface) -> str:
    mac = iface.hwAddr.lower()
    if not _MAC.match(mac):
        raise BadRequest(f"interface {iface.name!r}: hwAddr {iface.hwAddr!r} is not a MAC")
    if not _IFNAME.match(iface.name):
        raise BadRequest(f"interface name {iface.name!r} must be 1-15 of A-Z a-z 0-9 _ . -")
    if iface.mtu and not 68 <= iface.mtu <= 65535:
        raise BadRequest(f"interface {iface.name}: MTU {iface.mtu} out of range 68..65535")
    for a in iface.IPAddresses:
        _check_address(a.address, a.family, f"interface {iface.name}")
        _prefixlen(a.mask, a.address)
    return mac


def _keep_address(address: Address) -> bool:
    # The kernel's own IPv6 link-local address stays; everything else is replaced.
    return address.family == socket.AF_INET6 and ipaddress.ip_address(
        address.address).is_link_local  # fmt: skip


def _index(nl: Netlink, name: str) -> int | None:
    return next((link.index for link in nl.links() if link.name == name), None)


def ensure_loopback() -> None:
    """Bring ``lo`` up (containers share the guest's network namespace)."""
    with Netlink() as nl:
        index = _index(nl, "lo")
        if index is None:
            raise NetconfigError("the guest has no loopback link lo")
        try:
            nl.set_link(index, flags=IFF_UP, change=IFF_UP)
        except NetlinkError as err:
            raise NetconfigError(f"bringing lo up: {err}") from err


def update_interface(iface: types_pb2.Interface, timeout: float = 10.0) -> types_pb2.Interface:
    """Configure the link whose MAC is ``iface.hwAddr``: name, MTU, NOARP, addresses
    (replacing the previous ones), up. Waits up to ``timeout`` s for the link to appear.

    Returns the link as ListInterfaces shows it. Raises BadRequest, NetconfigError.
    """
    mac = _check_interface(iface)
    ensure_loopback()
    with Netlink() as nl:
        link = _link_by_mac(nl, mac, timeout)
        index = link.index
        try:
            if link.name != iface.name:
                nl.set_link(index, flags=0, change=IFF_UP)
                nl.set_link(index, name=iface.name)
            if iface.mtu:
                nl.set_link(index, mtu=iface.mtu)
            nl.set_link(index, flags=iface.raw_flags & IFF_NOARP, change=IFF_NOARP)
            for old in nl.addresses(index):
                if not _keep_address(old):
                    nl.delete_address(old)
            for a in iface.IPAddresses:
                nl.add_address(index, _family(a.family), a.address, _prefixlen(a.mask, a.address))
            nl.set_link(index, flags=IFF_UP, change=IFF_UP)
            shown = next((x for x in nl.links() if x.index == index), None)
            if shown is None:
                raise NetconfigError(f"interface {iface.name} ({mac}) vanished")
            return _interface(nl, shown)
        except NetlinkError as err:
            raise NetconfigError(f"interface {iface.name} ({mac}): {err}") from err


def _interface(nl: Netlink, link: Link) -> types_pb2.Interface:
    return types_pb2.Interface(
        device=link.name,
        name=link.name,
        IPAddresses=[
            types_pb2.IPAddress(
                family=_pb_family(a.family), address=a.address, mask=str(a.prefixlen)
            )
            for a in nl.addresses(link.index)
        ],
        mtu=link.mtu,
        hwAddr=link.mac,
        type=link.kind,
        raw_flags=link.flags & IFF_NOARP,
    )


def list_interfaces() -> list[types_pb2.Interface]:
    """Every link of the guest, loopback included, with its addresses."""
    try:
        with Netlink() as nl:
            return [_interface(nl, link) for link in nl.links()]
    except NetlinkError as err:
        raise NetconfigError(f"listing interfaces: {err}") from err


def _route_order(route: types_pb2.Route) -> int:
    # Link-scope routes first: a gateway is only reachable once its subnet is routed.
    return 0 if not route.gateway else 1


def _planned(nl: Netlink, route: types_pb2.Route) -> Route:
    what = route.dest or "default"
    index = _index(nl, route.device)
    if index is None:
        raise NetconfigError(f"route {what}: no device {route.device!r}")
    if not 0 <= route.scope <= 255:
        raise BadRequest(f"route {what}: scope {route.scope} out of range 0..255")
    family = _family(route.family)
    dst, dst_len = None, 0
    if route.dest and route.dest != "default":
        try:
            net = ipaddress.ip_network(route.dest, strict=False)
        except ValueError as err:
            raise BadRequest(f"route dest {route.dest!r} is not a network") from err
        if (net.version == 6) != (family == socket.AF_INET6):
            raise BadRequest(f"route dest {route.dest} does not match family {route.family}")
        dst, dst_len = str(net.network_address), net.prefixlen
    if route.gateway:
        _check_address(route.gateway, route.family, f"route {what} gateway")
    if route.source:
        _check_address(route.source, route.family, f"route {what} source")
    return Route(
        family=family, dst_len=dst_len, tos=0, table=RT_TABLE_MAIN, proto=RTPROT_BOOT,
        scope=route.scope, type=RTN_UNICAST, dst=dst, gateway=route.gateway or None,
        oif=index, prefsrc=route.source or None,
    )  # fmt: skip


def update_routes(routes: Iterable[types_pb2.Route]) -> list[types_pb2.Route]:
    """Replace the routes of the devices named in ``routes`` (routes the kernel made
    for the addresses stay). Link-scope routes are added before gateway routes.

    Returns the guest's routes afterwards. Raises BadRequest, NetconfigError.
    """
    wanted = sorted(routes, key=_route_order)
    with Netlink() as nl:
        plans = [(r, _planned(nl, r)) for r in wanted]  # validate all before changing
        for oif in {plan.oif for _, plan in plans}:
            for family in (socket.AF_INET, socket.AF_INET6):
                # A list first: no deletes while the dump is still being read.
                for old in _main_routes(nl, family):
                    if old.oif != oif or old.proto == RTPROT_KERNEL:
                        continue
                    try:
                        nl.delete_route(old)
                    except NetlinkError as err:
                        raise NetconfigError(f"cannot remove old route {old}: {err}") from err
        for route, plan in plans:
            try:
                nl.replace_route(plan)
            except NetlinkError as err:
                raise NetconfigError(
                    f"route {route.dest or 'default'} via {route.gateway or '-'} "
                    f"dev {route.device}: {err}"
                ) from err
    return list_routes()


def _main_routes(nl: Netlink, family: int) -> list[Route]:
    return [r for r in nl.routes(family) if r.table == RT_TABLE_MAIN]


def list_routes() -> list[types_pb2.Route]:
    """The main table's routes, IPv4 and IPv6, as types.Route (dest "" for default)."""
    out = []
    try:
        with Netlink() as nl:
            names = {link.index: link.name for link in nl.links()}
            for family in (socket.AF_INET, socket.AF_INET6):
                for m in _main_routes(nl, family):
                    out.append(
                        types_pb2.Route(
                            dest="" if m.dst is None else f"{m.dst}/{m.dst_len}",
                            gateway=m.gateway or "",
                            device=names.get(m.oif or 0, ""),
                            source=m.prefsrc or "",
                            scope=m.scope,
                            family=_pb_family(m.family),
                        )
                    )
    except NetlinkError as err:
        raise NetconfigError(f"listing routes: {err}") from err
    return out


def add_arp_neighbors(neighbors: Iterable[types_pb2.ARPNeighbor]) -> None:
    """Add (or replace) the given neighbour entries. Raises BadRequest, NetconfigError."""
    with Netlink() as nl:
        for n in neighbors:
            ip = n.toIPAddress
            what = f"neighbour {ip.address} on {n.device!r}"
            _check_address(ip.address, ip.family, what)
            if n.lladdr and not _MAC.match(n.lladdr.lower()):
                raise BadRequest(f"{what}: lladdr {n.lladdr!r} is not a MAC")
            if not 0 <= n.state <= 0xFFFF or not 0 <= n.flags <= 0xFF:
                raise BadRequest(f"{what}: state {n.state} or flags {n.flags} out of range")
            index = _index(nl, n.device)
            if index is None:
                raise NetconfigError(f"{what}: no such device")
            try:
                nl.replace_neighbour(
                    index, _family(ip.family), ip.address, n.lladdr.lower() or None,
                    state=n.state, flags=n.flags,
                )  # fmt: skip
            except NetlinkError as err:
                raise NetconfigError(f"{what}: {err}") from err


def resolv_conf_text(lines: Sequence[str]) -> str:
    """resolv.conf content from CreateSandboxRequest.dns lines; BadRequest for a line
    that is not a resolv.conf directive or carries a line break."""
    for line in lines:
        if any(c in line for c in "\r\n\0"):
            raise BadRequest(f"DNS line {line!r} contains a line break")
        keyword = line.split(maxsplit=1)[0] if line.strip() else ""
        if keyword not in _RESOLV_KEYWORDS:
            raise BadRequest(f"DNS line {line!r} is not one of {', '.join(_RESOLV_KEYWORDS)}")
    return "".join(f"{line.strip()}\n" for line in lines)
