"""cryptsetup: format, check the header we wrote, open from guest memory, close.

The header is read back into guest memory (``luksHeaderBackup`` to the tmpfs under
/run) right after the format, checked to carry exactly the parameters we asked for,
and the device is opened with that copy (``--header``): between format and open the
host could have written another header to the disk, which is then never read.

PBKDF: the key is 64 bytes from the guest's RNG, not a passphrase; a slow or
memory-hard KDF adds nothing to its strength and, under TCG, seconds to the boot. So
PBKDF2 with cryptsetup's minimum 1000 iterations, and Argon2's memory is never spent.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guest.securemount.errors import StepError

CIPHER = "aes-xts-plain64"
KEY_BITS = 512  # AES-256 in XTS mode
INTEGRITY = "hmac-sha256"
KERNEL_INTEGRITY = "hmac(sha256)"  # how the header names it
SECTOR_SIZE = 4096
KEY_BYTES = 64
PBKDF_ITERATIONS = 1000


@dataclass(frozen=True)
class Mapping:
    name: str
    directory: Path = Path("/dev/mapper")  # where libdevmapper makes its node

    @property
    def path(self) -> Path:
        return self.directory / self.name


def new_key() -> bytearray:
    """KEY_BYTES from the kernel's CRNG (getrandom, waiting until it is seeded), written
    straight into a bytearray the caller overwrites after use: no immutable copy of
    the key is ever made in this process. Raises OSError when getrandom fails."""
    key = bytearray(KEY_BYTES)
    view = (ctypes.c_char * KEY_BYTES).from_buffer(key)
    libc = ctypes.CDLL(None, use_errno=True)
    filled = 0
    while filled < KEY_BYTES:
        got = libc.getrandom(ctypes.byref(view, filled), KEY_BYTES - filled, 0)
        if got < 0:
            err = ctypes.get_errno()
            if err == errno.EINTR:
                continue
            del view
            raise OSError(err, f"getrandom: {os.strerror(err)}")
        filled += got
    del view  # releases the buffer export, so the caller can resize or clear it
    return key


# The CPU's implementations of the store's aes and sha256 (guest/image/kernel.py). The
# kernel never asks for a module for an algorithm it has built in: without these
# dm-crypt and dm-integrity run the generic C code. Loaded at the store's format, not at
# boot: registering them runs the kernel's self-tests of every mode they provide (under
# TCG, most of a second of the boot's CPU).
CPU_CRYPTO_MODULES = ("aesni_intel", "sha256_ssse3")


def cpu_crypto_args() -> list[str]:
    return ["modprobe", "-a", *CPU_CRYPTO_MODULES]


def format_args(device: Path) -> list[str]:
    """``luksFormat``: always a fresh header (``--batch-mode`` overwrites any old one)."""
    return [
        "cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2",
        "--cipher", CIPHER, "--key-size", str(KEY_BITS),
        "--integrity", INTEGRITY, "--integrity-no-wipe", "--sector-size", str(SECTOR_SIZE),
        "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", str(PBKDF_ITERATIONS),
        "--key-file", "-", str(device),
    ]  # fmt: skip


def header_backup_args(device: Path, backup: Path) -> list[str]:
    return ["cryptsetup", "luksHeaderBackup", str(device), "--header-backup-file", str(backup)]


def dump_args(backup: Path) -> list[str]:
    return ["cryptsetup", "luksDump", "--dump-json-metadata", str(backup)]


def open_args(device: Path, backup: Path, mapping: Mapping) -> list[str]:
    """``open`` with the header copy in guest memory. No dm-integrity journal: the
    store is ephemeral (its key dies with the VM), so crash consistency of data and
    tags buys nothing, while the journal writes everything twice. A torn write still
    reads as an integrity error, never as other data."""
    return [
        "cryptsetup", "open", "--type", "luks2", "--header", str(backup),
        "--integrity-no-journal", "--key-file", "-", str(device), mapping.name,
    ]  # fmt: skip


def close_args(mapping: Mapping) -> list[str]:
    return ["cryptsetup", "close", mapping.name]


def _expect(device: str, what: str, actual: Any, wanted: Any) -> None:
    if actual != wanted:
        raise StepError(
            device, "header check", f"{what} is {actual!r}, not {wanted!r} as formatted"
        )


def check_header(device: str, dump: str) -> None:
    """Check ``luksDump --dump-json-metadata`` of the header copy against what we
    formatted: one keyslot, one crypt segment with our cipher, sector size and
    integrity, one digest, no tokens. Raises StepError naming the difference."""
    try:
        meta = json.loads(dump)
        keyslots, segments = meta["keyslots"], meta["segments"]
        digests, tokens = meta["digests"], meta["tokens"]
    except (ValueError, KeyError, TypeError) as err:
        raise StepError(device, "header check", f"unreadable LUKS2 metadata: {err}") from err
    _expect(device, "the keyslots", sorted(keyslots), ["0"])
    _expect(device, "the segments", sorted(segments), ["0"])
    _expect(device, "the digests", sorted(digests), ["0"])
    _expect(device, "the tokens", tokens, {})
    slot, segment = keyslots["0"], segments["0"]
    _expect(device, "keyslot 0's type", slot.get("type"), "luks2")
    _expect(device, "keyslot 0's key size", slot.get("key_size"), KEY_BITS // 8 + 32)
    _expect(device, "segment 0's type", segment.get("type"), "crypt")
    _expect(device, "segment 0's cipher", segment.get("encryption"), CIPHER)
    _expect(device, "segment 0's sector size", segment.get("sector_size"), SECTOR_SIZE)
    integrity = segment.get("integrity") or {}
    _expect(device, "segment 0's integrity", integrity.get("type"), KERNEL_INTEGRITY)
    _expect(device, "segment 0's flags", segment.get("flags", []), [])
