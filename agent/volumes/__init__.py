"""Every mount the kubelet (through containerd's CRI) hands a container, provided inside
the pod-VM or refused with a message naming it; never silently dropped.

- :mod:`agent.volumes.layout`: what a bind mount is, from the kubelet's on-disk layout
  (``<kubelet root>/pods/<uid>/...``) and its destination;
- :mod:`agent.volumes.tree`: a host file or directory read into CopyFile requests,
  within a size cap;
- :mod:`agent.volumes.provider`: what one mount becomes in the guest: its content
  copied in with CopyFile (an atomic-writer volume one ``..data`` version at a time),
  or an emptyDir's storage;
- :mod:`agent.volumes.pod`: one pod's volumes: copies at container creation, kept
  current when the kubelet swaps ``..data``, the termination message back after exit.

``shim/README.md`` ("Volumes") documents each kind and what happens to it.
"""
