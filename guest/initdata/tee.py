"""Where the guest reads the launch-bound initdata value from: the TEE, or (only on an
insecure platform marked so on the kernel command line) an unmeasured channel.

Every source answers one question through the :class:`TeeSource` protocol: which
platform is this and what value did the launch bind (SNP ``HOST_DATA``, TDX
``MRCONFIGID``, or the insecure digest). Tests inject their own source.

Hardware paths:
- configfs-tsm (Linux 6.7+): ``mkdir /sys/kernel/config/tsm/report/<name>``, read
  ``provider`` (``sev_guest`` / ``tdx_guest``), write 64 bytes to ``inblob``, read
  ``outblob`` (SNP: the attestation report; TDX: a DCAP quote), ``rmdir``.
- ``/dev/sev-guest`` ioctl ``SNP_GET_REPORT``; ``/dev/tdx_guest`` ioctl
  ``TDX_CMD_GET_REPORT0`` (the TDREPORT needs no quoting service on the host).
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import secrets
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from guest.initdata import snp, tdx
from guest.initdata.binding import CMDLINE_DIGEST, CMDLINE_INSECURE, CMDLINE_PLATFORM, Platform
from guest.initdata.errors import InitdataError

log = logging.getLogger(__name__)

CONFIGFS_TSM = Path("/sys/kernel/config/tsm/report")
SEV_GUEST = Path("/dev/sev-guest")
TDX_GUEST = (Path("/dev/tdx_guest"), Path("/dev/tdx-guest"))
CMDLINE = Path("/proc/cmdline")


def _iowr(kind: str, nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (ord(kind) << 8) | nr


# struct snp_guest_request_ioctl { u8 msg_version; u64 req_data; u64 resp_data; u64 exitinfo2; }
_SNP_IOCTL = struct.Struct("<B7xQQQ")
SNP_GET_REPORT = _iowr("S", 0x0, _SNP_IOCTL.size)  # 0xc0205300
SNP_REPORT_REQ_SIZE = 96  # user_data[64], vmpl u32, reserved[28]
SNP_REPORT_RESP_SIZE = 4000
SNP_RESP_HEADER = struct.Struct("<II24x")  # status, report_size, reserved: report at 0x20
TDX_CMD_GET_REPORT0 = _iowr("T", 1, 64 + tdx.TDREPORT_SIZE)  # 0xc4405401

IoctlFn = Callable[[int, int, bytearray, bool], int]


@dataclass(frozen=True)
class LaunchValue:
    """What the launch bound, and where it was read (for messages and logs)."""

    platform: Platform
    value: bytes
    evidence: str


class TeeSource(Protocol):
    """A source of the launch-bound initdata value."""

    def read(self) -> LaunchValue:
        """Return the bound value; raises InitdataError when it cannot be obtained."""
        ...


def _nonce() -> bytes:
    return secrets.token_bytes(64)


def _check_nonce(got: bytes, nonce: bytes, what: str) -> None:
    if got != nonce:
        raise InitdataError(f"{what}: report_data does not echo our nonce (stale or foreign)")


class ConfigfsTsmSource:
    """SNP or TDX evidence through configfs-tsm."""

    def __init__(
        self,
        root: Path = CONFIGFS_TSM,
        *,
        nonce: bytes | None = None,
        mkdir: Callable[[Path], None] = os.mkdir,
        rmdir: Callable[[Path], None] = os.rmdir,
    ) -> None:
        self._root = root
        self._nonce = nonce
        self._mkdir = mkdir
        self._rmdir = rmdir

    def read(self) -> LaunchValue:
        nonce = self._nonce or _nonce()
        entry = self._root / f"contrast-initdata-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            self._mkdir(entry)
        except OSError as err:
            raise InitdataError(f"configfs-tsm: cannot create {entry}: {err}") from err
        try:
            provider = (entry / "provider").read_text().strip()
            (entry / "inblob").write_bytes(nonce)
            blob = (entry / "outblob").read_bytes()
        except OSError as err:
            raise InitdataError(f"configfs-tsm: report through {entry} failed: {err}") from err
        finally:
            try:
                self._rmdir(entry)
            except OSError as err:
                log.warning("configfs-tsm: cannot remove %s: %s", entry, err)
        if provider == "sev_guest":
            report = snp.parse_report(blob)
            _check_nonce(report.report_data, nonce, "configfs-tsm SNP report")
            return LaunchValue(
                Platform.SNP, report.host_data, f"SNP report v{report.version} via configfs-tsm"
            )
        if provider == "tdx_guest":
            quote = tdx.parse_quote(blob)
            _check_nonce(quote.body.report_data, nonce, "configfs-tsm TDX quote")
            return LaunchValue(
                Platform.TDX, quote.body.mr_config_id, "TDX quote v4 via configfs-tsm"
            )
        raise InitdataError(f"configfs-tsm: unknown provider {provider!r}")


class SevGuestSource:
    """SNP attestation report through the ``/dev/sev-guest`` ioctl."""

    def __init__(
        self,
        device: Path = SEV_GUEST,
        *,
        nonce: bytes | None = None,
        ioctl: IoctlFn = fcntl.ioctl,
    ) -> None:
        self._device = device
        self._nonce = nonce
        self._ioctl = ioctl

    def read(self) -> LaunchValue:
        nonce = self._nonce or _nonce()
        req = ctypes.create_string_buffer(nonce.ljust(SNP_REPORT_REQ_SIZE, b"\0"))
        resp = ctypes.create_string_buffer(SNP_REPORT_RESP_SIZE)
        arg = bytearray(_SNP_IOCTL.pack(1, ctypes.addressof(req), ctypes.addressof(resp), 0))
        try:
            fd = os.open(self._device, os.O_RDWR | os.O_CLOEXEC)
        except OSError as err:
            raise InitdataError(f"cannot open {self._device}: {err}") from err
        try:
            self._ioctl(fd, SNP_GET_REPORT, arg, True)
        except OSError as err:
            exitinfo2 = _SNP_IOCTL.unpack(arg)[3]
            raise InitdataError(
                f"SNP_GET_REPORT on {self._device} failed: {err} (exitinfo2 {exitinfo2:#x})"
            ) from err
        finally:
            os.close(fd)
        data = resp.raw
        status, size = SNP_RESP_HEADER.unpack_from(data, 0)
        if status != 0:
            raise InitdataError(f"SNP_GET_REPORT: firmware status {status:#x}")
        start = SNP_RESP_HEADER.size
        if size < snp.REPORT_SIZE or start + size > len(data):
            raise InitdataError(f"SNP_GET_REPORT: implausible report size {size}")
        report = snp.parse_report(data[start : start + size])
        _check_nonce(report.report_data, nonce, f"{self._device} SNP report")
        return LaunchValue(
            Platform.SNP, report.host_data, f"SNP report v{report.version} via {self._device}"
        )


class TdxGuestSource:
    """TDREPORT through the ``/dev/tdx_guest`` ioctl."""

    def __init__(
        self,
        device: Path = TDX_GUEST[0],
        *,
        nonce: bytes | None = None,
        ioctl: IoctlFn = fcntl.ioctl,
    ) -> None:
        self._device = device
        self._nonce = nonce
        self._ioctl = ioctl

    def read(self) -> LaunchValue:
        nonce = self._nonce or _nonce()
        arg = bytearray(nonce + bytes(tdx.TDREPORT_SIZE))
        try:
            fd = os.open(self._device, os.O_RDWR | os.O_CLOEXEC)
        except OSError as err:
            raise InitdataError(f"cannot open {self._device}: {err}") from err
        try:
            self._ioctl(fd, TDX_CMD_GET_REPORT0, arg, True)
        except OSError as err:
            raise InitdataError(f"TDX_CMD_GET_REPORT0 on {self._device} failed: {err}") from err
        finally:
            os.close(fd)
        report = tdx.parse_tdreport(bytes(arg[64:]))
        _check_nonce(report.report_data, nonce, f"{self._device} TDREPORT")
        return LaunchValue(Platform.TDX, report.mr_config_id, f"TDREPORT via {self._device}")


def cmdline_words(cmdline_path: Path = CMDLINE) -> dict[str, str]:
    """``key=value`` words of the kernel command line (a bare word maps to "")."""
    try:
        text = cmdline_path.read_text()
    except OSError as err:
        raise InitdataError(f"cannot read the kernel command line {cmdline_path}: {err}") from err
    words: dict[str, str] = {}
    for word in text.split():
        key, _, value = word.partition("=")
        words[key] = value
    return words


class InsecureSource:
    """The digest from the kernel command line, only if it marks the platform insecure.

    Nothing measures this channel: it exists for development and CI machines without a
    TEE. On SNP/TDX the command line is measured, so the marker cannot be added unseen.
    """

    def __init__(self, cmdline_path: Path = CMDLINE) -> None:
        self._cmdline = cmdline_path

    def read(self) -> LaunchValue:
        words = cmdline_words(self._cmdline)
        if words.get(CMDLINE_PLATFORM) != CMDLINE_INSECURE:
            raise InitdataError(
                "no TEE evidence, and the kernel command line does not mark the platform "
                f"insecure ({CMDLINE_PLATFORM}={CMDLINE_INSECURE}): refusing an unmeasured "
                "initdata digest"
            )
        value = words.get(CMDLINE_DIGEST)
        if not value:
            raise InitdataError(f"insecure platform without {CMDLINE_DIGEST}= on the command line")
        try:
            digest = bytes.fromhex(value)
        except ValueError as err:
            raise InitdataError(f"{CMDLINE_DIGEST} is not hex: {value[:80]!r}") from err
        return LaunchValue(Platform.INSECURE, digest, "insecure kernel command line")


class FirstOfSource:
    """Try sources in order; the first that answers wins, otherwise all errors are named."""

    def __init__(self, sources: Sequence[TeeSource]) -> None:
        self._sources = tuple(sources)

    def read(self) -> LaunchValue:
        errors: list[str] = []
        for source in self._sources:
            try:
                return source.read()
            except InitdataError as err:
                log.warning("initdata: TEE source %s failed: %s", type(source).__name__, err)
                errors.append(str(err))
        raise InitdataError("no TEE source answered: " + "; ".join(errors))


def detect(
    *,
    configfs: Path = CONFIGFS_TSM,
    sev_guest: Path = SEV_GUEST,
    tdx_guest: Sequence[Path] = TDX_GUEST,
    cmdline: Path = CMDLINE,
) -> TeeSource:
    """The source for this machine: TEE interfaces where present, else the insecure one.

    The guest drivers' device nodes say whether a TEE is there (the same drivers
    register the configfs-tsm providers). Where one exists, the insecure command-line
    channel is never used.
    """
    devices: list[TeeSource] = []
    if sev_guest.exists():
        devices.append(SevGuestSource(sev_guest))
    devices += [TdxGuestSource(dev) for dev in tdx_guest if dev.exists()]
    if not devices:
        return InsecureSource(cmdline)
    if configfs.is_dir():
        return FirstOfSource([ConfigfsTsmSource(configfs), *devices])
    return FirstOfSource(devices)
