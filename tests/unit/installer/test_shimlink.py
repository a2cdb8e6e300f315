"""The shim on containerd's PATH (installer/shimlink.py): containerd 1.6 ignores
runtime_path and finds ``containerd-shim-contrast-cc-v2`` on its PATH only. Install
links it in /usr/local/bin; uninstall removes only a link of its own handler; a file
that is not ours is never touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from installer import shimlink
from tests.unit.installer.fakes import Fakes
from tests.unit.installer.nodes import DATA, Node, handler_of, make_node, run

pytestmark = pytest.mark.allow_programs("systemctl", "nsenter", "containerd")

LINK = "usr/local/bin/containerd-shim-contrast-cc-v2"


def test_the_name_containerd_looks_for() -> None:
    assert shimlink.shim_name() == "containerd-shim-contrast-cc-v2"
    assert shimlink.shim_name("io.containerd.runc.v2") == "containerd-shim-runc-v2"
    with pytest.raises(ValueError, match=r"'runc' is not io\.containerd"):
        shimlink.shim_name("runc")


@pytest.mark.parametrize("config", sorted(p.name for p in DATA.glob("*.toml")))
def test_install_links_the_shim_and_uninstall_removes_it(
    tmp_path: Path, fakes: Fakes, config: str
) -> None:
    node = make_node(tmp_path, config=config)
    code, out = run(*node.args("install", "--host-namespaces", "direct"))
    assert code == 0, out
    handler = handler_of(node)
    shim = f"/opt/contrast/{handler}/bin/containerd-shim-contrast-cc-v2"
    link = node.root / LINK
    assert link.is_symlink()
    assert str(link.readlink()) == shim
    assert f"link /{LINK} -> {shim}: create" in out
    assert (node.root / shim.lstrip("/")).is_file()  # a host path: the host's shim
    code, out = run(*node.args("install", "--host-namespaces", "direct"))
    assert code == 0
    assert f"link /{LINK} -> {shim}: unchanged" in out
    code, out = run(*node.args("uninstall", "--host-namespaces", "direct"))
    assert code == 0, out
    assert f"link /{LINK}: remove" in out
    assert not link.is_symlink()


def test_a_shim_that_is_not_ours_is_left_alone(tmp_path: Path, fakes: Fakes) -> None:
    node = make_node(tmp_path)
    link = node.root / LINK
    link.parent.mkdir(parents=True)
    link.write_text("#!/usr/bin/python3\n# the pip-installed shim\n")
    code, out = run(*node.args("install", "--host-namespaces", "direct"))
    assert code == 0, out
    assert ": not ours: left alone" in out
    assert link.read_text().endswith("# the pip-installed shim\n")
    code, out = run(*node.args("uninstall", "--host-namespaces", "direct"))
    assert code == 0, out
    assert f"link /{LINK}: not ours: left alone" in out
    assert link.read_text().endswith("# the pip-installed shim\n")
    # A symlink elsewhere is not ours either.
    link.unlink()
    link.symlink_to("/usr/lib/other/containerd-shim-contrast-cc-v2")
    code, out = run(*node.args("install", "--host-namespaces", "direct"))
    assert ": not ours: left alone" in out
    assert str(link.readlink()) == "/usr/lib/other/containerd-shim-contrast-cc-v2"


def test_a_new_handler_takes_the_link_over_and_the_old_ones_uninstall_keeps_it(
    tmp_path: Path, fakes: Fakes
) -> None:
    old = make_node(tmp_path / "old", kernel=b"old kernel")
    new_assets = make_node(tmp_path / "new", kernel=b"new kernel")
    new = Node(old.root, new_assets.manifest, new_assets.assets)
    assert run(*old.args("install", "--host-namespaces", "direct"))[0] == 0
    code, out = run(*new.args("install", "--host-namespaces", "direct"))
    assert code == 0, out
    old_handler, new_handler = handler_of(old), handler_of(new)
    assert old_handler != new_handler
    link = old.root / LINK
    assert f"/{new_handler}/" in str(link.readlink())
    assert ": update" in out
    code, out = run(*old.args("uninstall", "--host-namespaces", "direct"))
    assert code == 0, out
    assert f"link /{LINK}: points at another handler: left alone" in out
    assert f"/{new_handler}/" in str(link.readlink())
    assert (old.root / str(link.readlink()).lstrip("/")).is_file()


def test_dry_run_links_nothing(tmp_path: Path, fakes: Fakes) -> None:
    node = make_node(tmp_path)
    code, out = run(*node.args("install", "--dry-run"))
    assert code == 0, out
    assert ": would create" in out
    assert not (node.root / LINK).is_symlink()
