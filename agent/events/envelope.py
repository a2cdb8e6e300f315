"""Wrapping a task event the way containerd's own shims do.

Go shims marshal events with ``typeurl.MarshalAny``, which names a gogo-registered
message by its bare full name (``containerd.events.TaskExit``), not with the
``type.googleapis.com/`` prefix protobuf's ``Any.Pack`` would add. containerd 1.6
looks the type up by that URL when it decodes an event (``ctr events``, the CRI
plugin's event handler), so we write the same.
"""

from __future__ import annotations

import time

from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.message import Message

from api.containerd.events import task_pb2
from api.containerd.services.events.ttrpc.v1 import events_pb2

TOPICS: dict[type[Message], str] = {
    task_pb2.TaskCreate: "/tasks/create",
    task_pb2.TaskStart: "/tasks/start",
    task_pb2.TaskExit: "/tasks/exit",
    task_pb2.TaskDelete: "/tasks/delete",
    task_pb2.TaskOOM: "/tasks/oom",
    task_pb2.TaskExecAdded: "/tasks/exec-added",
    task_pb2.TaskExecStarted: "/tasks/exec-started",
    task_pb2.TaskPaused: "/tasks/paused",
    task_pb2.TaskResumed: "/tasks/resumed",
    task_pb2.TaskCheckpointed: "/tasks/checkpointed",
}


def pack(event: Message) -> any_pb2.Any:
    """``event`` in an Any whose type URL is its bare full name (as Go's typeurl writes)."""
    return any_pb2.Any(type_url=event.DESCRIPTOR.full_name, value=event.SerializeToString())


def timestamp(ns: int | None = None) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp for ``ns`` nanoseconds since the epoch (default: now)."""
    value = time.time_ns() if ns is None else ns
    return timestamp_pb2.Timestamp(seconds=value // 1_000_000_000, nanos=value % 1_000_000_000)


def envelope(namespace: str, event: Message, at_ns: int | None = None) -> events_pb2.Envelope:
    """The envelope for ``event``; raises KeyError for a message that is no task event."""
    return events_pb2.Envelope(
        timestamp=timestamp(at_ns),
        namespace=namespace,
        topic=TOPICS[type(event)],
        event=pack(event),
    )
