"""Guest side of pod networking: apply what the host sends (UpdateInterface,
UpdateRoutes, AddARPNeighbors) with pyroute2, list what is configured
(ListInterfaces, ListRoutes), and write the pod's DNS settings.

Every function here is blocking (pyroute2's synchronous API, which also refuses to
run on a thread whose asyncio loop is running): call them from the agent with
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
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from api.kata import types_pb2

RT_TABLE_MAIN = 254
RTPROT_KERNEL = 2
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


def _find_mac(ipr: Any, mac: str) -> Any:
    for link in ipr.get_links():
        if str(link.get_attr("IFLA_ADDRESS") or "").lower() == mac:
            return link
    return None


def _link_by_mac(ipr: Any, mac: str, timeout: float) -> Any:
    # The NIC's driver (virtio_net) is loaded at boot by contrast-init, in the
    # background: the link may appear a moment after the agent started serving. The
    # agent itself runs no program outside its one reaper (guest/agent/children.py).
    deadline = time.monotonic() + timeout
    while (link := _find_mac(ipr, mac)) is None:
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


def _keep_address(msg: Any) -> bool:
    # The kernel's own IPv6 link-local address stays; everything else is replaced.
    return bool(msg["family"] == socket.AF_INET6 and ipaddress.ip_address(
        msg.get_attr("IFA_ADDRESS")).is_link_local)  # fmt: skip


def ensure_loopback() -> None:
    """Bring ``lo`` up (containers share the guest's network namespace)."""
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def update_interface(iface: types_pb2.Interface, timeout: float = 10.0) -> types_pb2.Interface:
    """Configure the link whose MAC is ``iface.hwAddr``: name, MTU, NOARP, addresses
    (replacing the previous ones), up. Waits up to ``timeout`` s for the link to appear.

    Returns the link as ListInterfaces shows it. Raises BadRequest, NetconfigError.
    """
    mac = _check_interface(iface)
    ensure_loopback()
    with IPRoute() as ipr:
        link = _link_by_mac(ipr, mac, timeout)
        index = int(link["index"])
        try:
            if link.get_attr("IFLA_IFNAME") != iface.name:
                ipr.link("set", index=index, state="down")
                ipr.link("set", index=index, ifname=iface.name)
            if iface.mtu:
                ipr.link("set", index=index, mtu=iface.mtu)
            noarp = iface.raw_flags & IFF_NOARP
            ipr.link("set", index=index, flags=noarp, change=IFF_NOARP)
            for old in ipr.get_addr(index=index):
                if not _keep_address(old):
                    ipr.addr(
                        "del", index=index, address=old.get_attr("IFA_ADDRESS"),
                        prefixlen=old["prefixlen"],
                    )  # fmt: skip
            for a in iface.IPAddresses:
                ipr.addr(
                    "add", index=index, address=a.address,
                    prefixlen=_prefixlen(a.mask, a.address), family=_family(a.family),
                )  # fmt: skip
            ipr.link("set", index=index, state="up")
        except NetlinkError as err:
            raise NetconfigError(f"interface {iface.name} ({mac}): {err}") from err
        return _interface(ipr, ipr.get_links(index)[0])


def _interface(ipr: Any, link: Any) -> types_pb2.Interface:
    index = int(link["index"])
    name = str(link.get_attr("IFLA_IFNAME"))
    return types_pb2.Interface(
        device=name,
        name=name,
        IPAddresses=[
            types_pb2.IPAddress(
                family=_pb_family(int(a["family"])),
                address=str(a.get_attr("IFA_ADDRESS")),
                mask=str(a["prefixlen"]),
            )
            for a in ipr.get_addr(index=index)
        ],
        mtu=int(link.get_attr("IFLA_MTU") or 0),
        hwAddr=str(link.get_attr("IFLA_ADDRESS") or ""),
        type=str(link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""),
        raw_flags=int(link["flags"]) & IFF_NOARP,
    )


def list_interfaces() -> list[types_pb2.Interface]:
    """Every link of the guest, loopback included, with its addresses."""
    with IPRoute() as ipr:
        return [_interface(ipr, link) for link in ipr.get_links()]


def _route_order(route: types_pb2.Route) -> int:
    # Link-scope routes first: a gateway is only reachable once its subnet is routed.
    return 0 if not route.gateway else 1


def _route_args(ipr: Any, route: types_pb2.Route) -> dict[str, Any]:
    indexes = ipr.link_lookup(ifname=route.device)
    if not indexes:
        raise NetconfigError(f"route {route.dest or 'default'}: no device {route.device!r}")
    args: dict[str, Any] = {
        "family": _family(route.family), "oif": indexes[0], "scope": route.scope,
        "table": RT_TABLE_MAIN, "proto": "boot",
    }  # fmt: skip
    if route.dest and route.dest != "default":
        try:
            net = ipaddress.ip_network(route.dest, strict=False)
        except ValueError as err:
            raise BadRequest(f"route dest {route.dest!r} is not a network") from err
        args.update(dst=str(net.network_address), dst_len=net.prefixlen)
    if route.gateway:
        _check_address(route.gateway, route.family, f"route {route.dest or 'default'} gateway")
        args["gateway"] = route.gateway
    if route.source:
        _check_address(route.source, route.family, f"route {route.dest or 'default'} source")
        args["prefsrc"] = route.source
    return args


def update_routes(routes: Iterable[types_pb2.Route]) -> list[types_pb2.Route]:
    """Replace the routes of the devices named in ``routes`` (routes the kernel made
    for the addresses stay). Link-scope routes are added before gateway routes.

    Returns the guest's routes afterwards. Raises BadRequest, NetconfigError.
    """
    wanted = sorted(routes, key=_route_order)
    with IPRoute() as ipr:
        plans = [(r, _route_args(ipr, r)) for r in wanted]  # validate all before changing
        for oif in {args["oif"] for _, args in plans}:
            for family in (socket.AF_INET, socket.AF_INET6):
                # A list first: no deletes while the dump is still being read.
                table = list(ipr.get_routes(family=family, oif=oif, table=RT_TABLE_MAIN))
                for old in table:
                    if old["proto"] == RTPROT_KERNEL:
                        continue
                    ident = _identity(old)
                    try:
                        ipr.route("del", **ident)
                    except NetlinkError as err:
                        raise NetconfigError(f"cannot remove old route {ident}: {err}") from err
        for route, args in plans:
            try:
                ipr.route("replace", **args)
            except NetlinkError as err:
                raise NetconfigError(
                    f"route {route.dest or 'default'} via {route.gateway or '-'} "
                    f"dev {route.device}: {err}"
                ) from err
    return list_routes()


def _identity(msg: Any) -> dict[str, Any]:
    ident: dict[str, Any] = {
        "family": msg["family"], "dst_len": msg["dst_len"], "table": RT_TABLE_MAIN,
        "oif": msg.get_attr("RTA_OIF"), "scope": msg["scope"], "proto": msg["proto"],
    }  # fmt: skip
    if msg.get_attr("RTA_DST") is not None:
        ident["dst"] = msg.get_attr("RTA_DST")
    if msg.get_attr("RTA_GATEWAY") is not None:
        ident["gateway"] = msg.get_attr("RTA_GATEWAY")
    return ident


def list_routes() -> list[types_pb2.Route]:
    """The main table's routes, IPv4 and IPv6, as types.Route (dest "" for default)."""
    out = []
    with IPRoute() as ipr:
        names = {int(link["index"]): str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()}
        for family in (socket.AF_INET, socket.AF_INET6):
            for m in ipr.get_routes(family=family, table=RT_TABLE_MAIN):
                dst = m.get_attr("RTA_DST")
                out.append(
                    types_pb2.Route(
                        dest="" if dst is None else f"{dst}/{m['dst_len']}",
                        gateway=str(m.get_attr("RTA_GATEWAY") or ""),
                        device=names.get(int(m.get_attr("RTA_OIF") or 0), ""),
                        source=str(m.get_attr("RTA_PREFSRC") or ""),
                        scope=int(m["scope"]),
                        family=_pb_family(int(m["family"])),
                    )
                )
    return out


def add_arp_neighbors(neighbors: Iterable[types_pb2.ARPNeighbor]) -> None:
    """Add (or replace) the given neighbour entries. Raises BadRequest, NetconfigError."""
    with IPRoute() as ipr:
        for n in neighbors:
            ip = n.toIPAddress
            what = f"neighbour {ip.address} on {n.device!r}"
            _check_address(ip.address, ip.family, what)
            if n.lladdr and not _MAC.match(n.lladdr.lower()):
                raise BadRequest(f"{what}: lladdr {n.lladdr!r} is not a MAC")
            indexes = ipr.link_lookup(ifname=n.device)
            if not indexes:
                raise NetconfigError(f"{what}: no such device")
            args: dict[str, Any] = {"dst": ip.address, "ifindex": indexes[0],
                                    "family": _family(ip.family), "state": n.state,
                                    "flags": n.flags}  # fmt: skip
            if n.lladdr:
                args["lladdr"] = n.lladdr.lower()
            try:
                ipr.neigh("replace", **args)
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
