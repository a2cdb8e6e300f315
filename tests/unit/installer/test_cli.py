"""The installer command end to end on a fake node root, with fake systemctl/nsenter."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest

from tests.unit.installer.fakes import Fakes
from tests.unit.installer.nodes import DATA, Node, handler_of, make_node, run
from tests.unit.installer.test_containerd_config import only_added_lines

pytestmark = pytest.mark.allow_programs("systemctl", "nsenter", "containerd")


def backups(node: Node) -> list[Path]:
    return sorted(node.config.parent.glob("config.toml.*.bak"))


@pytest.mark.parametrize("config", sorted(p.name for p in DATA.glob("*.toml")))
def test_install_twice_on_bare_metal(tmp_path: Path, fakes: Fakes, config: str) -> None:
    node = make_node(tmp_path, config=config)
    old = node.config.read_text()
    code, out = run(*node.args("install", "--host-namespaces", "direct"))
    assert code == 0, out
    handler = handler_of(node)
    new = node.config.read_text()
    assert f"runtimes.{handler}]" in new
    only_added_lines(old, new)
    assert [b.read_text() for b in backups(node)] == [old]
    assert "systemctl restart containerd.service" in fakes.calls()
    assert (node.root / f"opt/contrast/{handler}/bin/containerd-shim-contrast-cc-v2").is_file()

    fakes.log.unlink()
    mtime = node.config.stat().st_mtime_ns
    code, out = run(*node.args("install", "--host-namespaces", "direct"))
    assert code == 0
    assert "config /etc/containerd/config.toml: unchanged" in out
    assert "restart containerd.service: not needed" in out
    assert node.config.stat().st_mtime_ns == mtime
    assert len(backups(node)) == 1
    assert not [c for c in fakes.calls() if "restart" in c.split()[:2]]


def test_rerun_restarts_when_the_unit_predates_the_config(
    tmp_path: Path, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed after writing but before restarting: the next one restarts."""
    node = make_node(tmp_path)
    assert run(*node.args("install", "--no-restart"))[0] == 0
    monkeypatch.setenv("FAKE_ACTIVE_SINCE", "@1000")
    code, out = run(*node.args("install", "--host-namespaces", "direct"))
    assert code == 0
    assert "config /etc/containerd/config.toml: unchanged" in out
    assert "systemctl restart containerd.service" in fakes.calls()


def test_in_the_daemonset_programs_run_in_the_hosts_namespaces(
    tmp_path: Path, fakes: Fakes
) -> None:
    node = make_node(tmp_path)
    assert run(*node.args("install"))[0] == 0  # --host-root is not /: nsenter
    assert (
        "nsenter --target 1 --mount --uts --ipc --net --pid -- systemctl restart "
        "containerd.service" in fakes.calls()
    )


def test_dry_run_prints_the_diff_and_writes_nothing(tmp_path: Path, fakes: Fakes) -> None:
    node = make_node(tmp_path)
    old = node.config.read_bytes()
    code, out = run(*node.args("install", "--dry-run"))
    assert code == 0
    handler = handler_of(node)
    assert "--- a/etc/containerd/config.toml\n+++ b/etc/containerd/config.toml\n" in out
    assert f'+        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{handler}]' in out
    assert not [line for line in out.splitlines() if line.startswith("-") and line[:3] != "---"]
    assert "would create" in out and "would restart" in out
    assert node.config.read_bytes() == old
    assert not (node.root / "opt").exists()
    assert backups(node) == []
    assert fakes.calls() == []


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("version = 5\n[plugins]\n", "unsupported config version 5; supported: 2, 3, 4"),
        ("version = 2\n[plugins.\n", "not valid TOML"),
        ("[plugins]\n", "has no 'version' key"),
    ],
)
def test_bad_config_fails_and_touches_nothing(
    tmp_path: Path, fakes: Fakes, capsys: pytest.CaptureFixture[str], content: str, problem: str
) -> None:
    node = make_node(tmp_path)
    node.config.write_text(content)
    before = node.config.read_bytes()
    code, _ = run(*node.args("install"))
    err = capsys.readouterr().err
    assert code == 1
    assert f"error: /etc/containerd/config.toml: {problem}" in err
    assert node.config.read_bytes() == before
    assert backups(node) == []
    assert not list((node.root / "opt/contrast").glob("contrast-cc-*"))  # no asset copied
    assert fakes.calls() == []


