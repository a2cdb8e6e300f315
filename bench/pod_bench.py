"""Pods through containerd's CRI and the node daemon: time to first output, our overhead
on top of the VM boot and the image pull, and the daemon's memory per pod.

- CRI to first output (devkit.crinode: one containerd 1.6 with our handler and runc):
  RunPodSandbox, CreateContainer and StartContainer of the digest-pinned busybox image
  (already pulled by containerd: the host pull is the same for both runtimes), until
  its first line is in the container's CRI log; ours and runc interleaved, same run;
- VM boot, same run (bench.vm_boot_bench, at our pod-VM's default size): the floor (same
  kernel and QEMU flags, an initramfs that powers off) and our pod-VM from launch to its
  guest agent's first policy-checked reply;
- guest pull: the guest puller's own figure for the workload image ("pulled <ref>: ...
  <seconds>s" in the pod-VM's console log);
- our overhead = ours - VM boot (to the agent) - guest pull; and per pod, with the boot
  as measured in that pod, split step by step (bench.pod_steps) into host side
  (containerd, CRI, our shim, relay, daemon), link (virtio-serial, the guest's ttrpc
  framing) and guest side (the guest agent serving each call). The 150 ms target (issue
  16) is compared with the host side: it runs here at native speed as on a real node,
  while under TCG the guest's CPU is emulated (roughly ten times slower than KVM); all
  three are printed, and runc's whole pod through the same containerd next to them
  (containerd's and CNI's share is in our host side too: it is printed apart, up to
  where containerd runs our shim, whose age the daemon logs at Register, and next to it
  ours and the load average). The boot is compared with
  the 1.25x-the-floor target. The shim entry's own start is measured apart by
  :mod:`bench.pod_shim`, pods started at once by :mod:`bench.pod_scale`;
- the pod sandbox without CRI: shim start + Task Create + Start of the pause container
  through the daemon vs the same guest agent calls straight over the transport;
- memory: the daemon's RSS with 0, 1 and N pods (target: <= 3 MiB per additional pod),
  next to the RSS of one Go ``containerd-shim-runc-v2`` measured in the same run (runc
  and Kata run one shim process per pod; Kata's is 25-70 MiB).

    .venv/bin/python -m bench.pod_bench [--runs 2] [--pods 5] [--memory 256] [--cri-only]
        [--keep-logs DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import tempfile
import time
from pathlib import Path

from google.protobuf import any_pb2

from agent.initdata import from_annotation, prepare
from agent.sandbox.backend import ContainerSpec
from agent.sandbox.config import VmSizes
from agent.sandbox.guest import GuestSandbox
from agent.sandbox.state import VmRecord
from agent.transport.client import AgentClient
from agent.transport.connect import connect
from agent.vm.config import Disk, Platform, VirtioSerialTransport, VMConfig
from agent.vm.manager import VM
from api.containerd.task.v2 import shim_pb2
from api.runtimeoptions.v1 import api_pb2 as runtimeoptions
from bench.pod_cri import cri_runs, print_cri, vm_boots
from guest.image.build import ensure_image
from guest.image.manifest import GuestImage
from guest.initdata import codec, document
from shim.task import SERVICE
from tests.integration.guestagent.requests import ALLOW_ALL
from tests.integration.shim.node import Node, node_env, relay_pid
from tests.integration.shim.test_pod_vm import pause_bundle
from tests.support.runc_shim import run_runc_shim
from tests.unit.shim.harness import NamespacedStub
from ttrpc import Client, ServiceStub


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def initdata_annotation() -> str:
    return codec.encode_annotation(document.create({document.POLICY_NAME: ALLOW_ALL}, "sha384").raw)


async def floor_pod(image: GuestImage, folder: Path, memory: int, annotation: str) -> float:
    """The same pod's sandbox without the daemon: agent.vm launch, then the guest agent
    calls the daemon makes (CreateSandbox, CreateContainer and StartContainer of the
    pause container) straight over the transport. Seconds until StartContainer returns."""
    bundle = pause_bundle(folder, {"io.katacontainers.config.hypervisor.cc_init_data": annotation})
    oci = json.loads((bundle / "config.json").read_text())
    launch = prepare(from_annotation(annotation), Platform.INSECURE, folder)
    cfg = VMConfig(
        name="floor",
        kernel=image.kernel,
        initrd=image.initrd,
        root=Disk("root", image.root, read_only=True, serial="contrast-root"),
        disks=(launch.disk(),),
        cmdline=(*image.manifest.cmdline, *launch.kernel_cmdline()),
        console_log=folder / "console.log",
        qmp_socket=folder / "qmp.sock",
        transport=VirtioSerialTransport(folder / "agent.sock"),
        memory_mib=memory,
    )
    started = time.monotonic()
    vm = await VM.launch(cfg)
    agent = AgentClient(await connect(cfg.transport))
    try:
        await vm.wait_ready(300)
        sandbox = GuestSandbox(agent, VmRecord("floor", vm.process.pid), 120)
        await sandbox.create_sandbox("pod1", "pod1")
        await sandbox.create_container(
            ContainerSpec("pod1", bundle, oci, False, oci["annotations"])
        )
        await sandbox.start_container("pod1")
        return time.monotonic() - started
    finally:
        await agent.close()
        await vm.stop()


async def runc_shim_rss(folder: Path) -> int:
    """RSS (KiB) of a serving Go runc shim (after one Connect round trip)."""
    with run_runc_shim(folder) as runc:
        async with await Client.connect_unix(runc.socket_path) as client:
            await ServiceStub(client, SERVICE).Connect(shim_pb2.ConnectRequest(id="x"))
            return rss_kib(runc.pid)


def runtime_config(image: GuestImage, path: Path, memory: int) -> any_pb2.Any:
    path.write_text(
        f"""platform = "qemu-insecure"
