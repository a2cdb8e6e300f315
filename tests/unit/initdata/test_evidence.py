"""The SNP and TDX parsers against real reports/quotes; expected values are the ones
documented beside the vectors (decoded there independently with struct)."""

from __future__ import annotations

import struct

import pytest

from guest.initdata import snp, tdx
from guest.initdata.errors import InitdataError
from tests.unit.initdata import vectors

Z = "00"


def test_go_sev_guest_report() -> None:
    r = snp.parse_report(vectors.read("go-sev-guest-attestation.bin"))
    assert (r.version, r.guest_svn, r.policy, r.vmpl, r.signature_algo) == (2, 0, 0xB0000, 0, 1)
    assert r.current_tcb == 0x4405000000000002
    assert r.platform_info == 1
    assert r.flags == 0 and r.signing_key == 0
    assert r.report_data.hex() == "0102030405" + Z * 59
    assert r.measurement.hex() == (
        "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b"
        "6bdf8a9ece31a5a608eb0cf2e4872b01"
    )
    assert r.host_data == bytes(32)
    assert r.report_id.hex() == "8edc638e1857c555d21f6b11bda3c8b1b5a09dba4852b4c8ee7aa2f16f22cc0a"
    assert r.report_id_ma == b"\xff" * 32
    assert r.reported_tcb == r.committed_tcb == r.launch_tcb == 0x4405000000000002
    assert r.cpuid == bytes(3)
    assert r.chip_id.hex() == (
        "3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e5378618"
        "4ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d"
    )
    assert r.current_version.hex() == r.committed_version.hex() == "033101"
    assert r.signature_r[:8].hex() == "4f8e8b5ab8f8f969"
    assert r.signature_s[:8].hex() == "e689246ba09566b6"


def test_trustee_report_with_id_block() -> None:
    r = snp.parse_report(vectors.read("trustee-test-report.bin"))
    assert (r.version, r.guest_svn, r.policy) == (2, 4, 0x3001F)
    assert r.family_id.hex() == "01" + Z * 15
    assert r.image_id.hex() == "02" + Z * 15
    assert r.current_tcb == 0xCE08000000000003
    assert r.report_data.hex() == (
        "ec6c52d7533cc2c4f45be7849cf112ab82b2009fe7bd43e71ed08c14400ad7e2" + Z * 32
    )
    assert r.measurement.hex() == (
        "a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c"
        "23500644e0e692e6be917f9050d3d38c"
    )
    assert r.host_data.hex() == Z * 32
    assert r.id_key_digest.hex() == (
        "0356215882a825279a85b300b0b742931d113bf7e32dde2e50ffde7ec743ca49"
        "1ecdd7f336dc28a6e0b2bb57af7a44a3"
    )
    assert r.author_key_digest == bytes(48)
    assert r.report_id.hex() == "385eba81216de4776548fcb86f8ead03c1ebc92b6207f3210d9ccebb89c99005"
    assert r.reported_tcb == 0x7308000000000003
    assert r.current_version.hex() == "043401"
    assert r.chip_id[:8].hex() == "c38427a30d4c7af9"


def test_trustee_vlek_report_version_3() -> None:
    r = snp.parse_report(vectors.read("trustee-test-vlek-report.bin"))
    assert (r.version, r.vmpl, r.flags, r.signing_key) == (3, 1, 4, 1)
    assert r.cpuid.hex() == "190101"
    assert r.platform_info == 0x27
    assert r.current_tcb == 0xDC18000000000004
    assert r.committed_tcb == r.launch_tcb == 0xDB18000000000004
    assert r.report_data.hex() == (
        "819770b7e6ea6df8dd8fd4dd146b073c0bf4f3ce5b0977ecac486e3a05ed1bd5"
        "4e2a7ac1f5d1ca02e7d7d5ef9f73b8574fd9359e3a480d741a4478e8a7bc27ca"
    )
    assert r.measurement.hex() == (
        "8922ebbdd00ec2c541f36a6e7a82a8773a7accb451ed67bc94e740dbe92c93c4"
        "e8c9af857f5ceeb5a493df2a570d7bf0"
    )
    assert r.host_data == bytes(32)
    assert r.chip_id == bytes(64)
    assert r.current_version.hex() == "1d3701"


def test_host_data_offset() -> None:
    blob = bytearray(vectors.read("go-sev-guest-attestation.bin"))
    blob[0xC0:0xE0] = bytes(range(32))
    report = snp.parse_report(bytes(blob))
    assert report.host_data == bytes(range(32))
    assert report.measurement.hex().startswith("b07af962")  # neighbours untouched
    assert report.id_key_digest == bytes(48)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "0 bytes, expected 1184"),
        (bytes(1183), "1183 bytes, expected 1184"),
        (bytes(1184), "version 0 is not supported"),
        (struct.pack("<I", 1) + bytes(1180), "version 1 is not supported"),
    ],
)
def test_bad_snp_reports(blob: bytes, message: str) -> None:
    with pytest.raises(InitdataError, match=message):
        snp.parse_report(blob)


