"""Manifest parsing and SRI values: bad input is named precisely and refused."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from installer.errors import IntegrityError, ManifestError
from installer.integrity import Integrity
from installer.manifest import Platform, Role, load_manifest
from tests.unit.installer.nodes import make_node, sri

URL_SRI = sri(b"x", "sha512")


def test_example_manifest_parses(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    manifest = load_manifest(node.manifest)
    assert manifest.platform is Platform.QEMU_INSECURE
    shim = manifest.asset_with_role(Role.SHIM)
    assert shim.mode == 0o755
    assert shim.source == str(node.assets / "shim")  # relative to the manifest file
    kernel = manifest.asset_with_role(Role.KERNEL)
    assert kernel.integrity is not None and kernel.integrity.algorithm == "sha384"


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
def test_sri_round_trip(algorithm: str) -> None:
    value = sri(b"hello", algorithm)
    parsed = Integrity.parse(value)
    assert str(parsed) == value
    parsed.check(hashlib.new(algorithm, b"hello").digest(), "x")
    with pytest.raises(IntegrityError, match=r"^src: integrity mismatch: expected"):
        parsed.check(hashlib.new(algorithm, b"hellO").digest(), "src")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("md5-" + base64.b64encode(b"0" * 16).decode(), "expected sha256-, sha384- or sha512-"),
        ("sha256-not*base64", "not valid base64"),
        ("sha256-" + base64.b64encode(b"short").decode(), "must be 32 bytes, got 5"),
        ("sha256" + base64.b64encode(b"0" * 32).decode(), "expected sha256-"),
    ],
)
def test_bad_sri_values(value: str, problem: str) -> None:
    with pytest.raises(ManifestError, match=problem):
        Integrity.parse(value)


def write(tmp: Path, body: str) -> Path:
    path = tmp / "m.toml"
    path.write_text('format = 1\nplatform = "metal-qemu-snp"\n' + body)
    return path


SHIM = '[[asset]]\npath = "bin/shim"\nsource = "/s"\nrole = "shim"\n'
CFG = '[[asset]]\npath = "etc/c.toml"\nsource = "/c"\nrole = "runtime-config"\n'


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (SHIM, "exactly one asset with role 'runtime-config', found 0"),
        (SHIM + CFG + SHIM.replace("bin/shim", "bin/other"), "role 'shim', found 2"),
        (SHIM + CFG.replace("etc/c.toml", "bin/shim"), "two assets install to bin/shim"),
        (SHIM + CFG.replace('"/c"', '"https://example.invalid/c"'), "needs an integrity value"),
        (SHIM + CFG.replace('"/c"', '"ftp://h/c"'), "only local paths and http"),
        (SHIM + CFG.replace("etc/c.toml", "../c.toml"), "relative file path without '..'"),
        (SHIM + CFG.replace("etc/c.toml", "/etc/c.toml"), "relative file path"),
        (SHIM + CFG + 'mode = "0999"\n', "octal string"),
        (SHIM + CFG + "mode = 493\n", "octal string"),
        (SHIM + CFG + 'colour = "red"\n', "unknown key(s) colour"),
        (SHIM + CFG.replace("runtime-config", "config"), "role 'config' is not one of"),
        ("", "at least one [[asset]]"),
    ],
)
def test_manifest_errors_name_file_and_problem(tmp_path: Path, body: str, problem: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert str(err.value).startswith(str(path))
    assert problem in str(err.value)


def test_url_source_with_integrity_is_accepted(tmp_path: Path) -> None:
    body = SHIM + CFG.replace('"/c"', f'"https://example.invalid/c"\nintegrity = "{URL_SRI}"')
    asset = load_manifest(write(tmp_path, body)).asset_with_role(Role.RUNTIME_CONFIG)
    assert asset.is_url and asset.integrity == Integrity.parse(URL_SRI)


def test_unknown_platform_and_format(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('format = 1\nplatform = "cloud"\n' + SHIM + CFG)
    with pytest.raises(ManifestError, match="platform 'cloud' is not one of metal-qemu-snp"):
        load_manifest(path)
    path.write_text('format = 2\nplatform = "metal-qemu-snp"\n' + SHIM + CFG)
    with pytest.raises(ManifestError, match="format must be 1, got 2"):
        load_manifest(path)
    path.write_text("format = [\n")
    with pytest.raises(ManifestError, match="not a valid TOML manifest"):
        load_manifest(path)
