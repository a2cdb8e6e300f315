"""The overlay rootfs we assemble matches ``umoci unpack`` of the same image, file by file.

umoci applies whiteouts while unpacking; we keep them as overlayfs whiteouts in the
layers, so the comparison is between umoci's rootfs and our *mounted* overlay view.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from devkit import ocibuild as ob
from devkit.command import run
from devkit.registry import Registry, registry_settings_toml
from guest.imagepull import config
from guest.imagepull.puller import ImagePuller
from guest.imagepull.store import LayerStore
from tests.conftest import require_programs

BASE = [
    ob.directory("bin"),
    ob.file("bin/tool", b"#!/bin/sh\necho tool\n", 0o755),
    ob.file("bin/suid", b"suid", 0o4755, uid=0, gid=0),
    ob.hardlink("bin/tool-link", "bin/tool"),
    ob.symlink("sbin", "bin"),
    ob.directory("etc", 0o755),
    ob.file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644),
    ob.file("etc/shadow", b"secret", 0o640, uid=0, gid=42),
    ob.file("etc/removed", b"goes away"),
    ob.file("etc/replaced-by-link", b"file first"),
    ob.symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
    ob.directory("home", 0o755),
    ob.directory("home/user", 0o700, uid=1000, gid=1000),
    ob.file("home/user/.profile", b"export A=1\n", 0o600, uid=1000, gid=1000),
    ob.file("home/user/notes", b"n", 0o664, uid=1000, gid=100, xattrs={"user.tag": "kept"}),
    ob.directory("var", 0o755),
    ob.directory("var/cache", 0o755),
    ob.file("var/cache/old1", b"1"),
    ob.directory("var/cache/sub"),
    ob.file("var/cache/sub/old2", b"2"),
    ob.directory("opt"),
    ob.directory("opt/tree"),
    ob.file("opt/tree/a", b"a"),
    ob.directory("opt/tree/deep"),
    ob.file("opt/tree/deep/b", b"b"),
    ob.directory("dev"),
    ob.chardev("dev/null", 1, 3),
    ob.Entry("run-fifo", "fifo", mode=0o600),
    ob.file("empty", b""),
]
MIDDLE = [
    ob.directory("etc", 0o755),
    ob.whiteout("etc/removed"),
    ob.symlink("etc/replaced-by-link", "passwd"),
    ob.file("etc/passwd", b"root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"),
    ob.directory("var", 0o755),
    ob.directory("var/cache", 0o750, uid=0, gid=4),
    ob.opaque("var/cache"),
    ob.file("var/cache/new", b"fresh"),
    ob.directory("opt"),
    ob.whiteout("opt/tree"),
    ob.file("big", os.urandom(3 << 20), 0o644),
]
TOP = [
    ob.directory("opt"),
    ob.directory("opt/tree"),
    ob.file("opt/tree/back", b"re-created after whiteout"),
    ob.directory("home", 0o755),
    ob.directory("home/user", 0o750, uid=1000, gid=1000),
    ob.file("home/user/.profile", b"export A=2\n", 0o644, uid=1000, gid=1000),
    ob.hardlink("home/user/profile-link", "home/user/.profile"),
    ob.directory("bin"),
    ob.file("bin/tool", b"#!/bin/sh\necho tool v2\n", 0o755),
]


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a user of the rootfs sees, per path, without following links."""
    found: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, *([""] if Path(dirpath) == root else [])]:
            path = Path(dirpath, name) if name else root
            rel = str(path.relative_to(root))
            st = path.lstat()
            kind = stat.S_IFMT(st.st_mode)
            detail: object = None
            if stat.S_ISREG(st.st_mode):
                detail = hashlib.sha256(path.read_bytes()).hexdigest()
                inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                detail = os.readlink(path)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                detail = (os.major(st.st_rdev), os.minor(st.st_rdev))
            xattrs: tuple[tuple[str, bytes], ...] = ()
            if not stat.S_ISLNK(st.st_mode):
                xattrs = tuple(
                    sorted(
                        (x, os.getxattr(path, x))
                        for x in os.listxattr(path)
                        if x.startswith("user.")
                    )
                )
            found[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, detail, xattrs)
    for paths in inodes.values():
        if len(paths) > 1:
            for p in paths:
                found[p] = (*found[p], tuple(sorted(paths)))
    return found


@pytest.mark.parametrize("compressions", [("gzip", "gzip", "gzip"), ("gzip", "none", "zstd")])
def test_rootfs_matches_umoci(
    registry: Registry, tmp_path: Path, compressions: tuple[str, str, str]
) -> None:
    require_programs("umoci")
    layers = [
        ob.Layer(ob.layer_tar(e), c) for e, c in zip((BASE, MIDDLE, TOP), compressions, strict=True)
    ]
    image = ob.build_image(layers)
    # umoci 0.4 reads no zstd: it gets the same tars gzip-compressed (same diff_ids).
    for_umoci = ob.build_image(
        [ob.Layer(x.tar, x.compression.replace("zstd", "gzip")) for x in layers]
    )
    layout = ob.write_layout(for_umoci, tmp_path / "layout", "v1")
    digest = registry.upload(image.blobs, image.manifest, f"compare/{'-'.join(compressions)}", "v1")
    assert digest == image.manifest_digest

    run(["umoci", "unpack", "--image", f"{layout}:v1", str(tmp_path / "umoci")])
    expected = tree(tmp_path / "umoci" / "rootfs")

    puller = ImagePuller(
        LayerStore(tmp_path / "store"), config.parse(registry_settings_toml(registry))
    )
    bundle = tmp_path / "bundle"
    image_ref = f"{registry.host}/compare/{'-'.join(compressions)}@{digest}"
    pulled = puller.pull_into_bundle(image_ref, bundle)
    try:
        actual = tree(bundle / "rootfs")
        assert pulled.fetched == 3
        # Sanity: the whiteouts and the opaque directory did their job in both.
        assert "etc/removed" not in actual and "opt/tree/a" not in actual
        assert "var/cache/old1" not in actual and "var/cache/new" in actual
        assert set(actual) == set(expected), (
            f"only ours: {sorted(set(actual) - set(expected))}, "
            f"only umoci: {sorted(set(expected) - set(actual))}"
        )
        diffs = {p: (actual[p], expected[p]) for p in actual if actual[p] != expected[p]}
        assert diffs == {}
    finally:
        puller.remove_bundle(bundle)
    assert not (bundle / "rootfs").exists()
