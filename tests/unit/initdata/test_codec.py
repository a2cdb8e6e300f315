from __future__ import annotations

import base64
import gzip

import pytest

from guest.initdata import codec, document
from guest.initdata.errors import InitdataError
from tests.unit.initdata import vectors


def test_caa_annotation_decodes_to_the_byte_identical_toml() -> None:
    value = vectors.read("caa-docs-initdata-example.annotation.b64").decode("ascii")
    raw = codec.decode_annotation(value)
    assert raw == vectors.read("caa-docs-initdata-example.toml")
    assert document.parse(raw).digest.hex() == vectors.CAA_SHA384


def test_published_caa_value_lacks_padding_which_we_tolerate() -> None:
    value = vectors.read("caa-docs-initdata-example.annotation.b64").decode("ascii")
    assert len(value) % 4 != 0
    with pytest.raises(ValueError, match="padding"):
        base64.b64decode(value, validate=True)  # what a strict decoder says
    assert codec.decode_annotation(value + "=") == codec.decode_annotation(value)


@pytest.mark.parametrize(
    "name", ["kata-default-initdata.toml", "trustee-init-data-with-policy.toml"]
)
def test_annotation_round_trip_keeps_raw_bytes(name: str) -> None:
    raw = vectors.read(name)
    value = codec.encode_annotation(raw)
    assert codec.decode_annotation(value) == raw
    # Any gzip producer works (GNU gzip -n, another level): only the TOML counts.
    other = base64.b64encode(gzip.compress(raw, compresslevel=1)).decode()
    assert codec.decode_annotation(other) == raw


def test_kata_default_annotation_length() -> None:
    assert len(codec.encode_annotation(vectors.read("kata-default-initdata.toml"))) == 88


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is empty"),
        ("H4sI AAAA", "not standard base64"),
        ("H4sI\nAAAA", "not standard base64"),
        ("H4sI-_AA", "not standard base64"),
        ("A", "not valid base64"),
        (base64.b64encode(b"plain text").decode(), "not gzip"),
        ("x" * (codec.MAX_ANNOTATION_CHARS + 4), "more than the limit"),
    ],
)
def test_bad_annotations(value: str, message: str) -> None:
    with pytest.raises(InitdataError, match=message):
        codec.decode_annotation(value)


def test_gzip_bomb_refused_without_expanding() -> None:
    bomb = gzip.compress(bytes(64 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < codec.MAX_COMPRESSED_BYTES
    with pytest.raises(InitdataError, match="gzip bomb refused"):
        codec.decompress(bomb)


def test_limit_is_exact() -> None:
    blob = gzip.compress(b"a" * 1000)
    assert codec.decompress(blob, limit=1000) == b"a" * 1000
    with pytest.raises(InitdataError, match="beyond the limit of 999 bytes"):
        codec.decompress(blob, limit=999)


def test_truncated_gzip() -> None:
    blob = gzip.compress(b"version = 1\n" * 100)
    with pytest.raises(InitdataError, match=r"truncated|corrupt"):
        codec.decompress(blob[:-6])


def test_corrupt_gzip() -> None:
    blob = bytearray(gzip.compress(b"hello world" * 10))
    blob[12] ^= 0xFF
    with pytest.raises(InitdataError, match="corrupt"):
        codec.decompress(bytes(blob))


def test_trailing_bytes_after_gzip() -> None:
    with pytest.raises(InitdataError, match="3 unexpected bytes after its end"):
        codec.decompress(gzip.compress(b"x") + b"abc")


def test_compressed_size_limit() -> None:
    with pytest.raises(InitdataError, match="more than the limit"):
        codec.decompress(b"\x1f\x8b" + bytes(codec.MAX_COMPRESSED_BYTES))
