"""The relay between a ttrpc client (containerd's role) and a daemon, over real unix
sockets in a temporary run directory; the daemon is our ttrpc server in this process,
"killed" by dropping its connections without an answer, as SIGKILL does."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from google.protobuf import empty_pb2

from agent.daemon.lifecycle import lock_held, single_instance
from agent.daemon.settings import Settings
from agent.relay import link as link_module
from agent.relay import relay as relay_module
from agent.relay.relay import Relay
from api.containerd.task.v2 import shim_pb2
from api.node import relay_pb2
from shim.endpoints import Endpoints
from shim.task import TaskService
from tests.unit.shim.sinks import socket_dir
from tests.unit.ttrpc.rawpeer import RawPeer
from ttrpc import (
    Client,
    Code,
    InvalidArgument,
    NotFound,
    Server,
    ServiceStub,
    Unavailable,
    same_uid,
)
from ttrpc.framing import MAX_MESSAGE_LENGTH, RESPONSE, encode_frame
from ttrpc.proto.ttrpc_pb2 import Request, Response
from ttrpc.responses import encode_ok_response

TASK = shim_pb2.DESCRIPTOR.services_by_name["Task"]
SERVICE = "containerd.task.v2.Task"


class FakeDaemon:
    """A Task service whose Wait and Create block until told otherwise."""

    def __init__(self, exit_status: int | None = None) -> None:
        self.exit_status = exit_status
        self.calls: list[str] = []
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()

    async def State(self, request: shim_pb2.StateRequest, ctx: object) -> shim_pb2.StateResponse:
        self.calls.append(f"State {request.id}")
        if request.id == "missing":
            raise NotFound(f"task {request.id}")
        return shim_pb2.StateResponse(id=request.id, pid=1234)

    async def Wait(self, request: shim_pb2.WaitRequest, ctx: object) -> shim_pb2.WaitResponse:
        self.calls.append(f"Wait {request.id}")
        self.waiting.set()
        if self.exit_status is None:
            await asyncio.Event().wait()
        return shim_pb2.WaitResponse(exit_status=self.exit_status or 0)

    async def Create(
        self, request: shim_pb2.CreateTaskRequest, ctx: object
    ) -> shim_pb2.CreateTaskResponse:
        self.calls.append(f"Create {request.id}")
        self.waiting.set()
        await self.release.wait()
        return shim_pb2.CreateTaskResponse(pid=1)

    async def Kill(self, request: shim_pb2.KillRequest, ctx: object) -> empty_pb2.Empty:
        self.calls.append(f"Kill {request.id}")
        return empty_pb2.Empty()


async def state(client: Client, task_id: str) -> shim_pb2.StateResponse:
    request = shim_pb2.StateRequest(id=task_id)
    return await client.call(SERVICE, "State", request, shim_pb2.StateResponse)


@pytest.fixture
def run_dir() -> Iterator[Path]:
    with socket_dir() as folder:
        yield folder


def settings(run_dir: Path) -> Settings:
    # Supervised: the relay must not start a daemon process in a unit test.
    return Settings(run_dir, run_dir / "state", "pod-vm", None, supervised=True)


async def serve_daemon(run_dir: Path, impl: FakeDaemon, namespace: str = "default") -> Server:
    server = Server()
    server.register(TASK, impl)
    (run_dir / "daemon-ns").mkdir(exist_ok=True)
    await server.serve_unix(run_dir / "daemon-ns" / f"{namespace}.sock")
    return server


async def kill(server: Server) -> None:
    """What SIGKILL does to a daemon: connections dropped, nothing answered."""
    for connection in server.connections:
        connection.abort("killed")
    for _ in range(3):
        await asyncio.sleep(0)
    await server.close(timeout=0.1)


@contextlib.asynccontextmanager
async def relay_on(run_dir: Path) -> AsyncIterator[Relay]:
    relay = Relay(settings(run_dir))
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()


async def client_of(relay: Relay, namespace: str = "default") -> Client:
    address = await relay.listen(namespace)
    return await Client.connect_unix(address.removeprefix("unix://"))


async def test_frames_pass_through_with_their_stream_ids(run_dir: Path) -> None:
    daemon = await serve_daemon(run_dir, FakeDaemon())
    async with relay_on(run_dir) as relay:
        address = await relay.listen("default")
        assert address == f"unix://{run_dir}/ns/default.sock"
        assert (run_dir / "ns" / "default.sock").stat().st_mode & 0o777 == 0o600
        peer = await RawPeer.connect(run_dir / "ns" / "default.sock")
        try:
            request = shim_pb2.StateRequest(id="c1")
            await peer.send_request(7, "State", request, service=SERVICE)
            stream_id, message_type, _, data = await peer.read_frame()
            assert (stream_id, message_type) == (7, RESPONSE)
            reply = shim_pb2.StateResponse(id="c1", pid=1234).SerializeToString()
            assert data == encode_ok_response(reply)  # the daemon's bytes, unchanged
            await peer.send_request(
                9, "State", shim_pb2.StateRequest(id="missing"), service=SERVICE
            )
            stream_id, response = await peer.read_response()
            assert stream_id == 9
            assert response.status.code == Code.NOT_FOUND
            assert response.status.message == "task missing"
        finally:
            peer.writer.close()
    await daemon.close()


async def test_a_wait_in_flight_is_replayed_to_the_next_daemon(run_dir: Path) -> None:
    first = FakeDaemon()
    daemon = await serve_daemon(run_dir, first)
    async with relay_on(run_dir) as relay, await client_of(relay) as client:
        wait = asyncio.create_task(
            client.call(SERVICE, "Wait", shim_pb2.WaitRequest(id="c1"), shim_pb2.WaitResponse)
        )
        await first.waiting.wait()
        await kill(daemon)
        await asyncio.sleep(0.2)  # the relay retries a socket nobody serves
        assert not wait.done()
        second = FakeDaemon(exit_status=137)
        daemon = await serve_daemon(run_dir, second)
        reply = await asyncio.wait_for(wait, 10)
        assert reply.exit_status == 137
        assert second.calls == ["Wait c1"]
        # The same containerd connection goes on serving calls.
        assert (await state(client, "c2")).pid == 1234
    await daemon.close()


async def test_a_wait_older_than_the_bound_is_replayed_all_the_same(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CRI's Wait has no deadline and is in flight for as long as the task runs. The
    bound for a daemon to come back counts from the daemon's loss, not from when the
    Wait was sent: before, a daemon crash more than WAIT_SECONDS after a container's
    start answered its Wait UNAVAILABLE at once, and containerd took the task for
    exited and tore the pod down (found by tests/e2e/test_restart_under_load.py)."""
    monkeypatch.setattr(link_module, "WAIT_SECONDS", 0.0)  # long past when the Wait is sent
    first = FakeDaemon()
    daemon = await serve_daemon(run_dir, first)
    async with relay_on(run_dir) as relay, await client_of(relay) as client:
        wait = asyncio.create_task(
            client.call(SERVICE, "Wait", shim_pb2.WaitRequest(id="c1"), shim_pb2.WaitResponse)
        )
        await first.waiting.wait()
        monkeypatch.setattr(link_module, "WAIT_SECONDS", 30.0)  # the bound at the loss
        await kill(daemon)
        second = FakeDaemon(exit_status=137)
        daemon = await serve_daemon(run_dir, second)
        reply = await asyncio.wait_for(wait, 10)
        assert reply.exit_status == 137
        assert second.calls == ["Wait c1"]
    await daemon.close()


