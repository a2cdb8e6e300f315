"""Pods that ask to share the node's namespaces: refused before anything starts.

A Kubernetes pod with ``hostNetwork``, ``hostPID`` or ``hostIPC`` (CRI
``NamespaceOption`` ``NODE``) wants its containers in the node's network, PID or IPC
namespace. A pod-VM has its own kernel: nothing of the node's namespaces can reach it
(and the node is untrusted anyway), so such a pod would run without what it asked for
(a host-network pod would even have no network at all). It is refused with a message
naming the option, before a record is written or QEMU is started.

How it shows (containerd 1.6 and 2.x CRI): the sandbox container's OCI spec
(``io.kubernetes.cri.container-type: sandbox``) lists a namespace for each one the
pod gets of its own; CRI *removes* ``network`` (and ``uts``) for host network, ``pid``
for host PID, ``ipc`` for host IPC (runc then stays in the node's). A pod network
appears as ``{"type": "network", "path": "/var/run/netns/cni-..."}``. Specs from other
clients (``ctr run``, no CRI annotations, or no ``linux.namespaces`` at all) are not
judged here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.sandbox.errors import UnsupportedPodError

CONTAINER_TYPE = "io.kubernetes.cri.container-type"

# namespace type -> (the pod option that removes it, why a pod-VM cannot give it)
REFUSED = {
    "network": ("hostNetwork", "the pod runs in its own VM, with its own network stack"),
    "pid": ("hostPID", "the pod's processes run in its own VM and cannot see the node's"),
    "ipc": ("hostIPC", "the node's SysV IPC and POSIX shared memory stay outside the pod's VM"),
}


def host_namespaces(oci: Mapping[str, Any], annotations: Mapping[str, str]) -> list[str]:
    """The pod options (``hostNetwork``, ...) a CRI sandbox spec asks for; empty for
    specs that are not CRI sandboxes or carry no namespace list."""
    if annotations.get(CONTAINER_TYPE) != "sandbox":
        return []
    linux = oci.get("linux")
    namespaces = linux.get("namespaces") if isinstance(linux, Mapping) else None
    if not isinstance(namespaces, list):
        return []
    present = {ns.get("type") for ns in namespaces if isinstance(ns, Mapping)}
    return [option for kind, (option, _) in REFUSED.items() if kind not in present]


def refuse_host_namespaces(
    sandbox_id: str, oci: Mapping[str, Any], annotations: Mapping[str, str]
) -> None:
    """Raise UnsupportedPodError naming every host namespace the sandbox asks for."""
    options = host_namespaces(oci, annotations)
    if not options:
        return
    reasons = dict(REFUSED.values())
    refused = "; ".join(
        f"{option} is not supported by the contrast-cc runtime: {reasons[option]}"
        for option in options
    )
    raise UnsupportedPodError(f"sandbox {sandbox_id}: {refused}")
