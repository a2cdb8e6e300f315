"""An asyncio implementation of the ttrpc protocol (containerd/ttrpc PROTOCOL.md)."""
