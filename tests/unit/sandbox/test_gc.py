"""Sandboxes containerd no longer knows: a real gRPC server on a unix socket answers
containerd's Containers/Get; the daemon's own TaskService holds the sandboxes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.daemon.main import gc_candidates
from agent.sandbox import gc
from agent.sandbox.local_backend import LocalAgentBackend
from agent.sandbox.state import SandboxRecord, StateStore
from api.containerd.services.containers.v1 import containers_pb2
from api.node import shim_pb2 as node_pb2
from tests.unit.shim.harness import running
from tests.unit.shim.sinks import socket_dir


@dataclass
class Containers:
    """containerd's Containers service as far as Get goes: ids by namespace."""

    records: set[tuple[str, str]]
    failure: grpc.StatusCode | None = None
    asked: list[tuple[str, str]] = field(default_factory=list)

    async def get(
        self,
        request: containers_pb2.GetContainerRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> containers_pb2.GetContainerResponse:
        metadata = dict(context.invocation_metadata() or ())
        namespace = str(metadata.get(gc.NAMESPACE_HEADER, ""))
        self.asked.append((namespace, request.id))
        if self.failure is not None:
            await context.abort(self.failure, "containerd is unwell")
        if (namespace, request.id) not in self.records:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"container {request.id!r}: not found")
        return containers_pb2.GetContainerResponse(
            container=containers_pb2.Container(
                id=request.id,
                runtime=containers_pb2.Container.Runtime(name="io.containerd.contrast-cc.v2"),
            )
        )


@pytest.fixture
def folder() -> Iterator[Path]:
    with socket_dir() as path:
        yield path


