"""Transports: peer credentials, already-open fds, character devices, asyncio streams."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import tty
from pathlib import Path

import pytest

import ttrpc
from tests.unit.ttrpc.echo_service import (
    DESCRIPTOR,
    SERVICE,
    BytesValue,
    EchoImpl,
    Int64Value,
    StringValue,
    until,
)
from ttrpc.transport import PeerCredentials, peer_credentials, same_uid

NOBODY = 65534


async def echo(client: ttrpc.Client, text: str) -> str:
    reply = await client.call(SERVICE, "Echo", StringValue(value=text), StringValue)
    return str(reply.value)


def make_server(**kw: object) -> ttrpc.Server:
    server = ttrpc.Server(**kw)  # type: ignore[arg-type]
    server.register(DESCRIPTOR, EchoImpl())
    return server


def test_same_uid_check() -> None:
    me = os.geteuid()
    assert same_uid(PeerCredentials(pid=1, uid=me, gid=0))
    assert not same_uid(PeerCredentials(pid=1, uid=me + 1, gid=0))
    assert not same_uid(PeerCredentials(pid=1, uid=NOBODY if me != NOBODY else 0, gid=NOBODY))


def test_peer_credentials_of_a_socketpair() -> None:
    a, b = socket.socketpair()
    with a, b:
        creds = peer_credentials(a)
    assert creds == PeerCredentials(pid=os.getpid(), uid=os.geteuid(), gid=os.getegid())
    inet = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with inet:
        assert peer_credentials(inet) is None


async def test_refused_peer_gets_no_service(tmp_path: Path) -> None:
    seen: list[PeerCredentials] = []

    def refuse(peer: PeerCredentials) -> bool:
        seen.append(peer)
        return False

    server = make_server(peer_check=refuse)
    await server.serve_unix(tmp_path / "s")
    client = await ttrpc.Client.connect_unix(tmp_path / "s")
    with pytest.raises(ttrpc.Unavailable):
        await echo(client, "let me in")
    await client.close()
    assert seen == [PeerCredentials(pid=os.getpid(), uid=os.geteuid(), gid=os.getegid())]
    assert not server.connections
    await server.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch a child to another uid")
async def test_peer_with_another_uid_is_refused_by_default(tmp_path: Path) -> None:
    # An abstract socket has no file permissions, so only the credential check stands
    # between the child (running as nobody) and the server.
    address = f"@ttrpc-test-{os.getpid()}-{id(tmp_path)}"
    server = make_server()
    await server.serve_unix(address)
    request = bytes.fromhex("0a0f747472")  # not even a full request: we only look at EOF

    def child() -> int:
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(5)
                sock.connect("\0" + address[1:])
                sock.sendall(struct.pack(">IIBB", len(request), 1, 1, 0) + request)
                # The server closes the connection without a word: EOF.
                code = 0 if sock.recv(100) == b"" else 1
            except (ConnectionResetError, BrokenPipeError):
                # Refused before or while we were sending: as good as EOF.
                code = 0
            except BaseException:
                code = 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    assert await asyncio.get_running_loop().run_in_executor(None, child) == 0
    # Our own uid is still welcome on the same address.
    async with await ttrpc.Client.connect_unix(address) as client:
        assert await echo(client, "root") == "root"
    await server.close()


async def test_serve_fd_and_client_from_fd_over_a_socketpair() -> None:
    server = make_server()
    a, b = socket.socketpair()
    connection = await server.serve_fd(a.detach())
    client = await ttrpc.Client.from_fd(b.detach())
    assert await echo(client, "over a socketpair") == "over a socketpair"
    assert connection.peer is not None
    assert connection.peer.pid == os.getpid()
    await client.close()
    await asyncio.wait_for(connection.wait_closed(), 5)
    await server.close()


async def test_streams_on_both_sides() -> None:
    server = make_server()
    a, b = socket.socketpair()
    server_reader, server_writer = await asyncio.open_connection(sock=a)
    connection = server.serve_connection(server_reader, server_writer)
    client_reader, client_writer = await asyncio.open_connection(sock=b)
    client = ttrpc.Client.from_streams(client_reader, client_writer)
    texts = [f"stream {i}" for i in range(20)]
    assert await asyncio.gather(*(echo(client, t) for t in texts)) == texts
    big = await client.call(SERVICE, "Big", Int64Value(value=3 << 20), BytesValue)
    assert len(big.value) == 3 << 20
    await client.close()
    await asyncio.wait_for(connection.wait_closed(), 5)
    await server.close()


def raw_pty() -> tuple[int, int, str]:
    controller, terminal = os.openpty()
    # No line discipline: no echo, no CR/NL translation, 8-bit clean.
    tty.setraw(terminal)
    return controller, terminal, os.ttyname(terminal)


async def test_character_device_transport_over_a_pty() -> None:
    controller, terminal, terminal_path = raw_pty()
    server = make_server()
    connection = await server.serve_fd(controller)
    # The client opens the device by path, as the guest opens /dev/vport0p1.
    client = await ttrpc.Client.open_char_device(terminal_path)
    os.close(terminal)
    try:
        assert await echo(client, "over a tty") == "over a tty"
        texts = [f"tty {i}" for i in range(30)]
        assert await asyncio.gather(*(echo(client, t) for t in texts)) == texts
        # Far more than a pty buffers (a few KiB): exercises partial writes and
        # flow control of the pipe transports in both directions.
        reply = await client.call(SERVICE, "Big", Int64Value(value=1 << 20), BytesValue)
        assert reply.value == b"x" * (1 << 20)
        request = StringValue(value="y" * (512 << 10))
        assert (await client.call(SERVICE, "Echo", request, StringValue)) == request
        assert connection.peer is None  # no credentials on a character device
    finally:
        await client.close()
        await server.close()


async def test_server_on_a_char_device_survives_the_other_end_going_away() -> None:
    controller, terminal, _ = raw_pty()
    server = make_server()
    connection = await server.serve_fd(controller)
    client = await ttrpc.Client.from_fd(terminal)
    assert await echo(client, "once") == "once"
    await client.close()
    # A pty controller reads EIO once the terminal side is closed: the connection ends.
    await asyncio.wait_for(connection.wait_closed(), 5)
    assert not server.connections
    await server.close()


async def test_unsupported_fd_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "regular"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDWR)
    try:
        with pytest.raises(ttrpc.TransportError, match="neither a stream socket nor a character"):
            await ttrpc.Client.from_fd(fd)
    finally:
        os.close(fd)
    with pytest.raises(ttrpc.TransportError, match="not a character device"):
        await ttrpc.Client.open_char_device(path)
    udp = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with udp, pytest.raises(ttrpc.TransportError, match="not a stream socket"):
        await ttrpc.Client.from_fd(udp.fileno())


async def test_a_new_client_on_a_char_device_without_end_of_file_starts_a_new_session() -> None:
    # A virtio-serial host can go and come back between two of the guest's reads: the
    # server sees no end of file, only a request on stream 1 again.
    controller, terminal, _ = raw_pty()
    impl = EchoImpl()
    server = ttrpc.Server()
    server.register(DESCRIPTOR, impl)
    connection = await server.serve_fd(controller)
    keep = os.dup(terminal)  # holds the terminal open: no EOF reaches the server
    first = await ttrpc.Client.from_fd(terminal)
    impl.gates["old"] = asyncio.Event()
    impl.gates["new"] = asyncio.Event()
    try:
        assert await echo(first, "quick old") == "quick old"  # stream 1
        stale = asyncio.ensure_future(echo(first, "old"))  # stream 3, held in its handler
        await until(lambda: "old" in impl.entered, "the first client's held call")
        await first.close()
        stale.cancel()

        second = await ttrpc.Client.from_fd(os.dup(keep))
        try:
            assert await echo(second, "quick new") == "quick new"  # stream 1 again: served
            fresh = asyncio.ensure_future(echo(second, "new"))  # stream 3 again
            await until(lambda: "new" in impl.entered, "the second client's held call")
            impl.gates["old"].set()  # the previous client's answer on stream 3: dropped
            await until(lambda: "old" in impl.completed, "the first client's call to end")
            impl.gates["new"].set()
            assert await asyncio.wait_for(fresh, 30) == "new"
            assert connection in server.connections  # the same connection throughout
        finally:
            await second.close()
    finally:
        os.close(keep)
        await server.close()


async def test_stream_1_again_on_a_socket_is_still_refused(tmp_path: Path) -> None:
    # Only a character device starts sessions anew: a socket's peer reconnects visibly.
    from tests.unit.ttrpc.rawpeer import RawPeer

    server = make_server()
    await server.serve_unix(tmp_path / "s.sock")
    raw = await RawPeer.connect(tmp_path / "s.sock")
    try:
        await raw.send_request(1, "Echo", StringValue(value="a"))
        assert (await raw.read_response())[1].status.code == ttrpc.Code.OK
        await raw.send_request(1, "Echo", StringValue(value="b"))
        stream_id, response = await raw.read_response()
        assert (stream_id, response.status.code) == (1, ttrpc.Code.INVALID_ARGUMENT)
        assert response.status.message == "StreamID cannot be re-used and must increment"
    finally:
        await raw.close()
        await server.close()
