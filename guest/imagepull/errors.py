"""The image puller's exceptions: one root, a subclass per kind of failure."""

from __future__ import annotations


class ImagePullError(Exception):
    """Root of every error the image puller raises."""


class InvalidReference(ImagePullError):
    """An image reference is malformed or not pinned by digest."""


class ConfigError(ImagePullError):
    """The registry settings file is malformed."""


class RegistryError(ImagePullError):
    """The registry answered with an error, or could not be reached."""


class AuthError(RegistryError):
    """The registry or its token server refused our credentials (or we had none)."""


class VerificationError(ImagePullError):
    """Content did not match its digest or declared size, or exceeded a size limit."""


class ManifestError(ImagePullError):
    """A manifest, index or config is malformed or names nothing usable for us."""


class UnsafeLayerError(ImagePullError):
    """A layer tries to escape its directory, is a tar bomb, or holds a refused entry."""


class StoreError(ImagePullError):
    """The layer store cannot hold the content (no space, broken entry, I/O error)."""


class MountError(ImagePullError):
    """Mounting or unmounting the overlay rootfs failed."""
