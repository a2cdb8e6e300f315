from __future__ import annotations

import base64
import hashlib
import tomllib

import pytest

from guest.initdata import document
from guest.initdata.binding import Platform, bind
from guest.initdata.errors import InitdataError
from tests.unit.initdata import vectors


def test_kata_default_document() -> None:
    doc = document.parse(vectors.read("kata-default-initdata.toml"))
    assert (doc.version, doc.algorithm, dict(doc.data)) == ("0.1.0", "sha256", {})
    assert doc.digest.hex() == vectors.KATA_DEFAULT_SHA256
    assert document.digest(doc.raw, "sha384").hex() == vectors.KATA_DEFAULT_SHA384
    host_data = bind(doc.digest, Platform.SNP)
    assert base64.b64encode(host_data).decode() == vectors.KATA_DEFAULT_HOST_DATA_B64
    assert bind(doc.digest, Platform.TDX) == doc.digest + bytes(16)


def test_trustee_policy_document() -> None:
    doc = document.parse(vectors.read("trustee-init-data-with-policy.toml"))
    assert doc.algorithm == "sha256"
    assert list(doc.data) == ["policy.rego"]
    assert "\npackage agent_policy\n" in doc.data["policy.rego"]
    assert doc.digest.hex() == vectors.TRUSTEE_SHA256
    assert base64.b64encode(bind(doc.digest, Platform.SNP)).decode() == (
        vectors.TRUSTEE_HOST_DATA_B64
    )
    assert document.require_policy(doc) == doc.data["policy.rego"]


def test_caa_document_sha384_binds_truncated_for_snp() -> None:
    doc = document.parse(vectors.read("caa-docs-initdata-example.toml"))
    assert doc.algorithm == "sha384"
    assert sorted(doc.data) == ["aa.toml", "cdh.toml", "policy.rego"]
    assert doc.digest.hex() == vectors.CAA_SHA384
    assert bind(doc.digest, Platform.TDX) == doc.digest
    assert base64.b64encode(bind(doc.digest, Platform.SNP)).decode() == vectors.CAA_HOST_DATA_B64


def test_sha512_truncated_for_both_platforms() -> None:
    raw = b'version = "0.1.0"\nalgorithm = "sha512"\n[data]\n'
    digest = document.parse(raw).digest
    assert digest == hashlib.sha512(raw).digest()
    assert bind(digest, Platform.SNP) == digest[:32]
    assert bind(digest, Platform.TDX) == digest[:48]
    assert bind(digest, Platform.INSECURE) == digest


def test_missing_data_table_is_empty() -> None:
    assert dict(document.parse(b'version = "0.1.0"\nalgorithm = "sha256"\n').data) == {}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'version = "0.2.0"\nalgorithm = "sha256"\n', "unsupported initdata version '0.2.0'"),
        (b'algorithm = "sha256"\n', "unsupported initdata version None"),
        (b'version = "0.1.0"\nalgorithm = "md5"\n', "unknown initdata algorithm 'md5'"),
        (b'version = "0.1.0"\nalgorithm = "sha-256"\n', "unknown initdata algorithm 'sha-256'"),
        (b'version = "0.1.0"\n', "unknown initdata algorithm None"),
        (b"version = \n", "not valid TOML"),
        (b"\xff\xfe", "not UTF-8"),
        (b'version = "0.1.0"\nalgorithm = "sha256"\ndata = 3\n', "'data' must be a table"),
        (b'version = "0.1.0"\nalgorithm = "sha256"\n[data]\na = 1\n', "'a' must be a string"),
        (b'version = "0.1.0"\nalgorithm = "sha256"\n[data.x]\na = "b"\n', "'x' must be a string"),
    ],
)
def test_invalid_documents(raw: bytes, message: str) -> None:
    with pytest.raises(InitdataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        document.parse(raw)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../etc/passwd", "not a plain relative path"),
        ("a/../../b", "not a plain relative path"),
        ("/etc/shadow", "absolute path"),
        ("a\0b", "NUL"),
        ("", "empty name"),
        ("a//b", "not a plain relative path"),
        ("./a", "not a plain relative path"),
        ("a/", "not a plain relative path"),
        ("a\nb", "control character"),
        ("x" * 256, "longer than 255 bytes"),
    ],
)
def test_bad_names_refused(name: str, message: str) -> None:
    key = '"' + name.replace("\\", "\\\\").replace("\0", "\\u0000").replace("\n", "\\n") + '"'
    raw = f'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n{key} = "x"\n'.encode()
    with pytest.raises(InitdataError, match=message):
        document.parse(raw)
    with pytest.raises(InitdataError, match=message):
        document.create({name: "x"})


def test_good_names_accepted() -> None:
    doc = document.create({"policy.rego": "p", "sub/dir/aa.toml": "q", "..hidden": "r"})
    assert dict(doc.data) == {"policy.rego": "p", "sub/dir/aa.toml": "q", "..hidden": "r"}


def test_oversized_document_refused() -> None:
    raw = b'version = "0.1.0"\nalgorithm = "sha256"\n#' + b"x" * document.MAX_DOCUMENT_BYTES
    with pytest.raises(InitdataError, match="more than the limit"):
        document.parse(raw)


def test_require_policy() -> None:
    doc = document.parse(vectors.read("kata-default-initdata.toml"))
    with pytest.raises(InitdataError, match=r"no 'policy\.rego' entry"):
        document.require_policy(doc)


@pytest.mark.parametrize(
    "value",
    [
        "package agent_policy\n\ndefault CreateContainerRequest := true\n",
        "has ''' triple quotes",
        "ends with a quote'",
        "carriage\r\nreturn",
        "control \x01 and \x7f chars",
        'backslash \\ and "quotes"',
        "",
        "\n\nleading newlines",
        "unicode: \u00e9 \u2713 \U0001d518",
    ],
)
def test_create_round_trips_exactly(value: str) -> None:
    doc = document.create({"policy.rego": value}, "sha256")
    assert doc.data["policy.rego"] == value
    assert tomllib.loads(doc.raw.decode())["data"]["policy.rego"] == value
    assert doc.raw.startswith(b'version = "0.1.0"\nalgorithm = "sha256"\n')


def test_create_keeps_policies_readable() -> None:
    doc = document.create({"policy.rego": "package agent_policy\n"})
    assert b"'''\npackage agent_policy\n'''" in doc.raw
    assert doc.algorithm == "sha384"


def test_create_trustee_policy_round_trip() -> None:
    policy = document.parse(vectors.read("trustee-init-data-with-policy.toml")).data["policy.rego"]
    assert document.create({"policy.rego": policy}).data["policy.rego"] == policy


def test_create_refuses_unknown_algorithm() -> None:
    with pytest.raises(InitdataError, match="unknown initdata algorithm 'sha1'"):
        document.create({"policy.rego": "x"}, "sha1")
