"""Property tests: arbitrary input never raises anything but InitdataError, and the
encoders round-trip."""

from __future__ import annotations

import contextlib
import struct
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from guest.initdata import codec, disk, document, snp, tdx
from guest.initdata.cli import load_any
from guest.initdata.errors import InitdataError

# Hypothesis keeps caches in ./.hypothesis by default: keep the checkout clean.
set_hypothesis_home_dir(str(Path(tempfile.gettempdir()) / "contrast-hypothesis"))
settings.register_profile("initdata", max_examples=300, deadline=None, database=None)
settings.load_profile("initdata")

PARSERS = (
    disk.decode,
    document.parse,
    codec.decompress,
    snp.parse_report,
    tdx.parse_quote,
    tdx.parse_tdreport,
    load_any,
)


def only_our_error(parse: object, blob: bytes) -> None:
    assert callable(parse)
    with contextlib.suppress(InitdataError):
        parse(blob)


@given(st.binary(max_size=6000))
def test_arbitrary_bytes(blob: bytes) -> None:
    for parse in PARSERS:
        only_our_error(parse, blob)


@given(st.binary(max_size=2000))
def test_arbitrary_disk_payloads(payload: bytes) -> None:
    # Past the magic and a plausible length, so the gzip and TOML stages get exercised.
    only_our_error(disk.decode, b"initdata" + struct.pack("<Q", len(payload)) + payload)
    only_our_error(disk.decode, b"initdata" + struct.pack("<Q", len(payload) + 7) + payload)


@given(st.binary(max_size=3000))
def test_arbitrary_gzip_streams(payload: bytes) -> None:
    only_our_error(document.parse, payload)
    image = disk.encode(payload)
    assert disk.decode(image) == payload
    only_our_error(lambda b: document.parse(disk.decode(b)), image)
    # Flip a byte inside the gzip stream.
    if len(payload) > 0:
        broken = bytearray(image)
        broken[16 + len(payload) % 20] ^= 0x55
        only_our_error(disk.decode, bytes(broken))


@given(st.text(max_size=3000))
def test_arbitrary_annotation_text(value: str) -> None:
    with contextlib.suppress(InitdataError):
        codec.decode_annotation(value)


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=2000))
def test_arbitrary_toml_text(text: str) -> None:
    only_our_error(document.parse, text.encode("utf-8"))
    prefixed = 'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n' + text
    only_our_error(document.parse, prefixed.encode("utf-8"))


NAME_PART = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/\0", min_codepoint=0x20),
    min_size=1,
    max_size=20,
).filter(lambda p: p not in (".", "..") and "\x7f" not in p)
NAMES = st.lists(NAME_PART, min_size=1, max_size=3).map("/".join)


@given(
    st.dictionaries(
        NAMES, st.text(alphabet=st.characters(codec="utf-8"), max_size=300), max_size=5
    ),
    st.sampled_from(document.ALGORITHMS),
)
def test_create_parse_round_trip(data: dict[str, str], algorithm: str) -> None:
    doc = document.create(data, algorithm)
    again = document.parse(disk.decode(disk.encode(doc.raw)))
    assert dict(again.data) == data
    assert again.digest == doc.digest
    assert codec.decode_annotation(codec.encode_annotation(doc.raw)) == doc.raw
