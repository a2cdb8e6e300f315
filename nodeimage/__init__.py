"""The node image (installer, daemon with QEMU, guest image) built here, with no registry."""
