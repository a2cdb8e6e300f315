"""Guest netconfig: what is refused before anything is changed, and resolv.conf."""

from pathlib import Path

import pytest

from agent.network.errors import NetnsError, NetworkError
from agent.network.netns import check_path
from agent.network.tap import check_ifname
from api.kata import types_pb2
from guest.agent import netconfig


def iface(**kw: object) -> types_pb2.Interface:
    base: dict[str, object] = {"name": "eth0", "hwAddr": "02:00:0a:d5:2f:02", "mtu": 1400}
    base.update(kw)
    return types_pb2.Interface(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (iface(hwAddr="zz"), "hwAddr 'zz' is not a MAC"),
        (iface(name="eth0; rm"), "interface name"),
        (iface(name=""), "interface name"),
        (iface(mtu=10), "MTU 10 out of range"),
        (iface(IPAddresses=[types_pb2.IPAddress(address="10.0.0.300", mask="24")]),
         "is not an IP address"),
        (iface(IPAddresses=[types_pb2.IPAddress(address="10.0.0.3", mask="33")]),
         "not a prefix length 0..32"),
        (iface(IPAddresses=[types_pb2.IPAddress(family=types_pb2.v6, address="10.0.0.3",
                                                mask="24")]), "does not match family"),
    ],
)  # fmt: skip
def test_bad_interface_is_refused_before_netlink(
    request_: types_pb2.Interface, message: str
) -> None:
    # BadRequest is raised from validation, before any netlink socket is opened.
    with pytest.raises(netconfig.BadRequest, match=message):
        netconfig.update_interface(request_)


def test_resolv_conf_lines() -> None:
    text = netconfig.resolv_conf_text(
        ["nameserver 10.96.0.10", "search default.svc.cluster.local svc.cluster.local",
         "options ndots:5"],
    )  # fmt: skip
    assert text == (
        "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\n"
        "options ndots:5\n"
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [("nameserver 1.1.1.1\nnameserver 6.6.6.6", "line break"), ("hosts evil", "not one of"),
     ("", "not one of")],
)  # fmt: skip
def test_bad_dns_lines_are_refused(line: str, message: str) -> None:
    with pytest.raises(netconfig.BadRequest, match=message):
        netconfig.resolv_conf_text([line])


def test_host_side_name_checks() -> None:
    assert check_ifname("tap0_contrast") == "tap0_contrast"
    for bad in ("", "a" * 16, "tap 0", "..", "tap/0"):
        with pytest.raises(NetworkError):
            check_ifname(bad)
    with pytest.raises(NetnsError, match="control character"):
        check_path(Path("/var/run/netns/a\nb"))
