"""Sandboxes of the node daemon: runtime configuration, the annotation allow-list,
the registry of pods and their containers, its persisted state, and the seam
(:class:`~agent.sandbox.backend.SandboxBackend`) to the pod-VM and guest agent."""

from agent.sandbox.errors import (
    AnnotationError,
    RuntimeConfigError,
    SandboxError,
    StateError,
    UnknownTaskError,
)

__all__ = [
    "AnnotationError",
    "RuntimeConfigError",
    "SandboxError",
    "StateError",
    "UnknownTaskError",
]
