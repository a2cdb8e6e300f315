"""guest.agent.rtnetlink's message coding, without a kernel (the real kernel's answers
are tested through guest.agent.netconfig in tests/integration/network)."""

import errno
import struct

import pytest

from guest.agent import rtnetlink


def test_attributes_are_padded_and_read_back() -> None:
    data = rtnetlink.attr(3, b"eth0\0") + rtnetlink.attr(4, struct.pack("=I", 1500))
    assert len(data) % 4 == 0
    assert rtnetlink.attr(3, b"eth0\0") == struct.pack("=HH", 9, 3) + b"eth0\0" + b"\0" * 3
    # The nested and byte-order flag bits are not part of the type.
    assert rtnetlink.attrs(data + rtnetlink.attr(0x8000 | 18, b"")) == {
        3: b"eth0\0", 4: struct.pack("=I", 1500), 18: b"",
    }  # fmt: skip


@pytest.mark.parametrize(
    "data",
    [
        struct.pack("=HH", 2, 1),  # shorter than its own header
        struct.pack("=HH", 12, 1) + b"abcd",  # runs past the end
    ],
)
def test_malformed_attributes_are_refused(data: bytes) -> None:
    with pytest.raises(rtnetlink.NetlinkError, match="malformed attribute at 0"):
        rtnetlink.attrs(data)


def test_error_carries_errno_and_the_kernels_message() -> None:
    header = struct.pack("=IHHII", 16, rtnetlink.RTM_NEWROUTE, 0, 1, 0)
    message = rtnetlink.attr(rtnetlink.NLMSGERR_ATTR_MSG, b"Nexthop has invalid gateway\0")
    payload = struct.pack("=i", -errno.ENETUNREACH) + header + message
    err = rtnetlink._error(errno.ENETUNREACH, payload, rtnetlink.NLM_F_ACK_TLVS)
    assert err.code == errno.ENETUNREACH
    assert str(err) == "[Errno 101] Network is unreachable: Nexthop has invalid gateway"
    plain = rtnetlink._error(errno.EEXIST, payload[: 4 + 16], 0)
    assert str(plain) == "[Errno 17] File exists"
