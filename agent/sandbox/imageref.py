"""The image reference a container's guest pulls, pinned by digest.

CRI names a container's image by containerd's image record (the
``io.kubernetes.cri.image-name`` annotation), usually a tag: whatever the kubelet
pulled. The guest refuses references that are not pinned, and a tag could name other
content by the time the guest pulls. So a tag reference is resolved to
``<repository>@<manifest digest>`` from containerd's own record of the image (what it
pulled and unpacked for this container), through containerd's
``containerd.services.images.v1.Images/Get`` on its gRPC socket (the ``-address``
containerd gives the shim). A reference already carrying a digest passes unchanged.
The call is bounded whatever gRPC does (:mod:`agent.sandbox.containerd_client`): a
container's Create waiting on it fails with a message rather than hanging.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import grpc

from agent.sandbox import containerd_client
from agent.sandbox.errors import ImageRefError
from api.containerd.services.images.v1 import images_pb2

NAMESPACE_HEADER = containerd_client.NAMESPACE_HEADER
GET = "/containerd.services.images.v1.Images/Get"
DIGEST = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DOMAIN = re.compile(r"^(localhost|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+|[A-Za-z0-9.-]+:[0-9]+)$")
COMPONENT = re.compile(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$")


@dataclass(frozen=True)
class Reference:
    """``repository[:tag][@digest]``; ``repository`` includes the registry host."""

    repository: str
    tag: str = ""
    digest: str = ""

    def pinned(self, digest: str) -> str:
        return f"{self.repository}@{digest}"


def parse(text: str) -> Reference:
    """Split a reference; raises ImageRefError naming it when it is not one."""
    if DIGEST.match(text):
        raise ImageRefError(f"image reference {text!r} is an image id, not a name to pull")
    name, at, digest = text.partition("@")
    if at and not DIGEST.match(digest):
        raise ImageRefError(f"image reference {text!r}: {digest!r} is not a sha256/512 digest")
    head, slash, last = name.rpartition("/")
    last, colon, tag = last.partition(":")
    if colon and not TAG.match(tag):
        raise ImageRefError(f"image reference {text!r}: {tag!r} is not a tag")
    repository = f"{head}{slash}{last}"
    parts = repository.split("/")
    if len(parts) > 1 and DOMAIN.match(parts[0]):
        parts = parts[1:]
    if not all(COMPONENT.match(part) for part in parts):
        raise ImageRefError(f"image reference {text!r}: {repository!r} is not a repository name")
    return Reference(repository, tag, digest)


async def image_target(
    address: str, namespace: str, name: str, timeout: float
) -> images_pb2.Descriptor:
    """containerd's record of image ``name``: its target descriptor (manifest or index).
    Raises ImageRefError naming the image."""
    request = images_pb2.GetImageRequest(name=name)
    try:
        reply = await containerd_client.unary(
            address, namespace, GET, request, images_pb2.GetImageResponse, timeout=timeout
        )
    except containerd_client.ContainerdCallError as err:
        if err.code is grpc.StatusCode.NOT_FOUND:
            raise ImageRefError(
                f"image {name}: containerd has no image of that name in namespace "
                f"{namespace}, so it cannot be pinned by digest"
            ) from err
        raise ImageRefError(
            f"image {name}: asking containerd ({address}) for its digest failed: "
            f"{err.code.name}: {err.details}"
        ) from err
    return reply.image.target


async def pin(reference: str, address: str, namespace: str, timeout: float = 30.0) -> str:
    """``reference`` pinned by digest: unchanged when it carries one, else
    ``<repository>@<digest of containerd's image record>``. Raises ImageRefError."""
    ref = parse(reference)
    if ref.digest:
        return reference
    if not address:
        raise ImageRefError(
            f"image {reference}: not pinned by digest, and containerd's address is unknown"
        )
    target = await image_target(address, namespace, reference, timeout)
    if not DIGEST.match(target.digest):
        raise ImageRefError(
            f"image {reference}: containerd's record has no usable digest ({target.digest!r})"
        )
    return ref.pinned(target.digest)
