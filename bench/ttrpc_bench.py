"""Unary ttrpc round trips: our server next to the Go runc shim, through the same client.

Both serve ``containerd.task.v2.Task/Connect`` on a unix socket; our asyncio client calls
each at 1 and 16 concurrent callers. Prints calls/s, p50 and p99 latency, and the ratio of
our throughput to Go's. Targets (issue 2): ratio >= 0.8, our p99 < 1 ms at one caller.
A third figure is our server reached through the node relay (``agent.relay``, its own
process), as containerd reaches the daemon: what the relay adds per call.

    .venv/bin/python -m bench.ttrpc_bench [--calls 20000]

Our server runs in a separate process so that server and client do not share one event
loop (the Go shim has its own process too).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ttrpc
from agent.daemon.settings import Settings
from agent.relay.relay import Relay
from api.containerd.task.v2 import shim_pb2
from tests.support.runc_shim import run_runc_shim

TASK = shim_pb2.DESCRIPTOR.services_by_name["Task"]


class ConnectOnly:
    """The smallest Task service: Connect answers our pid, like the Go shim's."""

    async def Connect(
        self, request: shim_pb2.ConnectRequest, ctx: ttrpc.CallContext
    ) -> shim_pb2.ConnectResponse:
        return shim_pb2.ConnectResponse(shim_pid=os.getpid(), task_pid=0)


def _serve(path: str, ready: multiprocessing.synchronize.Event) -> None:
    async def main() -> None:
        server = ttrpc.Server()
        server.register(TASK, ConnectOnly())
        await server.serve_unix(path)
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def _relay(run_dir: str, ready: multiprocessing.synchronize.Event) -> None:
    """The relay in front of ``<run_dir>/daemon-ns/default.sock`` (our server)."""

    async def main() -> None:
        folder = Path(run_dir)
        relay = Relay(Settings(folder, folder / "state", "pod-vm", None, supervised=True))
        await relay.start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


@dataclass(frozen=True)
class Figures:
    calls_per_s: float
    p50_ms: float
    p99_ms: float


async def measure(path: Path, callers: int, calls: int) -> Figures:
    async with await ttrpc.Client.connect_unix(path) as client:
        request = shim_pb2.ConnectRequest(id="bench")
        latencies: list[float] = []

        async def caller(n: int) -> None:
            for _ in range(n):
                start = time.perf_counter()
                await client.call(TASK.full_name, "Connect", request, shim_pb2.ConnectResponse)
                latencies.append(time.perf_counter() - start)

        for _ in range(200):  # warm-up
            await client.call(TASK.full_name, "Connect", request, shim_pb2.ConnectResponse)
        per_caller = calls // callers
        start = time.perf_counter()
        await asyncio.gather(*(caller(per_caller) for _ in range(callers)))
        elapsed = time.perf_counter() - start
    cuts = statistics.quantiles(latencies, n=100)
    return Figures(len(latencies) / elapsed, cuts[49] * 1e3, cuts[98] * 1e3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "daemon-ns").mkdir()
        ours_path = Path(tmp) / "daemon-ns" / "default.sock"
        relayed_path = Path(tmp) / "ns" / "default.sock"
        ready = multiprocessing.Event()
        server = multiprocessing.Process(target=_serve, args=(str(ours_path), ready), daemon=True)
        server.start()
        relay_ready = multiprocessing.Event()
        relay = multiprocessing.Process(target=_relay, args=(tmp, relay_ready), daemon=True)
        try:
            if not ready.wait(10):
                print("our server did not start", file=sys.stderr)
                return 1
            relay.start()
            if not relay_ready.wait(10):
                print("the relay did not start", file=sys.stderr)
                return 1
            with run_runc_shim(Path(tmp) / "go") as go_shim:
                rows = []
                for callers in (1, 16):
                    # Alternate them, so machine noise hits all alike.
                    go = asyncio.run(measure(go_shim.socket_path, callers, opts.calls))
                    ours = asyncio.run(measure(ours_path, callers, opts.calls))
                    relayed = asyncio.run(measure(relayed_path, callers, opts.calls))
                    rows.append((callers, ours, go, relayed))
        finally:
            server.kill()
            if relay.is_alive():
                relay.kill()
    print(f"ttrpc unary Connect round trips, {opts.calls} calls per row, same Python client")
    print(
        f"{'callers':>7} | {'ours calls/s':>12} {'p50 ms':>7} {'p99 ms':>7} | "
        f"{'Go calls/s':>10} {'p50 ms':>7} {'p99 ms':>7} | {'ratio':>5} | "
        f"{'via relay/s':>11} {'p50 ms':>7} {'p99 ms':>7}"
    )
    for callers, ours, go, relayed in rows:
        print(
            f"{callers:>7} | {ours.calls_per_s:>12.0f} {ours.p50_ms:>7.3f} {ours.p99_ms:>7.3f} | "
            f"{go.calls_per_s:>10.0f} {go.p50_ms:>7.3f} {go.p99_ms:>7.3f} | "
            f"{ours.calls_per_s / go.calls_per_s:>5.2f} | "
            f"{relayed.calls_per_s:>11.0f} {relayed.p50_ms:>7.3f} {relayed.p99_ms:>7.3f}"
        )
    for callers, ours, _, relayed in rows:
        print(
            f"the relay adds {relayed.p50_ms - ours.p50_ms:.3f} ms at p50 with {callers} "
            f"caller(s) (containerd's calls to the daemon all take this path)"
        )
    print("targets: ratio >= 0.80 at each row; our p99 < 1 ms at 1 caller")
    return 0


if __name__ == "__main__":
    sys.exit(main())
