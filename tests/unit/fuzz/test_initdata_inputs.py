"""initdata from an untrusted host: arbitrary TOML documents, disk images and pod
annotations. Every outcome is a document or our InitdataError (guest or host); the
processor never raises for a bad document and always publishes either the document's
files or the deny-all policy, nothing in between.

(Byte-level parsing of each stage is also in tests/unit/initdata/test_properties.py;
this adds TOML of any shape, the host's annotation path and the whole processor.)
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import struct
import tempfile
from pathlib import Path
from typing import Any

import tomlkit
from hypothesis import event, given
from hypothesis import strategies as st

from agent.initdata import InitdataError as HostInitdataError
from agent.initdata.pod import ANNOTATION, from_annotations
from guest.initdata import codec, disk, document, processor
from guest.initdata.binding import Platform
from guest.initdata.errors import InitdataError
from guest.initdata.tee import LaunchValue
from tests.unit.fuzz.settings import fuzz

KEYS = st.one_of(
    st.sampled_from(["version", "algorithm", "data", "policy.rego", "a", "a.b", "..", "/x"]),
    st.text(max_size=12),
)
SCALARS = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["0.1.0", *document.ALGORITHMS, "package agent_policy\n"]),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True),
    st.booleans(),
    st.datetimes(timezones=st.one_of(st.none(), st.just(datetime.UTC))),
    st.dates(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def toml_documents(draw: st.DrawFn) -> bytes:
    """TOML text of any shape, likely near a valid initdata document."""
    doc: dict[str, Any] = {}
    # Mostly right, sometimes anything: the later stages get exercised too.
    if draw(st.integers(0, 9)) > 0:
        doc["version"] = "0.1.0" if draw(st.integers(0, 9)) > 1 else draw(SCALARS)
    if draw(st.integers(0, 9)) > 0:
        doc["algorithm"] = draw(
            st.sampled_from(document.ALGORITHMS) if draw(st.integers(0, 9)) > 1 else SCALARS
        )
    if draw(st.integers(0, 9)) > 0:
        names = st.one_of(st.just("policy.rego"), KEYS)
        doc["data"] = draw(
            st.dictionaries(names, st.text(max_size=60), max_size=4)
            if draw(st.integers(0, 9)) > 2
            else VALUES
        )
        if isinstance(doc["data"], dict) and draw(st.integers(0, 9)) > 2:
            doc["data"]["policy.rego"] = "package agent_policy\n"
    if draw(st.booleans()):
        doc.update(draw(st.dictionaries(KEYS, VALUES, max_size=2)))
    try:
        return tomlkit.dumps(doc).encode()
    except (ValueError, TypeError, tomlkit.exceptions.TOMLKitError):
        return repr(doc).encode()  # something tomlkit cannot write: still a document to try


def parse_or_our_error(raw: bytes) -> document.Initdata | None:
    try:
        return document.parse(raw)
    except InitdataError:
        return None


@fuzz
@given(toml_documents())
def test_toml_of_any_shape_parses_or_is_refused(raw: bytes) -> None:
    doc = parse_or_our_error(raw)
    event("parsed" if doc is not None else "refused")
    if doc is not None:
        assert doc.raw == raw
        assert doc.digest == hashlib.new(doc.algorithm, raw).digest()
        for name, content in doc.data.items():
            document.check_name(name)
            assert isinstance(content, str)


@fuzz
@given(st.one_of(toml_documents(), st.binary(max_size=300)), st.booleans())
def test_a_pod_annotation_is_a_document_or_a_host_error(raw: bytes, gzip: bool) -> None:
    value = codec.encode_annotation(raw) if gzip else raw.decode("latin-1")
    with contextlib.suppress(HostInitdataError):
        pod = from_annotations({ANNOTATION: value})
        assert pod is not None
        assert pod.raw == raw
        assert document.POLICY_NAME in pod.document.data


class FixedLaunch:
    def __init__(self, value: bytes) -> None:
        self.value = value

    def read(self) -> LaunchValue:
        return LaunchValue(Platform.INSECURE, self.value, "fuzz")


@fuzz
@given(
    st.one_of(
        toml_documents().map(disk.encode),
        st.binary(max_size=600),
        st.builds(
            lambda payload, extra: (
                b"initdata" + struct.pack("<Q", max(0, len(payload) + extra)) + payload
            ),
            st.binary(max_size=300),
            st.integers(-4, 4),
        ),
    ),
    st.booleans(),
)
def test_the_processor_publishes_the_document_or_deny_all(image: bytes, bound: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "initdata.img"
        path.write_bytes(image)
        try:
            raw = disk.decode(image)
            value = hashlib.new(document.parse(raw).algorithm, raw).digest() if bound else b""
        except InitdataError:
            value = b""
        out = folder / "measured-cfg"
        outcome = processor.process(path, FixedLaunch(value), out)
        event("trusted" if outcome.trusted else "deny-all")
        published = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
        assert published == sorted(outcome.files)
        if not outcome.trusted:
            assert outcome.files == (document.POLICY_NAME,)
            text = (out / document.POLICY_NAME).read_text()
            assert "policy_reason := " in text and outcome.reason
        # Nothing half-written beside it: only the published folder.
        assert sorted(p.name for p in folder.iterdir()) == ["initdata.img", "measured-cfg"]
