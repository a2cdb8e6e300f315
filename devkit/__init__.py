"""Development kit: real helper services for the demo and the integration tests.

Everything here runs real programs in temporary roots and on loopback or network
namespaces it creates itself: a docker-registry (``registry``), OCI images built in
Python (``ocibuild``, ``busybox``), containerd in a temporary root (``containerd``), a
bridge-CNI-shaped pod network (``topology``, ``forward``) and a node daemon's
environment (``node``). The product never imports it; ``agent.demo`` and ``tests/`` do.
"""
