from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest

from guest.initdata import codec, disk
from guest.initdata.errors import InitdataError
from tests.unit.initdata import vectors


def test_kata_agent_test_image(tmp_path: Path) -> None:
    image = vectors.read("kata-agent-initdata.img")
    assert disk.decode(image) == vectors.KATA_IMG_PAYLOAD
    path = tmp_path / "vda"
    path.write_bytes(image)
    payload = disk.read(path)
    assert payload == vectors.KATA_IMG_PAYLOAD
    assert hashlib.sha256(payload).hexdigest() == vectors.KATA_IMG_PAYLOAD_SHA256


def test_encode_layout() -> None:
    raw = vectors.read("trustee-init-data-with-policy.toml")
    image = disk.encode(raw)
    assert image[:8] == b"initdata"
    (length,) = struct.unpack("<Q", image[8:16])
    assert codec.decompress(image[16 : 16 + length]) == raw
    assert len(image) % 512 == 0
    assert len(image) - (16 + length) < 512
    assert image[16 + length :] == bytes(len(image) - 16 - length)
    assert disk.decode(image) == raw


def test_small_document_fills_one_sector() -> None:
    image = disk.encode(vectors.read("kata-default-initdata.toml"))
    assert len(image) == 512
    assert struct.unpack("<Q", image[8:16]) == (65,)


def test_padding_is_optional(tmp_path: Path) -> None:
    raw = vectors.read("kata-default-initdata.toml")
    image = disk.encode(raw)
    path = tmp_path / "short"
    path.write_bytes(image[: 16 + 65])
    assert disk.read(path) == raw


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"LUKS\xba\xbefoobar", "bad magic"),
        (b"in", "bad magic"),
        (b"", "bad magic"),
        (b"initdata\x01\x00", "truncated inside its length field"),
        (b"initdata" + struct.pack("<Q", 0), "empty payload"),
        (b"initdata\x00\x00\x00\x00\x00\x00\x00\x10", "more than the limit"),
        (
            b"initdata" + struct.pack("<Q", 100) + b"\x1f\x8b" + bytes(10),
            "truncated: header says 100",
        ),
        (b"initdata" + struct.pack("<Q", 4) + b"abcd", "not gzip"),
    ],
)
def test_bad_images(tmp_path: Path, content: bytes, message: str) -> None:
    with pytest.raises(InitdataError, match=message):
        disk.decode(content)
    path = tmp_path / "img"
    path.write_bytes(content)
    with pytest.raises(InitdataError, match=message):
        disk.read(path)


def test_unreadable_device(tmp_path: Path) -> None:
    with pytest.raises(InitdataError, match="cannot read initdata disk"):
        disk.read(tmp_path / "missing")


def test_find_probes_whole_disks(tmp_path: Path) -> None:
    image = disk.encode(vectors.read("kata-default-initdata.toml"))
    (tmp_path / "vda").write_bytes(b"\0" * 512)
    (tmp_path / "vdb1").write_bytes(image)  # a partition: never probed
    (tmp_path / "sr0").write_bytes(image)  # not vd*/sd*
    (tmp_path / "vdc").write_bytes(image)
    assert disk.find(tmp_path, block_devices_only=False) == tmp_path / "vdc"
    assert disk.find(tmp_path) is None  # plain files are not block devices


def test_find_nothing(tmp_path: Path) -> None:
    (tmp_path / "vda").write_bytes(b"\0" * 512)
    assert disk.find(tmp_path, block_devices_only=False) is None


def test_find_refuses_two_candidates(tmp_path: Path) -> None:
    image = disk.encode(vectors.read("kata-default-initdata.toml"))
    (tmp_path / "vdb").write_bytes(image)
    (tmp_path / "sda").write_bytes(image)
    with pytest.raises(InitdataError, match="more than one disk carries the initdata magic"):
        disk.find(tmp_path, block_devices_only=False)
