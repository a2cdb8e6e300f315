"""Image references: parsing, and pinning a tag by containerd's image record (a real
gRPC server on a unix socket answering containerd's Images/Get)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.sandbox import imageref
from agent.sandbox.errors import ImageRefError
from api.containerd.services.images.v1 import images_pb2

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


@pytest.mark.parametrize(
    ("text", "repository", "tag", "digest"),
    [
        ("10.213.47.3:5000/test/busybox:v1", "10.213.47.3:5000/test/busybox", "v1", ""),
        (f"10.213.47.3:5000/test/busybox@{DIGEST}", "10.213.47.3:5000/test/busybox", "", DIGEST),
        (f"docker.io/library/busybox:1.36@{DIGEST}", "docker.io/library/busybox", "1.36", DIGEST),
        ("localhost/app", "localhost/app", "", ""),
        ("busybox", "busybox", "", ""),
        ("registry.example.com/a/b-c/d__e:latest", "registry.example.com/a/b-c/d__e", "latest", ""),
    ],
)
def test_parse(text: str, repository: str, tag: str, digest: str) -> None:
    assert imageref.parse(text) == imageref.Reference(repository, tag, digest)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("busybox@sha256:abc", "is not a sha256/512 digest"),
        (f"busybox@md5:{'0' * 32}", "is not a sha256/512 digest"),
        ("busybox:", "is not a tag"),
        ("busybox:-x", "is not a tag"),
        ("Busybox:1", "is not a repository name"),
        ("", "is not a repository name"),
        ("a//b:1", "is not a repository name"),
        (DIGEST, "is an image id"),
    ],
)
def test_parse_refuses_what_is_no_reference(text: str, why: str) -> None:
    with pytest.raises(ImageRefError, match=why) as err:
        imageref.parse(text)
    assert repr(text) in str(err.value)


class Images:
    """containerd's Images service as far as Get goes: records by (namespace, name)."""

    def __init__(self, records: dict[tuple[str, str], str]) -> None:
        self.records = records
        self.asked: list[tuple[str, str]] = []

    async def get(
        self, request: images_pb2.GetImageRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> images_pb2.GetImageResponse:
        metadata = dict(context.invocation_metadata() or ())
        namespace = str(metadata.get(imageref.NAMESPACE_HEADER, ""))
        self.asked.append((namespace, request.name))
        digest = self.records.get((namespace, request.name))
        if digest is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"image {request.name!r}: not found")
        target = images_pb2.Descriptor(
            media_type="application/vnd.oci.image.manifest.v1+json", digest=digest, size=7
        )
        return images_pb2.GetImageResponse(image=images_pb2.Image(name=request.name, target=target))


@pytest.fixture
async def containerd(tmp_path: Path) -> AsyncIterator[tuple[str, Images]]:
    images = Images({
        ("k8s.io", "10.213.47.3:5000/test/busybox:v1"): DIGEST,
        ("default", "10.213.47.3:5000/test/busybox:v1"): OTHER,
        ("k8s.io", "reg.example/broken:1"): "not-a-digest",
    })  # fmt: skip
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "containerd.services.images.v1.Images",
        {
            "Get": grpc.unary_unary_rpc_method_handler(
                images.get,
                request_deserializer=images_pb2.GetImageRequest.FromString,
                response_serializer=images_pb2.GetImageResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    socket = tmp_path / "containerd.sock"
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    try:
        yield str(socket), images
    finally:
        await server.stop(None)


async def test_a_tag_is_pinned_by_containerds_record_in_its_namespace(
    containerd: tuple[str, Images],
) -> None:
    address, images = containerd
    tag = "10.213.47.3:5000/test/busybox:v1"
    assert await imageref.pin(tag, address, "k8s.io") == f"10.213.47.3:5000/test/busybox@{DIGEST}"
    assert await imageref.pin(tag, f"unix://{address}", "default") == (
        f"10.213.47.3:5000/test/busybox@{OTHER}"
    )
    assert images.asked == [("k8s.io", tag), ("default", tag)]


async def test_a_digest_reference_passes_unchanged_without_asking(
    containerd: tuple[str, Images],
) -> None:
    address, images = containerd
    for ref in (f"reg.example/app@{DIGEST}", f"reg.example/app:1@{DIGEST}"):
        assert await imageref.pin(ref, address, "k8s.io") == ref
        assert await imageref.pin(ref, "", "k8s.io") == ref
    assert images.asked == []


async def test_unresolvable_references_fail_naming_them(containerd: tuple[str, Images]) -> None:
    address, _ = containerd
    with pytest.raises(ImageRefError, match=r"image reg.example/app:2: containerd has no image"):
        await imageref.pin("reg.example/app:2", address, "k8s.io")
    with pytest.raises(ImageRefError, match=r"image reg.example/broken:1: .*no usable digest"):
        await imageref.pin("reg.example/broken:1", address, "k8s.io")
    with pytest.raises(ImageRefError, match=r"image reg.example/app:2: not pinned by digest, and"):
        await imageref.pin("reg.example/app:2", "", "k8s.io")
    with pytest.raises(ImageRefError, match=r"image reg.example/app:2: asking containerd"):
        await imageref.pin("reg.example/app:2", address + ".gone", "k8s.io", timeout=5)
