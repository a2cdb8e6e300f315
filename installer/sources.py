"""Reading asset sources: local files and http(s) URLs, as byte streams."""

from __future__ import annotations

import contextlib
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import BinaryIO, cast

from installer.errors import FetchError
from installer.manifest import AssetSpec

HTTP_TIMEOUT = 60.0


@contextlib.contextmanager
def open_source(asset: AssetSpec) -> Iterator[BinaryIO]:
    """Open an asset's source for reading; raises FetchError naming the source.

    Content is not trusted here: callers hash what they read and check it against the
    asset's integrity before anything is published.
    """
    if asset.is_url:
        try:
            # Only http(s) reach this point: the manifest parser rejects other schemes.
            response = urllib.request.urlopen(asset.source, timeout=HTTP_TIMEOUT)  # noqa: S310
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise FetchError(f"{asset.source}: download failed: {err}") from err
        with response:
            yield cast(BinaryIO, response)
        return
    try:
        stream = open(asset.source, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as err:
        raise FetchError(f"{asset.source}: cannot read: {err.strerror or err}") from err
    with stream:
        yield stream


def read_chunks(stream: BinaryIO, source: str, size: int = 1 << 20) -> Iterator[bytes]:
    """Iterate over a source stream, turning read errors into FetchError."""
    while True:
        try:
            chunk = stream.read(size)
        except OSError as err:
            raise FetchError(f"{source}: reading failed: {err}") from err
        if not chunk:
            return
        yield chunk
