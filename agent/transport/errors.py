"""Errors of the host-guest transport."""


class AgentTransportError(Exception):
    """Root of the transport's errors: the guest agent could not be reached."""
