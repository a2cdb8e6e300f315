"""Assets: verified before they are published, copied only when they differ."""

from __future__ import annotations

from pathlib import Path

import pytest

from installer import assets
from installer.assets import Action
from installer.errors import InstallerError, IntegrityError
from installer.manifest import load_manifest
from tests.unit.installer.nodes import make_node

HANDLER_DIR = "opt/contrast"


def bundle_of(manifest: Path) -> assets.Bundle:
    return assets.resolve(load_manifest(manifest))


def test_handler_name_is_platform_and_hash_of_assets(tmp_path: Path) -> None:
    one = bundle_of(make_node(tmp_path / "a").manifest)
    same = bundle_of(make_node(tmp_path / "b").manifest)  # same content, other location
    other = bundle_of(make_node(tmp_path / "c", kernel=b"another kernel").manifest)
    assert assets.HANDLER_RE.match(one.handler)
    assert one.handler.startswith("contrast-cc-qemu-insecure-")
    assert one.handler == same.handler
    assert one.handler != other.handler
    assert str(one.handler_dir) == f"/opt/contrast/{one.handler}"


def test_install_then_nothing_to_do(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    bundle = bundle_of(node.manifest)
    first = assets.install_assets(bundle, node.root, dry_run=False)
    assert {c.action for c in first} == {Action.CREATE}
    base = node.root / HANDLER_DIR / bundle.handler
    shim = base / "bin/containerd-shim-contrast-cc-v2"
    assert shim.read_bytes() == (node.assets / "shim").read_bytes()
    assert shim.stat().st_mode & 0o777 == 0o755
    assert (base / "share/vmlinuz").stat().st_mode & 0o777 == 0o644
    config = (base / "etc/runtime.toml").read_text()
    assert f"# runtime configuration of {bundle.handler}\n" in config
    assert f'kernel = "/opt/contrast/{bundle.handler}/share/vmlinuz"' in config
    assert 'platform = "qemu-insecure"' in config

    inodes = {p: p.stat().st_ino for p in base.rglob("*") if p.is_file()}
    second = assets.install_assets(bundle, node.root, dry_run=False)
    assert {c.action for c in second} == {Action.UNCHANGED}
    assert inodes == {p: p.stat().st_ino for p in base.rglob("*") if p.is_file()}


def test_changed_file_and_mode_are_repaired(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    bundle = bundle_of(node.manifest)
    assets.install_assets(bundle, node.root, dry_run=False)
    base = node.root / HANDLER_DIR / bundle.handler
    (base / "share/vmlinuz").write_bytes(b"tampered")
    (base / "bin/containerd-shim-contrast-cc-v2").chmod(0o700)
    dry = {c.path.name: c.action for c in assets.install_assets(bundle, node.root, dry_run=True)}
    assert dry["vmlinuz"] is Action.UPDATE and dry["containerd-shim-contrast-cc-v2"] is Action.MODE
    assert (base / "share/vmlinuz").read_bytes() == b"tampered"  # dry run wrote nothing
    assets.install_assets(bundle, node.root, dry_run=False)
    assert (base / "share/vmlinuz").read_bytes() == b"kernel"
    assert (base / "bin/containerd-shim-contrast-cc-v2").stat().st_mode & 0o777 == 0o755


def test_symlink_at_target_is_replaced_not_followed(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    bundle = bundle_of(node.manifest)
    target = node.root / HANDLER_DIR / bundle.handler / "share/vmlinuz"
    target.parent.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_bytes(b"kernel")  # same content: a symlink must still not count
    target.symlink_to(victim)
    assets.install_assets(bundle, node.root, dry_run=False)
    assert not target.is_symlink() and target.read_bytes() == b"kernel"
    assert victim.read_bytes() == b"kernel"


def test_source_not_matching_integrity_is_never_published(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    bundle = bundle_of(node.manifest)
    (node.assets / "vmlinuz").write_bytes(b"evil kernel")
    with pytest.raises(IntegrityError, match=r"vmlinuz: integrity mismatch: expected sha384-"):
        assets.install_assets(bundle, node.root, dry_run=False)
    base = node.root / HANDLER_DIR / bundle.handler
    assert not (base / "share/vmlinuz").exists()
    assert not [p for p in base.rglob("*") if "contrast-tmp" in p.name]


def test_local_source_changing_after_resolve_is_caught(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    bundle = bundle_of(node.manifest)  # shim hashed here (no declared integrity)
    (node.assets / "shim").write_bytes(b"#!/bin/sh\nrm -rf /\n")
    with pytest.raises(IntegrityError, match="shim: integrity mismatch"):
        assets.install_assets(bundle, node.root, dry_run=False)


def test_remove_assets(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    bundle = bundle_of(node.manifest)
    assets.install_assets(bundle, node.root, dry_run=False)
    assert assets.remove_assets(bundle.handler, node.root, dry_run=True)
    assert (node.root / HANDLER_DIR / bundle.handler).is_dir()
    assert assets.remove_assets(bundle.handler, node.root, dry_run=False)
    assert not (node.root / HANDLER_DIR / bundle.handler).exists()
    assert not assets.remove_assets(bundle.handler, node.root, dry_run=False)
    with pytest.raises(InstallerError, match="not a Contrast handler"):
        assets.remove_assets("../../etc", node.root, dry_run=False)
