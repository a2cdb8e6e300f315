"""Subresource Integrity values (``sha256-``/``sha384-``/``sha512-`` + base64 digest)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import BinaryIO

from installer.errors import IntegrityError, ManifestError

# The algorithms SRI defines, with their digest sizes in bytes.
ALGORITHMS = {"sha256": 32, "sha384": 48, "sha512": 64}
CHUNK = 1 << 20


@dataclass(frozen=True)
class Integrity:
    """One SRI value: an algorithm and the raw digest it expects."""

    algorithm: str
    digest: bytes

    @classmethod
    def parse(cls, value: str) -> Integrity:
        """Parse ``<alg>-<base64>``; raises ManifestError naming what is wrong."""
        alg, sep, b64 = value.strip().partition("-")
        if not sep or alg not in ALGORITHMS:
            raise ManifestError(
                f"integrity {value!r}: expected sha256-, sha384- or sha512- followed by base64"
            )
        try:
            digest = base64.b64decode(b64, validate=True)
        except binascii.Error as err:
            raise ManifestError(f"integrity {value!r}: digest is not valid base64") from err
        if len(digest) != ALGORITHMS[alg]:
            raise ManifestError(
                f"integrity {value!r}: {alg} digest must be {ALGORITHMS[alg]} bytes, "
                f"got {len(digest)}"
            )
        return cls(alg, digest)

    @classmethod
    def of_bytes(cls, data: bytes, algorithm: str = "sha256") -> Integrity:
        return cls(algorithm, hashlib.new(algorithm, data).digest())

    @classmethod
    def of_stream(cls, stream: BinaryIO, algorithm: str = "sha256") -> Integrity:
        h = hashlib.new(algorithm)
        while chunk := stream.read(CHUNK):
            h.update(chunk)
        return cls(algorithm, h.digest())

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)

    def matches(self, digest: bytes) -> bool:
        return hmac.compare_digest(self.digest, digest)

    def check(self, digest: bytes, what: str) -> None:
        """Raise IntegrityError unless ``digest`` is the expected one."""
        if not self.matches(digest):
            got = Integrity(self.algorithm, digest)
            raise IntegrityError(f"{what}: integrity mismatch: expected {self}, got {got}")

    def __str__(self) -> str:
        return f"{self.algorithm}-{base64.b64encode(self.digest).decode()}"
