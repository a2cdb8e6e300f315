"""The main job: a confidential pod end to end on an embedded default.

Run by ``scripts/dev.sh demo`` (``python -m agent.demo``), as root on one machine. In a
temporary root it creates and removes, it builds (or reuses) the guest image, serves a
busybox image it builds itself from a local docker-registry, installs the runtime with
the installer's own code into the node's containerd config (Debian's containerd 1.6,
or with ``--containerd 2.0.11|2.3.4`` a release from ``../shared/peers``, each on its
own ``containerd config default``), starts containerd on private sockets, and runs one
pod through containerd's CRI, as a kubelet would, into a pod-VM whose policy allows
exactly that image digest and command. Without
SEV-SNP/TDX here the platform is ``qemu-insecure`` and the demo says so.
"""
