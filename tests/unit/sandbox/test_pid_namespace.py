"""Which containers join the pod's PID namespace in the guest (sandbox_pidns)."""

from __future__ import annotations

from agent.sandbox.guest import shares_pod_pid_namespace


def test_cri_pod_pid_mode_joins_the_pods_namespace() -> None:
    # NamespaceMode POD: containerd names the sandbox's pid namespace.
    oci = {"linux": {"namespaces": [{"type": "pid", "path": "/proc/4242/ns/pid"}]}}
    assert shares_pod_pid_namespace(oci) is True


def test_cri_container_pid_mode_gets_its_own() -> None:
    # NamespaceMode CONTAINER: a pid namespace of the container's own (no path).
    oci = {"linux": {"namespaces": [{"type": "ipc", "path": "/x"}, {"type": "pid"}]}}
    assert shares_pod_pid_namespace(oci) is False


def test_no_pid_entry_keeps_the_pods() -> None:
    assert shares_pod_pid_namespace({}) is True
    assert shares_pod_pid_namespace({"linux": {"namespaces": [{"type": "ipc"}]}}) is True
