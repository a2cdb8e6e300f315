"""nodeimage.layout: the one description of the node image, the Containerfile rendered from it."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from installer.manifest import Platform, Role, load_manifest
from nodeimage import containerfile, layout, oci

REPO = Path(__file__).parents[3]


def test_the_committed_containerfile_is_the_rendered_layout() -> None:
    rendered = containerfile.render(REPO)
    assert (REPO / "Containerfile").read_text() == rendered, (
        "Containerfile is stale: run `python -m nodeimage containerfile --write`"
    )


def test_the_containerfile_installs_every_package_and_file_of_the_layout() -> None:
    text = containerfile.render(REPO).replace("\\\n", " ")
    for package in layout.DEBIAN_PACKAGES:
        if package != "python3":  # the python image's own
            assert f" {package} " in text, package
    for copy in (*layout.REPO_FILES, layout.SETUP):
        assert f"\nCOPY {copy.source} {copy.dest}\n" in text
    for name in layout.GUEST_FILES:
        assert f"/guest/{name} " in text
    assert f"\nRUN sh {layout.SETUP.dest} " in text


def test_the_contract_holds_the_scripts_the_daemonset_and_launcher_run() -> None:
    paths = {str(p) for p in layout.contract("qemu-insecure", REPO)}
    launcher = (REPO / "packaging/node/shim-launcher.sh").read_text()
    assert "/usr/local/bin/containerd-shim-contrast-cc-v2" in paths
    assert ' /usr/local/bin/containerd-shim-contrast-cc-v2 "$@"\n' in launcher
    assert {
        "/usr/local/bin/contrast-node-installer",
        "/usr/local/bin/contrast-node-daemon",
    } <= paths
    assert "/usr/share/contrast/assets/OVMF.fd" not in paths
    assert "/usr/share/contrast/assets/OVMF.fd" in {
        str(p) for p in layout.contract("metal-qemu-snp")
    }


def test_every_manifest_asset_is_a_file_of_the_layout() -> None:
    manifest = load_manifest(REPO / "packaging/node/manifest.toml")
    image_paths = layout.contract("metal-qemu-snp", REPO)
    for asset in manifest.assets:
        rel = Path(asset.source).relative_to(REPO / "packaging/node")
        assert layout.SHARE / PurePosixPath(rel.as_posix()) in image_paths, asset.source
    # The runtime config reads the guest manifest's cmdline: it must be an asset.
    assert "share/manifest.json" in {str(a.path) for a in manifest.assets}
    assert set(layout.GUEST_BUILD_NAMES) == set(layout.guest_files("qemu-insecure"))


@pytest.mark.allow_programs("sed")
def test_the_setups_firmware_cut_leaves_a_valid_manifest_without_firmware(tmp_path: Path) -> None:
    """image-setup.sh's two sed lines for qemu-insecure, run on the packaged files."""
    setup = (REPO / layout.SETUP.source).read_text()
    manifest = tmp_path / "manifest.toml"
    runtime = tmp_path / "runtime.toml"
    manifest.write_text((REPO / "packaging/node/manifest.toml").read_text())
    runtime.write_text((REPO / "packaging/node/runtime.toml").read_text())
    for script, target in (
        ('s/^platform = .*/platform = "qemu-insecure"/', manifest),
        ("/^# firmware:/,$d", manifest),
        ("/^firmware = /d", runtime),
    ):
        assert script in setup.replace('\\"$PLATFORM\\"', '"qemu-insecure"')
        subprocess.run(["sed", "-i", script, str(target)], check=True, timeout=10)
    (tmp_path / "assets").mkdir()
    cut = load_manifest(manifest)
    assert cut.platform is Platform.QEMU_INSECURE
    roles = [a.role for a in cut.assets]
    assert Role.FIRMWARE not in roles
    assert len(roles) == len(load_manifest(REPO / "packaging/node/manifest.toml").assets) - 1
    assert "firmware" not in runtime.read_text().replace("# ", "")


def test_oci_layer_is_the_same_for_the_same_tree_and_leaves_out_runtime_dirs(
    tmp_path: Path,
) -> None:
    def tree(root: Path) -> Path:
        (root / "usr/bin").mkdir(parents=True)
        (root / "usr/bin/tool").write_bytes(b"#!/bin/sh\n")
        (root / "usr/bin/tool").chmod(0o755)
        (root / "usr/bin/alias").hardlink_to(root / "usr/bin/tool")
        (root / "bin").symlink_to("usr/bin")
        for name in oci.EMPTY_DIRS:
            (root / name).mkdir()
            (root / name / "junk").write_text(name)
        return root

    one = oci.write_layout(
        tree(tmp_path / "a"), tmp_path / "la", name="n", tag="t", cmd=["x"], labels={}, mtime=5
    )
    two = oci.write_layout(
        tree(tmp_path / "b"), tmp_path / "lb", name="n", tag="t", cmd=["x"], labels={}, mtime=5
    )
    assert one.manifest_digest == two.manifest_digest
    blobs = tmp_path / "la/blobs/sha256"
    manifest = json.loads((blobs / one.manifest_digest.removeprefix("sha256:")).read_text())
    [layer] = manifest["layers"]
    blob = blobs / layer["digest"].removeprefix("sha256:")
    with tarfile.open(blob) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == sorted(
        ["bin", "usr", "usr/bin", "usr/bin/alias", "usr/bin/tool", *oci.EMPTY_DIRS]
    )
    assert {m.mtime for m in members.values()} == {5}
    assert members["usr/bin/tool"].islnk() or members["usr/bin/alias"].islnk()
    assert members["bin"].issym()
