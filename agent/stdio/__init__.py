"""Bridging the FIFOs containerd hands a task to the guest agent's stdio calls."""

from agent.stdio.bridge import ProcessIO, StdioBridge
from agent.stdio.fifo import FifoError

__all__ = ["FifoError", "ProcessIO", "StdioBridge"]
