"""Calls through our client to our server over a unix socket."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

import pytest
from google.protobuf.message import Message

import ttrpc
from tests.unit.ttrpc.echo_service import (
    DESCRIPTOR,
    SERVICE,
    BytesValue,
    DoubleValue,
    EchoImpl,
    Empty,
    Int64Value,
    StringValue,
    until,
)


def value(message: Message) -> object:
    return message.value  # type: ignore[attr-defined]


async def echo(client: ttrpc.Client, text: str, **kw: object) -> str:
    reply = await client.call(SERVICE, "Echo", StringValue(value=text), StringValue, **kw)  # type: ignore[arg-type]
    return str(value(reply))


async def test_round_trip(client: ttrpc.Client) -> None:
    assert await echo(client, "hello") == "hello"
    assert await echo(client, "") == ""
    assert await echo(client, "ünïcode ✓") == "ünïcode ✓"


async def test_concurrent_calls_complete_out_of_order(client: ttrpc.Client, impl: EchoImpl) -> None:
    names = [f"call-{i}" for i in range(8)]
    for name in names:
        impl.gates[name] = asyncio.Event()
    calls = [asyncio.ensure_future(echo(client, name)) for name in names]
    await until(lambda: sorted(impl.entered) == sorted(names), "every call to reach the server")
    assert not any(c.done() for c in calls)
    # Release in reverse order; each caller still gets its own answer.
    for name in reversed(names):
        impl.gates[name].set()
        await asyncio.sleep(0.01)
    assert await asyncio.gather(*calls) == names
    assert impl.completed == list(reversed(names))


async def test_many_concurrent_calls_on_one_connection(client: ttrpc.Client) -> None:
    texts = [str(i) * (i % 50) for i in range(300)]
    assert await asyncio.gather(*(echo(client, t) for t in texts)) == texts


async def test_metadata_reaches_the_handler(client: ttrpc.Client, impl: EchoImpl) -> None:
    reply = await client.call(
        SERVICE,
        "Meta",
        Empty(),
        StringValue,
        metadata={"containerd-namespace-ttrpc": "k8s.io", "Multi": ["a", "b"]},
    )
    # Keys travel in lower case, as Go's MD.Set sends them.
    assert value(reply) == "containerd-namespace-ttrpc=k8s.io;multi=a,b"
    ctx = impl.contexts[-1]
    assert ctx.get("containerd-namespace-ttrpc") == "k8s.io"
    assert ctx.get("MULTI") == "a"
    assert ctx.metadata["multi"] == ("a", "b")
    assert ctx.get("absent") is None
    assert ctx.service == SERVICE
    assert ctx.method == "Meta"
    assert ctx.peer is not None
    assert ctx.peer.pid == os.getpid()
    assert ctx.deadline is None


async def test_no_metadata_is_empty(client: ttrpc.Client, impl: EchoImpl) -> None:
    assert value(await client.call(SERVICE, "Meta", Empty(), StringValue)) == ""
    assert dict(impl.contexts[-1].metadata) == {}


async def test_timeout_is_sent_and_the_server_cancels_the_handler(
    client: ttrpc.Client, impl: EchoImpl
) -> None:
    with pytest.raises(ttrpc.DeadlineExceeded):
        await client.call(SERVICE, "Sleep", DoubleValue(value=30), Empty, timeout=0.2)
    ctx = impl.contexts[-1]
    assert ctx.deadline is not None
    for _ in range(100):
        if impl.cancelled:
            break
        await asyncio.sleep(0.01)
    assert impl.cancelled == 1
    assert impl.finished == 0
    # The connection is still good.
    assert await echo(client, "after") == "after"


async def test_call_within_its_timeout_succeeds(client: ttrpc.Client, impl: EchoImpl) -> None:
    await client.call(SERVICE, "Sleep", DoubleValue(value=0.01), Empty, timeout=5)
    remaining = impl.contexts[-1].deadline
    assert remaining is not None
    assert impl.finished == 1


async def test_non_positive_timeout_fails_without_sending(client: ttrpc.Client) -> None:
    with pytest.raises(ttrpc.DeadlineExceeded):
        await echo(client, "x", timeout=0)


@pytest.mark.parametrize(
    ("service", "method", "message"),
    [
        ("no.such.Service", "Echo", "service no.such.Service"),
        (SERVICE, "NoSuchMethod", "method NoSuchMethod"),
        # In the descriptor, but the implementation has no such method.
        (SERVICE, "Missing", "method Missing"),
    ],
)
async def test_unknown_service_or_method_is_unimplemented(
    client: ttrpc.Client, service: str, method: str, message: str
) -> None:
    with pytest.raises(ttrpc.Unimplemented) as caught:
        await client.call(service, method, Empty(), Empty)
    assert caught.value.message == message
    assert caught.value.code == ttrpc.Code.UNIMPLEMENTED


async def test_streaming_method_is_answered_unimplemented(client: ttrpc.Client) -> None:
    with pytest.raises(ttrpc.Unimplemented, match="streaming"):
        await client.call(SERVICE, "Watch", Empty(), StringValue)


@pytest.mark.parametrize(
    ("what", "error", "message"),
    [
        ("notfound", ttrpc.NotFound, "no such thing"),
        ("precondition", ttrpc.FailedPrecondition, "not now"),
        ("missing-file", ttrpc.NotFound, "No such file or directory: '/nonexistent'"),
        ("notimplemented", ttrpc.Unimplemented, "later"),
        ("boom", ttrpc.Unknown, "RuntimeError: boom"),
    ],
)
async def test_handler_errors_become_statuses(
    client: ttrpc.Client, what: str, error: type[ttrpc.StatusError], message: str
) -> None:
    with pytest.raises(error) as caught:
        await client.call(SERVICE, "Fail", StringValue(value=what), Empty)
    assert message in caught.value.message


async def test_unexpected_handler_error_is_logged(
    client: ttrpc.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="ttrpc.connection"), pytest.raises(ttrpc.Unknown):
        await client.call(SERVICE, "Fail", StringValue(value="kaputt"), Empty)
    assert any(
        r.name == "ttrpc.connection" and "Fail failed" in r.getMessage() and r.exc_info
        for r in caplog.records
    )


async def test_handler_returning_the_wrong_type_is_internal(client: ttrpc.Client) -> None:
    with pytest.raises(ttrpc.Internal, match=r"expected google\.protobuf\.Empty"):
        await client.call(SERVICE, "Wrong", Empty(), Empty)


async def test_oversized_response_is_resource_exhausted(client: ttrpc.Client) -> None:
    reply = await client.call(SERVICE, "Big", Int64Value(value=(4 << 20) - 100), BytesValue)
    assert len(value(reply)) == (4 << 20) - 100  # type: ignore[arg-type]
    with pytest.raises(ttrpc.ResourceExhausted, match="exceeds the maximum message size"):
        await client.call(SERVICE, "Big", Int64Value(value=4 << 20), BytesValue)
    assert await echo(client, "still here") == "still here"


async def test_oversized_request_fails_locally(client: ttrpc.Client) -> None:
    with pytest.raises(ttrpc.ResourceExhausted, match="request of"):
        await echo(client, "x" * (4 << 20))
    assert await echo(client, "still here") == "still here"


async def test_stub_calls_by_rpc_name(client: ttrpc.Client) -> None:
    stub = ttrpc.ServiceStub(client, DESCRIPTOR)
    assert value(await stub.Echo(StringValue(value="via stub"))) == "via stub"
    with pytest.raises(ttrpc.Unimplemented):
        await stub.Missing(Empty())
    with pytest.raises(TypeError, match=r"takes google\.protobuf\.StringValue"):
        await stub.Echo(Empty())
    with pytest.raises(AttributeError, match="no unary RPC 'Watch'"):
        _ = stub.Watch


async def test_same_impl_under_two_service_names(tmp_path: Path) -> None:
    server = ttrpc.Server()
    impl = EchoImpl()
    server.register(DESCRIPTOR, impl)
    server.register(DESCRIPTOR, impl, name="ttrpc.test.v3.Echo")
    with pytest.raises(ValueError, match="already registered"):
        server.register(DESCRIPTOR, impl)
    await server.serve_unix(tmp_path / "s")
    async with await ttrpc.Client.connect_unix(tmp_path / "s") as client:
        v3 = ttrpc.ServiceStub(client, DESCRIPTOR, name="ttrpc.test.v3.Echo")
        assert value(await v3.Echo(StringValue(value="v3"))) == "v3"
        assert await echo(client, "v2") == "v2"
    await server.close()


def test_registering_a_sync_method_fails() -> None:
    class Sync:
        def Echo(self, request: Message, ctx: ttrpc.CallContext) -> Message:
            return request

    with pytest.raises(TypeError, match=r"Sync\.Echo must be an async method"):
        ttrpc.Server().register(DESCRIPTOR, Sync())


async def test_socket_file_is_private_and_removed_on_close(tmp_path: Path) -> None:
    server = ttrpc.Server()
    path = tmp_path / "private.sock"
    await server.serve_unix(path)
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    await server.close()
    assert not path.exists()


async def test_listening_twice_on_a_live_socket_fails(socket_path: Path) -> None:
    with pytest.raises(ttrpc.TransportError, match="already listening"):
        await ttrpc.Server().serve_unix(socket_path)


async def test_stale_socket_is_replaced_and_other_files_are_not(tmp_path: Path) -> None:
    import socket

    stale = tmp_path / "stale.sock"
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(str(stale))
    leftover.close()
    server = ttrpc.Server()
    server.register(DESCRIPTOR, EchoImpl())
    await server.serve_unix(stale)
    async with await ttrpc.Client.connect_unix(stale) as client:
        assert await echo(client, "fresh") == "fresh"
    await server.close()

    regular = tmp_path / "file"
    regular.write_text("keep me")
    with pytest.raises(ttrpc.TransportError, match="not a socket"):
        await ttrpc.Server().serve_unix(regular)
    assert regular.read_text() == "keep me"


async def test_connect_to_nothing_fails(tmp_path: Path) -> None:
    with pytest.raises(ttrpc.TransportError, match="cannot connect"):
        await ttrpc.Client.connect_unix(tmp_path / "nobody")


async def test_server_going_away_fails_pending_calls_unavailable(
    server: ttrpc.Server, client: ttrpc.Client, impl: EchoImpl
) -> None:
    impl.gates["never"] = asyncio.Event()
    pending = asyncio.ensure_future(echo(client, "never"))
    await asyncio.sleep(0.05)
    for connection in server.connections:
        connection.abort("test kills the connection")
    with pytest.raises(ttrpc.Unavailable):
        await pending
    with pytest.raises(ttrpc.Unavailable):
        await echo(client, "later")
    assert client.closed
    impl.gates["never"].set()  # the orphaned handler finishes; the server waits for it


async def test_client_close_fails_pending_calls(client: ttrpc.Client, impl: EchoImpl) -> None:
    impl.gates["never"] = asyncio.Event()
    pending = asyncio.ensure_future(echo(client, "never"))
    await asyncio.sleep(0.05)
    await client.close()
    with pytest.raises(ttrpc.Unavailable, match="client closed"):
        await pending
    impl.gates["never"].set()


async def test_cancelled_caller_leaves_the_connection_usable(
    client: ttrpc.Client, impl: EchoImpl
) -> None:
    impl.gates["slow"] = asyncio.Event()
    pending = asyncio.ensure_future(echo(client, "slow"))
    await asyncio.sleep(0.05)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    impl.gates["slow"].set()  # its late answer is dropped
    assert await echo(client, "next") == "next"


async def test_graceful_close_lets_running_calls_finish(
    server: ttrpc.Server, client: ttrpc.Client, impl: EchoImpl
) -> None:
    impl.gates["running"] = asyncio.Event()
    running = asyncio.ensure_future(echo(client, "running"))
    await until(lambda: impl.entered == ["running"], "the call to reach the server")
    closing = asyncio.ensure_future(server.close(timeout=5))
    await asyncio.sleep(0.05)
    # New calls on the open connection are refused while draining.
    with pytest.raises(ttrpc.Unavailable, match="shutting down"):
        await echo(client, "new")
    assert not closing.done()
    impl.gates["running"].set()
    assert await running == "running"
    await closing
    with pytest.raises(ttrpc.Unavailable):
        await echo(client, "after close")


async def test_close_cancels_calls_that_outlive_the_timeout(
    server: ttrpc.Server, client: ttrpc.Client, impl: EchoImpl
) -> None:
    running = asyncio.ensure_future(client.call(SERVICE, "Sleep", DoubleValue(value=30), Empty))
    await until(lambda: impl.started == [30], "the call to reach the server")
    await server.close(timeout=0.1)
    with pytest.raises(ttrpc.Cancelled, match="server cancelled"):
        await running
    assert impl.cancelled == 1


async def test_waiting_calls_are_cancelled_when_their_client_goes(tmp_path: Path) -> None:
    impl = EchoImpl()
    server = ttrpc.Server()
    server.register(DESCRIPTOR, impl, waiting=("Sleep",))
    await server.serve_unix(tmp_path / "w.sock")
    client = await ttrpc.Client.connect_unix(tmp_path / "w.sock")
    impl.gates["work"] = asyncio.Event()
    try:
        calls = [
            asyncio.ensure_future(client.call(SERVICE, "Sleep", DoubleValue(value=1000), Empty)),
            asyncio.ensure_future(client.call(SERVICE, "Echo", StringValue(value="work"),
                                              StringValue)),
        ]  # fmt: skip
        await until(lambda: bool(impl.started) and "work" in impl.entered, "both calls to start")
        await client.close()
        await asyncio.gather(*calls, return_exceptions=True)
        await until(lambda: impl.cancelled == 1, "the waiting call's cancellation")
        assert impl.completed == []  # the other one runs on, to its end
        impl.gates["work"].set()
        await until(lambda: impl.completed == ["work"], "the other call's end")
    finally:
        await server.close()


def test_waiting_names_an_rpc_of_the_service() -> None:
    with pytest.raises(ValueError, match="has no RPC Nap"):
        ttrpc.Server().register(DESCRIPTOR, EchoImpl(), waiting=("Nap",))
