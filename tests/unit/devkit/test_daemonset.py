"""devkit.daemonset: packaging/daemonset.yaml read into the CRI configs a kubelet sends."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from api.containerd.cri.runtime.v1 import api_pb2
from devkit import daemonset
from devkit.daemonset import DaemonSetError

REPO = Path(__file__).parents[3]


def under(root: Path):  # type: ignore[no-untyped-def]
    return lambda path: root / path.lstrip("/")


def test_the_installer_gets_the_host_root_and_the_manifests_command(tmp_path: Path) -> None:
    pod = daemonset.load()
    [init] = pod.container_names(init=True)
    config = pod.container_config(init, "contrast-node:x", under(tmp_path))
    raw = yaml.safe_load((REPO / "packaging/daemonset.yaml").read_text())
    [spec_init] = raw["spec"]["template"]["spec"]["initContainers"]
    assert list(config.command) == spec_init["command"]
    assert config.linux.security_context.privileged
    [mount] = config.mounts
    assert (mount.container_path, mount.host_path) == ("/host", str(tmp_path))
    assert mount.propagation == api_pb2.PROPAGATION_PRIVATE
    assert config.linux.security_context.namespace_options.pid == api_pb2.NODE


def test_the_daemon_gets_every_mount_with_its_propagation(tmp_path: Path) -> None:
    pod = daemonset.load()
    (tmp_path / "dev").mkdir()
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)
    config = pod.container_config("daemon", "contrast-node:x", under(tmp_path))
    raw = yaml.safe_load((REPO / "packaging/daemonset.yaml").read_text())
    [spec] = raw["spec"]["template"]["spec"]["containers"]
    wanted = {m["mountPath"]: m for m in spec["volumeMounts"]}
    got = {m.container_path: m for m in config.mounts}
    assert sorted(got) == sorted(wanted)
    assert got["/run/containerd"].propagation == api_pb2.PROPAGATION_HOST_TO_CONTAINER
    assert got["/opt/contrast"].readonly
    assert got["/run/contrast"].host_path == str(tmp_path / "run/contrast")
    assert (tmp_path / "var/lib/kubelet").is_dir()  # DirectoryOrCreate, made
    assert {(e.key, e.value) for e in config.envs} == {(e["name"], e["value"]) for e in spec["env"]}
    assert config.linux.resources.cpu_shares == 102  # 100m
    sandbox = pod.sandbox_config("uid-1", str(tmp_path / "logs"))
    assert sandbox.linux.security_context.privileged
    assert sandbox.linux.security_context.namespace_options.pid == api_pb2.NODE
    assert sandbox.linux.security_context.namespace_options.network == api_pb2.POD


def test_a_missing_directory_volume_fails_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DaemonSetError, match=r"volume dev: hostPath .*/dev is no directory"):
        daemonset.load().container_config("daemon", "i", under(tmp_path))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(args=["x"]), r"fields not implemented: \['args'\]"),
        (lambda c: c["volumeMounts"][0].update(subPath="x"), r"volumeMount fields \['subPath'\]"),
        (lambda c: c["securityContext"].update(runAsUser=0), "securityContext"),
    ],
)
def test_a_field_not_implemented_fails_naming_it(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    raw = yaml.safe_load((REPO / "packaging/daemonset.yaml").read_text())
    edit(raw["spec"]["template"]["spec"]["initContainers"][0])
    changed = tmp_path / "ds.yaml"
    changed.write_text(yaml.safe_dump(raw))
    with pytest.raises(DaemonSetError, match=message):
        daemonset.load(changed).container_config("installer", "i", under(tmp_path))


def test_a_pod_field_not_implemented_fails_naming_it(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "packaging/daemonset.yaml").read_text())
    raw["spec"]["template"]["spec"]["hostIPC"] = True
    changed = tmp_path / "ds.yaml"
    changed.write_text(yaml.safe_dump(raw))
    with pytest.raises(DaemonSetError, match=r"pod fields not implemented: \['hostIPC'\]"):
        daemonset.load(changed)