def test_missing_config_without_containerd_binary_gets_minimal_file(
    tmp_path: Path, fakes: Fakes
) -> None:
    node = make_node(tmp_path, config=None)
    assert run(*node.args("install"))[0] == 0
    text = node.config.read_text()
    assert text.startswith("# Written by contrast-node-installer")
    config = tomllib.loads(text)
    assert config["version"] == 2
    runtimes = config["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
    # containerd's implicit runc entry is written out: a runtimes table replaces it.
    assert list(runtimes) == ["runc", handler_of(node)]
    assert runtimes["runc"] == {"runtime_type": "io.containerd.runc.v2"}
    assert backups(node) == []
    assert node.config.stat().st_mode & 0o777 == 0o644


def test_missing_config_starts_from_containerd_config_default(
    tmp_path: Path, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = make_node(tmp_path, config=None)
    (node.root / "usr/bin").mkdir(parents=True)
    (node.root / "usr/bin/containerd").write_text("host's containerd")
    monkeypatch.setenv("FAKE_DEFAULT_CONFIG", str(DATA / "containerd-2.3.4-default.toml"))
    assert run(*node.args("install"))[0] == 0
    assert any(c.endswith("-- containerd config default") for c in fakes.calls())
    default = (DATA / "containerd-2.3.4-default.toml").read_text()
    only_added_lines(default, node.config.read_text())
    runtimes = tomllib.loads(node.config.read_text())["plugins"]["io.containerd.cri.v1.runtime"]
    assert handler_of(node) in runtimes["containerd"]["runtimes"]


@pytest.mark.parametrize(
    ("rendered", "template", "plugin"),
    [
        ("containerd-1.6-default.toml", "config.toml.tmpl", "io.containerd.grpc.v1.cri"),
        ("containerd-2.0.11-default.toml", "config-v3.toml.tmpl", "io.containerd.cri.v1.runtime"),
    ],
)
def test_k3s_gets_a_template_and_k3s_agent_is_restarted(
    tmp_path: Path,
    fakes: Fakes,
    monkeypatch: pytest.MonkeyPatch,
    rendered: str,
    template: str,
    plugin: str,
) -> None:
    node = make_node(tmp_path, config=None)
    k3s = node.root / "var/lib/rancher/k3s/agent/etc/containerd"
    k3s.mkdir(parents=True)
    shutil.copyfile(DATA / rendered, k3s / "config.toml")
    monkeypatch.setenv("FAKE_UNITS", "k3s-agent.service")
    code, out = run(*node.args("install"))
    assert code == 0, out
    text = (k3s / template).read_text()
    assert text.startswith('{{ template "base" . }}\n\n[plugins.')
    body = tomllib.loads(text.split("\n", 1)[1])
    assert handler_of(node) in body["plugins"][plugin]["containerd"]["runtimes"]
    assert (k3s / "config.toml").read_bytes() == (DATA / rendered).read_bytes()
    assert any(c.endswith("systemctl restart k3s-agent.service") for c in fakes.calls())
    assert not (node.root / "etc/containerd/config.toml").exists()

    code, out = run(*node.args("install"))
    assert f"config /var/lib/rancher/k3s/agent/etc/containerd/{template}: unchanged" in out


def test_uninstall_restores_the_config_and_removes_assets(tmp_path: Path, fakes: Fakes) -> None:
    node = make_node(tmp_path)
    old = node.config.read_bytes()
    assert run(*node.args("install"))[0] == 0
    handler = handler_of(node)
    fakes.log.unlink()
    code, out = run(*node.args("uninstall"))
    assert code == 0, out
    assert node.config.read_bytes() == old
    assert not (node.root / f"opt/contrast/{handler}").exists()
    assert any(c.endswith("systemctl restart containerd.service") for c in fakes.calls())
    assert len(backups(node)) == 2
    code, out = run("uninstall", "--handler", handler, "--host-root", str(node.root))
    assert code == 0
    assert "unchanged" in out and "absent" in out


def test_uninstall_refuses_a_foreign_handler(
    tmp_path: Path, fakes: Fakes, capsys: pytest.CaptureFixture[str]
) -> None:
    node = make_node(tmp_path)
    code, _ = run("uninstall", "--handler", "runc", "--host-root", str(node.root))
    assert code == 1
    assert "'runc' is not a Contrast runtime handler name" in capsys.readouterr().err


def test_failed_restart_is_an_error_with_systemctls_output(
    tmp_path: Path,
    fakes: Fakes,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    node = make_node(tmp_path)
    monkeypatch.setenv("FAKE_RESTART_FAILS", "1")
    code, _ = run(*node.args("install"))
    err = capsys.readouterr().err
    assert code == 1
    assert "systemctl restart containerd.service: exited with code 1: Job failed" in err
