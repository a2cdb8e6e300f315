"""What a handler learns about its call, and the metadata carried with requests."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from ttrpc.proto.ttrpc_pb2 import KeyValue
from ttrpc.transport import PeerCredentials

Metadata = Mapping[str, tuple[str, ...]]
"""Request metadata: each key with its values in the order they were sent."""

MetadataArg = Mapping[str, str | Sequence[str]]
"""Metadata as callers pass it: a key maps to one value or a sequence of values."""

EMPTY_METADATA: Metadata = MappingProxyType({})


def metadata_from_pairs(pairs: Sequence[KeyValue]) -> Metadata:
    """Group the repeated KeyValue entries of a request by key."""
    if not pairs:
        return EMPTY_METADATA
    grouped: dict[str, tuple[str, ...]] = {}
    for pair in pairs:
        grouped[pair.key] = (*grouped.get(pair.key, ()), pair.value)
    return MappingProxyType(grouped)


def metadata_to_pairs(metadata: MetadataArg) -> list[KeyValue]:
    """The KeyValue entries for ``metadata``, one per value; keys lowercased as Go's MD.Set does."""
    pairs: list[KeyValue] = []
    for name, values in metadata.items():
        key = name.lower()
        if isinstance(values, str):
            pairs.append(KeyValue(key=key, value=values))
        else:
            pairs.extend(KeyValue(key=key, value=value) for value in values)
    return pairs


class CallContext:
    """Handed to every handler together with its request.

    ``deadline`` is on the event loop's clock (``loop.time()``), None without a
    timeout; the server cancels the handler when it passes. ``peer`` is set on unix
    socket connections. (A plain slotted class: one is built per call, and a frozen
    dataclass costs several times more to construct.)
    """

    __slots__ = ("deadline", "metadata", "method", "peer", "service", "stream_id")

    def __init__(
        self,
        service: str,
        method: str,
        metadata: Metadata = EMPTY_METADATA,
        *,
        deadline: float | None = None,
        peer: PeerCredentials | None = None,
        stream_id: int = 0,
    ) -> None:
        self.service = service
        self.method = method
        self.metadata = metadata
        self.deadline = deadline
        self.peer = peer
        self.stream_id = stream_id

    def __repr__(self) -> str:
        return (
            f"CallContext({self.service}/{self.method}, stream {self.stream_id}, "
            f"metadata={dict(self.metadata)!r}, deadline={self.deadline!r}, peer={self.peer!r})"
        )

    def get(self, key: str) -> str | None:
        """The first value sent for ``key`` (e.g. ``containerd-namespace-ttrpc``), or None.

        Like Go's ``MD.Get``, the key is looked up in lower case.
        """
        values = self.metadata.get(key.lower())
        return values[0] if values else None

    def remaining(self) -> float | None:
        """Seconds left before the deadline (negative once passed), None without one."""
        if self.deadline is None:
            return None
        return self.deadline - asyncio.get_running_loop().time()
