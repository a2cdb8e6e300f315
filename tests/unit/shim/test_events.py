"""Event envelopes as Go shims write them, forwarded in order."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from agent.events import EventForwarder, ForwardError, envelope, pack
from api.containerd.events import task_pb2
from tests.unit.shim.sinks import event_sink


def test_type_url_is_the_bare_full_name() -> None:
    packed = pack(task_pb2.TaskExit(container_id="c", exit_status=3))
    assert packed.type_url == "containerd.events.TaskExit"
    assert task_pb2.TaskExit.FromString(packed.value).exit_status == 3


def test_envelope_topic_namespace_and_time() -> None:
    item = envelope("k8s.io", task_pb2.TaskStart(container_id="c", pid=9), at_ns=1_500_000_000)
    assert (item.topic, item.namespace) == ("/tasks/start", "k8s.io")
    assert (item.timestamp.seconds, item.timestamp.nanos) == (1, 500_000_000)
    assert envelope("n", task_pb2.TaskExecAdded()).topic == "/tasks/exec-added"


async def test_events_arrive_in_publish_order(sockets: Path) -> None:
    address = str(sockets / "containerd.sock.ttrpc")
    forwarder = EventForwarder()
    async with event_sink(Path(address)) as sink:
        lifecycle = [
            task_pb2.TaskCreate(container_id="c", pid=1),
            task_pb2.TaskStart(container_id="c", pid=1),
            task_pb2.TaskExit(container_id="c", id="c", exit_status=0),
            task_pb2.TaskDelete(container_id="c"),
        ]
        for round_ in range(25):
            for event in lifecycle:
                forwarder.publish("unix://" + address, f"ns{round_ % 2}", event)
        received = await sink.wait_for(100)
        await forwarder.close()
    assert sink.topics() == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"] * 25
    assert [e.namespace for e in received[:8]] == ["ns0"] * 4 + ["ns1"] * 4


async def test_containerd_coming_up_late_still_gets_the_event(sockets: Path) -> None:
    address = sockets / "late.ttrpc"
    forwarder = EventForwarder(retry_seconds=10)
    forwarder.publish(str(address), "default", task_pb2.TaskOOM(container_id="c"))
    await asyncio.sleep(0.3)  # a few failed attempts
    async with event_sink(address) as sink:
        received = await sink.wait_for(1)
        await forwarder.close()
    assert received[0].topic == "/tasks/oom"


async def test_undeliverable_event_is_dropped_with_a_log_line(
    sockets: Path, caplog: pytest.LogCaptureFixture
) -> None:
    forwarder = EventForwarder(retry_seconds=0.2)
    with caplog.at_level(logging.ERROR):
        forwarder.publish(
            str(sockets / "nobody.ttrpc"), "default", task_pb2.TaskStart(container_id="c")
        )
        await asyncio.wait_for(forwarder.flush(), 5)
    await forwarder.close()
    assert "event /tasks/start (namespace default)" in caplog.text and "dropped" in caplog.text


def test_publish_refuses_what_it_cannot_route() -> None:
    forwarder = EventForwarder()
    with pytest.raises(ForwardError, match="no containerd address"):
        forwarder.publish("", "default", task_pb2.TaskStart())
    with pytest.raises(ForwardError, match="not a task event"):
        forwarder.publish("/x", "default", task_pb2.TaskIO())
