"""The main job: a confidential pod end to end on an embedded default.

Run by ``scripts/dev.sh demo`` (``python -m agent.demo``), as root on one machine. In a
temporary root it creates and removes, it builds (or reuses) the guest image, serves a
busybox image it builds itself from a local docker-registry, installs the runtime with
the installer's own code into a containerd 1.6 config, starts containerd on private
sockets, and runs one pod through ``ctr run --runtime io.containerd.contrast-cc.v2``
into a pod-VM whose policy allows exactly that image digest and command. Without
SEV-SNP/TDX here the platform is ``qemu-insecure`` and the demo says so.
"""
