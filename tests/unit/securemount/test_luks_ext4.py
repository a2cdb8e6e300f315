"""cryptsetup and mkfs.ext4 command lines, the header check, the superblock list."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from guest.securemount import ext4, luks
from guest.securemount.errors import StepError

# luksDump --dump-json-metadata of a header luks.format_args writes (cryptsetup 2.6).
HEADER: dict[str, Any] = {
    "keyslots": {"0": {
        "type": "luks2", "key_size": 96,
        "af": {"type": "luks1", "stripes": 4000, "hash": "sha256"},
        "area": {"type": "raw", "offset": "32768", "size": "389120",
                 "encryption": "aes-xts-plain64", "key_size": 64},
        "kdf": {"type": "pbkdf2", "hash": "sha256", "iterations": 1000, "salt": "c2FsdA=="},
    }},
    "tokens": {},
    "segments": {"0": {
        "type": "crypt", "offset": "16777216", "size": "dynamic", "iv_tweak": "0",
        "encryption": "aes-xts-plain64", "sector_size": 4096,
        "integrity": {"type": "hmac(sha256)", "journal_encryption": "none",
                      "journal_integrity": "none"},
    }},
    "digests": {"0": {"type": "pbkdf2", "keyslots": ["0"], "segments": ["0"],
                      "hash": "sha256", "iterations": 1000, "salt": "c2FsdA==",
                      "digest": "ZGlnZXN0"}},
    "config": {"json_size": "12288", "keyslots_size": "16744448"},
}  # fmt: skip


def test_format_asks_for_the_store_parameters_and_takes_the_key_on_stdin() -> None:
    args = luks.format_args(Path("/dev/vdc"))
    text = " ".join(args)
    for wanted in ("luksFormat --batch-mode --type luks2", "--cipher aes-xts-plain64",
                   "--key-size 512", "--integrity hmac-sha256", "--integrity-no-wipe",
                   "--sector-size 4096", "--key-file - /dev/vdc"):  # fmt: skip
        assert wanted in text
    opened = luks.open_args(Path("/dev/vdc"), Path("/run/h"), luks.Mapping("store"))
    assert opened[-4:] == ["--key-file", "-", "/dev/vdc", "store"]
    at = opened.index("--header")
    assert opened[at : at + 2] == ["--header", "/run/h"]


def test_header_as_formatted_passes() -> None:
    luks.check_header("/dev/vdc (254:32)", json.dumps(HEADER))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda h: h["segments"]["0"].update(encryption="aes-cbc-essiv:sha256"), "cipher"),
        (lambda h: h["segments"]["0"].update(sector_size=512), "sector size"),
        (lambda h: h["segments"]["0"].pop("integrity"), "integrity"),
        (lambda h: h["segments"]["0"]["integrity"].update(type="crc32c"), "integrity"),
        (lambda h: h["keyslots"].update({"1": h["keyslots"]["0"]}), "keyslots"),
        (lambda h: h["tokens"].update({"0": {"type": "x"}}), "tokens"),
        (lambda h: h["keyslots"]["0"].update(key_size=64), "key size"),
        (lambda h: h["segments"]["0"].update(flags=["online-reencrypt"]), "flags"),
    ],
)
def test_header_other_than_formatted_is_refused(change: Any, named: str) -> None:
    header = copy.deepcopy(HEADER)
    change(header)
    with pytest.raises(StepError, match=named) as refused:
        luks.check_header("/dev/vdc (254:32)", json.dumps(header))
    assert str(refused.value).startswith("secure mount of /dev/vdc (254:32): header check failed")


def test_unreadable_metadata_is_refused() -> None:
    with pytest.raises(StepError, match="unreadable LUKS2 metadata"):
        luks.check_header("/dev/vdc", "LUKS header information\n")


DRY_RUN = """mke2fs 1.47.0 (5-Feb-2023)
Creating filesystem with 2621440 4k blocks and 655360 inodes
Filesystem UUID: 8b0c2c6e-45b5-4f3b-a0d6-6c2c1f2e2d6a
Superblock backups stored on blocks:
\t32768, 98304, 163840, 229376, 294912, 819200, 884736, 1605632

"""


def test_superblock_blocks_from_the_dry_run() -> None:
    blocks = ext4.superblock_blocks("/dev/vdc", DRY_RUN)
    assert blocks == [0, 32768, 98304, 163840, 229376, 294912, 819200, 884736, 1605632]
    small = "Creating filesystem with 16384 4k blocks and 16384 inodes\n\n"
    assert ext4.superblock_blocks("/dev/vdc", small) == [0]
    with pytest.raises(StepError, match="no block numbers"):
        ext4.superblock_blocks("/dev/vdc", "Superblock backups stored on blocks:\n\n")


def test_mkfs_dry_run_is_the_same_command() -> None:
    real, dry = ext4.mkfs_args(Path("/dev/mapper/s")), ext4.mkfs_args(Path("/dev/mapper/s"), True)
    assert [a for a in real if a != "-q"] == [a for a in dry if a != "-n"]
    assert "^has_journal" in real


def test_zero_blocks_writes_zeroes_where_asked(tmp_path: Path) -> None:
    target = tmp_path / "mapped"
    target.write_bytes(b"\xff" * (4 * ext4.BLOCK_SIZE))
    try:
        ext4.zero_blocks("/dev/vdc", target, [0, 2])
    except StepError as err:
        if "Invalid argument" in str(err):
            pytest.skip(f"no O_DIRECT on this file system: {err}")
        raise
    data = target.read_bytes()
    size = ext4.BLOCK_SIZE
    assert data[:size] == bytes(size) and data[2 * size : 3 * size] == bytes(size)
    assert data[size : 2 * size] == b"\xff" * size and data[3 * size :] == b"\xff" * size
    with pytest.raises(StepError, match=r"zeroing the superblocks failed: open .*missing"):
        ext4.zero_blocks("/dev/vdc", tmp_path / "missing", [0])
    assert os.path.exists(target)


def test_new_keys_are_random_and_mutable() -> None:
    first, second = luks.new_key(), luks.new_key()
    assert isinstance(first, bytearray) and len(first) == luks.KEY_BYTES == 64
    assert first != second and first != bytearray(64)
    first[:] = bytes(64)  # the store overwrites it after use: no export blocks that
    assert first == bytearray(64)
