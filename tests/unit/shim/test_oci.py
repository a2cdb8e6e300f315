"""OCI config.json to the agent protocol's Spec."""

from __future__ import annotations

import logging

import pytest

from agent.sandbox import oci
from agent.sandbox.errors import BackendError

SPEC = {
    "ociVersion": "1.0.2-dev",
    "process": {
        "terminal": False,
        "user": {"uid": 1000, "gid": 1000, "additionalGids": [10]},
        "args": ["/bin/sh", "-c", "echo hi"],
        "env": ["PATH=/bin"],
        "cwd": "/",
        "capabilities": {"bounding": ["CAP_CHOWN"]},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
        "oomScoreAdj": -998,
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "pod",
    "mounts": [{"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid"]}],
    "annotations": {"io.kubernetes.cri.container-type": "sandbox"},
    "linux": {
        "namespaces": [{"type": "pid"}, {"type": "network", "path": "/var/run/netns/x"}],
        "cgroupsPath": "/kubepods/pod1/c1",
        "resources": {"memory": {"limit": 1048576}, "cpu": {"shares": 2}},
        "maskedPaths": ["/proc/kcore"],
        "sysctl": {"net.ipv4.ip_forward": "1"},
    },
}


def test_fields_arrive_under_the_agent_names() -> None:
    spec = oci.spec(SPEC)
    assert spec.Version == "1.0.2-dev"
    assert list(spec.Process.Args) == ["/bin/sh", "-c", "echo hi"]
    assert (spec.Process.User.UID, spec.Process.User.GID) == (1000, 1000)
    assert list(spec.Process.User.AdditionalGids) == [10]
    assert spec.Process.OOMScoreAdj == -998
    assert spec.Process.NoNewPrivileges is True
    assert list(spec.Process.Capabilities.Bounding) == ["CAP_CHOWN"]
    assert spec.Process.Rlimits[0].Type == "RLIMIT_NOFILE"
    assert spec.Root.Readonly is True
    assert spec.Mounts[0].destination == "/proc"
    assert dict(spec.Annotations) == {"io.kubernetes.cri.container-type": "sandbox"}
    assert spec.Linux.CgroupsPath == "/kubepods/pod1/c1"
    assert spec.Linux.Namespaces[1].Path == "/var/run/netns/x"
    assert spec.Linux.Resources.Memory.Limit == 1048576
    assert dict(spec.Linux.Sysctl) == {"net.ipv4.ip_forward": "1"}


def test_unknown_keys_are_dropped_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        spec = oci.spec(
            {"process": {"args": ["x"], "ioPriority": {"class": "x"}}, "domainname": "d"}
        )
    assert list(spec.Process.Args) == ["x"]
    assert "process.ioPriority" in caplog.text and "domainname" in caplog.text


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"process": {"args": "sh"}}, "process.args"),
        ({"process": {"user": {"uid": "0"}}}, "process.user.uid"),
        ({"process": {"terminal": 1}}, "process.terminal"),
        ({"annotations": ["a"]}, "annotations"),
    ],
)
def test_wrong_types_name_their_path(data: dict[str, object], where: str) -> None:
    with pytest.raises(BackendError, match=f"OCI spec {where}"):
        oci.spec(data)


def test_exec_process() -> None:
    process = oci.process({"args": ["ls"], "cwd": "/tmp", "terminal": True})
    assert (list(process.Args), process.Cwd, process.Terminal) == (["ls"], "/tmp", True)


def test_update_resources() -> None:
    res = oci.resources({"cpu": {"shares": 512, "quota": 50000}, "memory": {"limit": 1 << 30}})
    assert (res.CPU.Shares, res.CPU.Quota, res.Memory.Limit) == (512, 50000, 1 << 30)
