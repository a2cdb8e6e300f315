"""Pod networking: the pod-VM joins the pod's network namespace.

CNI sets up the pod's netns on the host (a veth ``eth0`` with the pod's IP). In that
netns we create a tap for QEMU and mirror traffic between ``eth0`` and the tap with tc
(ingress qdisc + mirred egress redirect, both ways), so the VM's virtio-net device,
carrying ``eth0``'s MAC, appears on the pod network with the pod's address. The
netns's addresses, routes and neighbours are read and converted into the Kata agent's
``types.Interface``/``types.Route``/``types.ARPNeighbor`` messages for the guest.

How the node daemon uses it (sandbox creation, then removal)::

    result = await pod.setup(spec.netns, sandbox_id)        # None: no netns, no NIC
    if result:
        network, tap_fd = result
        config = dataclasses.replace(config, net=network.nic())
    vm = await VM.launch(config, tap_fd=tap_fd)              # then os.close(tap_fd)
    await vm.wait_ready(...)
    await guest.configure_guest(agent_stub, network, sandbox_id)   # before CreateSandbox
    ...
    await vm.stop(); await pod.teardown(network, sandbox_id)
    # after a daemon restart, from the state file: pod.teardown_netns(netns_path, sandbox_id)

The tap is not persistent: if QEMU dies, it disappears with QEMU's fd; only the
ingress qdisc on eth0 remains until teardown.

Modules: :mod:`.netns` (run code inside a netns on a short-lived thread), :mod:`.tap`
(the tap fd), :mod:`.mirror` (tc), :mod:`.read` (netlink state as typed records),
:mod:`.convert` (records to agent messages), :mod:`.pod` (setup and teardown).
"""
