"""A pod's initdata as the host sees it: read from the pod annotation and validated.

The annotation ``io.katacontainers.config.hypervisor.cc_init_data`` holds
base64(gzip(TOML)). The host checks it as strictly as the guest will (size limits on
both forms, version, algorithm, ``[data]`` names, a policy present) so a bad document
fails sandbox creation with a clear message instead of a VM that denies everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent.initdata.errors import InitdataError
from guest.initdata import codec, document
from guest.initdata import errors as guest_errors
from guest.initdata.binding import Platform, bind

ANNOTATION = codec.ANNOTATION


@dataclass(frozen=True)
class PodInitdata:
    """A validated document; ``raw`` is byte-for-byte what the annotation carried."""

    document: document.Initdata

    @property
    def raw(self) -> bytes:
        return self.document.raw

    @property
    def digest(self) -> bytes:
        return self.document.digest

    def bound_value(self, platform: Platform) -> bytes:
        """The launch value for ``platform`` (32 bytes SNP, 48 TDX, whole digest insecure)."""
        return bind(self.digest, platform)


def from_annotation(value: str) -> PodInitdata:
    """Decode and validate one annotation value; raises InitdataError naming the problem."""
    try:
        doc = document.parse(codec.decode_annotation(value))
        document.require_policy(doc)
    except guest_errors.InitdataError as err:
        raise InitdataError(f"pod annotation {ANNOTATION}: {err}") from err
    return PodInitdata(doc)


def from_annotations(annotations: Mapping[str, str]) -> PodInitdata | None:
    """The pod's initdata, or None when the pod carries no initdata annotation."""
    value = annotations.get(ANNOTATION)
    if value is None:
        return None
    return from_annotation(value)


def from_toml(raw: bytes) -> PodInitdata:
    """Validate a raw TOML document (e.g. a runtime default); raises InitdataError."""
    try:
        doc = document.parse(raw)
        document.require_policy(doc)
    except guest_errors.InitdataError as err:
        raise InitdataError(f"initdata document: {err}") from err
    return PodInitdata(doc)
