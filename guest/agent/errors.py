"""The guest agent's exceptions: one root, translated to ttrpc statuses in service.py."""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""


class PolicyError(AgentError):
    """A policy that does not compile or evaluate, or a state update that fails."""


class InvalidRequest(AgentError):
    """The request names something malformed (answered INVALID_ARGUMENT)."""


class NotFound(AgentError):
    """No such container or process (answered NOT_FOUND)."""


class AlreadyExists(AgentError):
    """The container or process id is taken (answered ALREADY_EXISTS)."""


class FailedPrecondition(AgentError):
    """The object is in the wrong state for the request (answered FAILED_PRECONDITION)."""


class CommandError(AgentError):
    """An external program (crun, runc) failed; carries its command line and output."""

    def __init__(self, args: list[str], status: int | None, output: str) -> None:
        self.args_list = args
        self.status = status
        self.output = output
        how = "timed out" if status is None else f"exited with status {status}"
        tail = output.strip()[-2000:]
        super().__init__(f"{' '.join(args)} {how}" + (f": {tail}" if tail else ""))
