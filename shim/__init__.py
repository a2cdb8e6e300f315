"""The containerd shim v2 surface of the node daemon.

- :mod:`shim.task`: the ``containerd.task.v2.Task`` service (also served as ``v3``)
  on top of :mod:`agent.sandbox` (registry, state, backends), :mod:`agent.stdio` and
  :mod:`agent.events`;
- :mod:`shim.control`: the private ``contrast.node.v1.Shim`` service the shim entry
  uses (Register at ``start``, Cleanup at ``delete``);
- :mod:`shim.main`: ``containerd-shim-contrast-cc-v2``, the executable containerd runs.
"""