def test_tdx_quote_4() -> None:
    blob = vectors.read("trustee-tdx_quote_4.dat")
    q = tdx.parse_quote(blob)
    assert (q.version, q.att_key_type, q.tee_type) == (4, 2, 0x81)
    assert q.qe_vendor_id.hex() == "939a7233f79c4ca9940a0db3957f0607"
    assert q.user_data.hex() == "d099bfec0a477aa85a605dceabf2b10800000000"
    b = q.body
    assert b.tee_tcb_svn.hex() == "03000500000000000000000000000000"
    assert b.mr_seam.hex() == (
        "2fd279c16164a93dd5bf373d834328d46008c2b693af9ebb865b08b2ced320c9"
        "a89b4869a9fab60fbe9d0c5a5363c656"
    )
    assert b.mr_signer_seam == bytes(48) and b.seam_attributes == bytes(8)
    assert b.td_attributes.hex() == "0100001000000000"
    assert b.xfam.hex() == "e742060000000000"
    assert b.mr_td.hex() == (
        "705ee9381b8633a9fbe532b52345e8433343d2868959f57889d84ca377c395b6"
        "89cac1599ccea1b7d420483a9ce5f031"
    )
    assert b.mr_config_id == bytes(48)
    assert b.mr_owner == b.mr_owner_config == bytes(48)
    assert b.rtmr0.hex() == (
        "e940da7c2712d2790e2961e00484f4fa8e6f9eed71361655ae22699476b14f9e"
        "63867eb41edd4b480fef0c59f496b288"
    )
    assert b.rtmr1.hex() == (
        "559cfcf42716ed6c40a48a73d5acb7da255435012f0a9f00fbe8c1c57612ede4"
        "86a5684c4c9ff3ddf52315fcdca3a596"
    )
    assert b.rtmr2 == b.rtmr3 == bytes(48)
    assert b.report_data.hex() == (
        "7c71fe2c86eff65a7cf8dbc22b3275689fd0464a267baced1bf94fc1324656ae"
        "b755da3d44d098c0c87382f3a5f85b45c8a28fee1d3bdb38342bf96671501429"
    )
    assert len(q.signature_data) == 4300
    assert 632 + 4 + len(q.signature_data) == len(blob)


def test_tdx_quote_6_with_mrconfigid_and_trailing_zeros() -> None:
    blob = vectors.read("trustee-tdx_quote_6.dat")
    q = tdx.parse_quote(blob)
    assert len(blob) == 5006 and len(q.signature_data) == 4300
    b = q.body
    assert b.mr_config_id.hex() == (
        "889abf4718f037e38d74464c11e7c91a6e9890b5546409e1e7df9de7a51ca931"
        "52bf847bd2440328e90adb18b150ed67"
    )
    assert b.tee_tcb_svn.hex() == "05030200000000000000000000000000"
    assert b.td_attributes.hex() == "0000001000000000"
    assert b.mr_td.hex() == (
        "21e8dead92d6c69d7cbba79816686c03a48485c7df0c11f6f04792d5e1d378f6"
        "b8c46615ba6946adccac6becffbb1e88"
    )
    assert b.rtmr2.hex() == (
        "193edd321148e81fd4d6ce00ac8331e737febdb428f18ae66f697c1d2a7f2cd9"
        "7c535c8df9f045f62b16a41facad84a1"
    )
    assert b.report_data.hex() == (
        "26cae1c77185617fb6a03fc29bf1f924596e52352b9b7594940b576ae126cd4a"
        "570cc3202a900c5d19a6eb0a95b32cfd" + Z * 16
    )
    assert q.user_data.hex() == "5bd9e09e6e0bbcd3f9cc4d7c9295764a00000000"


def test_tdx_bad_quotes() -> None:
    blob = bytearray(vectors.read("trustee-tdx_quote_4.dat"))
    with pytest.raises(InitdataError, match="truncated: its signature data needs 4936 bytes"):
        tdx.parse_quote(bytes(blob[:-1]))
    with pytest.raises(InitdataError, match="too short"):
        tdx.parse_quote(bytes(blob[:600]))
    v5 = bytearray(blob)
    v5[0:2] = struct.pack("<H", 5)
    with pytest.raises(InitdataError, match="version 5 is not supported"):
        tdx.parse_quote(bytes(v5))
    sgx = bytearray(blob)
    sgx[4:8] = struct.pack("<I", 0)
    with pytest.raises(InitdataError, match="TEE type 0x0 is not TDX"):
        tdx.parse_quote(bytes(sgx))


def _tdreport(report_data: bytes, mr_config_id: bytes) -> bytes:
    """A TDREPORT laid out from the structure definitions (kernel uapi + TDX module ABI)."""
    report_mac = bytes(4) + bytes(12) + bytes(16) + bytes(48) + bytes(48) + report_data + bytes(64)
    tee_tcb_info = bytes(239) + bytes(17)
    td_info = (
        struct.pack("<QQ", 0x10000000, 0xE7)
        + b"\x11" * 48  # mr_td
        + mr_config_id
        + b"\x22" * 48  # mr_owner
        + b"\x33" * 48  # mr_owner_config
        + b"\x44" * 48 * 4  # rtmr0..3
        + bytes(48)  # servtd_hash
        + bytes(64)
    )
    blob = report_mac + tee_tcb_info + td_info
    assert (len(report_mac), len(tee_tcb_info), len(blob)) == (256, 256, 1024)
    return blob


def test_tdreport() -> None:
    r = tdx.parse_tdreport(_tdreport(b"\x01" * 64, b"\xab" * 48))
    assert r.report_data == b"\x01" * 64
    assert r.mr_config_id == b"\xab" * 48
    assert (r.attributes, r.xfam) == (0x10000000, 0xE7)
    assert (r.mr_td, r.mr_owner, r.mr_owner_config) == (b"\x11" * 48, b"\x22" * 48, b"\x33" * 48)
    assert r.rtmrs == (b"\x44" * 48,) * 4
    with pytest.raises(InitdataError, match="TDREPORT is 1023 bytes"):
        tdx.parse_tdreport(bytes(1023))
