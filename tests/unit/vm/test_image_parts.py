"""Pieces of the guest image recipe that run without building anything."""

import io
from pathlib import Path

import pytest

from guest.image import cpio
from guest.image.errors import ImageError
from guest.image.initrd import module_entries, resolve_in_root
from guest.image.kernel import Kernel, module_closure
from guest.image.sources import debian_sources
from guest.image.verity import VerityRoot


def read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    """A small independent newc reader: name -> (mode, data)."""
    out: dict[str, tuple[int, bytes]] = {}
    pos = 0
    while True:
        header = data[pos : pos + 110]
        assert header[:6] == b"070701"
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos : pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, body)


def test_cpio_round_trip_parents_first() -> None:
    buf = io.BytesIO()
    cpio.write(
        buf,
        [
            cpio.file("bin/busybox", b"\x7fELF", executable=True),
            cpio.directory("bin"),
            cpio.symlink("sbin", "bin"),
            cpio.file("init", b"#!/bin/sh\n"),
        ],
    )
    members = read_newc(buf.getvalue())
    assert list(members) == ["bin", "bin/busybox", "init", "sbin"]
    assert members["bin/busybox"] == (0o100755, b"\x7fELF")
    assert members["init"] == (0o100644, b"#!/bin/sh\n")
    assert members["sbin"] == (0o120777, b"bin")


def fake_modules(tmp_path: Path) -> Path:
    mods = tmp_path / "modules"
    mods.mkdir()
    (mods / "modules.dep").write_text(
        "kernel/fs/erofs/erofs.ko: kernel/lib/libcrc32c.ko\n"
        "kernel/lib/libcrc32c.ko:\n"
        "kernel/crypto/crc32c_generic.ko:\n"
        "kernel/crypto/crc32c-intel.ko:\n"
        "kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-mod.ko\n"
        "kernel/drivers/md/dm-mod.ko:\n"
    )
    (mods / "modules.softdep").write_text("softdep libcrc32c pre: crc32c\n")
    (mods / "modules.alias").write_text("alias crc32c crc32c_intel\nalias crc32c crc32c_generic\n")
    (mods / "modules.builtin").write_text("kernel/crypto/sha256_generic.ko\n")
    return mods


def test_module_closure_orders_dependencies_and_softdeps(tmp_path: Path) -> None:
    paths, missing = module_closure(
        fake_modules(tmp_path), ("dm_verity", "erofs", "sha256_generic"), ("tdx_guest",)
    )
    assert paths == [
        "kernel/drivers/md/dm-mod.ko",
        "kernel/drivers/md/dm-verity.ko",
        "kernel/crypto/crc32c_generic.ko",
        "kernel/lib/libcrc32c.ko",
        "kernel/fs/erofs/erofs.ko",
    ]
    assert missing == ["tdx_guest"]


def initrd_modules(tmp_path: Path, *, simd_sha256: bool) -> dict[str, bytes]:
    mods = tmp_path / "modules"
    rels = {
        "virtio_pci": "kernel/drivers/virtio/virtio_pci.ko",
        "virtio_blk": "kernel/drivers/block/virtio_blk.ko",
        "dm_mod": "kernel/drivers/md/dm-mod.ko",
        "dm_verity": "kernel/drivers/md/dm-verity.ko",
        "erofs": "kernel/fs/erofs/erofs.ko",
    }
    if simd_sha256:
        rels["sha256_ssse3"] = "kernel/arch/x86/crypto/sha256-ssse3.ko"
    for name, rel in rels.items():
        (mods / rel).parent.mkdir(parents=True, exist_ok=True)
        (mods / rel).write_bytes(name.encode())
    deps = {"kernel/drivers/md/dm-verity.ko": "kernel/drivers/md/dm-mod.ko"}
    (mods / "modules.dep").write_text("".join(f"{r}: {deps.get(r, '')}\n" for r in rels.values()))
    for name in ("modules.softdep", "modules.alias", "modules.builtin"):
        (mods / name).write_text("")
    kernel = Kernel("6.1.0-test", tmp_path / "vmlinuz", mods)
    buf = io.BytesIO()
    dirs: set[str] = set()
    cpio.write(buf, module_entries(kernel, dirs))
    assert "lib/modules/6.1.0-test/kernel/drivers/md" in dirs
    return {name: body for name, (_, body) in read_newc(buf.getvalue()).items()}


def test_initrd_loads_the_simd_sha256_for_verity_when_the_kernel_has_it(tmp_path: Path) -> None:
    members = initrd_modules(tmp_path, simd_sha256=True)
    sha = "kernel/arch/x86/crypto/sha256-ssse3.ko"
    assert members["etc/modules.optional"] == f"{sha}\n".encode()
    assert sha not in members["etc/modules.order"].decode()  # not required: may not load
    assert f"{sha}:\n" in members["lib/modules/6.1.0-test/modules.dep"].decode()
    assert members[f"lib/modules/6.1.0-test/{sha}"] == b"sha256_ssse3"
    order = members["etc/modules.order"].decode().split()
    assert order.index("kernel/drivers/md/dm-mod.ko") < order.index(
        "kernel/drivers/md/dm-verity.ko"
    )


def test_initrd_without_the_simd_sha256_lists_no_optional_module(tmp_path: Path) -> None:
    members = initrd_modules(tmp_path, simd_sha256=False)
    assert members["etc/modules.optional"] == b""
    assert len(members["etc/modules.order"].decode().split()) == 5


def test_missing_required_module_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="'virtio_blk' not found"):
        module_closure(fake_modules(tmp_path), ("virtio_blk",))


def test_resolve_in_root_keeps_absolute_links_inside(tmp_path: Path) -> None:
    (tmp_path / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (tmp_path / "usr/lib/x86_64-linux-gnu/ld.so.2").write_bytes(b"")
    (tmp_path / "lib").symlink_to("usr/lib")
    (tmp_path / "lib64").mkdir()
    (tmp_path / "lib64/ld.so").symlink_to("/lib/x86_64-linux-gnu/ld.so.2")
    assert str(resolve_in_root(tmp_path, "/lib64/ld.so")) == "/usr/lib/x86_64-linux-gnu/ld.so.2"


def test_debian_sources_from_deb822_and_one_line(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n"
        "Components: main\n"
    )
    (tmp_path / "sources.list.d/other.sources").write_text(
        "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n"
        "Components: main\n"
    )
    (tmp_path / "sources.list").write_text(
        "deb [signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\n"
        "deb http://mirror.example/debian trixie main\n"
    )
    assert debian_sources(tmp_path) == [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
        "deb http://mirror.example/debian bookworm main contrib",
    ]


def test_no_debian_source_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no Debian bookworm source"):
        debian_sources(tmp_path)


def test_verity_parameters_go_on_the_cmdline() -> None:
    root = VerityRoot("ab" * 32, 10, 40960, "cd" * 32, 40960, 45056)
    assert root.cmdline() == (
        f"contrast.verity.roothash={'ab' * 32}",
        "contrast.verity.blocks=10",
        "contrast.verity.hashoffset=40960",
        f"contrast.verity.salt={'cd' * 32}",
    )
