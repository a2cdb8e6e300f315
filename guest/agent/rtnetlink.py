"""A small rtnetlink client: the few link, address, route and neighbour messages the
guest agent's network set-up (guest/agent/netconfig.py) sends and reads.

Why not pyroute2: importing it (its package imports NDB, IPDB, conntrack, nftables and
more) takes about 2 s of the pod-VM's boot under TCG (about 120 ms natively), on the
path of every pod's first UpdateInterface. This module needs only ``socket`` and
``struct``, which the agent has loaded anyway. Message layouts and numbers are the
kernel's (include/uapi/linux/netlink.h, rtnetlink.h, if_link.h, if_addr.h,
neighbour.h); requests carry NLM_F_ACK, and the kernel's extended ack message (e.g.
"Nexthop has invalid gateway") goes into the error when it sends one.

Blocking, one socket per :class:`Netlink` context. Failures raise :class:`NetlinkError`
(the errno and the kernel's message).
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from types import TracebackType

# netlink.h
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_ACK_TLVS = 0x200  # on an NLMSG_ERROR: attributes follow
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
# rtnetlink.h
RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
RTM_NEWNEIGH = 28
RTN_UNICAST = 1
RTPROT_BOOT = 3
RT_TABLE_UNSPEC = 0
# if_link.h, if_addr.h, rtnetlink.h (rtattr_type_t), neighbour.h
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1
IFA_ADDRESS = 1
IFA_LOCAL = 2
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PREFSRC = 7
RTA_TABLE = 15
NDA_DST = 1
NDA_LLADDR = 2

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_ATTR = struct.Struct("=HH")  # rtattr: len, type
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBi")  # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst_len, src_len, tos, table,
#                                       protocol, scope, type, flags
_NDMSG = struct.Struct("=BxxxiHBB")  # ndmsg: family, ifindex, state, flags, type
_U32 = struct.Struct("=I")
_ERRNO = struct.Struct("=i")
_RECV = 1 << 20


class NetlinkError(Exception):
    """The kernel refused a request (``code``: errno), or its answer was malformed."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"[Errno {code}] {message}")
        self.code = code


@dataclass(frozen=True)
class Link:
    index: int
    flags: int
    name: str
    mac: str  # "" for a link without one
    mtu: int
    kind: str  # IFLA_INFO_KIND ("veth", ...), "" when not set


@dataclass(frozen=True)
class Address:
    family: int
    prefixlen: int
    index: int
    address: str
    raw: bytes  # IFA_ADDRESS as sent by the kernel
    local: bytes | None  # IFA_LOCAL, when sent


@dataclass(frozen=True)
class Route:
    family: int
    dst_len: int
    tos: int
    table: int
    proto: int
    scope: int
    type: int
    dst: str | None
    gateway: str | None
    oif: int | None
    prefsrc: str | None


def attr(kind: int, payload: bytes) -> bytes:
    """One rtattr, padded to 4 bytes."""
    length = _ATTR.size + len(payload)
    return _ATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def attrs(data: bytes) -> dict[int, bytes]:
    """The attributes in ``data`` by type (flag bits masked off); the last one wins."""
    found: dict[int, bytes] = {}
    offset = 0
    while offset + _ATTR.size <= len(data):
        length, kind = _ATTR.unpack_from(data, offset)
        if length < _ATTR.size or offset + length > len(data):
            raise NetlinkError(0, f"malformed attribute at {offset} in a netlink answer")
        found[kind & 0x3FFF] = data[offset + _ATTR.size : offset + length]
        offset += (length + 3) & ~3
    return found


def _text(value: bytes | None) -> str:
    return "" if value is None else value.split(b"\0", 1)[0].decode(errors="replace")


def _ip(family: int, value: bytes | None) -> str | None:
    return None if value is None else socket.inet_ntop(family, value)


def packed(family: int, address: str) -> bytes:
    """``address`` in network byte order; ValueError (OSError) when it is not one."""
    return socket.inet_pton(family, address)


