"""Host namespaces in a CRI sandbox's OCI spec: which pod options they mean."""

from __future__ import annotations

from typing import Any

import pytest

from agent.sandbox.errors import UnsupportedPodError
from agent.sandbox.hostns import host_namespaces, refuse_host_namespaces

CRI_SANDBOX = {"io.kubernetes.cri.container-type": "sandbox"}
POD_NETWORK = {"type": "network", "path": "/var/run/netns/cni-1234"}


def spec(*types: str, network: dict[str, str] | None = POD_NETWORK) -> dict[str, Any]:
    namespaces: list[dict[str, str]] = [{"type": t} for t in types]
    if network is not None:
        namespaces.append(network)
    return {"linux": {"namespaces": namespaces}}


def test_a_pod_of_its_own_namespaces_passes() -> None:
    assert host_namespaces(spec("pid", "ipc", "uts", "mount"), CRI_SANDBOX) == []
    refuse_host_namespaces("p", spec("pid", "ipc", "uts", "mount"), CRI_SANDBOX)
    # A network namespace without a path is a new, empty one (ctr run): not the host's.
    assert host_namespaces(spec("pid", "ipc", network={"type": "network"}), CRI_SANDBOX) == []


def test_each_host_namespace_is_named() -> None:
    # What containerd's CRI writes: the namespace the pod shares with the node is absent.
    assert host_namespaces(spec("pid", "ipc", "mount", network=None), CRI_SANDBOX) == [
        "hostNetwork"
    ]
    assert host_namespaces(spec("ipc", "uts", "mount"), CRI_SANDBOX) == ["hostPID"]
    assert host_namespaces(spec("pid", "uts", "mount"), CRI_SANDBOX) == ["hostIPC"]
    assert host_namespaces(spec("mount", network=None), CRI_SANDBOX) == [
        "hostNetwork", "hostPID", "hostIPC"
    ]  # fmt: skip


def test_the_refusal_names_the_option_and_why() -> None:
    with pytest.raises(UnsupportedPodError) as refused:
        refuse_host_namespaces("pod9", spec("pid", "ipc", "mount", network=None), CRI_SANDBOX)
    assert str(refused.value) == (
        "sandbox pod9: hostNetwork is not supported by the contrast-cc runtime: "
        "the pod runs in its own VM, with its own network stack"
    )
    with pytest.raises(UnsupportedPodError, match=r"hostPID is not supported .*; hostIPC is not"):
        refuse_host_namespaces("pod9", spec("mount"), CRI_SANDBOX)


def test_specs_that_are_not_cri_sandboxes_are_not_judged() -> None:
    bare = spec("mount", network=None)
    assert host_namespaces(bare, {}) == []  # ctr run --net-host: no CRI annotations
    workload = {"io.kubernetes.cri.container-type": "container"}
    assert host_namespaces(bare, workload) == []  # a workload container joins the sandbox's
    assert host_namespaces({}, CRI_SANDBOX) == []  # no namespace list at all
    assert host_namespaces({"linux": {}}, CRI_SANDBOX) == []
