"""The node daemon: sandboxes, pod-VMs over QMP, host-guest transport, pod networking."""
