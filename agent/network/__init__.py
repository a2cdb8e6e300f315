"""Pod networking: the pod-VM joins the pod's network namespace.

CNI sets up the pod's netns on the host (a veth ``eth0`` with the pod's IP). In that
netns we create a tap for QEMU and mirror traffic between ``eth0`` and the tap with tc
(ingress qdisc + mirred egress redirect, both ways), so the VM's virtio-net device,
carrying ``eth0``'s MAC, appears on the pod network with the pod's address. The
netns's addresses, routes and neighbours are read and converted into the Kata agent's
``types.Interface``/``types.Route``/``types.ARPNeighbor`` messages for the guest.

Modules: :mod:`.netns` (run code inside a netns on a short-lived thread), :mod:`.tap`
(the tap fd), :mod:`.mirror` (tc), :mod:`.read` (netlink state as typed records),
:mod:`.convert` (records to agent messages), :mod:`.pod` (setup and teardown).
"""
