"""Pod network throughput: through the pod-VM next to the bare pod netns, same run.

Topology as in tests/integration/network (node bridge, pod netns with eth0, a peer
namespace), all in namespaces this script creates and deletes. Figures:

1. TCP, pod netns -> peer, from the bare pod netns (baseline: no tap, no VM).
2. TCP through our datapath without QEMU: eth0 <-tc mirred-> tap <-user-space relay->
   a tap in a "guest" netns configured by guest.agent.netconfig (host datapath cost).
3. Through the pod-VM (TCG): the VM is booted on the tap, its guest agent is sent the
   network; ICMP echo with MTU-sized payloads from the peer to the pod address, next
   to the same echo against the bare pod netns. A TCP transfer from a container in
   the VM needs the guest agent's ExecProcess; until it serves that and the network
   RPCs, this part prints why it is unavailable.

    .venv/bin/python -m bench.net_bench [--mib N] [--pings N] [--no-vm]   (from the repo root:
    it reuses the topology of tests/integration/network)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agent.network import netns, pod
from agent.network.guest import configure_guest
from agent.network.tap import open_tap
from agent.transport.client import AgentClient
from agent.transport.connect import connect
from agent.vm.manager import VM
from guest.agent import netconfig
from guest.image.build import ensure_image
from tests.integration.network.relay import Relay
from tests.integration.network.topology import (
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
from tests.integration.vm.conftest import vm_config
from ttrpc import TtrpcError

SINK = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print("listening", flush=True)
c, _ = s.accept(); total = 0; start = None
while data := c.recv(1 << 16):
    start = start or time.monotonic(); total += len(data)
print(total, time.monotonic() - start, flush=True)
"""

SOURCE = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
chunk = b"x" * (1 << 16)
for _ in range(int(sys.argv[3]) * 16):
    c.sendall(chunk)
c.close()
"""


def tcp_mib_s(src_ns: str, dst_ns: str, dst_ip: str, mib: int) -> float:
    sink = subprocess.Popen(
        in_ns(dst_ns, [sys.executable, "-c", SINK, dst_ip, "5201"]),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert sink.stdout is not None
        if sink.stdout.readline() != "listening\n":
            raise SystemExit("TCP sink did not start")
        subprocess.run(in_ns(src_ns, [sys.executable, "-c", SOURCE, dst_ip, "5201", str(mib)]),
                       check=True, timeout=600, stdin=subprocess.DEVNULL)  # fmt: skip
        total, seconds = sink.stdout.readline().split()
        return int(total) / (1 << 20) / float(seconds)
    finally:
        sink.kill()
        sink.wait()


def echo_mib_s(src_ns: str, dst_ip: str, count: int) -> float:
    size = MTU - 28  # IPv4 + ICMP headers
    start = time.monotonic()
    result = subprocess.run(
        in_ns(src_ns, ["ping", "-q", "-c", str(count), "-i", "0.002", "-s", str(size), dst_ip]),
        capture_output=True, text=True, timeout=900, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        raise RuntimeError(f"ping {dst_ip} failed: {result.stdout}{result.stderr}")
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
            return tcp_mib_s(guest, topo.peer, PEER_IP, mib)
    finally:
        os.close(guest_fd)
        delete_netns(guest)
        await pod.teardown(network, "bench-relay")
        os.close(pod_fd)


async def vm_path(topo: Topology, pings: int) -> float | str:
    image = ensure_image()
    result = await pod.setup(topo.path(topo.pod), "bench-vm")
    assert result is not None
    network, tap_fd = result
    with tempfile.TemporaryDirectory(prefix="netbench.") as tmp:
        config = dataclasses.replace(vm_config(image, Path(tmp), "netbench"), net=network.nic())
        try:
            vm = await VM.launch(config, tap_fd=tap_fd)
        finally:
            os.close(tap_fd)
        try:
            await vm.wait_ready(300)
            agent = AgentClient(await connect(config.transport))
            try:
                await configure_guest(agent.agent, network, "bench-vm")
            except TtrpcError as err:
                return f"guest agent cannot apply the network: {err}"
            finally:
                await agent.close()
            return echo_mib_s(topo.peer, POD_IP, pings)
        finally:
            await vm.stop()
            await pod.teardown(network, "bench-vm")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="TCP transfer size")
    parser.add_argument("--pings", type=int, default=500, help="ICMP echoes per figure")
    parser.add_argument("--no-vm", action="store_true", help="skip the pod-VM figure")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("network namespaces need root")
    with pod_topology() as topo:
        bare_tcp = tcp_mib_s(topo.pod, topo.peer, PEER_IP, args.mib)
        line("TCP tap+tc mirror+relay (no VM) vs bare netns", await relay_path(topo, args.mib),
             bare_tcp)  # fmt: skip
        if args.no_vm:
            return
        bare_echo = echo_mib_s(topo.peer, POD_IP, args.pings)
        vm = await vm_path(topo, args.pings)
        if isinstance(vm, str):
            print(f"{'ICMP echo through the pod-VM':<48} unavailable: {vm}")
            print(f"{'ICMP echo, bare pod netns':<48} {bare_echo:9.2f} MiB/s")
            print("TCP from a container in the VM: needs the guest agent's ExecProcess")
        else:
            line("ICMP echo peer <-> pod-VM (TCG) vs bare netns", vm, bare_echo)


if __name__ == "__main__":
    asyncio.run(main())
