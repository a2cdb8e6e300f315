"""The node relay: holds containerd's shim connections across a daemon restart.

containerd 1.6 takes a closed shim connection for a dead shim (it runs ``delete`` and
forgets the task), so the sockets containerd dials must not belong to the daemon. The
relay owns them and passes every frame on to the daemon; see :mod:`agent.relay.relay`
and :mod:`agent.relay.link`. Entry ``contrast-node-relay`` (or ``python -m agent.relay``).
"""