[guest]
kernel = "{image.kernel}"
initrd = "{image.initrd}"
rootfs = "{image.root}"
manifest = "{image.directory / "manifest.json"}"
[vm]
memory_mib = {memory}
[timeouts]
boot_seconds = 300
"""
    )
    options = runtimeoptions.Options(config_path=str(path))
    return any_pb2.Any(type_url="runtimeoptions.v1.Options", value=options.SerializeToString())


async def start_pod(node: Node, options: any_pb2.Any, annotation: str, pod: str) -> float:
    """shim start + Task Create + Start of a pod's sandbox; seconds taken."""
    bundle = pause_bundle(
        node.root, {"io.katacontainers.config.hypervisor.cc_init_data": annotation}, pod
    )
    started = time.monotonic()
    done = await asyncio.to_thread(node.shim, "-id", pod, "start", cwd=bundle)
    if done.returncode != 0:
        raise SystemExit(f"shim start failed: {done.stderr.decode()}")
    address = done.stdout.decode().removeprefix("unix://")
    async with await Client.connect_unix(address) as client:
        task = NamespacedStub(ServiceStub(client, SERVICE), "default")
        await task.Create(shim_pb2.CreateTaskRequest(id=pod, bundle=str(bundle), options=options))
        await task.Start(shim_pb2.StartRequest(id=pod))
    return time.monotonic() - started


async def stop_pods(node: Node, pods: list[str]) -> None:
    address = str(node.run_dir / "ns" / "default.sock")
    async with await Client.connect_unix(address) as client:
        task = NamespacedStub(ServiceStub(client, SERVICE), "default")
        for pod in pods:
            await task.Kill(shim_pb2.KillRequest(id=pod, signal=signal.SIGKILL))
            await task.Wait(shim_pb2.WaitRequest(id=pod))
            await task.Delete(shim_pb2.DeleteRequest(id=pod))


