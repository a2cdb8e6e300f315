from __future__ import annotations

import ctypes
import errno
import struct
from pathlib import Path

import pytest

from guest.initdata import tee
from guest.initdata.binding import Platform
from guest.initdata.errors import InitdataError
from tests.unit.initdata import vectors

NONCE = bytes(range(64))
HOST_DATA = bytes(range(100, 132))


def snp_report(report_data: bytes = NONCE, host_data: bytes = HOST_DATA) -> bytes:
    blob = bytearray(vectors.read("go-sev-guest-attestation.bin"))
    blob[0x50:0x90] = report_data
    blob[0xC0:0xE0] = host_data
    return bytes(blob)


def tdx_quote(report_data: bytes, mr_config_id: bytes) -> bytes:
    blob = bytearray(vectors.read("trustee-tdx_quote_4.dat"))
    blob[232:280] = mr_config_id
    blob[568:632] = report_data
    return bytes(blob)


def test_ioctl_numbers() -> None:
    # _IOWR('S', 0, 32-byte struct) and _IOWR('T', 1, 1088-byte struct), from the uapi headers.
    assert tee.SNP_GET_REPORT == 0xC0205300
    assert tee.TDX_CMD_GET_REPORT0 == 0xC4405401


class FakeSevGuest:
    """Plays the sev-guest driver: reads the request struct by its uapi offsets."""

    def __init__(self, report: bytes, status: int = 0, fail: int | None = None) -> None:
        self.report = report
        self.status = status
        self.fail = fail
        self.calls: list[tuple[int, int]] = []

    def __call__(self, fd: int, request: int, arg: bytearray, mutate: bool) -> int:
        assert mutate and len(arg) == 32
        msg_version = arg[0]
        req_addr = int.from_bytes(arg[8:16], "little")
        resp_addr = int.from_bytes(arg[16:24], "little")
        self.calls.append((request, msg_version))
        if self.fail is not None:
            arg[24:32] = (0x1234).to_bytes(8, "little")
            raise OSError(self.fail, "fake failure")
        request_struct = ctypes.string_at(req_addr, 96)
        report = bytearray(self.report)
        report[0x50:0x90] = request_struct[:64]  # the firmware echoes user_data
        response = struct.pack("<II", self.status, len(report)) + bytes(24) + report
        ctypes.memmove(resp_addr, response, len(response))
        return 0


def test_sev_guest_ioctl(tmp_path: Path) -> None:
    dev = tmp_path / "sev-guest"
    dev.write_bytes(b"")
    fake = FakeSevGuest(snp_report(report_data=bytes(64)))
    value = tee.SevGuestSource(dev, ioctl=fake).read()
    assert fake.calls == [(0xC0205300, 1)]
    assert value.platform is Platform.SNP
    assert value.value == HOST_DATA
    assert "SNP report v2" in value.evidence


def test_sev_guest_ioctl_failures(tmp_path: Path) -> None:
    dev = tmp_path / "sev-guest"
    dev.write_bytes(b"")
    with pytest.raises(InitdataError, match=r"SNP_GET_REPORT .* failed: .*exitinfo2 0x1234"):
        tee.SevGuestSource(dev, ioctl=FakeSevGuest(snp_report(), fail=errno.EIO)).read()
    with pytest.raises(InitdataError, match="firmware status 0x16"):
        tee.SevGuestSource(dev, ioctl=FakeSevGuest(snp_report(), status=0x16)).read()
    with pytest.raises(InitdataError, match="cannot open"):
        tee.SevGuestSource(tmp_path / "absent").read()


def test_sev_guest_foreign_report_refused(tmp_path: Path) -> None:
    dev = tmp_path / "sev-guest"
    dev.write_bytes(b"")

    def replay(fd: int, request: int, arg: bytearray, mutate: bool) -> int:
        resp_addr = int.from_bytes(arg[16:24], "little")
        response = struct.pack("<II", 0, 1184) + bytes(24) + snp_report(report_data=bytes(64))
        ctypes.memmove(resp_addr, response, len(response))
        return 0

    with pytest.raises(InitdataError, match="does not echo our nonce"):
        tee.SevGuestSource(dev, nonce=NONCE, ioctl=replay).read()


def test_tdx_guest_ioctl(tmp_path: Path) -> None:
    dev = tmp_path / "tdx_guest"
    dev.write_bytes(b"")
    seen: list[int] = []

    def fake(fd: int, request: int, arg: bytearray, mutate: bool) -> int:
        seen.append(request)
        assert len(arg) == 64 + 1024
        report = bytearray(1024)
        report[128:192] = arg[:64]  # REPORTDATA echoed in REPORTMACSTRUCT
        report[576:624] = b"\x5a" * 48  # TDINFO.MRCONFIGID
        arg[64:] = report
        return 0

    value = tee.TdxGuestSource(dev, ioctl=fake).read()
    assert seen == [0xC4405401]
    assert (value.platform, value.value) == (Platform.TDX, b"\x5a" * 48)


