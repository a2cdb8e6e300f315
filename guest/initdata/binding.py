"""How an initdata digest is bound to a platform's launch measurement.

SNP ``HOST_DATA`` holds 32 bytes and TDX ``MRCONFIGID`` 48: the digest is truncated or
zero-padded to that size (trustee ``kbs/docs/initdata.md``; kata-types
``adjust_digest``). The insecure platform carries the whole digest over a channel that
nothing measures, accepted only when the kernel command line says so.
"""

from __future__ import annotations

import enum

# The kernel command line of an insecure pod-VM carries both. On SNP/TDX the command
# line is part of the launch measurement, so a host cannot add them unseen there.
CMDLINE_PLATFORM = "contrast.platform"
CMDLINE_INSECURE = "insecure"
CMDLINE_DIGEST = "contrast.initdata_digest"


class Platform(enum.Enum):
    SNP = "snp"
    TDX = "tdx"
    INSECURE = "insecure"

    @property
    def field(self) -> str:
        """The name of the launch-bound field, for messages."""
        return _FIELDS[self]


_FIELDS = {
    Platform.SNP: "SNP HOST_DATA",
    Platform.TDX: "TDX MRCONFIGID",
    Platform.INSECURE: f"insecure {CMDLINE_DIGEST}",
}

SIZES = {Platform.SNP: 32, Platform.TDX: 48}


def bind(digest: bytes, platform: Platform) -> bytes:
    """The value the launch must carry for ``digest`` on ``platform``."""
    size = SIZES.get(platform)
    if size is None:
        return digest
    return digest[:size].ljust(size, b"\0")


def insecure_cmdline(digest: bytes) -> tuple[str, ...]:
    """Kernel command line words that carry ``digest`` to an insecure pod-VM."""
    return (f"{CMDLINE_PLATFORM}={CMDLINE_INSECURE}", f"{CMDLINE_DIGEST}={digest.hex()}")
