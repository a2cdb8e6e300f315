"""A pod network built the way the bridge CNI plugin builds one, in namespaces we own.

- ``node``: the node side, a bridge ``cni0`` holding the gateway address;
- ``pod``: the pod's netns with a veth ``eth0`` (pod address, default route via the
  gateway, a permanent neighbour entry, a non-default MTU so carrying it over shows);
- ``peer``: another namespace on the same bridge, where test servers listen.

Addresses come from a test-only private /24 that exists only inside these namespaces.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devkit import ownership
from devkit.errors import DevkitError

SUBNET = "10.213.47"
PREFIX = 24
GATEWAY = f"{SUBNET}.1"
POD_IP = f"{SUBNET}.2"
PEER_IP = f"{SUBNET}.3"
STATIC_NEIGHBOR = (f"{SUBNET}.9", "02:00:0a:d5:2f:09")
MTU = 1400
POD_MAC = "02:00:0a:d5:2f:02"


def ip(*args: str, timeout: float = 10) -> str:
    """Run ``ip`` with an argument list; raise with its output on failure."""
    result = subprocess.run(
        ["ip", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise DevkitError(f"ip {' '.join(args)}: {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def in_ns(ns: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside the named netns."""
    return ["ip", "netns", "exec", ns, *argv]


@dataclass(frozen=True)
class Topology:
    node: str
    pod: str
    peer: str

    def path(self, ns: str) -> Path:
        return Path("/var/run/netns") / ns


def add_netns(name: str) -> None:
    """A netns with lo up, recorded as this process's (see devkit.ownership.sweep)."""
    ownership.record_netns(name)
    try:
        ip("netns", "add", name)
    except DevkitError:
        ownership.forget_netns(name)
        raise
    ip("-n", name, "link", "set", "lo", "up")


def delete_netns(name: str) -> None:
    subprocess.run(
        ["ip", "netns", "delete", name], stdin=subprocess.DEVNULL, capture_output=True,
        timeout=10, check=False,
    )  # fmt: skip
    ownership.forget_netns(name)


@contextmanager
def pod_topology() -> Iterator[Topology]:
    tag = secrets.token_hex(3)
    topo = Topology(node=f"cnode-{tag}", pod=f"cpod-{tag}", peer=f"cpeer-{tag}")
    try:
        for ns in (topo.node, topo.pod, topo.peer):
            add_netns(ns)
        n = topo.node
        ip("-n", n, "link", "add", "cni0", "type", "bridge")
        ip("-n", n, "addr", "add", f"{GATEWAY}/{PREFIX}", "dev", "cni0")
        ip("-n", n, "link", "set", "cni0", "mtu", str(MTU), "up")
        # The pod's veth, as the bridge plugin makes it: host end on the bridge.
        ip("-n", n, "link", "add", "vethpod", "mtu", str(MTU), "type", "veth", "peer", "name",
           "eth0", "netns", topo.pod)  # fmt: skip
        ip("-n", n, "link", "set", "vethpod", "master", "cni0", "up")
        p = topo.pod
        ip("-n", p, "link", "set", "eth0", "address", POD_MAC, "mtu", str(MTU), "up")
        ip("-n", p, "addr", "add", f"{POD_IP}/{PREFIX}", "dev", "eth0")
        ip("-n", p, "route", "add", "default", "via", GATEWAY, "dev", "eth0")
        addr, mac = STATIC_NEIGHBOR
        ip("-n", p, "neigh", "add", addr, "lladdr", mac, "dev", "eth0", "nud", "permanent")
        ip("-n", n, "link", "add", "vethpeer", "mtu", str(MTU), "type", "veth", "peer", "name",
           "eth0", "netns", topo.peer)  # fmt: skip
        ip("-n", n, "link", "set", "vethpeer", "master", "cni0", "up")
        ip("-n", topo.peer, "link", "set", "eth0", "mtu", str(MTU), "up")
        ip("-n", topo.peer, "addr", "add", f"{PEER_IP}/{PREFIX}", "dev", "eth0")
        yield topo
    finally:
        for ns in (topo.pod, topo.peer, topo.node):
            delete_netns(ns)
