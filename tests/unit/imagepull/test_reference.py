"""Image references: digest pinning is mandatory for pulls."""

from __future__ import annotations

import pytest

from guest.imagepull.digest import Digest
from guest.imagepull.errors import InvalidReference
from guest.imagepull.reference import parse

HEX = "a" * 64


def test_full_reference() -> None:
    ref = parse(f"registry.example.com:5000/team/app:v1@sha256:{HEX}")
    assert ref.registry == "registry.example.com:5000"
    assert ref.repository == "team/app"
    assert ref.tag == "v1"
    assert ref.pinned() == Digest("sha256", HEX)
    assert str(ref) == f"registry.example.com:5000/team/app:v1@sha256:{HEX}"


def test_docker_hub_names() -> None:
    assert parse(f"busybox@sha256:{HEX}").repository == "library/busybox"
    ref = parse(f"org/app@sha256:{HEX}")
    assert (ref.registry, ref.repository) == ("docker.io", "org/app")
    assert parse(f"localhost/app@sha256:{HEX}").registry == "localhost"


def test_unpinned_reference_is_refused_with_a_reason() -> None:
    ref = parse("registry.example.com/app:latest")
    with pytest.raises(InvalidReference, match=r"not pinned by digest.*@sha256"):
        ref.pinned()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("app@sha256:abc", "expected 64 lowercase hex"),
        (f"app@md5:{HEX}", "algorithm must be one of"),
        (f"App/Upper@sha256:{HEX}", "invalid repository"),
        (f"host.io/app:bad tag@sha256:{HEX}", "whitespace"),
        (f"host.io/app:-x@sha256:{HEX}", "invalid tag"),
        (f"host.io/a//b@sha256:{HEX}", "invalid repository"),
        (f"bad_host.io:x/app@sha256:{HEX}", "invalid registry host"),
    ],
)
def test_malformed(text: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=message):
        parse(text)
