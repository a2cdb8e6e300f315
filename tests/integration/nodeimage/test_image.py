"""The node image built here: the layout's files, its handler, readable by skopeo."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from installer import assets
from installer.manifest import load_manifest
from nodeimage import layout
from nodeimage.build import NodeImage
from tests.conftest import require_programs
from tests.integration.nodeimage.conftest import PLATFORM

pytestmark = pytest.mark.integration


def _layer(image: NodeImage) -> Path:
    blobs = image.layout / "blobs/sha256"
    index = json.loads((image.layout / "index.json").read_text())
    [entry] = index["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == image.handler
    manifest = json.loads((blobs / entry["digest"].removeprefix("sha256:")).read_text())
    [layer] = manifest["layers"]
    return blobs / str(layer["digest"]).removeprefix("sha256:")


def test_the_image_holds_the_layout_and_its_handler(node_image: NodeImage, tmp_path: Path) -> None:
    with tarfile.open(_layer(node_image)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        share = [m for m in members.values() if m.name.startswith("usr/share/contrast/")]
        tar.extractall(tmp_path, members=share, filter="fully_trusted")
    for path in layout.contract(PLATFORM):
        member = members.get(str(path).lstrip("/"))
        assert member is not None and member.isfile(), path
    for script in layout.console_scripts():
        text = tar_text(_layer(node_image), f"usr/local/bin/{script}")
        head = text.splitlines()[0]
        if script == "containerd-shim-contrast-cc-v2":  # shim.launcher's, not pip's
            assert head == "#!/usr/bin/python3 -IS", head
            assert "PATHS = ['/usr/local/lib/python3.11/dist-packages'" in text
        else:
            assert head == "#!/usr/bin/python3", (script, head)
    launcher = members["usr/share/contrast/assets/containerd-shim-contrast-cc-v2"]
    assert launcher.mode & 0o777 == 0o755
    assert "usr/bin/qemu-system-x86_64" in members
    assert not any(m.startswith(("tmp/", "proc/", "dev/")) for m in members)
    # The image's handler is what this checkout's installer computes from its files.
    manifest = load_manifest(tmp_path / "usr/share/contrast/manifest.toml")
    handler = (tmp_path / "usr/share/contrast/handler").read_text().strip()
    assert handler == node_image.handler == assets.resolve(manifest).handler
    assert handler.startswith(f"contrast-cc-{PLATFORM}-")


def tar_text(blob: Path, name: str) -> str:
    with tarfile.open(blob) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read().decode()


def test_skopeo_reads_the_layout(node_image: NodeImage) -> None:
    require_programs("skopeo")
    out = subprocess.run(
        ["skopeo", "inspect", f"oci:{node_image.layout}:{node_image.handler}"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    info = json.loads(out)
    assert info["Labels"]["io.contrast.handler"] == node_image.handler
    assert info["Digest"] == node_image.summary["manifest_digest"]
