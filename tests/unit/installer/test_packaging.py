"""packaging/ and the Containerfile: valid Kubernetes objects that agree with each other."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from installer import assets
from installer.manifest import Role, load_manifest

REPO = Path(__file__).parents[3]
PACKAGING = REPO / "packaging"
K8S_VERSION = kubernetes_validate.latest_version()


def objects() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((PACKAGING / "kustomization.yaml").read_text())
    found = []
    for resource in kustomization["resources"]:
        found += [d for d in yaml.safe_load_all((PACKAGING / resource).read_text()) if d]
    return found


def by_kind(kind: str) -> dict[str, Any]:
    [obj] = [o for o in objects() if o["kind"] == kind]
    return obj


def test_every_yaml_file_is_in_the_kustomize_base() -> None:
    kustomization = yaml.safe_load((PACKAGING / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    on_disk = {p.name for p in PACKAGING.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk


@pytest.mark.parametrize("index", range(3))
def test_manifests_validate_against_kubernetes_schemas(index: int) -> None:
    obj = objects()[index]
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_schema_validation_catches_a_typo() -> None:
    daemonset = by_kind("DaemonSet")
    daemonset["spec"]["template"]["spec"]["hostPid"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="hostPid"):
        kubernetes_validate.validate(daemonset, K8S_VERSION, strict=True)


def test_runtimeclass_and_daemonset_agree() -> None:
    runtime_class = by_kind("RuntimeClass")
    assert assets.HANDLER_RE.match(runtime_class["handler"])
    assert runtime_class["overhead"]["podFixed"]["memory"]
    pod = by_kind("DaemonSet")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == runtime_class["scheduling"]["nodeSelector"]
    assert pod["hostPID"] is True
    [init] = pod["initContainers"]
    assert init["securityContext"]["privileged"] is True
    assert init["command"][:2] == ["contrast-node-installer", "install"]
    host_mount = init["command"][init["command"].index("--host-root") + 1]
    volumes = {v["name"]: v for v in pod["volumes"]}
    [mount] = [m for m in init["volumeMounts"] if m["mountPath"] == host_mount]
    assert volumes[mount["name"]]["hostPath"]["path"] == "/"
    # The relay is no container of the pod: replacing the pod would end it (and with it
    # containerd's connections, hence every pod of the node). The launcher starts it.
    [daemon] = pod["containers"]
    assert daemon["command"] == ["contrast-node-daemon"]
    mounts = {m["mountPath"] for m in daemon["volumeMounts"]}
    assert {"/run/contrast", "/run/containerd", "/opt/contrast"} <= mounts


def test_daemon_sees_the_kubelets_pod_directories_where_it_looks_for_them() -> None:
    # Volumes are copied into the pod-VM from the kubelet's pod directories: the daemon
    # container needs them at the path CONTRAST_KUBELET_ROOT names, with the kubelet's
    # later tmpfs mounts (secrets, memory emptyDirs) propagated, and writable (the
    # termination message is written back).
    from agent.volumes.layout import KUBELET_ROOT, KUBELET_ROOT_ENV

    pod = by_kind("DaemonSet")["spec"]["template"]["spec"]
    [daemon] = pod["containers"]
    env = {e["name"]: e["value"] for e in daemon.get("env", [])}
    root = env.get(KUBELET_ROOT_ENV, str(KUBELET_ROOT))
    [mount] = [m for m in daemon["volumeMounts"] if m["mountPath"] == root]
    assert mount["mountPropagation"] == "HostToContainer"
    assert not mount.get("readOnly", False)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mount["name"]]["hostPath"]["path"] == root


def containerfile_copies() -> list[tuple[str, str]]:
    text = (REPO / "Containerfile").read_text().replace("\\\n", " ")
    copies = []
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == "COPY" and not words[1].startswith("--from"):
            *sources, dest = words[1:]
            copies += [(src, dest) for src in sources]
    return copies


def test_containerfile_copies_files_that_exist() -> None:
    instructions = {"FROM", "ARG", "RUN", "COPY", "WORKDIR", "CMD", "ENV", "ENTRYPOINT"}
    text = (REPO / "Containerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            assert line.split()[0] in instructions, line
    for src, _ in containerfile_copies():
        assert (REPO / src).exists(), src


def test_node_manifest_matches_what_the_containerfile_ships() -> None:
    manifest = load_manifest(PACKAGING / "node/manifest.toml")
    text = (REPO / "Containerfile").read_text()
    shipped = {dest.rstrip("/") for _, dest in containerfile_copies()}
    guest = re.search(r"COPY --from=guest (.*?) (/usr/share/contrast/assets/)", text, re.S)
    assert guest is not None
    for name in guest.group(1).replace("\\\n", " ").split():
        shipped.add(guest.group(2) + Path(name).name)
    image_dir = Path("/usr/share/contrast")
    for asset in manifest.assets:
        in_image = image_dir / Path(asset.source).relative_to(PACKAGING / "node")
        assert str(in_image) in shipped, asset.source
    assert manifest.asset_with_role(Role.SHIM).mode == 0o755
    assert manifest.asset_with_role(Role.RUNTIME_CONFIG).substitute


def test_systemd_unit_has_the_settings_the_daemon_relies_on() -> None:
    unit = (PACKAGING / "systemd/contrast-node-daemon.service").read_text()
    for setting in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "KillMode=process"):
        assert f"\n{setting}" in unit
    assert "\nExecStart=/usr/local/bin/contrast-node-daemon\n" in unit


LAUNCHER = PACKAGING / "node/shim-launcher.sh"


@pytest.mark.allow_programs("sh")
def test_shim_launcher_enters_the_daemons_mount_namespace(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nsenter").write_text(
        '#!/bin/sh\necho "nsenter $*"\n'
        'echo "$CONTRAST_DAEMON_SUPERVISED $CONTRAST_RELAY_EXIT_IDLE"\n'
    )
    (bin_dir / "nsenter").chmod(0o755)
    (tmp_path / "daemon.pid").write_text(f"{os.getpid()}\n")
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "CONTRAST_RUN_DIR": str(tmp_path),
        "CONTRAST_DAEMON_SUPERVISED": "0",  # containerd's environment does not decide
    }
    done = subprocess.run(
        ["sh", str(LAUNCHER), "-namespace", "k8s.io", "-id", "abc", "start"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"nsenter --target {os.getpid()} --mount -- /bin/sh -c cd \"$1\" && shift && exec \"$@\" "
        f"containerd-shim-contrast-cc-v2 {tmp_path} "
        "/usr/local/bin/containerd-shim-contrast-cc-v2 -namespace k8s.io -id abc start",
        # The shim, and the relay it starts, are told: the kubelet runs the daemon (never
        # start one), and leave when idle.
        "1 1",
    ]


@pytest.mark.allow_programs("sh")
@pytest.mark.parametrize(
    ("pidfile", "message"),
    [
        (None, "is missing: is the contrast-node daemon running?"),
        ("12ab", "does not hold a pid"),
        ("999999999", "is not running"),
    ],
)
def test_shim_launcher_fails_clearly_without_a_daemon(
    tmp_path: Path, pidfile: str | None, message: str
) -> None:
    if pidfile is not None:
        (tmp_path / "daemon.pid").write_text(pidfile)
    done = subprocess.run(
        ["sh", str(LAUNCHER), "start"],
        env={"CONTRAST_RUN_DIR": str(tmp_path), "PATH": "/bin"},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.returncode == 1
    assert message in done.stderr


@pytest.mark.allow_programs("sh")
@pytest.mark.parametrize(
    ("action", "relay_alive", "entered"),
    [("delete", True, "relay"), ("start", True, None), ("delete", False, None)],
)
def test_shim_launcher_deletes_through_the_relays_namespace_without_a_daemon(
    tmp_path: Path, action: str, relay_alive: bool, entered: str | None
) -> None:
    """With the daemon container away, containerd's `delete` still runs (in the relay's
    mount namespace: the shim then releases the task itself); `start` does not."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nsenter").write_text('#!/bin/sh\necho "nsenter $*"\n')
    (bin_dir / "nsenter").chmod(0o755)
    (tmp_path / "daemon.pid").write_text("999999999\n")
    (tmp_path / "relay.pid").write_text(f"{os.getpid() if relay_alive else 999999998}\n")
    done = subprocess.run(
        ["sh", str(LAUNCHER), "-id", "abc", "-bundle", str(tmp_path), action],
        cwd=tmp_path,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "CONTRAST_RUN_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if entered is None:
        assert done.returncode == 1
        assert "daemon pid 999999999" in done.stderr
        assert "is not running" in done.stderr
        assert done.stdout == ""
    else:
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"nsenter --target {os.getpid()} --mount ")
        assert done.stdout.strip().endswith(f"-id abc -bundle {tmp_path} delete")