async def main(runs: int, pods: int, memory: int, cri_only: bool, keep: Path | None) -> None:
    image = ensure_image()
    floors_boot, boots = await vm_boots(image, runs)
    measured = await asyncio.to_thread(cri_runs, image, runs, keep)
    print(
        f"TCG; our pod-VMs at the default size {VmSizes().vcpus} vCPU, {VmSizes().memory_mib} MiB"
    )
    print_cri(measured, floors_boot, boots)
    if cri_only:
        return
    print()
    annotation = initdata_annotation()
    with tempfile.TemporaryDirectory(prefix="podb-", dir="/tmp") as tmp:
        floors = []
        for i in range(2):
            folder = Path(tmp) / f"floor{i}"
            folder.mkdir()
            floors.append(await floor_pod(image, folder, memory, annotation))
        runc_rss = await runc_shim_rss(Path(tmp) / "runc")
    floor = statistics.median(floors)

    with node_env("pod-vm") as node:
        options = runtime_config(image, node.root / "runtime.toml", memory)
        names = [f"pod{i}" for i in range(pods)]
        times = [await start_pod(node, options, annotation, names[0])]
        pid = node.daemon_pid()
        assert pid is not None
        rss_one = rss_kib(pid)
        for name in names[1:]:
            times.append(await start_pod(node, options, annotation, name))
        rss_many = rss_kib(pid)
        relay = relay_pid(node)
        relay_rss = rss_kib(relay) if relay is not None else None
        await stop_pods(node, names)
        rss_after = rss_kib(pid)
    with node_env("pod-vm") as empty:  # a fresh daemon that never ran a pod
        bundle = empty.root / "b"
        bundle.mkdir()
        assert empty.shim("-id", "x", "start", cwd=bundle).returncode == 0
        empty_pid = empty.daemon_pid()
        assert empty_pid is not None
        rss_zero = rss_kib(empty_pid)

    ours = statistics.median(times)
    per_pod = (rss_many - rss_one) / max(pods - 1, 1) / 1024
    print(f"without CRI: TCG, 1 vCPU, {memory} MiB per pod-VM, {pods} pods")
    print("floor (no daemon: agent.vm launch, then CreateSandbox, CreateContainer and")
    print(f"  StartContainer of the pause container over the transport): median {floor:.2f} s")
    print(f"  runs: {[round(f, 2) for f in floors]}")
    print(f"ours  (shim start + Task Create + Start via the daemon): median {ours:.2f} s")
    print(f"  runs: {[round(t, 2) for t in times]}")
    spread = max(*floors, *times) - min(*floors, *times)
    print(f"our overhead: {1000 * (ours - floor):.0f} ms (target < 500 ms); run-to-run spread of")
    print(
        f"  the TCG boots here: {1000 * spread:.0f} ms, so only a difference beyond it means much"
    )
    print(
        f"daemon RSS: 0 pods {rss_zero / 1024:.1f} MiB, 1 pod {rss_one / 1024:.1f} MiB, "
        f"{pods} pods {rss_many / 1024:.1f} MiB, after removing them {rss_after / 1024:.1f} MiB"
    )
    print(f"daemon memory per additional pod: {per_pod:.2f} MiB (target <= 3 MiB)")
    if relay_rss is not None:
        print(
            f"plus the relay (one per node, holds containerd's connections): "
            f"{relay_rss / 1024:.1f} MiB"
        )
    print(f"baseline: one serving Go containerd-shim-runc-v2: {runc_rss / 1024:.1f} MiB per pod")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="pods per runtime through CRI")
    parser.add_argument("--pods", type=int, default=5)
    parser.add_argument("--memory", type=int, default=256, help="MiB per pod-VM")
    parser.add_argument(
        "--cri-only",
        action="store_true",
        help="only the CRI figures (first output, boot, pull, overhead split): no memory part",
    )
    parser.add_argument(
        "--keep-logs", type=Path, help="copy the daemon's and pod-VMs' console logs here"
    )
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.pods, args.memory, args.cri_only, args.keep_logs))
