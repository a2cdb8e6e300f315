"""``python3 -m guest.agent``: the guest agent's entry point (run by contrast-init).

In the guest it serves the virtio-serial port (or vsock). ``--listen PATH`` serves a
unix socket instead, for development and the host-level tests; the other options
point it at another runtime, state directory or policy.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from guest.agent import channel
from guest.agent.children import Reaper, become_subreaper
from guest.agent.server import AgentConfig, DeferredAgentService, build_agent, build_server
from guest.init import READY_LINE, power
from guest.securemount.service import SERVICE as SECURE_MOUNT
from guest.securemount.service import PolicyCheckedSecureMount

if TYPE_CHECKING:
    from guest.agent.service import AgentService

log = logging.getLogger("guest.agent")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="guest-agent", description=__doc__)
    defaults = AgentConfig()
    parser.add_argument("--listen", type=Path, help="serve this unix socket (development)")
    parser.add_argument("--runtime", default=defaults.runtime, choices=("crun", "runc"))
    parser.add_argument("--run-dir", type=Path, default=defaults.run_dir)
    parser.add_argument("--policy", type=Path, default=defaults.policy_path)
    parser.add_argument("--registry-config", type=Path, default=defaults.registry_config)
    return parser.parse_args(argv)


async def run(args: argparse.Namespace, before_policy: Callable[[], object] | None = None) -> int:
    """Serve until the ACPI power button is pressed (or, with --listen, SIGTERM).

    The server listens (and Health answers) first; ``before_policy`` (the initdata
    processor, which publishes the policy) and then the AgentService build run on a
    worker thread meanwhile. AgentService requests wait for that build.
    """
    become_subreaper()
    reaper = Reaper()
    reaper.start()
    config = AgentConfig(
        run_dir=args.run_dir,
        runtime=args.runtime,
        policy_path=args.policy,
        registry_config=args.registry_config,
    )

    def build() -> AgentService:
        started = time.monotonic()
        if before_policy is not None:
            before_policy()
        service = build_agent(config, reaper)
        collect_from_now()
        log.info(
            "policy loaded from %s; serving AgentService (built in %.1f ms)",
            config.policy_path,
            1000 * (time.monotonic() - started),
        )
        return service

    deferred = DeferredAgentService()
    server = build_server(deferred)
    # The image store on the pod's encrypted disk (guest.securemount), policy-checked.
    store_root = config.image_store or config.run_dir / "images"
    server.register(SECURE_MOUNT, PolicyCheckedSecureMount(deferred, store_root))
    if args.listen is not None:
        await server.serve_unix(str(args.listen))
        building = deferred.start(build)
        print(f"{READY_LINE} on {args.listen}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
        await (await building).sandbox.destroy()
        await server.close(timeout=2.0)
        return 0
    port = await channel.wait_for_port()
    if port is not None:
        serving = asyncio.create_task(channel.serve_port(server, port))
        where = str(port)
    else:
        serving = asyncio.create_task(channel.serve_vsock(server))
        where = f"vsock port {channel.VSOCK_PORT}"
    building = deferred.start(build)
    stop_task = asyncio.create_task(power.wait_for_power_button())
    # The host waits for this line on the console before it calls Health/Check. The
    # clocks tell the boot's parts apart (bench/vm_boot_bench.py reads them).
    print(f"{READY_LINE} on {where} {boot_clocks()}", flush=True)
    waiting: set[asyncio.Future[Any]] = {serving, stop_task, building}
    preparing: asyncio.Task[None] | None = None
    while True:
        done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if serving in done:
            serving.result()  # re-raises why serving ended
            return 1
        if building in done:
            # A failed build ends the agent (and powers the VM off). A built one sets up
            # the image puller (imports, hundreds of ms under TCG) once the first
            # AgentService call is answered: started at once, its thread held up that
            # answer (the GIL); after it, it overlaps the host's work before the first
            # pull, which would start it itself.
            preparing = asyncio.create_task(
                prepare_after_first_answer(deferred, building.result())
            )
        if stop_task in done:
            break
    log.info("power button pressed: shutting down")
    if preparing is not None:
        preparing.cancel()
    serving.cancel()
    await (await building).sandbox.destroy()
    await server.close(timeout=2.0)
    return 0


async def prepare_after_first_answer(deferred: DeferredAgentService, service: AgentService) -> None:
    """Start setting up the image puller once the first AgentService call is answered."""
    await deferred.answered.wait()
    service.sandbox.rootfs.prepare()


def collect_from_now() -> None:
    """Turn the cyclic garbage collector back on if the guest's entry turned it off.

    contrast-init starts the agent with the collector off (``gc.disable()`` before the
    first import): the start-up's imports, initdata and policy build allocate many
    objects and no cyclic garbage to speak of, and its collections were about a tenth
    of the import time (130 -> 115 ms for the agent's imports here, natively; under
    TCG ten times that). What the start-up built stays for the agent's life, so it is
    frozen out of later collections (``gc.freeze``) and the collector runs as usual
    from here on. A process started with the collector on is left as it is.
    """
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def boot_clocks() -> str:
    """``(boot clock N s, interpreter started at M s)``: the guest's clock since boot
    now, and when this process was started (the kernel and init before it)."""
    now = time.clock_gettime(time.CLOCK_BOOTTIME)
    # Field 22 of /proc/self/stat, after the parenthesised command name.
    fields = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return f"(boot clock {now:.2f} s, interpreter started at {started:.2f} s)"


def main(argv: list[str] | None = None, before_policy: Callable[[], object] | None = None) -> int:
    """Run the agent; ``before_policy`` runs before the policy is read (see run)."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="contrast-guest-agent: %(message)s"
    )
    return asyncio.run(run(parse(argv), before_policy))


if __name__ == "__main__":
    sys.exit(main())
