"""The tap device QEMU's virtio-net uses, created by opening /dev/net/tun.

Call :func:`open_tap` on a thread inside the pod's netns (see :mod:`.netns`): the tap
is created in the netns of the thread that opens it. The tap is not persistent: it
disappears by itself when the last fd (ours, then QEMU's copy) is closed, so a dead
QEMU cannot leak it; teardown still deletes it explicitly.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct

from agent.network.errors import NetworkError

TUN_PATH = "/dev/net/tun"
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFNAMSIZ = 16
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}\Z")


def check_ifname(name: str) -> str:
    """``name`` if it is a valid Linux interface name (1-15 of A-Z a-z 0-9 _ . -)."""
    if not _IFNAME.match(name) or name in (".", ".."):
        raise NetworkError(f"interface name {name!r} must be 1-15 of A-Z a-z 0-9 _ . -")
    return name


def open_tap(name: str) -> int:
    """Create (or attach to) the tap ``name`` in the caller's netns; return its fd.

    The fd has the vnet header enabled (QEMU probes for it) and is close-on-exec;
    pass it to QEMU explicitly. Raises NetworkError naming the tap.
    """
    check_ifname(name)
    try:
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        raise NetworkError(f"tap {name}: cannot open {TUN_PATH}: {err.strerror}") from err
    request = struct.pack(f"{IFNAMSIZ}sH", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
    try:
        fcntl.ioctl(fd, TUNSETIFF, request)
    except OSError as err:
        os.close(fd)
        raise NetworkError(f"tap {name}: TUNSETIFF failed: {err.strerror}") from err
    return fd
