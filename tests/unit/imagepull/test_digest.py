"""Digests and verification while streaming."""

from __future__ import annotations

import io

import pytest

from guest.imagepull.digest import Digest, VerifyingReader, read_verified
from guest.imagepull.errors import VerificationError

DATA = b"some blob content" * 100
GOOD = Digest.of(DATA)


def test_parse_round_trip() -> None:
    assert Digest.parse(str(GOOD)) == GOOD


def test_matching_blob_passes() -> None:
    assert read_verified(io.BytesIO(DATA), GOOD, 1 << 20, len(DATA)) == DATA


def test_wrong_bytes_name_the_digest() -> None:
    bad = bytearray(DATA)
    bad[5] ^= 1
    with pytest.raises(VerificationError, match=f"{GOOD}: content does not match"):
        read_verified(io.BytesIO(bytes(bad)), GOOD, 1 << 20, len(DATA))


def test_longer_than_descriptor_is_stopped() -> None:
    reader = VerifyingReader(io.BytesIO(DATA + b"extra"), GOOD, len(DATA))
    with pytest.raises(VerificationError, match=f"more than {len(DATA)} bytes"):
        reader.verify()


def test_shorter_than_descriptor() -> None:
    with pytest.raises(VerificationError, match="descriptor says"):
        read_verified(io.BytesIO(DATA[:-1]), GOOD, 1 << 20, len(DATA))


def test_size_limit_without_descriptor_size() -> None:
    with pytest.raises(VerificationError, match="size limit"):
        read_verified(io.BytesIO(DATA), GOOD, 100)
    with pytest.raises(VerificationError, match="exceeds the limit"):
        read_verified(io.BytesIO(DATA), GOOD, 100, len(DATA))
