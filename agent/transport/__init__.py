"""Host <-> guest transport for the agent's ttrpc: vsock where vhost-vsock exists,
else a virtio-serial port whose host end is a unix socket QEMU listens on."""
