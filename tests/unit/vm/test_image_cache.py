"""The image cache: same inputs reuse the build, a changed input changes the key."""

import shutil
from pathlib import Path

import pytest

from guest.image import build, inputs, manifest
from guest.image.errors import ManifestError
from guest.image.kernel import Kernel

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    for package in ("guest/image", "guest/init", "guest/agent", "ttrpc", "api/kata"):
        shutil.copytree(
            REPO / package, copy / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    for init in ("guest/__init__.py", "api/__init__.py"):
        shutil.copy(REPO / init, copy / init)
    return copy


@pytest.fixture
def kernel(tmp_path: Path) -> Kernel:
    (tmp_path / "boot").mkdir()
    vmlinuz = tmp_path / "boot/vmlinuz-6.1.0-1-amd64"
    vmlinuz.write_bytes(b"kernel image")
    return Kernel("6.1.0-1-amd64", vmlinuz, tmp_path / "modules")


SOURCES = ["deb http://deb.debian.org/debian bookworm main"]


def test_key_is_stable_and_changes_with_each_input(repo: Path, kernel: Kernel) -> None:
    key = inputs.cache_key(repo, kernel, SOURCES)
    assert key == inputs.cache_key(repo, kernel, SOURCES)
    changed = []
    init = repo / "guest/init/contrast-init.sh"
    init.write_text(init.read_text() + "# changed\n")
    changed.append(inputs.cache_key(repo, kernel, SOURCES))
    server = repo / "guest/agent/server.py"
    server.write_text(server.read_text() + "\n")
    changed.append(inputs.cache_key(repo, kernel, SOURCES))
    kernel.vmlinuz.write_bytes(b"another kernel")
    changed.append(inputs.cache_key(repo, kernel, SOURCES))
    changed.append(inputs.cache_key(repo, kernel, [*SOURCES, "deb http://x/debian bookworm main"]))
    assert len({key, *changed}) == 5


def test_tests_do_not_change_the_key(repo: Path, kernel: Kernel) -> None:
    key = inputs.cache_key(repo, kernel, SOURCES)
    (repo / "tests").mkdir()
    (repo / "tests/test_x.py").write_text("x = 1\n")
    assert inputs.cache_key(repo, kernel, SOURCES) == key


def test_unchanged_inputs_reuse_the_cached_build(
    tmp_path: Path, kernel: Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build, "find_kernel", lambda: kernel)
    monkeypatch.setattr(build, "debian_sources", lambda: SOURCES)
    key = inputs.cache_key(build.REPO, kernel, SOURCES)
    cached = tmp_path / "cache" / key[:16]
    cached.mkdir(parents=True)
    for name in (manifest.KERNEL, manifest.INITRD, manifest.ROOT):
        (cached / name).write_bytes(b"x")
    made = manifest.Manifest(key, kernel.version, ("console=ttyS0",), "ab", {}, {}, {}, {})
    manifest.write_manifest(cached, made)

    def no_build(*_args: object) -> None:
        raise AssertionError("rebuilt although the inputs are unchanged")

    monkeypatch.setattr(build, "_build", no_build)
    image = build.ensure_image(tmp_path / "cache")
    assert image.directory == cached
    assert image.manifest == made


def test_manifest_with_a_missing_artifact_is_refused(tmp_path: Path) -> None:
    made = manifest.Manifest("k", "v", (), "ab", {}, {}, {}, {})
    manifest.write_manifest(tmp_path, made)
    with pytest.raises(ManifestError, match="vmlinuz is missing"):
        manifest.load(tmp_path)
