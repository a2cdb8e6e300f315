"""The main job: a confidential pod end to end on an embedded default.

Run by ``scripts/dev.sh demo``. Until the pod path (shim, daemon, pod-VM, guest agent)
exists, it says so and which pieces are missing, instead of pretending.
"""

from __future__ import annotations

import importlib.util
import sys

# The modules the end-to-end pod path needs, in the order they are built.
REQUIRED = {
    "ttrpc.server": "ttrpc server (foundation)",
    "agent.vm.manager": "pod-VM manager (issue: the pod-VM)",
    "guest.agent.server": "guest agent (issue: guest agent)",
    "agent.network.pod": "pod networking (issue: networking)",
    "shim.main": "containerd shim entry (issue: shim and daemon)",
    "agent.daemon.main": "node daemon (issue: shim and daemon)",
}


def missing_components() -> list[str]:
    """The pieces of the pod path that are not in this checkout yet."""
    return [what for module, what in REQUIRED.items() if not _present(module)]


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing too
        return False


def main() -> int:
    missing = missing_components()
    if missing:
        print(
            "contrast demo: not ready yet: the end-to-end pod path needs " + ", ".join(missing),
            file=sys.stderr,
        )
        return 3
    raise NotImplementedError("the end-to-end demo pod is built with the shim and daemon issue")


if __name__ == "__main__":
    sys.exit(main())
