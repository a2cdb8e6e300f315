"""The guest agent: the Kata agent protocol (grpc.AgentService, grpc.Health) over ttrpc.

Every AgentService request is checked by the Rego policy (``policy``), then served:
the sandbox and its containers (``sandbox``, ``containers``, run by crun through
``runtime``), processes' stdio (``stdio``), exit codes via the one reaper
(``children``), cgroup statistics and OOM kills (``cgroups``), the spec adapted to the
guest (``spec``), networking (``netconfig``). ``service`` is the ttrpc boundary.
"""

VERSION = "0.2.0"
