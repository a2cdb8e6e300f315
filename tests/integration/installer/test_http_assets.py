"""Assets downloaded over HTTP from a loopback server: verified before they are published."""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from installer.cli import main
from tests.unit.installer.nodes import make_node, sri

KERNEL = b"\x7fELF pretend kernel" * 1000


@contextlib.contextmanager
def serving(directory: Path) -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    with serving(root) as url:
        yield root, url


def url_manifest(tmp: Path, url: str, integrity: str) -> Path:
    node = make_node(tmp)
    text = node.manifest.read_text()
    text = text.replace('source = "assets/vmlinuz"', f'source = "{url}/vmlinuz"')
    text = text.replace(
        text[text.index('integrity = "sha384-') :].split("\n")[0], f'integrity = "{integrity}"'
    )
    node.manifest.write_text(text)
    return node.manifest


def install(tmp: Path, manifest: Path) -> int:
    args = [
        "install",
        "--manifest",
        str(manifest),
        "--host-root",
        str(tmp / "host"),
        "--no-restart",
    ]
    return main(args, out=io.StringIO())


def kernels(tmp: Path) -> list[Path]:
    return list((tmp / "host/opt/contrast").glob("*/share/vmlinuz"))


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
def test_download_with_matching_integrity_is_installed(
    tmp_path: Path, web: tuple[Path, str], algorithm: str
) -> None:
    root, url = web
    (root / "vmlinuz").write_bytes(KERNEL)
    manifest = url_manifest(tmp_path, url, sri(KERNEL, algorithm))
    assert install(tmp_path, manifest) == 0
    [kernel] = kernels(tmp_path)
    assert kernel.read_bytes() == KERNEL
    # Present and matching: the second run does not download again.
    (root / "vmlinuz").unlink()
    assert install(tmp_path, manifest) == 0


def test_tampered_download_is_refused_and_nothing_published(
    tmp_path: Path, web: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root, url = web
    (root / "vmlinuz").write_bytes(KERNEL + b"backdoor")
    manifest = url_manifest(tmp_path, url, sri(KERNEL, "sha512"))
    config = (tmp_path / "host/etc/containerd/config.toml").read_bytes()
    assert install(tmp_path, manifest) == 1
    err = capsys.readouterr().err
    assert f"{url}/vmlinuz: integrity mismatch: expected sha512-" in err
    assert kernels(tmp_path) == []
    assert not [p for p in (tmp_path / "host").rglob("*") if "contrast-tmp" in p.name]
    assert (tmp_path / "host/etc/containerd/config.toml").read_bytes() == config


def test_missing_download_is_a_clear_error(
    tmp_path: Path, web: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = web
    manifest = url_manifest(tmp_path, url, sri(KERNEL))
    assert install(tmp_path, manifest) == 1
    assert f"{url}/vmlinuz: download failed: HTTP Error 404" in capsys.readouterr().err
