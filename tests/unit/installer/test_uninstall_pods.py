"""Uninstall while Contrast pods run (installer/pods.py): refused, naming the pods and
changing nothing, unless --force; pods of another handler do not count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.sandbox.state import (
    ContainerRecord,
    ProcessRecord,
    SandboxRecord,
    StateStore,
    Status,
    Stdio,
)
from tests.unit.installer.fakes import Fakes
from tests.unit.installer.nodes import Node, make_node, run

pytestmark = pytest.mark.allow_programs("systemctl", "nsenter", "containerd")

SANDBOX = "5f0c" + "0" * 60
BUNDLE = f"/run/containerd/io.containerd.runtime.v2.task/k8s.io/{SANDBOX}"


def installed(tmp_path: Path) -> tuple[Node, str]:
    node = make_node(tmp_path)
    assert run(*node.args("install", "--host-namespaces", "direct"))[0] == 0
    code, out = run("handler", "--manifest", str(node.manifest))
    assert code == 0
    return node, out.strip()


def record(node: Node, handler: str, sandbox: str = SANDBOX, bundle: str = BUNDLE) -> Path:
    """The daemon's state for a running pod of ``handler`` and the bundle containerd made."""
    store = StateStore(node.root / "var/lib/contrast")  # the daemon's own format
    init = ProcessRecord(exec_id="", stdio=Stdio(), status=Status.RUNNING, pid=4242)
    store.save(
        SandboxRecord(
            namespace="k8s.io",
            id=sandbox,
            ttrpc_address="/run/containerd/containerd.sock.ttrpc",
            config_path=f"/opt/contrast/{handler}/etc/runtime.toml",
            containers=(ContainerRecord(sandbox, bundle, init, is_sandbox=True),),
        )
    )
    config = node.root / bundle.lstrip("/") / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    annotations = {
        "io.kubernetes.cri.sandbox-name": "web",
        "io.kubernetes.cri.sandbox-namespace": "shop",
    }
    config.write_text(json.dumps({"annotations": annotations}))
    return store.path("k8s.io", sandbox)


def test_uninstall_refuses_while_a_pod_runs_and_changes_nothing(
    tmp_path: Path, fakes: Fakes, capsys: pytest.CaptureFixture[str]
) -> None:
    node, handler = installed(tmp_path)
    record(node, handler)
    config = node.config.read_bytes()
    fakes.log.unlink()
    code, _ = run(*node.args("uninstall", "--host-namespaces", "direct"))
    err = capsys.readouterr().err
    assert code == 1
    assert f"1 Contrast pod(s) of {handler} still run on this node" in err
    assert "pod shop/web (sandbox 5f0c00000000 in containerd namespace k8s.io)" in err
    assert "Delete them first" in err and "--force" in err
    assert node.config.read_bytes() == config
    assert (node.root / f"opt/contrast/{handler}").is_dir()
    assert (node.root / "usr/local/bin/containerd-shim-contrast-cc-v2").is_symlink()
    assert fakes.calls() == []


def test_force_uninstalls_and_names_the_pods_left_running(tmp_path: Path, fakes: Fakes) -> None:
    node, handler = installed(tmp_path)
    record(node, handler)
    code, out = run(*node.args("uninstall", "--host-namespaces", "direct", "--force"))
    assert code == 0, out
    assert "pod shop/web (sandbox 5f0c00000000 in containerd namespace k8s.io): left running" in out
    assert handler not in node.config.read_text()
    assert not (node.root / f"opt/contrast/{handler}").exists()


def test_pods_of_another_handler_do_not_count_and_unreadable_state_does(
    tmp_path: Path, fakes: Fakes, capsys: pytest.CaptureFixture[str]
) -> None:
    node, handler = installed(tmp_path)
    record(node, "contrast-cc-qemu-insecure-00000000")
    code, out = run(*node.args("uninstall", "--host-namespaces", "direct", "--dry-run"))
    assert code == 0, out
    # A pod whose bundle is gone is named by its sandbox; a torn state file still counts.
    record(node, handler, sandbox="ab" * 32, bundle="/run/containerd/gone")
    (node.root / "run/containerd/gone/config.json").unlink()
    (node.root / "var/lib/contrast/sandboxes/k8s.io/torn.json").write_text("{")
    code, _ = run(*node.args("uninstall", "--host-namespaces", "direct"))
    err = capsys.readouterr().err
    assert code == 1
    assert "2 Contrast pod(s)" in err
    assert ": sandbox abababababab in containerd namespace k8s.io; " in err
    assert "(unreadable state torn.json)" in err