async def test_a_create_in_flight_is_answered_unavailable(run_dir: Path) -> None:
    first = FakeDaemon()
    daemon = await serve_daemon(run_dir, first)
    async with relay_on(run_dir) as relay, await client_of(relay) as client:
        stub = ServiceStub(client, TASK)
        create = asyncio.create_task(stub.Create(shim_pb2.CreateTaskRequest(id="c1")))
        await first.waiting.wait()
        await kill(daemon)
        with pytest.raises(Unavailable, match=r"Task/Create: the node daemon restarted"):
            await asyncio.wait_for(create, 10)
        second = FakeDaemon()
        daemon = await serve_daemon(run_dir, second)
        await stub.Kill(shim_pb2.KillRequest(id="c1"))  # a later call reaches the new daemon
        assert second.calls == ["Kill c1"]  # the Create was not sent again
    await daemon.close()


async def test_requests_wait_for_a_daemon_then_give_up(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(link_module, "WAIT_SECONDS", 0.5)
    async with relay_on(run_dir) as relay, await client_of(relay) as client:
        with pytest.raises(Unavailable, match="Task/State: the node daemon did not come back"):
            await asyncio.wait_for(state(client, "c1"), 10)
        monkeypatch.setattr(link_module, "WAIT_SECONDS", 30.0)
        later = asyncio.create_task(state(client, "c2"))
        await asyncio.sleep(0.1)
        daemon = await serve_daemon(run_dir, FakeDaemon())  # comes up in time for this one
        assert (await asyncio.wait_for(later, 10)).id == "c2"
    await daemon.close()


async def closed_by_peer(peer: RawPeer) -> bool:
    try:
        return await asyncio.wait_for(peer.reader.read(1), 5) == b""
    except ConnectionError:
        return True


@pytest.mark.parametrize("hostile", ["oversized", "garbage"])
async def test_hostile_frames_from_containerd_close_only_that_connection(
    run_dir: Path, hostile: str
) -> None:
    daemon = await serve_daemon(run_dir, FakeDaemon())
    async with relay_on(run_dir) as relay, await client_of(relay) as good:
        peer = await RawPeer.connect(run_dir / "ns" / "default.sock")
        if hostile == "oversized":
            await peer.send_frame(1, 1, 0, b"", length=MAX_MESSAGE_LENGTH + 1)
        else:
            await peer.send_frame(1, 1, 0, b"\xff\xff\xff")
        assert await closed_by_peer(peer)
        peer.writer.close()
        assert (await state(good, "c1")).pid == 1234
    await daemon.close()


async def serve_hostile_daemon(path: Path) -> asyncio.Server:
    """Answers State normally and Kill with a header announcing 5 MiB."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                length, stream_id, _, _ = struct.unpack(">IIBB", await reader.readexactly(10))
                request = Request.FromString(await reader.readexactly(length))
                if request.method == "Kill":
                    writer.write(struct.pack(">IIBB", 5 << 20, stream_id, RESPONSE, 0))
                else:
                    payload = shim_pb2.StateResponse(id="ok").SerializeToString()
                    body = Response(payload=payload).SerializeToString()
                    writer.write(encode_frame(stream_id, RESPONSE, 0, body))
                await writer.drain()

    path.parent.mkdir(exist_ok=True)
    return await asyncio.start_unix_server(handle, str(path))


async def test_an_oversized_frame_from_the_daemon_closes_only_that_link(run_dir: Path) -> None:
    hostile = await serve_hostile_daemon(run_dir / "daemon-ns" / "default.sock")
    async with relay_on(run_dir) as relay, await client_of(relay) as good:
        peer = await RawPeer.connect(run_dir / "ns" / "default.sock")
        await peer.send_request(1, "Kill", shim_pb2.KillRequest(id="c1"), service=SERVICE)
        assert await closed_by_peer(peer)
        peer.writer.close()
        assert (await state(good, "c1")).id == "ok"
    hostile.close()


async def test_a_new_relay_serves_every_namespace_the_daemon_serves(run_dir: Path) -> None:
    daemons = [await serve_daemon(run_dir, FakeDaemon(), ns) for ns in ("default", "k8s.io")]
    async with relay_on(run_dir):
        for ns in ("default", "k8s.io"):
            async with await Client.connect_unix(run_dir / "ns" / f"{ns}.sock") as client:
                assert (await state(client, ns)).id == ns
    assert list((run_dir / "ns").iterdir()) == []  # the relay removed its sockets
    for daemon in daemons:
        await daemon.close()


async def test_listen_refuses_a_bad_namespace(run_dir: Path) -> None:
    async with relay_on(run_dir), await Client.connect_unix(run_dir / "relay.sock") as client:
        stub = ServiceStub(client, relay_pb2.DESCRIPTOR.services_by_name["Relay"])
        with pytest.raises(InvalidArgument, match="namespace"):
            await stub.Listen(relay_pb2.ListenRequest(namespace="../x"))
        request = relay_pb2.ListenRequest(namespace="k8s.io")
        reply = await client.call(
            "contrast.node.v1.Relay", "Listen", request, relay_pb2.ListenResponse
        )
        assert reply.address == f"unix://{run_dir}/ns/k8s.io.sock"


def test_lock_held_reads_proc_locks_without_taking_the_lock(run_dir: Path) -> None:
    path = run_dir / "daemon.lock"
    assert not lock_held(path)  # no file
    with single_instance(run_dir, "daemon.lock", "node daemon"):
        assert lock_held(path)
        assert lock_held(path)  # looking did not take it over
    assert not lock_held(path)


class AnyTask(FakeDaemon):
    """FakeDaemon with every other Task method present (Endpoints binds them all)."""

    def __getattr__(self, name: str) -> Any:
        async def unimplemented(request: object, ctx: object) -> None:
            raise NotImplementedError(name)

        return unimplemented


async def test_a_stopping_daemon_leaves_its_pending_waits_to_the_next_one(run_dir: Path) -> None:
    """The daemon's Endpoints drop the relay's connections unanswered when it stops, so
    a Wait in flight goes to the next daemon rather than coming back CANCELLED."""
    first = AnyTask()
    endpoints = Endpoints(run_dir, cast(TaskService, first), same_uid)
    await endpoints.ensure("default")
    async with relay_on(run_dir) as relay, await client_of(relay) as client:
        wait = asyncio.create_task(
            client.call(SERVICE, "Wait", shim_pb2.WaitRequest(id="c1"), shim_pb2.WaitResponse)
        )
        await first.waiting.wait()
        await endpoints.close()
        second = AnyTask(exit_status=3)
        endpoints = Endpoints(run_dir, cast(TaskService, second), same_uid)
        await endpoints.ensure("default")
        assert (await asyncio.wait_for(wait, 10)).exit_status == 3
        assert second.calls == ["Wait c1"]
    await endpoints.close()


async def test_an_unsupervised_relay_leaves_once_idle(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With containerd connected and the daemon gone, an unsupervised relay starts a
    daemon and stays; with no containerd connection and no daemon (socket or lock) it
    is idle after IDLE_SECONDS."""
    monkeypatch.setattr(relay_module, "IDLE_SECONDS", 0.5)
    started: list[str] = []

    class Exited:
        def poll(self) -> int:
            return 1  # as a daemon that found another one running

    def spawn(module: str, folder: Path, log_name: str) -> Exited:
        started.append(module)
        return Exited()

    monkeypatch.setattr(relay_module, "spawn_detached", spawn)
    daemon = await serve_daemon(run_dir, FakeDaemon())
    relay = Relay(Settings(run_dir, run_dir / "state", "pod-vm", None, supervised=False))
    await relay.start()
    try:
        watcher = asyncio.create_task(relay.watch_idle())
        async with await client_of(relay) as client:
            assert (await state(client, "c1")).pid == 1234
            await daemon.close()
            await asyncio.sleep(2.5)
            assert not relay.idle.is_set()  # containerd is connected
            assert started[:1] == ["agent.daemon"]  # unsupervised: it starts a daemon
        await asyncio.wait_for(relay.idle.wait(), 10)
        await watcher
    finally:
        await relay.close()
