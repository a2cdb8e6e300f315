"""Pod-VM boot: launch to guest agent ready, next to the floor measured in the same run.

The floor boots the same kernel with the same QEMU flags and an initramfs whose /init
powers off at once: what any guest costs before our code runs. Target: our boot at
most 2x the floor under TCG; root image under 200 MiB.

    .venv/bin/python bench/vm_boot_bench.py [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from agent.transport.client import AgentClient
from agent.transport.connect import connect
from agent.vm.config import Disk, VirtioSerialTransport, VMConfig
from agent.vm.manager import VM
from guest.image import cpio
from guest.image.build import ensure_image
from guest.image.manifest import GuestImage
from guest.initdata.binding import insecure_cmdline
from guest.initdata.disk import encode
from guest.initdata.document import POLICY_NAME, create

FLOOR_INIT = b"#!/bin/busybox sh\n/bin/busybox poweroff -f\n"


def floor_initrd(path: Path) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        raise SystemExit("busybox (busybox-static) is needed for the floor initramfs")
    buf = io.BytesIO()
    cpio.write(
        buf,
        [
            cpio.directory("bin"),
            cpio.file("bin/busybox", Path(busybox).read_bytes(), executable=True),
            cpio.file("init", FLOOR_INIT, executable=True),
        ],
    )
    path.write_bytes(buf.getvalue())


ALLOW_ALL = "package agent_policy\n\ndefault AllowRequestsFailingPolicy := true\n"


def config(image: GuestImage, directory: Path, name: str) -> VMConfig:
    # A real boot processes an initdata document before the agent starts.
    document = create({POLICY_NAME: ALLOW_ALL})
    initdata = directory / f"{name}.initdata"
    initdata.write_bytes(encode(document.raw))
    return VMConfig(
        name=name,
        kernel=image.kernel,
        initrd=image.initrd,
        root=Disk("root", image.root, read_only=True, serial="contrast-root"),
        disks=(Disk("initdata", initdata, read_only=True, serial="initdata"),),
        cmdline=(*image.manifest.cmdline, *insecure_cmdline(document.digest)),
        console_log=directory / f"{name}.log",
        qmp_socket=directory / f"{name}.qmp",
        transport=VirtioSerialTransport(directory / f"{name}.agent"),
        vcpus=2,
        memory_mib=512,
    )


async def boot_to_agent(cfg: VMConfig) -> tuple[float, float]:
    """Seconds to Health/Check SERVING, and to the first policy-checked reply."""
    started = time.monotonic()
    vm = await VM.launch(cfg)
    agent = AgentClient(await connect(cfg.transport))
    try:
        await vm.wait_ready(300)
        if not await agent.check():
            raise SystemExit("agent answered Health/Check with NOT_SERVING")
        ready = time.monotonic() - started
        # The agent answers Health before its policy is loaded; AgentService requests
        # wait for the policy. GetGuestDetails shows when the first one is served.
        await agent.guest_details(timeout=120)
        return ready, time.monotonic() - started
    finally:
        await agent.close()
        await vm.stop()


async def boot_floor(cfg: VMConfig) -> float:
    started = time.monotonic()
    vm = await VM.launch(cfg)
    info = await asyncio.wait_for(asyncio.shield(vm.exited), 300)
    elapsed = time.monotonic() - started
    await vm.stop()
    if info.returncode != 0:
        raise SystemExit(f"floor VM failed: {info.reason}\n{info.console_tail}")
    return elapsed


async def main(runs: int) -> None:
    image = ensure_image()
    ours: list[float] = []
    first: list[float] = []
    floor: list[float] = []
    with tempfile.TemporaryDirectory(prefix="vmbench") as tmp:
        directory = Path(tmp)
        floor_cfg = dataclasses.replace(
            config(image, directory, "floor"), initrd=directory / "floor.img"
        )
        floor_initrd(floor_cfg.initrd)
        for _ in range(runs):  # interleaved, so load on the machine hits both alike
            floor.append(await boot_floor(floor_cfg))
            ready, served = await boot_to_agent(config(image, directory, "pod"))
            ours.append(ready)
            first.append(served)
    sizes = image.manifest.sizes
    mib = 2**20
    f, o = statistics.median(floor), statistics.median(ours)
    print(f"runs: {runs} each, TCG, 2 vCPUs, 512 MiB")
    print(f"floor (same kernel+flags, initramfs that powers off): median {f:.2f} s  {floor}")
    print(f"ours  (launch -> agent Health/Check SERVING):          median {o:.2f} s  {ours}")
    print(f"ratio: {o / f:.2f}x the floor (target <= 2x)")
    s = statistics.median(first)
    print(f"first AgentService reply (GetGuestDetails, policy-checked): median {s:.2f} s  {first}")
    print(f"  = {s / f:.2f}x the floor")
    print(
        f"root image {sizes['root_image_bytes'] / mib:.1f} MiB (target < 200 MiB; "
        f"tree {sizes['root_tree_bytes'] / mib:.1f} MiB), initrd "
        f"{sizes['initrd_bytes'] / mib:.1f} MiB, kernel {sizes['kernel_bytes'] / mib:.1f} MiB"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    asyncio.run(main(parser.parse_args().runs))