@pytest.fixture
async def containerd(folder: Path) -> AsyncIterator[tuple[str, Containers]]:
    containers = Containers({("k8s.io", "pod1"), ("default", "pod2")})
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "containerd.services.containers.v1.Containers",
        {
            "Get": grpc.unary_unary_rpc_method_handler(
                containers.get,
                request_deserializer=containers_pb2.GetContainerRequest.FromString,
                response_serializer=containers_pb2.GetContainerResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    socket = folder / "containerd.sock"
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    try:
        yield str(socket), containers
    finally:
        await server.stop(None)


async def test_presence_is_asked_in_the_sandboxs_namespace(
    containerd: tuple[str, Containers],
) -> None:
    address, containers = containerd
    assert await gc.container_presence(address, "k8s.io", "pod1") is gc.Presence.EXISTS
    assert await gc.container_presence(f"unix://{address}", "default", "pod1") is gc.Presence.GONE
    assert await gc.container_presence(address, "default", "pod2") is gc.Presence.EXISTS
    assert containers.asked == [("k8s.io", "pod1"), ("default", "pod1"), ("default", "pod2")]


async def test_any_other_answer_is_no_verdict(
    containerd: tuple[str, Containers], folder: Path
) -> None:
    address, containers = containerd
    containers.failure = grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(gc.ContainerdLookupError, match="PERMISSION_DENIED: containerd is unwell"):
        await gc.container_presence(address, "k8s.io", "gone")
    with pytest.raises(gc.ContainerdLookupError, match=r"container k8s.io/x: asking containerd"):
        await gc.container_presence(str(folder / "nobody.sock"), "k8s.io", "x", timeout=5)


@pytest.mark.parametrize(
    ("registered", "ttrpc", "expected"),
    [
        ("/run/containerd/containerd.sock", "/elsewhere.ttrpc", "/run/containerd/containerd.sock"),
        ("", "/run/containerd/containerd.sock.ttrpc", "/run/containerd/containerd.sock"),
        ("", "/run/containerd/events.sock", ""),
        ("", ".ttrpc", ""),
        ("", "", ""),
    ],
)
def test_containerds_address(registered: str, ttrpc: str, expected: str) -> None:
    assert gc.grpc_address(registered, ttrpc) == expected


class Sandboxes:
    """What the collector is given: candidates, and a record of what it destroyed."""

    def __init__(self, candidates: list[gc.Candidate]) -> None:
        self.candidates = candidates
        self.destroyed: list[tuple[str, str]] = []
        self.fail = False

    def list(self) -> list[gc.Candidate]:
        return list(self.candidates)

    async def collect(self, namespace: str, sandbox_id: str) -> bool:
        if self.fail:
            raise OSError("disk on fire")
        self.destroyed.append((namespace, sandbox_id))
        self.candidates = [
            c for c in self.candidates if (c.namespace, c.id) != (namespace, sandbox_id)
        ]
        return True


async def test_a_sandbox_is_destroyed_only_when_missing_twice_in_a_row(
    containerd: tuple[str, Containers], folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    address, containers = containerd
    sandboxes = Sandboxes(
        [
            gc.Candidate("k8s.io", "pod1", address),  # containerd has it
            gc.Candidate("k8s.io", "leak", address),  # containerd forgot it
            gc.Candidate("k8s.io", "late", address),  # appears between the sweeps
            gc.Candidate("k8s.io", "nowhere", ""),  # containerd unknown
            gc.Candidate("k8s.io", "down", str(folder / "down.sock")),  # unreachable
        ]
    )
    collector = gc.SandboxCollector(sandboxes.list, sandboxes.collect)
    caplog.set_level(logging.INFO, logger="agent.sandbox.gc")
    assert await collector.sweep() == []
    containers.records.add(("k8s.io", "late"))
    assert await collector.sweep() == [("k8s.io", "leak")]
    assert sandboxes.destroyed == [("k8s.io", "leak")]
    # "late" went missing once before it existed: that count was dropped.
    containers.records.discard(("k8s.io", "late"))
    assert await collector.sweep() == []
    assert await collector.sweep() == [("k8s.io", "late")]
    assert [c.id for c in sandboxes.candidates] == ["pod1", "nowhere", "down"]
    text = caplog.text
    assert "sandbox k8s.io/leak: containerd (" in text
    assert "no such container for 2 sweeps in a row: it forgot the pod, destroying" in text
    assert "sandbox k8s.io/nowhere: containerd's address is unknown, not checked" in text
    assert "sandbox k8s.io/down kept: container k8s.io/down: asking containerd" in text


async def test_an_unwell_containerd_resets_the_count_and_a_failed_destroy_is_retried(
    containerd: tuple[str, Containers],
) -> None:
    address, containers = containerd
    sandboxes = Sandboxes([gc.Candidate("k8s.io", "leak", address)])
    collector = gc.SandboxCollector(sandboxes.list, sandboxes.collect)
    assert await collector.sweep() == []
    containers.failure = grpc.StatusCode.UNAVAILABLE
    assert await collector.sweep() == []  # no verdict: not a second miss
    containers.failure = None
    assert await collector.sweep() == []
    sandboxes.fail = True
    assert await collector.sweep() == []  # destroy failed: logged, kept
    sandboxes.fail = False
    assert await collector.sweep() == [("k8s.io", "leak")]


async def test_a_failing_sweep_is_logged_and_the_next_one_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    done = asyncio.Event()

    def candidates() -> list[gc.Candidate]:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("first sweep breaks")
        done.set()
        return []

    async def never(namespace: str, sandbox_id: str) -> None:
        raise AssertionError("collected")

    runner = asyncio.create_task(gc.SandboxCollector(candidates, never).run(0.01))
    await asyncio.wait_for(done.wait(), 10)
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    assert "sandbox sweep failed" in caplog.text
    assert "first sweep breaks" in caplog.text


async def test_period_zero_never_sweeps() -> None:
    def boom() -> list[gc.Candidate]:
        raise AssertionError("swept")

    async def never(namespace: str, sandbox_id: str) -> None:
        raise AssertionError("collected")

    await gc.SandboxCollector(boom, never).run(0)


async def test_the_daemon_collects_reattached_sandboxes_containerd_forgot(
    containerd: tuple[str, Containers], folder: Path
) -> None:
    """The daemon's wiring: its TaskService reattaches two persisted sandboxes (their
    guest agent is gone: reattached as exited); containerd still has pod1 (asked at the
    address its ttrpc address names) and never had "forgotten"; a registration's
    address wins over the persisted one."""
    address, containers = containerd
    store = StateStore(folder / "state")
    for namespace, sandbox_id in (("k8s.io", "pod1"), ("k8s.io", "forgotten")):
        store.save(
            SandboxRecord(
                namespace=namespace,
                id=sandbox_id,
                ttrpc_address=f"{address}.ttrpc",
                config_path=str(folder / "runtime.toml"),
            )
        )
    backend = LocalAgentBackend(folder / "no-agent.sock", call_timeout=2)
    async with running(folder, backend) as daemon:
        registrations = daemon.service.registrations
        await daemon.control.Register(
            node_pb2.RegisterRequest(
                namespace="k8s.io",
                id="pod1",
                ttrpc_address=daemon.events_address,
                grpc_address=address,
            )
        )
        candidates = gc_candidates(daemon.service, registrations)
        assert sorted((c.id, c.address) for c in candidates) == [
            ("forgotten", address),
            ("pod1", address),
        ]
        collector = gc.SandboxCollector(
            lambda: gc_candidates(daemon.service, registrations), daemon.service.collect
        )
        assert await collector.sweep() == []
        assert store.load("k8s.io", "forgotten") is not None
        assert await collector.sweep() == [("k8s.io", "forgotten")]
        assert store.load("k8s.io", "forgotten") is None
        assert daemon.service.pods.pod("k8s.io", "forgotten") is None
        assert store.load("k8s.io", "pod1") is not None
        assert daemon.service.pods.pod("k8s.io", "pod1") is not None
        assert ("k8s.io", "forgotten") in containers.asked
