"""The layer store: verified blobs, short layer names, overlay option limits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from guest.imagepull import overlay
from guest.imagepull.digest import Digest
from guest.imagepull.errors import MountError, StoreError, VerificationError
from guest.imagepull.store import LayerStore


def test_blobs_are_verified_on_write_and_read(tmp_path: Path) -> None:
    store = LayerStore(tmp_path)
    digest = Digest.of(b"manifest")
    with pytest.raises(VerificationError, match="does not match"):
        store.write_blob(digest, b"other")
    store.write_blob(digest, b"manifest")
    assert store.read_blob(digest, 100) == b"manifest"
    store.blob_path(digest).write_bytes(b"tampered")
    with pytest.raises(StoreError, match="corrupt"):
        store.read_blob(digest, 100)
    assert store.read_blob(digest, 100) is None


def test_a_blob_that_cannot_be_written_raises_store_error_naming_it(tmp_path: Path) -> None:
    store = LayerStore(tmp_path)
    digest = Digest.of(b"config")
    # The blob directory is a file now: creating the temp file fails (even as root).
    blobs = store.blob_path(digest).parent
    blobs.rmdir()
    blobs.write_bytes(b"")
    with pytest.raises(StoreError) as caught:
        store.write_blob(digest, b"config")
    message = str(caught.value)
    assert str(digest) in message and str(store.blob_path(digest)) in message
    assert "cannot create a temp file" in message
    assert isinstance(caught.value.__cause__, NotADirectoryError)


def test_short_names_detect_prefix_collisions(tmp_path: Path) -> None:
    store = LayerStore(tmp_path)
    a = store.layer_path(Digest("sha256", "ab" * 32))
    link = store.short_path(a)
    assert len(str(link)) < len(str(a)) and link.resolve() == a.resolve()
    assert store.short_path(a) == link
    colliding = store.layer_path(Digest("sha256", "ab" * 8 + "cd" * 24))
    with pytest.raises(StoreError, match="already names"):
        store.short_path(colliding)


def test_store_path_must_suit_overlay_options(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="must not contain"):
        LayerStore(tmp_path / "a:b")


def test_overlay_options_order_and_limits(tmp_path: Path) -> None:
    lower = [tmp_path / "top", tmp_path / "bottom"]
    text = overlay.options(lower, tmp_path / "u", tmp_path / "w")
    assert text == f"lowerdir={lower[0]}:{lower[1]},upperdir={tmp_path}/u,workdir={tmp_path}/w"
    with pytest.raises(MountError, match=r"more than mount\(2\) accepts"):
        overlay.options([tmp_path / f"layer{i:04d}" for i in range(500)], lower[0], lower[1])
    with pytest.raises(MountError, match="without ','"):
        overlay.options([tmp_path / "a,b"], lower[0], lower[1])


def test_space_check_names_the_numbers(tmp_path: Path) -> None:
    store = LayerStore(tmp_path, reserve=0)
    free = store.free_bytes()
    with pytest.raises(StoreError, match=rf"need {free * 2} bytes"):
        store.check_space(free * 2, "2 layers")
    assert os.path.isdir(tmp_path / "staging")
