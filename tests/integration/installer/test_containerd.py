"""Real containerd started on the installer's output loads our runtime handler: Debian's
1.6 on its default config and the minimal file; 1.6, 2.0.11 and 2.3.4 (../shared/peers)
each from its own ``containerd config default`` (versions 2, 3, 4), restarted by the
installer through a stand-in ``systemctl`` (``fake_systemd``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import pytest

from devkit import ownership
from devkit.containerd import Containerd, running_containerd
from tests.conftest import require_programs
from tests.integration.installer import fake_systemd
from tests.support.containerd_releases import VERSIONS, require_release
from tests.unit.installer.nodes import Node, make_node

REPO = Path(__file__).parents[3]


def installer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m installer`` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "installer", *args],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=env,
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


CONFIG_VERSION = {"1.6": 2, "2.0.11": 3, "2.3.4": 4}


@pytest.mark.parametrize("version", VERSIONS)
def test_install_restart_and_uninstall_on_each_release(tmp_path: Path, version: str) -> None:
    """A node running containerd ``version`` without a config file: the installer starts
    from that containerd's own ``containerd config default`` (config version 2, 3, 4),
    enters our handler, restarts the unit (``fake_systemd``: a real containerd restarted
    on the host's config), whose CRI ``Status`` then lists the handler. A second run
    changes nothing and restarts nothing; a config newer than the unit's start (a run
    killed before its restart) is restarted; uninstall takes the handler out again."""
    release = require_release(version)
    node = make_node(tmp_path / "node", config=None)
    (node.root / "usr/bin").mkdir(parents=True)
    (node.root / "usr/bin/containerd").symlink_to(release.containerd)  # the host has it
    state = Path(tempfile.mkdtemp(prefix="sysd-", dir="/tmp"))  # short: sockets
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(
        f'#!/bin/sh\nexec {sys.executable} -m tests.integration.installer.fake_systemd "$@"\n'
    )
    systemctl.chmod(0o755)
    ownership.claim()  # the containerd it starts carries our owner marker
    env = {
        **os.environ,
        "PATH": release.path(f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"),
        "PYTHONPATH": str(REPO),
        "FAKE_SYSTEMD_STATE": str(state),
        "FAKE_SYSTEMD_CONFIG": str(node.config),
        "FAKE_SYSTEMD_CONTAINERD": version,
    }
    args = ["--distribution", "containerd", "--host-namespaces", "direct"]
    daemon = Containerd(fake_systemd.socket_of(state), state / "containerd.log", release)
    try:
        handler = handler_of(node)
        first = installer(*node.args("install", *args), env=env)
        assert first.returncode == 0, first.stderr + first.stdout
        assert "config /etc/containerd/config.toml: written (created)" in first.stdout
        assert "restart containerd.service: done" in first.stdout
        patched = tomllib.loads(node.config.read_text())
        assert patched["version"] == CONFIG_VERSION[version]
        ours = daemon.cri_runtimes()[handler]
        assert ours["runtimeType"] == "io.containerd.contrast-cc.v2"
        assert ours["options"] == {"ConfigPath": f"/opt/contrast/{handler}/etc/runtime.toml"}
        assert "runc" in daemon.cri_runtimes()  # containerd's own default survives
        started = fake_systemd.pid_of(state)

        again = installer(*node.args("install", *args), env=env)
        assert again.returncode == 0, again.stderr
        assert "config /etc/containerd/config.toml: unchanged" in again.stdout
        assert (
            "restart containerd.service: not needed (started after the config was written)"
            in again.stdout
        )
        assert fake_systemd.pid_of(state) == started

        later = time.time() + 5  # as if the last run was killed between write and restart
        os.utime(node.config, (later, later))
        finish = installer(*node.args("install", *args), env=env)
        assert finish.returncode == 0, finish.stderr
        assert "config /etc/containerd/config.toml: unchanged" in finish.stdout
        assert "restart containerd.service: done" in finish.stdout
        assert fake_systemd.pid_of(state) not in (None, started)
        assert handler in daemon.cri_runtimes()

        removed = installer(*node.args("uninstall", *args), env=env)
        assert removed.returncode == 0, removed.stderr
        assert "restart containerd.service: done" in removed.stdout
        assert handler not in daemon.cri_runtimes()
        assert "runc" in daemon.cri_runtimes()
        calls = (state / "calls").read_text().splitlines()
        assert calls.count("restart containerd.service") == 3
    except BaseException:
        log = state / "containerd.log"
        print(log.read_text(errors="replace")[-4000:] if log.exists() else "no containerd log")
        raise
    finally:
        fake_systemd.stop(state)
        shutil.rmtree(state, ignore_errors=True)
