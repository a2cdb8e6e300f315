"""What containerd 2.x's CRI sends that the guest's crun 1.8 refuses: a newer OCI
version (the guest writes its own), net.* sysctls without a network namespace of the
container's own (the guest sets them in its own, the pod's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from guest.agent.errors import InvalidRequest
from guest.agent.spec import OCI_VERSION, GuestContext, adapt, apply_pod_sysctls
from tests.integration.guestagent.requests import spec


@pytest.mark.parametrize("host_version", ["1.0.2-dev", "1.1.0", "1.3.0", ""])
def test_oci_version_is_the_guests(host_version: str) -> None:
    request = spec(["sh"])
    request.Version = host_version
    context = GuestContext(container_id="c1", sandbox_files=Path("/run/s"), exists=lambda _: True)
    config = adapt(request, context).config
    assert config["ociVersion"] == OCI_VERSION == "1.0.2"


def test_net_sysctls_are_the_pods_and_set_by_the_guest(tmp_path: Path) -> None:
    """containerd 2.x's CRI puts net.ipv4.ip_unprivileged_port_start and ping_group_range
    in the sandbox spec; crun refuses net.* without a network namespace of the
    container's own, and the pod's network namespace is the guest's."""
    request = spec(["sh"], sandbox=True)
    request.Linux.Sysctl["net.ipv4.ip_unprivileged_port_start"] = "0"
    request.Linux.Sysctl["net.ipv4.ping_group_range"] = "0 2147483647"
    request.Linux.Sysctl["kernel.shm_rmid_forced"] = "1"
    context = GuestContext(container_id="c1", sandbox_files=Path("/run/s"), exists=lambda _: True)
    adapted = adapt(request, context)
    assert adapted.config["linux"]["sysctl"] == {"kernel.shm_rmid_forced": "1"}
    assert adapted.pod_sysctls == (
        ("net.ipv4.ip_unprivileged_port_start", "0"),
        ("net.ipv4.ping_group_range", "0 2147483647"),
    )
    (tmp_path / "net/ipv4").mkdir(parents=True)
    apply_pod_sysctls(adapted.pod_sysctls, root=tmp_path)
    assert (tmp_path / "net/ipv4/ip_unprivileged_port_start").read_text() == "0"
    assert (tmp_path / "net/ipv4/ping_group_range").read_text() == "0 2147483647"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("net.ipv4.../../x", "not a sysctl name"),
        ("net/ipv4/x", "not a sysctl name"),
        ("net.nonexistent.thing", "cannot be set in the pod's network namespace"),
    ],
)
def test_bad_pod_sysctls_are_refused_by_name(tmp_path: Path, key: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        apply_pod_sysctls(((key, "1"),), root=tmp_path)