class FakeConfigfs:
    """mkdir that populates the entry as the tsm driver would, for one provider."""

    def __init__(self, provider: str, outblob: bytes) -> None:
        self.provider = provider
        self.outblob = outblob
        self.removed: list[Path] = []

    def mkdir(self, path: Path) -> None:
        path.mkdir()
        (path / "provider").write_text(self.provider + "\n")
        (path / "inblob").write_bytes(b"")
        (path / "outblob").write_bytes(self.outblob)

    def rmdir(self, path: Path) -> None:
        assert (path / "inblob").read_bytes() == NONCE
        for child in path.iterdir():
            child.unlink()
        path.rmdir()
        self.removed.append(path)


def test_configfs_tsm_snp(tmp_path: Path) -> None:
    fs = FakeConfigfs("sev_guest", snp_report())
    source = tee.ConfigfsTsmSource(tmp_path, nonce=NONCE, mkdir=fs.mkdir, rmdir=fs.rmdir)
    value = source.read()
    assert (value.platform, value.value) == (Platform.SNP, HOST_DATA)
    assert "configfs-tsm" in value.evidence
    assert len(fs.removed) == 1 and not list(tmp_path.iterdir())


def test_configfs_tsm_tdx(tmp_path: Path) -> None:
    fs = FakeConfigfs("tdx_guest", tdx_quote(NONCE, b"\x77" * 48))
    value = tee.ConfigfsTsmSource(tmp_path, nonce=NONCE, mkdir=fs.mkdir, rmdir=fs.rmdir).read()
    assert (value.platform, value.value) == (Platform.TDX, b"\x77" * 48)


def test_configfs_tsm_errors(tmp_path: Path) -> None:
    fs = FakeConfigfs("arm_cca_guest", b"")
    with pytest.raises(InitdataError, match="unknown provider 'arm_cca_guest'"):
        tee.ConfigfsTsmSource(tmp_path, nonce=NONCE, mkdir=fs.mkdir, rmdir=fs.rmdir).read()
    stale = FakeConfigfs("sev_guest", snp_report(report_data=bytes(64)))
    with pytest.raises(InitdataError, match="does not echo our nonce"):
        tee.ConfigfsTsmSource(tmp_path, nonce=NONCE, mkdir=stale.mkdir, rmdir=stale.rmdir).read()
    with pytest.raises(InitdataError, match="configfs-tsm: cannot create"):
        tee.ConfigfsTsmSource(tmp_path / "absent", nonce=NONCE).read()


def test_insecure_source(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("console=ttyS0 contrast.platform=insecure contrast.initdata_digest=abcd\n")
    value = tee.InsecureSource(cmdline).read()
    assert (value.platform, value.value) == (Platform.INSECURE, b"\xab\xcd")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("console=ttyS0 contrast.initdata_digest=abcd", "does not mark the platform insecure"),
        ("contrast.platform=snp contrast.initdata_digest=abcd", "does not mark"),
        ("contrast.platform=insecure", "without contrast.initdata_digest="),
        ("contrast.platform=insecure contrast.initdata_digest=xyz", "not hex"),
    ],
)
def test_insecure_source_refusals(tmp_path: Path, line: str, message: str) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(line + "\n")
    with pytest.raises(InitdataError, match=message):
        tee.InsecureSource(cmdline).read()


def test_detect(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("contrast.platform=insecure contrast.initdata_digest=00\n")
    configfs = tmp_path / "tsm"
    sev = tmp_path / "sev-guest"
    tdxdev = tmp_path / "tdx_guest"

    def detect() -> tee.TeeSource:
        return tee.detect(configfs=configfs, sev_guest=sev, tdx_guest=[tdxdev], cmdline=cmdline)

    assert isinstance(detect(), tee.InsecureSource)
    configfs.mkdir()  # configfs alone (no guest driver) is not a TEE
    assert isinstance(detect(), tee.InsecureSource)
    sev.write_bytes(b"")
    source = detect()
    # With a TEE present, the insecure marker on the command line is never honoured.
    with pytest.raises(InitdataError, match="no TEE source answered") as info:
        source.read()
    assert "configfs-tsm" in str(info.value) and "SNP_GET_REPORT" in str(info.value)


def test_first_of_source_takes_first_answer() -> None:
    class Fails:
        def read(self) -> tee.LaunchValue:
            raise InitdataError("first broke")

    class Answers:
        def read(self) -> tee.LaunchValue:
            return tee.LaunchValue(Platform.TDX, b"v", "fake")

    assert tee.FirstOfSource([Fails(), Answers()]).read().value == b"v"
    with pytest.raises(InitdataError, match="first broke; first broke"):
        tee.FirstOfSource([Fails(), Fails()]).read()
