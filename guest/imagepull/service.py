"""The ttrpc ``api.ImagePullService`` the guest agent calls: ``PullImage``.

The request names a digest-pinned image and a bundle directory the caller created;
on success ``<bundle>/rootfs`` is an overlay mount of the image. Pulls run in worker
threads so one slow pull never blocks the others. Puller errors become ttrpc statuses
here, and only here; the message always says what failed.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import ttrpc
from api.guest import imagepull_pb2
from guest.imagepull import errors
from guest.imagepull.puller import ImagePuller

log = logging.getLogger(__name__)
SERVICE = imagepull_pb2.DESCRIPTOR.services_by_name["ImagePullService"]

_CODES: tuple[tuple[type[errors.ImagePullError], ttrpc.Code], ...] = (
    (errors.InvalidReference, ttrpc.Code.INVALID_ARGUMENT),
    (errors.AuthError, ttrpc.Code.UNAUTHENTICATED),
    (errors.RegistryError, ttrpc.Code.UNAVAILABLE),
    (errors.VerificationError, ttrpc.Code.DATA_LOSS),
    (errors.UnsafeLayerError, ttrpc.Code.FAILED_PRECONDITION),
    (errors.ManifestError, ttrpc.Code.FAILED_PRECONDITION),
    (errors.ConfigError, ttrpc.Code.FAILED_PRECONDITION),
    (errors.StoreError, ttrpc.Code.RESOURCE_EXHAUSTED),
    (errors.MountError, ttrpc.Code.INTERNAL),
)


def status_for(err: errors.ImagePullError) -> ttrpc.StatusError:
    """The ttrpc status answering a failed pull."""
    for kind, code in _CODES:
        if isinstance(err, kind):
            return ttrpc.StatusError(code, str(err))
    return ttrpc.StatusError(ttrpc.Code.UNKNOWN, str(err))


class ImagePullService:
    """Implements ``api.ImagePullService`` on top of an ImagePuller."""

    def __init__(self, puller: ImagePuller) -> None:
        self.puller = puller

    async def PullImage(
        self, request: imagepull_pb2.ImagePullRequest, ctx: ttrpc.CallContext
    ) -> imagepull_pb2.ImagePullResponse:
        """Pull ``image_url`` and mount it at ``<bundle_path>/rootfs``.

        Raises StatusError: INVALID_ARGUMENT for a bad request, otherwise per _CODES.
        """
        bundle = Path(request.bundle_path)
        if not request.bundle_path or not bundle.is_absolute() or ".." in bundle.parts:
            raise ttrpc.InvalidArgument(
                f"bundle_path {request.bundle_path!r} must be an absolute path without '..'"
            )
        log.info("PullImage %s into %s", request.image_url, bundle)
        try:
            bundle.mkdir(parents=True, exist_ok=True)
            image = await asyncio.to_thread(self.puller.pull_into_bundle, request.image_url, bundle)
        except errors.ImagePullError as err:
            log.warning("PullImage %s failed: %s", request.image_url, err)
            raise status_for(err) from err
        return imagepull_pb2.ImagePullResponse(manifest_digest=str(image.manifest_digest))


async def serve(puller: ImagePuller, socket: Path) -> None:
    """Serve ImagePullService on the unix socket ``socket`` until cancelled."""
    server = ttrpc.Server()
    server.register(SERVICE, ImagePullService(puller))
    await server.serve_unix(socket)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()
