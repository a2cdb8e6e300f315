"""``python3 -m guest.init``: the guest services in boot order, in one interpreter.

The initdata processor (when this image has one) publishes the policy, then the guest
agent loads it. One Python process instead of one per service: under TCG each
interpreter start with its imports costs seconds of boot. The agent listens and
answers Health first and runs the processor on a worker thread before it reads the
policy; its AgentService requests wait for both.
"""

from __future__ import annotations

import importlib.util
import sys


def process_initdata() -> None:
    """The initdata processor's boot entry; a refusal has published a deny-all policy."""
    from guest.initdata.cli import main as initdata_main

    status = initdata_main(["process"])
    if status != 0:
        # It published a deny-all policy with the reason; the agent still serves so
        # that every request can answer with that reason.
        print(f"contrast-init: initdata processor exited with {status}", flush=True)


def main() -> int:
    from guest.agent.__main__ import main as agent_main

    if importlib.util.find_spec("guest.initdata.cli") is not None:
        return agent_main([], before_policy=process_initdata)
    return agent_main([])


if __name__ == "__main__":
    sys.exit(main())
