"""Intel TDX evidence: the DCAP quote (version 4) and the raw TDREPORT.

Quote v4 (little-endian): a 48-byte header, the 584-byte TD quote body (TDREPORT body
1.0) from offset 48, then the u32 length of the signature data and the data itself.
The TDREPORT returned by ``/dev/tdx_guest`` is 1024 bytes: REPORTMACSTRUCT (256, with
REPORTDATA at 128), TEE_TCB_INFO (239) and reserved (17), then TDINFO from 512.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from guest.initdata.errors import InitdataError

QUOTE_VERSION = 4
TEE_TYPE_TDX = 0x81
HEADER_SIZE = 48
BODY_SIZE = 584
TDREPORT_SIZE = 1024

_HEADER = struct.Struct("<HHIHH16s20s")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


@dataclass(frozen=True)
class TdQuoteBody:
    """TD quote body (TDREPORT body 1.0) fields."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    report_data: bytes


@dataclass(frozen=True)
class TdxQuote:
    """A parsed v4 quote; ``signature_data`` is kept raw (verification is remote)."""

    version: int
    att_key_type: int
    tee_type: int
    qe_vendor_id: bytes
    user_data: bytes
    body: TdQuoteBody
    signature_data: bytes


@dataclass(frozen=True)
class TdReport:
    """The TDINFO and REPORTDATA parts of a TDREPORT (the MAC is checked by the CPU)."""

    report_data: bytes
    attributes: int
    xfam: int
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]


def parse_quote(blob: bytes) -> TdxQuote:
    """Parse a TDX DCAP quote v4.

    The quote's length comes from its signature-data field, not from ``blob``'s size:
    trailing bytes are ignored. Raises InitdataError for another version or TEE type,
    or a quote shorter than it says.
    """
    if len(blob) < HEADER_SIZE + BODY_SIZE + 4:
        raise InitdataError(f"TDX quote is {len(blob)} bytes, too short for a v4 quote")
    version, key_type, tee_type, _, _, qe_vendor, user_data = _HEADER.unpack_from(blob, 0)
    if version != QUOTE_VERSION:
        raise InitdataError(f"TDX quote version {version} is not supported (expected 4)")
    if tee_type != TEE_TYPE_TDX:
        raise InitdataError(f"quote TEE type {tee_type:#x} is not TDX ({TEE_TYPE_TDX:#x})")
    sig_off = HEADER_SIZE + BODY_SIZE
    (sig_len,) = _U32.unpack_from(blob, sig_off)
    end = sig_off + 4 + sig_len
    if end > len(blob):
        raise InitdataError(
            f"TDX quote is truncated: its signature data needs {end} bytes, {len(blob)} present"
        )
    return TdxQuote(
        version=version,
        att_key_type=key_type,
        tee_type=tee_type,
        qe_vendor_id=qe_vendor,
        user_data=user_data,
        body=_body(blob[HEADER_SIZE:sig_off]),
        signature_data=bytes(blob[sig_off + 4 : end]),
    )


def _body(b: bytes) -> TdQuoteBody:
    sizes = (16, 48, 48, 8, 8, 8, 48, 48, 48, 48, 48, 48, 48, 48, 64)
    parts: list[bytes] = []
    off = 0
    for size in sizes:
        parts.append(bytes(b[off : off + size]))
        off += size
    return TdQuoteBody(*parts)


def parse_tdreport(blob: bytes) -> TdReport:
    """Parse a 1024-byte TDREPORT as returned by ``TDX_CMD_GET_REPORT0``."""
    if len(blob) != TDREPORT_SIZE:
        raise InitdataError(f"TDREPORT is {len(blob)} bytes, expected {TDREPORT_SIZE}")
    info = 512
    rtmr = info + 16 + 4 * 48
    return TdReport(
        report_data=bytes(blob[128:192]),
        attributes=int(_U64.unpack_from(blob, info)[0]),
        xfam=int(_U64.unpack_from(blob, info + 8)[0]),
        mr_td=bytes(blob[info + 16 : info + 64]),
        mr_config_id=bytes(blob[info + 64 : info + 112]),
        mr_owner=bytes(blob[info + 112 : info + 160]),
        mr_owner_config=bytes(blob[info + 160 : info + 208]),
        rtmrs=(
            bytes(blob[rtmr : rtmr + 48]),
            bytes(blob[rtmr + 48 : rtmr + 96]),
            bytes(blob[rtmr + 96 : rtmr + 144]),
            bytes(blob[rtmr + 144 : rtmr + 192]),
        ),
    )
