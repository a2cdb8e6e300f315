"""Task events forwarded to containerd (``containerd.services.events.ttrpc.v1.Events/Forward``)."""

from agent.events.envelope import TOPICS, envelope, pack
from agent.events.forwarder import EventForwarder, ForwardError

__all__ = ["TOPICS", "EventForwarder", "ForwardError", "envelope", "pack"]
