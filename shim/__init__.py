"""The containerd shim v2 surface (containerd-shim-contrast-cc-v2) on top of agent/."""
