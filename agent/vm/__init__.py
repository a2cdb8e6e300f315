"""The pod-VM manager: typed QEMU configuration, argument list, QMP control, supervision."""
