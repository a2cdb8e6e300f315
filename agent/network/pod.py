"""Set up and tear down one pod's network for its VM.

``setup`` runs inside the pod's netns (on a short-lived thread, see :mod:`.netns`):
it reads the CNI interface, creates the tap with the interface's MTU, mirrors the
two with tc, and returns what QEMU needs (the tap fd, the MAC) and what the guest
needs (the Interface, Route and ARPNeighbor messages). ``teardown`` removes the tap
and our qdiscs again and is safe to repeat.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from agent.network import convert, mirror, netns, read
from agent.network.errors import NetnsError, NetworkError
from agent.network.tap import check_ifname, open_tap
from agent.vm.config import NetDevice
from api.kata import agent_pb2, types_pb2

log = logging.getLogger(__name__)

POD_INTERFACE = "eth0"
TAP_NAME = "tap0_contrast"


@dataclass(frozen=True)
class PodNetwork:
    """One pod's network as set up for its VM."""

    netns: Path
    interface: str
    tap: str
    mac: str
    mtu: int
    interfaces: tuple[types_pb2.Interface, ...]
    routes: tuple[types_pb2.Route, ...]
    neighbors: tuple[types_pb2.ARPNeighbor, ...]

    def nic(self) -> NetDevice:
        """The VM's virtio-net device: the pod interface's MAC and MTU."""
        return NetDevice(mac=self.mac, mtu=self.mtu)

    def update_interface_requests(self) -> list[agent_pb2.UpdateInterfaceRequest]:
        return [agent_pb2.UpdateInterfaceRequest(interface=i) for i in self.interfaces]

    def update_routes_request(self) -> agent_pb2.UpdateRoutesRequest:
        return agent_pb2.UpdateRoutesRequest(routes=agent_pb2.Routes(Routes=self.routes))

    def add_arp_neighbors_request(self) -> agent_pb2.AddARPNeighborsRequest:
        return agent_pb2.AddARPNeighborsRequest(
            neighbors=agent_pb2.ARPNeighbors(ARPNeighbors=self.neighbors)
        )


def _setup_here(interface: str, tap: str) -> tuple[read.LinkState, int]:
    with IPRoute() as ipr:
        link = read.link_by_name(ipr, interface)
        state = read.link_state(ipr, link)
        if ipr.link_lookup(ifname=tap):
            raise NetworkError(f"a link named {tap} already exists (another VM on this netns?)")
        fd = open_tap(tap)
        try:
            tap_index = ipr.link_lookup(ifname=tap)[0]
            ipr.link("set", index=tap_index, mtu=link.mtu, state="up")
            mirror.connect(ipr, link.index, tap_index)
        except (NetlinkError, NetworkError) as err:
            os.close(fd)  # the tap is not persistent: closing the only fd removes it
            if isinstance(err, NetworkError):
                raise
            raise NetworkError(f"tap {tap}: cannot set MTU {link.mtu} / up: {err}") from err
    return state, fd


async def setup(
    netns_path: Path | None,
    sandbox_id: str,
    *,
    interface: str = POD_INTERFACE,
    tap: str = TAP_NAME,
) -> tuple[PodNetwork, int] | None:
    """Prepare the pod's netns for its VM; return the network and the tap fd.

    The caller passes the fd to QEMU (``VM.launch(..., tap_fd=fd)``) and closes its own
    copy afterwards. Returns None, with a log line, when the pod has no netns path
    (no network device for the VM then). Raises NetworkError / NetnsError.
    """
    if netns_path is None:
        log.info("sandbox %s: no network namespace path; the pod-VM gets no network", sandbox_id)
        return None
    check_ifname(interface)
    check_ifname(tap)
    state, fd = await netns.run_async(netns_path, lambda: _setup_here(interface, tap))
    network = PodNetwork(
        netns=netns_path,
        interface=interface,
        tap=tap,
        mac=state.link.mac,
        mtu=state.link.mtu,
        interfaces=(convert.interface(state),),
        routes=tuple(convert.routes(state)),
        neighbors=tuple(convert.neighbors(state)),
    )
    log.info(
        "sandbox %s: tap %s mirrors %s (mac %s, mtu %d) in %s",
        sandbox_id, tap, interface, network.mac, network.mtu, netns_path,
    )  # fmt: skip
    return network, fd


def _teardown_here(interface: str, tap: str) -> list[str]:
    removed = []
    with IPRoute() as ipr:
        for name in (interface, tap):
            indexes = ipr.link_lookup(ifname=name)
            if indexes and mirror.disconnect(ipr, indexes[0]):
                removed.append(f"ingress qdisc on {name}")
        indexes = ipr.link_lookup(ifname=tap)
        if indexes:
            with contextlib.suppress(NetlinkError):  # gone meanwhile with QEMU's fd
                ipr.link("del", index=indexes[0])
                removed.append(f"tap {tap}")
    return removed


async def teardown(network: PodNetwork, sandbox_id: str) -> None:
    """Remove the tap and our qdiscs from the pod's netns (see :func:`teardown_netns`)."""
    await teardown_netns(network.netns, sandbox_id, interface=network.interface, tap=network.tap)


async def teardown_netns(
    netns_path: Path, sandbox_id: str, *, interface: str = POD_INTERFACE, tap: str = TAP_NAME
) -> None:
    """Remove our tap and qdiscs from ``netns_path`` (needs only what a state file keeps,
    for a daemon that restarted). Safe to repeat; a netns that is already gone counts as
    torn down. Raises NetworkError."""
    check_ifname(interface)
    check_ifname(tap)
    try:
        removed = await netns.run_async(netns_path, lambda: _teardown_here(interface, tap))
    except NetnsError as err:
        log.info("sandbox %s: netns already gone (%s); nothing to remove", sandbox_id, err)
        return
    log.info("sandbox %s: removed %s", sandbox_id, ", ".join(removed) or "nothing (already clean)")
