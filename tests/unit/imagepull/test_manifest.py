"""Manifest, index and config parsing."""

from __future__ import annotations

import json

import pytest

from devkit import ocibuild as ob
from guest.imagepull import manifest as mf
from guest.imagepull.errors import ManifestError

D = "sha256:" + "b" * 64


def index(*platforms: tuple[str, str]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mf.OCI_INDEX,
            "manifests": [
                {
                    "mediaType": mf.OCI_MANIFEST,
                    "digest": "sha256:" + str(i) * 64,
                    "size": 10,
                    "platform": {"os": o, "architecture": a},
                }
                for i, (o, a) in enumerate(platforms)
            ],
        }
    ).encode()


def test_index_selects_linux_amd64() -> None:
    idx = mf.parse_index(index(("linux", "arm64"), ("linux", "amd64")), "x")
    assert idx.select(mf.Platform(), "x").digest.hex == "1" * 64


def test_index_without_our_platform_lists_offers() -> None:
    idx = mf.parse_index(index(("linux", "arm64"), ("windows", "amd64")), "img")
    with pytest.raises(ManifestError, match=r"no manifest for linux/amd64 .*linux/arm64"):
        idx.select(mf.Platform(), "img")


def test_manifest_round_trip_from_builder() -> None:
    image = ob.build_image([ob.Layer(ob.layer_tar([ob.file("a", b"1")]), "zstd")])
    m = mf.parse_manifest(image.manifest, "img")
    assert m.layers[0].media_type.endswith("+zstd")
    assert mf.LAYER_TYPES[m.layers[0].media_type] is mf.Compression.ZSTD
    c = mf.parse_config(image.config, "img")
    assert (c.os, c.architecture, len(c.diff_ids)) == ("linux", "amd64", 1)


def test_media_type_falls_back_to_content_type() -> None:
    assert mf.media_type_of(b"{}", f"{mf.DOCKER_MANIFEST}; charset=utf-8", "x") == (
        mf.DOCKER_MANIFEST
    )
    with pytest.raises(ManifestError, match="no mediaType"):
        mf.media_type_of(b"{}", None, "x")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"schemaVersion": 1}, "schemaVersion must be 2"),
        (
            {"schemaVersion": 2, "config": {"mediaType": "text/plain", "digest": D, "size": 1}},
            "is not an image",
        ),
        (
            {
                "schemaVersion": 2,
                "config": {"mediaType": mf.OCI_CONFIG, "digest": D, "size": 1},
                "layers": [{"mediaType": "application/x-evil", "digest": D, "size": 1}],
            },
            "unsupported media type",
        ),
        (
            {
                "schemaVersion": 2,
                "config": {"mediaType": mf.OCI_CONFIG, "digest": D, "size": -1},
                "layers": [],
            },
            "no valid size",
        ),
        (
            {
                "schemaVersion": 2,
                "config": {"mediaType": mf.OCI_CONFIG, "digest": "sha256:zz", "size": 1},
                "layers": [],
            },
            "lowercase hex",
        ),
    ],
)
def test_bad_manifests(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        mf.parse_manifest(json.dumps(doc).encode(), "img")


def test_config_needs_diff_ids() -> None:
    with pytest.raises(ManifestError, match="rootfs"):
        mf.parse_config(b'{"os": "linux"}', "img")
    with pytest.raises(ManifestError, match="not valid JSON"):
        mf.parse_config(b"\xff", "img")
