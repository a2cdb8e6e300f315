"""shim.wire, the shim entry's blocking ttrpc client: its envelopes match the generated
ttrpc messages, and it calls our asyncio ttrpc server (the daemon's and relay's)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

import ttrpc
from api.node import relay_pb2
from shim import wire
from ttrpc.proto import ttrpc_pb2

RELAY = relay_pb2.DESCRIPTOR.services_by_name["Relay"]


def test_request_envelope_is_a_ttrpc_request() -> None:
    data = wire.encode_request(
        "contrast.node.v1.Relay", "Listen", b"\x0a\x03k8s", 30_000_000_000, (("k", "v"),)
    )
    parsed = ttrpc_pb2.Request.FromString(data)
    assert parsed.service == "contrast.node.v1.Relay"
    assert parsed.method == "Listen"
    assert parsed.payload == b"\x0a\x03k8s"
    assert parsed.timeout_nano == 30_000_000_000
    assert [(kv.key, kv.value) for kv in parsed.metadata] == [("k", "v")]
    assert (
        wire.encode_request("s", "m", b"")
        == ttrpc_pb2.Request(service="s", method="m").SerializeToString()
    )


def test_response_envelope_decodes() -> None:
    ok = ttrpc_pb2.Response(payload=b"\x01\x02" * 100)
    assert wire.decode_response(ok.SerializeToString()) == (0, "", b"\x01\x02" * 100)
    failed = ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=5, message="no such task"))
    failed.status.details.add(type_url="x", value=b"y")
    assert wire.decode_response(failed.SerializeToString()) == (5, "no such task", b"")


@pytest.mark.parametrize("data", [b"\x0a\x05ab", b"\x12", b"\x0f", b"\x08\xff"])
def test_malformed_response_is_an_error(data: bytes) -> None:
    with pytest.raises(wire.WireError, match="malformed"):
        wire.decode_response(data)


class Relay:
    async def Listen(
        self, request: relay_pb2.ListenRequest, ctx: ttrpc.CallContext
    ) -> relay_pb2.ListenResponse:
        if request.namespace == "bad":
            raise ttrpc.InvalidArgument("namespace bad refused")
        return relay_pb2.ListenResponse(address=f"unix:///run/{request.namespace}.sock")


async def test_calls_an_asyncio_ttrpc_server(tmp_path: Path) -> None:
    server = ttrpc.Server()
    server.register(RELAY, Relay())
    path = tmp_path / "relay.sock"
    await server.serve_unix(str(path))
    try:

        def calls() -> tuple[str, str, wire.CallStatus]:
            with wire.Connection(path, 5.0) as conn:
                first = conn.call(
                    RELAY.full_name, "Listen", relay_pb2.ListenRequest(namespace="k8s.io"),
                    relay_pb2.ListenResponse, 5.0,
                )  # fmt: skip
                second = conn.call(
                    RELAY.full_name, "Listen", relay_pb2.ListenRequest(namespace="default"),
                    relay_pb2.ListenResponse, 5.0,
                )  # fmt: skip
                with pytest.raises(wire.CallStatus) as refused:
                    conn.call(
                        RELAY.full_name, "Listen", relay_pb2.ListenRequest(namespace="bad"),
                        relay_pb2.ListenResponse, 5.0,
                    )  # fmt: skip
            return first.address, second.address, refused.value

        first, second, refused = await asyncio.to_thread(calls)
    finally:
        await server.close()
    assert first == "unix:///run/k8s.io.sock"
    assert second == "unix:///run/default.sock"
    assert refused.code == int(ttrpc.Code.INVALID_ARGUMENT)
    assert "namespace bad refused" in refused.message


def test_nobody_listening_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(wire.Unreachable):
        wire.Connection(tmp_path / "missing.sock", 1.0)
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound.bind(str(tmp_path / "stale.sock"))  # bound, not listening: refused
    try:
        with pytest.raises(wire.Unreachable):
            wire.Connection(tmp_path / "stale.sock", 1.0)
    finally:
        bound.close()


def test_a_server_that_closes_is_an_error(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "s.sock"))
    listener.listen(1)
    try:
        with wire.Connection(tmp_path / "s.sock", 1.0) as conn:
            accepted, _ = listener.accept()
            accepted.close()
            with pytest.raises(
                wire.WireError, match=r"closed the connection|Broken pipe|reset by peer"
            ):
                conn.call(
                    RELAY.full_name, "Listen", relay_pb2.ListenRequest(namespace="x"),
                    relay_pb2.ListenResponse, 1.0,
                )  # fmt: skip
    finally:
        listener.close()