class Netlink:
    """One NETLINK_ROUTE socket; use as a context manager."""

    def __init__(self) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
        )
        try:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            self._sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            self._sock.bind((0, 0))
        except OSError:
            self._sock.close()
            raise
        self._seq = 0

    def __enter__(self) -> Netlink:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._sock.close()

    def request(self, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one message; the answer's messages (type, payload) until the ack or, for
        a dump, NLMSG_DONE. Raises NetlinkError for an error answer."""
        self._seq += 1
        seq = self._seq
        message = _HEADER.pack(_HEADER.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0)
        self._sock.send(message + body)
        dump = flags & NLM_F_DUMP == NLM_F_DUMP
        answer: list[tuple[int, bytes]] = []
        while True:
            data = self._sock.recv(_RECV)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, mtype, mflags, mseq, _ = _HEADER.unpack_from(data, offset)
                if length < _HEADER.size or offset + length > len(data):
                    raise NetlinkError(0, "truncated netlink message")
                payload = data[offset + _HEADER.size : offset + length]
                offset += (length + 3) & ~3
                if mseq != seq:
                    continue  # an answer to an earlier, abandoned request
                if mtype == NLMSG_DONE:
                    return answer
                if mtype == NLMSG_ERROR:
                    (code,) = _ERRNO.unpack_from(payload)
                    if code == 0 and not dump:
                        return answer
                    raise _error(-code, payload, mflags)
                answer.append((mtype, payload))

    # ---- links ----

    def links(self) -> list[Link]:
        """Every link (RTM_GETLINK dump)."""
        found = []
        for _, payload in self.request(RTM_GETLINK, NLM_F_DUMP, _IFINFO.pack(0, 0, 0, 0, 0)):
            _, _, index, flags, _ = _IFINFO.unpack_from(payload)
            a = attrs(payload[_IFINFO.size :])
            mac = a.get(IFLA_ADDRESS, b"")
            mtu = a.get(IFLA_MTU)
            kind = attrs(a[IFLA_LINKINFO]).get(IFLA_INFO_KIND) if IFLA_LINKINFO in a else None
            found.append(
                Link(
                    index=index, flags=flags, name=_text(a.get(IFLA_IFNAME)),
                    mac=":".join(f"{b:02x}" for b in mac),
                    mtu=_U32.unpack(mtu)[0] if mtu and len(mtu) == 4 else 0, kind=_text(kind),
                )
            )  # fmt: skip
        return found

    def set_link(
        self, index: int, *, flags: int = 0, change: int = 0, name: str | None = None,
        mtu: int | None = None,
    ) -> None:  # fmt: skip
        """Change link ``index``: the ``change`` bits of its flags to ``flags``, its name,
        its MTU (RTM_NEWLINK on an existing link)."""
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)
        if name is not None:
            body += attr(IFLA_IFNAME, name.encode() + b"\0")
        if mtu is not None:
            body += attr(IFLA_MTU, _U32.pack(mtu))
        self.request(RTM_NEWLINK, NLM_F_ACK, body)

    # ---- addresses ----

    def addresses(self, index: int | None = None) -> list[Address]:
        """Addresses of every family, of link ``index`` only when given."""
        found = []
        body = _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        for _, payload in self.request(RTM_GETADDR, NLM_F_DUMP, body):
            family, prefixlen, _, _, ifindex = _IFADDR.unpack_from(payload)
            if index is not None and ifindex != index:
                continue
            a = attrs(payload[_IFADDR.size :])
            raw = a.get(IFA_ADDRESS, a.get(IFA_LOCAL))
            if raw is None:
                continue
            found.append(
                Address(family, prefixlen, ifindex, socket.inet_ntop(family, raw), raw,
                        a.get(IFA_LOCAL))
            )  # fmt: skip
        return found

    def add_address(self, index: int, family: int, address: str, prefixlen: int) -> None:
        """Add ``address/prefixlen`` to link ``index`` (EEXIST when it is there)."""
        raw = packed(family, address)
        body = _IFADDR.pack(family, prefixlen, 0, 0, index) + attr(IFA_ADDRESS, raw)
        if family == socket.AF_INET:
            body += attr(IFA_LOCAL, raw)
        self.request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    def delete_address(self, old: Address) -> None:
        """Remove an address as :meth:`addresses` listed it."""
        body = _IFADDR.pack(old.family, old.prefixlen, 0, 0, old.index) + attr(IFA_ADDRESS, old.raw)
        if old.local is not None:
            body += attr(IFA_LOCAL, old.local)
        self.request(RTM_DELADDR, NLM_F_ACK, body)

    # ---- routes ----

    def routes(self, family: int) -> list[Route]:
        """Every route of ``family`` in every table (RTM_GETROUTE dump)."""
        found = []
        body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        for _, payload in self.request(RTM_GETROUTE, NLM_F_DUMP, body):
            fam, dst_len, _, tos, table, proto, scope, rtype, _ = _RTMSG.unpack_from(payload)
            a = attrs(payload[_RTMSG.size :])
            if RTA_TABLE in a:
                (table,) = _U32.unpack(a[RTA_TABLE])
            oif = a.get(RTA_OIF)
            found.append(
                Route(
                    family=fam, dst_len=dst_len, tos=tos, table=table, proto=proto, scope=scope,
                    type=rtype, dst=_ip(fam, a.get(RTA_DST)), gateway=_ip(fam, a.get(RTA_GATEWAY)),
                    oif=_U32.unpack(oif)[0] if oif else None, prefsrc=_ip(fam, a.get(RTA_PREFSRC)),
                )
            )  # fmt: skip
        return found

    def _route_body(self, route: Route) -> bytes:
        table = route.table if route.table < 256 else RT_TABLE_UNSPEC
        body = _RTMSG.pack(
            route.family, route.dst_len, 0, route.tos, table, route.proto, route.scope,
            route.type, 0,
        )  # fmt: skip
        body += attr(RTA_TABLE, _U32.pack(route.table))
        if route.dst is not None:
            body += attr(RTA_DST, packed(route.family, route.dst))
        if route.gateway is not None:
            body += attr(RTA_GATEWAY, packed(route.family, route.gateway))
        if route.oif is not None:
            body += attr(RTA_OIF, _U32.pack(route.oif))
        if route.prefsrc is not None:
            body += attr(RTA_PREFSRC, packed(route.family, route.prefsrc))
        return body

    def replace_route(self, route: Route) -> None:
        """Add ``route``, replacing one with the same destination, table and priority."""
        self.request(
            RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, self._route_body(route)
        )

    def delete_route(self, route: Route) -> None:
        """Remove a route as :meth:`routes` listed it."""
        self.request(RTM_DELROUTE, NLM_F_ACK, self._route_body(route))

    # ---- neighbours ----

    def replace_neighbour(
        self, index: int, family: int, address: str, lladdr: str | None, *, state: int, flags: int
    ) -> None:
        """Add or replace the neighbour entry of ``address`` on link ``index``."""
        body = _NDMSG.pack(family, index, state, flags, 0) + attr(NDA_DST, packed(family, address))
        if lladdr:
            body += attr(NDA_LLADDR, bytes.fromhex(lladdr.replace(":", "")))
        self.request(RTM_NEWNEIGH, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, body)


def _error(code: int, payload: bytes, flags: int) -> NetlinkError:
    message = os.strerror(code)
    # With NETLINK_CAP_ACK only the request's header is echoed; then the attributes.
    tlvs = payload[_ERRNO.size + _HEADER.size :] if flags & NLM_F_ACK_TLVS else b""
    if tlvs:
        try:
            extra = _text(attrs(tlvs).get(NLMSGERR_ATTR_MSG))
        except NetlinkError:
            extra = ""
        if extra:
            message = f"{message}: {extra}"
    return NetlinkError(code, message)
