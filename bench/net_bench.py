"""Pod network throughput: a container in the pod-VM next to the bare pod netns, same run.

Topology as in tests/integration/network (node bridge, pod netns with eth0, a peer
namespace), in namespaces this script creates and deletes. The same transfer (busybox
``dd if=/dev/zero | nc``, N MiB to a sink in the peer namespace) runs:

1. from the bare pod netns (baseline: no tap, no VM);
2. through our host datapath without QEMU: eth0 <-tc mirred-> tap <-user-space relay->
   a tap in a "guest" netns configured by guest.agent.netconfig;
3. from a container in the pod-VM (TCG), its image pulled by the guest over the pod
   network; plus sequential MTU-sized ICMP echoes peer -> pod address, VM vs bare.

    .venv/bin/python -m bench.net_bench [--mib N] [--pings N] [--no-vm]
    (from the repo root: it reuses the topology and fixtures of tests/integration/network)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.network import netns, pod
from agent.network.guest import configure_guest
from agent.network.tap import open_tap
from agent.transport.client import AgentClient
from agent.transport.connect import connect
from api.kata import agent_pb2
from devkit.forward import Forward
from devkit.registry import Registry
from devkit.topology import (
    MTU,
    PEER_IP,
    POD_IP,
    POD_MAC,
    Topology,
    add_netns,
    delete_netns,
    in_ns,
    ip,
    pod_topology,
)
from guest.agent import netconfig
from guest.image.build import ensure_image
from tests.integration.guestagent import requests as rq
from tests.integration.network.relay import Relay, ping_argv
from tests.integration.network.test_vm import POLICY, pod_vm
from tests.integration.network.test_vm_workload import REGISTRY_PORT, busybox_image

SINK = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print("listening", flush=True)
s.settimeout(600)
c, _ = s.accept(); c.settimeout(600); total = 0; start = None
while data := c.recv(1 << 16):
    start = start or time.monotonic(); total += len(data)
print(total, time.monotonic() - start, flush=True)
"""
SINK_PORT = 5201
CALL = 180.0  # seconds per agent call (an image pull under TCG is the slowest)


def pipeline(mib: int, busybox: str = "") -> str:
    """The sender's shell pipeline; on the host the applets are named through busybox."""
    return (f"{busybox}dd if=/dev/zero bs=65536 count={mib * 16} 2>/dev/null "
            f"| {busybox}nc {PEER_IP} {SINK_PORT}")  # fmt: skip


