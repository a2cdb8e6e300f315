"""Real containerd 1.6 started on the installer's output loads our runtime handler."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from devkit.containerd import running_containerd
from tests.conftest import require_programs
from tests.unit.installer.nodes import Node, make_node

REPO = Path(__file__).parents[3]


def installer(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m installer`` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "installer", *args],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def handler_of(node: Node) -> str:
    done = installer("handler", "--manifest", str(node.manifest))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("config", ["containerd-1.6-default.toml", None])
def test_containerd_cri_lists_our_handler(tmp_path: Path, config: str | None) -> None:
    """On Debian's default config, and on the minimal file written when there is none."""
    require_programs("containerd")
    node = make_node(tmp_path / "node", config=config)
    done = installer(*node.args("install", "--no-restart"))
    assert done.returncode == 0, done.stderr
    handler = handler_of(node)
    patched = node.config.read_text()
    assert tomllib.loads(patched)["version"] == 2

    with running_containerd(patched, tmp_path / "containerd") as containerd:
        runtimes = containerd.cri_runtimes()

    ours = runtimes[handler]
    assert ours["runtimeType"] == "io.containerd.contrast-cc.v2"
    assert ours["runtimePath"] == f"/opt/contrast/{handler}/bin/containerd-shim-contrast-cc-v2"
    assert ours["options"] == {"ConfigPath": f"/opt/contrast/{handler}/etc/runtime.toml"}
    assert ours["PodAnnotations"] == ["io.katacontainers.*"]
    assert ours["privileged_without_host_devices"] is True
    assert runtimes["runc"]["runtimeType"] == "io.containerd.runc.v2"  # the default survives

    # The installed runtime config really is where ConfigPath points.
    assert (node.root / ours["options"]["ConfigPath"].lstrip("/")).is_file()


def test_uninstalled_handler_is_gone_from_containerd(tmp_path: Path) -> None:
    require_programs("containerd")
    node = make_node(tmp_path / "node")
    assert installer(*node.args("install", "--no-restart")).returncode == 0
    handler = handler_of(node)
    done = installer(*node.args("uninstall", "--no-restart"))
    assert done.returncode == 0, done.stderr
    with running_containerd(node.config.read_text(), tmp_path / "containerd") as containerd:
        assert handler not in containerd.cri_runtimes()


def test_bad_config_exit_code_and_message(tmp_path: Path) -> None:
    node = make_node(tmp_path / "node")
    node.config.write_text("version = 7\n")
    done = installer(*node.args("install", "--no-restart"))
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        "error: /etc/containerd/config.toml: unsupported config version 7; supported: 2, 3, 4"
    )
    assert node.config.read_text() == "version = 7\n"
