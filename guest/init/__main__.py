"""``python3 -m guest.init``: the guest services in boot order, in one interpreter.

First the initdata processor (when this image has one), then the guest agent. One
Python process instead of one per service: under TCG each interpreter start with
its imports costs seconds of boot.
"""

from __future__ import annotations

import importlib.util
import sys


def main() -> int:
    if importlib.util.find_spec("guest.initdata.cli") is not None:
        from guest.initdata.cli import main as initdata_main

        status = initdata_main(["process"])
        if status != 0:
            # It published a deny-all policy with the reason; the agent still starts
            # so that every request can answer with that reason.
            print(f"contrast-init: initdata processor exited with {status}", flush=True)
    from guest.agent.__main__ import main as agent_main

    return agent_main()


if __name__ == "__main__":
    sys.exit(main())
