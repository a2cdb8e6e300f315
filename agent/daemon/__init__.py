"""The node daemon: serves the containerd shim API for every pod of the node.

Entry ``contrast-node-daemon`` (or ``python -m agent.daemon``); see :mod:`agent.daemon.main`.
"""
