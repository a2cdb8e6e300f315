"""A layer blob through decompression, diff_id and blob digest checks into a directory."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest

from devkit import ocibuild as ob
from guest.imagepull.digest import Digest
from guest.imagepull.errors import StoreError, UnsafeLayerError, VerificationError
from guest.imagepull.layer import fetch_layer
from guest.imagepull.manifest import Descriptor
from guest.imagepull.unpack import Limits

TAR = ob.layer_tar([ob.directory("d"), ob.file("d/f", b"payload" * 1000)])


def descriptor(blob: bytes, compression: str) -> Descriptor:
    return Descriptor(ob.LAYER_MEDIA[compression], Digest.parse(ob.sha256(blob)), len(blob))


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_each_compression(compression: str, tmp_path: Path) -> None:
    blob = ob.compress(TAR, compression)
    result = fetch_layer(
        io.BytesIO(blob),
        descriptor(blob, compression),
        Digest.parse(ob.sha256(TAR)),
        str(tmp_path),
        limits=Limits(),
    )
    assert (tmp_path / "d/f").read_bytes() == b"payload" * 1000
    assert result.entries == 2


def test_concatenated_gzip_members(tmp_path: Path) -> None:
    blob = gzip.compress(TAR[:3000]) + gzip.compress(TAR[3000:])
    fetch_layer(
        io.BytesIO(blob),
        descriptor(blob, "gzip"),
        Digest.parse(ob.sha256(TAR)),
        str(tmp_path),
        limits=Limits(),
    )
    assert (tmp_path / "d/f").exists()


def test_corrupt_blob_names_the_layer_digest(tmp_path: Path) -> None:
    blob = bytearray(ob.compress(TAR, "gzip"))
    good = descriptor(bytes(blob), "gzip")
    blob[len(blob) // 2] ^= 0xFF
    with pytest.raises(VerificationError, match=f"layer {good.digest}: content does not match"):
        fetch_layer(
            io.BytesIO(bytes(blob)),
            good,
            Digest.parse(ob.sha256(TAR)),
            str(tmp_path),
            limits=Limits(),
        )


def test_wrong_diff_id(tmp_path: Path) -> None:
    blob = ob.compress(TAR, "zstd")
    other = Digest.of(b"something else")
    with pytest.raises(VerificationError, match="diff_id"):
        fetch_layer(
            io.BytesIO(blob), descriptor(blob, "zstd"), other, str(tmp_path), limits=Limits()
        )


def test_decompression_bomb_stopped_by_limits(tmp_path: Path) -> None:
    bomb = ob.layer_tar([ob.file(f"z{i}", bytes(200_000)) for i in range(10)])
    blob = ob.compress(bomb, "gzip")
    assert len(blob) < 30_000
    with pytest.raises(UnsafeLayerError, match="tar bomb"):
        fetch_layer(
            io.BytesIO(blob),
            descriptor(blob, "gzip"),
            Digest.parse(ob.sha256(bomb)),
            str(tmp_path),
            limits=Limits(max_total_size=1_000_000),
        )


def test_zeros_after_the_tar_end_are_bounded(tmp_path: Path) -> None:
    padded = TAR + bytes(5_000_000)
    blob = ob.compress(padded, "gzip")
    with pytest.raises(VerificationError, match="size limit"):
        fetch_layer(
            io.BytesIO(blob),
            descriptor(blob, "gzip"),
            Digest.parse(ob.sha256(padded)),
            str(tmp_path),
            limits=Limits(max_total_size=100_000, max_entries=100),
        )


def test_write_failure_is_a_store_error(tmp_path: Path) -> None:
    blob = ob.compress(TAR, "gzip")
    with pytest.raises(StoreError, match=r"writing into .* failed"):
        fetch_layer(
            io.BytesIO(blob),
            descriptor(blob, "gzip"),
            Digest.parse(ob.sha256(TAR)),
            str(tmp_path / "missing"),
            limits=Limits(),
        )
