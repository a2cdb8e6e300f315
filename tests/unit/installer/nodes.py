"""Builders for installer tests: a fake node root and a manifest with local assets."""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).parents[2] / "data" / "containerd"
RUNTIME_CONFIG = """\
# runtime configuration of @@HANDLER@@
platform = "@@PLATFORM@@"
kernel = "@@HANDLER_DIR@@/share/vmlinuz"
"""


def sri(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}-{base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


@dataclass(frozen=True)
class Node:
    """A host root with a containerd config, and a manifest of local assets to install."""

    root: Path
    manifest: Path
    assets: Path

    @property
    def config(self) -> Path:
        return self.root / "etc/containerd/config.toml"

    def args(self, command: str = "install", *extra: str) -> list[str]:
        return [command, "--manifest", str(self.manifest), "--host-root", str(self.root), *extra]


def make_node(
    tmp: Path, config: str | None = "containerd-1.6-default.toml", kernel: bytes = b"kernel"
) -> Node:
    root = tmp / "host"
    (root / "etc/containerd").mkdir(parents=True)
    if config is not None:
        shutil.copyfile(DATA / config, root / "etc/containerd/config.toml")
    assets = tmp / "assets"
    assets.mkdir()
    (assets / "shim").write_bytes(b"#!/bin/sh\nexit 0\n")
    (assets / "runtime.toml").write_text(RUNTIME_CONFIG)
    (assets / "vmlinuz").write_bytes(kernel)
    manifest = tmp / "manifest.toml"
    manifest.write_text(
        f"""\
format = 1
platform = "qemu-insecure"

[[asset]]
path = "bin/containerd-shim-contrast-cc-v2"
source = "assets/shim"
mode = "0755"
role = "shim"

[[asset]]
path = "etc/runtime.toml"
source = "assets/runtime.toml"
role = "runtime-config"
substitute = true

[[asset]]
path = "share/vmlinuz"
source = "assets/vmlinuz"
integrity = "{sri(kernel, "sha384")}"
role = "kernel"
"""
    )
    return Node(root, manifest, assets)


def run(*args: str) -> tuple[int, str]:
    """The installer's CLI in-process: its exit code and what it printed."""
    from installer.cli import main

    out = io.StringIO()
    return main(list(args), out=out), out.getvalue()


def handler_of(node: Node) -> str:
    """The handler name the node's manifest hashes to (``installer handler``)."""
    code, out = run("handler", "--manifest", str(node.manifest))
    assert code == 0
    return out.strip()
