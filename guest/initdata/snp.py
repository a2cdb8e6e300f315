"""The AMD SEV-SNP ``ATTESTATION_REPORT`` structure (SNP firmware ABI, little-endian).

Only parsing: signature verification belongs to a remote verifier. The guest reads
``host_data`` to compare it with the initdata digest, and ``report_data`` to check that
the report answers its own nonce.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from guest.initdata.errors import InitdataError

REPORT_SIZE = 0x4A0  # 1184 bytes
MIN_VERSION = 2

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


@dataclass(frozen=True)
class SnpReport:
    """The fields of an attestation report (offsets as in the ABI spec table)."""

    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: int
    platform_info: int
    flags: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: int
    cpuid: bytes  # family, model, stepping; zero before report version 3
    chip_id: bytes
    committed_tcb: int
    current_version: bytes  # build, minor, major
    committed_version: bytes  # build, minor, major
    launch_tcb: int
    signature_r: bytes
    signature_s: bytes

    @property
    def signing_key(self) -> int:
        """0 = VCEK, 1 = VLEK (flags bits 2-4)."""
        return (self.flags >> 2) & 0b111


def parse_report(blob: bytes) -> SnpReport:
    """Parse a raw attestation report; raises InitdataError if short or of an old version."""
    if len(blob) < REPORT_SIZE:
        raise InitdataError(f"SNP attestation report is {len(blob)} bytes, expected {REPORT_SIZE}")

    def u32(off: int) -> int:
        return int(_U32.unpack_from(blob, off)[0])

    def u64(off: int) -> int:
        return int(_U64.unpack_from(blob, off)[0])

    def raw(off: int, size: int) -> bytes:
        return bytes(blob[off : off + size])

    version = u32(0x000)
    if version < MIN_VERSION:
        raise InitdataError(f"SNP attestation report version {version} is not supported")
    return SnpReport(
        version=version,
        guest_svn=u32(0x004),
        policy=u64(0x008),
        family_id=raw(0x010, 16),
        image_id=raw(0x020, 16),
        vmpl=u32(0x030),
        signature_algo=u32(0x034),
        current_tcb=u64(0x038),
        platform_info=u64(0x040),
        flags=u32(0x048),
        report_data=raw(0x050, 64),
        measurement=raw(0x090, 48),
        host_data=raw(0x0C0, 32),
        id_key_digest=raw(0x0E0, 48),
        author_key_digest=raw(0x110, 48),
        report_id=raw(0x140, 32),
        report_id_ma=raw(0x160, 32),
        reported_tcb=u64(0x180),
        cpuid=raw(0x188, 3),
        chip_id=raw(0x1A0, 64),
        committed_tcb=u64(0x1E0),
        current_version=raw(0x1E8, 3),
        committed_version=raw(0x1EC, 3),
        launch_tcb=u64(0x1F0),
        signature_r=raw(0x2A0, 72),
        signature_s=raw(0x2E8, 72),
    )
