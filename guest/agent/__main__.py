"""``python3 -m guest.agent``: the guest agent's entry point (run by contrast-init)."""

from __future__ import annotations

import asyncio
import logging
import sys

from guest.agent import channel
from guest.agent.server import build_server
from guest.init import READY_LINE, power

log = logging.getLogger("guest.agent")


async def run() -> int:
    """Serve until the ACPI power button is pressed; the exit then powers the VM off."""
    server = build_server()
    port = await channel.wait_for_port()
    if port is not None:
        serving = asyncio.create_task(channel.serve_port(server, port))
        where = str(port)
    else:
        serving = asyncio.create_task(channel.serve_vsock(server))
        where = f"vsock port {channel.VSOCK_PORT}"
    stop = asyncio.create_task(power.wait_for_power_button())
    # The host waits for this exact line on the console before it calls Health/Check.
    print(f"{READY_LINE} on {where}", flush=True)
    done, _ = await asyncio.wait({serving, stop}, return_when=asyncio.FIRST_COMPLETED)
    if serving in done:
        serving.result()  # re-raises why serving ended
        return 1
    log.info("power button pressed: shutting down")
    serving.cancel()
    await server.close(timeout=2.0)
    return 0


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="contrast-guest-agent: %(message)s"
    )
    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
