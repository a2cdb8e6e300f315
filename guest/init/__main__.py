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


def import_asyncio_without_tls() -> None:
    """Import asyncio with its TLS support off, then let ``ssl`` be imported as usual.

    asyncio imports ``ssl`` for its TLS transports, which nothing in the guest uses
    (the agent serves ttrpc in the clear over virtio-serial or vsock; the image
    puller's HTTPS is urllib's, on threads, and imports ``ssl`` itself when it sets
    up). ``ssl`` builds its enums from ``_ssl`` and loads libssl: 0.23 s of the
    agent's start under TCG. While asyncio is first imported, ``ssl`` is marked
    missing (asyncio then leaves TLS off, as on a Python built without it); the
    mark is removed afterwards. Does nothing when asyncio or ssl is loaded already.
    """
    if "asyncio" in sys.modules or "ssl" in sys.modules:
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]  # "import ssl" raises ImportError
    try:
        import asyncio  # noqa: F401
    finally:
        del sys.modules["ssl"]


def main() -> int:
    import_asyncio_without_tls()
    from guest.agent.__main__ import main as agent_main

    if importlib.util.find_spec("guest.initdata.cli") is not None:
        return agent_main([], before_policy=process_initdata)
    return agent_main([])


if __name__ == "__main__":
    sys.exit(main())
