"""The node installer: runtime assets and the containerd runtime handler."""
