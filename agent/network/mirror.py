"""tc mirroring between the pod interface and the tap (Kata's "tcfilter" model).

On each of the two links: an ingress qdisc and one u32 filter matching every frame
whose mirred action redirects it to the other link's egress (u32 rather than matchall:
kernels without cls_matchall exist, ours among them). Frames from the pod network
arriving on eth0 thus leave through the tap into QEMU, and frames the VM sends come
out of eth0, untouched by the host netns's IP stack.

Our filters carry priority :data:`PRIO`; teardown deletes an ingress qdisc only when
it holds such a filter, so an ingress qdisc somebody else put on eth0 survives.
"""

from __future__ import annotations

import logging
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from agent.network.errors import NetworkError

log = logging.getLogger(__name__)

INGRESS_HANDLE = 0xFFFF0000
PRIO = 0xC0C  # marks filters as ours
_ETH_P_ALL = 0x0003


def _redirect(ipr: Any, from_index: int, to_index: int) -> None:
    try:
        ipr.tc("add", "ingress", index=from_index, handle=INGRESS_HANDLE)
    except NetlinkError as err:
        raise NetworkError(
            f"link {from_index}: cannot add an ingress qdisc (one already there?): {err}"
        ) from err
    try:
        ipr.tc(
            "add-filter",
            "u32",
            index=from_index,
            parent=INGRESS_HANDLE,
            prio=PRIO,
            protocol=_ETH_P_ALL,
            target=0x10001,
            keys=["0x0/0x0+0"],  # match every frame
            action={
                "kind": "mirred",
                "direction": "egress",
                "action": "redirect",
                "ifindex": to_index,
            },
        )
    except NetlinkError as err:
        raise NetworkError(
            f"link {from_index}: cannot add the mirred redirect to link {to_index}: {err}"
        ) from err


def connect(ipr: Any, pod_index: int, tap_index: int) -> None:
    """Redirect all traffic both ways between ``pod_index`` and ``tap_index``.

    Raises NetworkError (nothing of ours is left behind then).
    """
    try:
        _redirect(ipr, pod_index, tap_index)
        _redirect(ipr, tap_index, pod_index)
    except NetworkError:
        disconnect(ipr, pod_index)
        disconnect(ipr, tap_index)
        raise


def ours(ipr: Any, index: int) -> bool:
    """Whether the link's ingress qdisc holds one of our filters."""
    try:
        filters = ipr.get_filters(index=index, parent=INGRESS_HANDLE)
    except NetlinkError:
        return False
    return any((int(f["info"]) >> 16) == PRIO for f in filters)


def disconnect(ipr: Any, index: int) -> bool:
    """Remove our ingress qdisc (with its filters) from the link; True if there was one."""
    if not ours(ipr, index):
        return False
    try:
        ipr.tc("del", "ingress", index=index, handle=INGRESS_HANDLE)
    except NetlinkError as err:
        raise NetworkError(f"link {index}: cannot remove our ingress qdisc: {err}") from err
    return True


def qdisc_kinds(ipr: Any, index: int) -> list[str]:
    """The kinds of the qdiscs on a link (for checks and tests)."""
    return [str(q.get_attr("TCA_KIND")) for q in ipr.get_qdiscs(index=index)]