class Sink:
    """The receiving end in the peer namespace; ``result()`` is MiB/s from first byte."""

    def __init__(self, ns: str) -> None:
        self._proc = subprocess.Popen(
            in_ns(ns, [sys.executable, "-c", SINK, PEER_IP, str(SINK_PORT)]),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self._proc.stdout is not None
        if self._proc.stdout.readline() != "listening\n":
            raise SystemExit("TCP sink did not start")

    def result(self, expected_mib: int) -> float:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the sink saw no complete transfer (sender failed or timed out)")
        total, seconds = line.split()
        self._proc.wait(30)
        if int(total) != expected_mib << 20:
            raise RuntimeError(f"sink got {total} bytes, expected {expected_mib} MiB")
        return int(total) / (1 << 20) / float(seconds)

    def close(self) -> None:
        self._proc.kill()
        self._proc.wait()


def host_transfer(src_ns: str, dst_ns: str, mib: int) -> float:
    sink = Sink(dst_ns)
    try:
        argv = in_ns(src_ns, ["busybox", "sh", "-c", pipeline(mib, "busybox ")])
        subprocess.run(argv, check=True, timeout=900, stdin=subprocess.DEVNULL)
        return sink.result(mib)
    finally:
        sink.close()


def echo_mib_s(src_ns: str, dst_ip: str, count: int) -> float:
    size = MTU - 28  # IPv4 + ICMP headers: every echo fills the MTU
    start = time.monotonic()
    result = subprocess.run(
        in_ns(src_ns, ping_argv(dst_ip, count, size)),
        capture_output=True, text=True, timeout=900, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    elapsed = time.monotonic() - start
    if result.stdout.strip() != str(count):
        raise RuntimeError(f"echo to {dst_ip}: {result.stdout.strip()} of {count} replies "
                           f"{result.stderr}")  # fmt: skip
    return 2 * count * MTU / (1 << 20) / elapsed


def line(what: str, ours: float, base: float) -> None:
    print(f"{what:<48} {ours:9.2f} MiB/s   baseline {base:9.2f} MiB/s   ratio {ours / base:6.3f}")


async def relay_path(topo: Topology, mib: int) -> float:
    guest = topo.pod.replace("cpod", "cguest")
    add_netns(guest)
    result = await pod.setup(topo.path(topo.pod), "bench-relay")
    assert result is not None
    network, pod_fd = result
    guest_fd = netns.run(topo.path(guest), lambda: open_tap("ens3"))
    try:
        ip("-n", guest, "link", "set", "ens3", "address", POD_MAC)
        with Relay(pod_fd, guest_fd):
            gpath = topo.path(guest)
            netns.run(gpath, lambda: netconfig.update_interface(network.interfaces[0]))
            netns.run(gpath, lambda: netconfig.update_routes(network.routes))
            return host_transfer(guest, topo.peer, mib)
    finally:
        os.close(guest_fd)
        delete_netns(guest)
        await pod.teardown(network, "bench-relay")
        os.close(pod_fd)


async def container_transfer(stub: Any, reference: str, topo: Topology, mib: int) -> float:
    """Run the sender in a container in the VM; the sink's MiB/s."""
    await stub.CreateSandbox(agent_pb2.CreateSandboxRequest(sandbox_id="bench"), timeout=CALL)
    await stub.CreateContainer(rq.create_pause("pause"), timeout=CALL)
    start = agent_pb2.StartContainerRequest
    await stub.StartContainer(start(container_id="pause"), timeout=CALL)
    sink = Sink(topo.peer)
    try:
        request = rq.create_container("send", ["sh", "-c", pipeline(mib)], reference)
        await stub.CreateContainer(request, timeout=CALL)
        await stub.StartContainer(start(container_id="send"), timeout=CALL)
        return await asyncio.to_thread(sink.result, mib)
    finally:
        sink.close()


async def vm_path(topo: Topology, mib: int, pings: int) -> tuple[float, float]:
    """(container TCP MiB/s, ICMP echo MiB/s) through the pod-VM."""
    image = ensure_image()
    with tempfile.TemporaryDirectory(prefix="netreg-") as reg_dir, Registry(Path(reg_dir)) as reg:
        built = busybox_image()
        digest = reg.upload(built.blobs, built.manifest, "bench/busybox", "v1")
        host = f"{PEER_IP}:{REGISTRY_PORT}"
        data = {"policy.rego": POLICY,
                "imagepull.toml": f'[registries."{host}"]\ninsecure = true\n'}  # fmt: skip
        port = int(reg.host.rsplit(":", 1)[1])
        with (
            Forward(topo.path(topo.peer), (PEER_IP, REGISTRY_PORT), ("127.0.0.1", port)),
            tempfile.TemporaryDirectory(prefix="netbench.") as tmp,
        ):
            async with pod_vm(topo, image, Path(tmp), "netbench", data) as (vm, config, net):
                await vm.wait_ready(300)
                agent = AgentClient(await connect(config.transport))
                try:
                    await configure_guest(agent.agent, net, "netbench")
                    reference = f"{host}/bench/busybox@{digest}"
                    tcp = await container_transfer(agent.agent, reference, topo, mib)
                    echo = echo_mib_s(topo.peer, POD_IP, pings)
                    await agent.agent.DestroySandbox(
                        agent_pb2.DestroySandboxRequest(), timeout=CALL
                    )
                finally:
                    await agent.close()
    return tcp, echo


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=64, help="TCP transfer size")
    parser.add_argument("--pings", type=int, default=300, help="ICMP echoes per figure")
    parser.add_argument("--no-vm", action="store_true", help="skip the pod-VM figures")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("network namespaces need root")
    with pod_topology() as topo:
        # Bare first: while our mirror is in place the pod netns's own stack is cut off.
        bare_tcp = host_transfer(topo.pod, topo.peer, args.mib)
        bare_echo = echo_mib_s(topo.peer, POD_IP, args.pings)
        relay = await relay_path(topo, args.mib)
        line("TCP tap+tc mirror+relay (no VM) vs bare netns", relay, bare_tcp)
        if args.no_vm:
            return
        vm_tcp, vm_echo = await vm_path(topo, args.mib, args.pings)
        line("TCP container in pod-VM (TCG) vs bare netns", vm_tcp, bare_tcp)
        line("ICMP echo peer <-> pod-VM (TCG) vs bare netns", vm_echo, bare_echo)


if __name__ == "__main__":
    asyncio.run(main())
