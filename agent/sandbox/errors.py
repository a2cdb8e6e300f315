"""Errors of the sandbox layer. Everything it raises is a SandboxError."""

from __future__ import annotations


class SandboxError(Exception):
    """Root of the sandbox layer's errors."""


class RuntimeConfigError(SandboxError):
    """The runtime configuration file is missing or invalid; names the file and the key."""


class AnnotationError(SandboxError):
    """A pod annotation is not allowed or its value is invalid; names the annotation."""


class StateError(SandboxError):
    """Persisted sandbox state could not be written or read back."""


class UnknownTaskError(SandboxError):
    """No task (container or exec) of that id in that namespace."""


class TaskStateError(SandboxError):
    """The task is not in a state that allows the request (e.g. start twice)."""


class BackendError(SandboxError):
    """The pod-VM or the guest agent failed a request; carries the cause."""


class GuestAgentError(BackendError):
    """The guest agent answered a request with an error status (``code``: its ttrpc code)."""

    def __init__(self, rpc: str, code: int, message: str) -> None:
        self.rpc = rpc
        self.code = code
        self.agent_message = message
        super().__init__(f"guest agent {rpc}: {message}")


class ImageRefError(SandboxError):
    """A container's image reference cannot be pinned by digest; names the reference."""


class UnsupportedPodError(SandboxError):
    """The pod asks for something a pod-VM cannot give (a host namespace); names it."""
