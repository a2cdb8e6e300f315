"""Pod-VM boot: launch to the first policy-checked reply, next to the floor measured
in the same run.

The floor boots the same kernel with the same QEMU flags and an initramfs whose /init
powers off at once: what any guest costs before our code runs. Target (issue 16):
launch to the first policy-checked reply (GetGuestDetails) at most 1.25x the floor;
root image under 200 MiB.

The guest's own clock (CLOCK_BOOTTIME, on the agent's ready line) splits our part:
when the agent's interpreter was started (kernel, initrd, verity root, init before
it), when the agent listened (the interpreter's start and the agent's imports), and
``built in`` (initdata processor, the service's imports, the policy's compile) after
that. When the target is missed, the bench says whether the guest's Python part alone
is larger than the target's headroom over the floor, and runs the same Python part
natively (:mod:`bench.guest_native`: the image's root chrooted on the host) to show
how much of it is the emulated CPU.

    .venv/bin/python -m bench.vm_boot_bench [--runs N] [--baseline-image DIR] [--native-runs N]

``--baseline-image`` boots an earlier image (a copy of its ``build/guest/<key>``
directory) alternately with ours in the same run and prints its medians next to ours:
how a change to the guest is measured on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import os
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from agent.transport.client import AgentClient
from agent.transport.connect import connect
from agent.vm import accel
from agent.vm.config import Accel, Disk, VirtioSerialTransport, VMConfig
from agent.vm.manager import VM
from bench import guest_native
from guest.image import cpio
from guest.image.build import ensure_image
from guest.image.manifest import GuestImage, load
from guest.initdata.binding import insecure_cmdline
from guest.initdata.disk import encode
from guest.initdata.document import POLICY_NAME, Initdata, create

FLOOR_INIT = b"#!/bin/busybox sh\n/bin/busybox poweroff -f\n"
TARGET = 1.25
READY = re.compile(r"ready on \S+ \(boot clock ([0-9.]+) s, interpreter started at ([0-9.]+) s\)")
BUILT = re.compile(r"serving AgentService \(built in ([0-9.]+) ms\)")


@dataclasses.dataclass(frozen=True)
class GuestClock:
    """One boot's figures on the guest's own clock, in seconds since its kernel started."""

    interpreter: float  # the agent's interpreter started
    listening: float  # the agent printed its ready line
    built: float  # the AgentService (initdata, policy) was built, after listening


def guest_clock(console: str) -> GuestClock:
    ready, built = READY.search(console), BUILT.search(console)
    if ready is None or built is None:
        raise SystemExit(f"no ready or 'built in' line on the guest console:\n{console[-2000:]}")
    return GuestClock(float(ready[2]), float(ready[1]), float(built[1]) / 1000)


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


def boot_document() -> Initdata:
    """The initdata document every boot of this bench processes (allow-all policy)."""
    return create({POLICY_NAME: ALLOW_ALL})


def config(image: GuestImage, directory: Path, name: str) -> VMConfig:
    # A real boot processes an initdata document before the agent starts.
    document = boot_document()
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
        accel=accel.detect(),  # as the daemon chooses
    )


async def boot_to_agent(cfg: VMConfig) -> tuple[float, float]:
    """Seconds to Health/Check SERVING, and to the first policy-checked reply.

    The console log stays in ``cfg.console_log`` (see guest_clock)."""
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
    vm.process.expect_exit()  # the floor's init powers off: its exit is the figure, no crash
    info = await asyncio.wait_for(asyncio.shield(vm.exited), 300)
    elapsed = time.monotonic() - started
    await vm.stop()
    if info.returncode != 0:
        raise SystemExit(f"floor VM failed: {info.reason}\n{info.console_tail}")
    return elapsed


@dataclasses.dataclass
class Boots:
    """One image's boots in a run."""

    image: GuestImage
    ready: list[float] = dataclasses.field(default_factory=list)  # to Health SERVING
    first: list[float] = dataclasses.field(default_factory=list)  # first checked reply
    clocks: list[GuestClock] = dataclasses.field(default_factory=list)

    async def boot(self, directory: Path, name: str) -> None:
        cfg = config(self.image, directory, name)
        ready, served = await boot_to_agent(cfg)
        self.ready.append(ready)
        self.first.append(served)
        self.clocks.append(guest_clock(cfg.console_log.read_text(errors="replace")))

    def guest_medians(self) -> tuple[float, float, float]:
        """Interpreter start, listening (both since the kernel started), built after."""
        return (
            statistics.median(c.interpreter for c in self.clocks),
            statistics.median(c.listening for c in self.clocks),
            statistics.median(c.built for c in self.clocks),
        )

    def figures(self) -> dict[str, float]:
        """The medians compare() prints, by label."""
        start, listening, built = self.guest_medians()
        return {
            "launch -> Health SERVING": statistics.median(self.ready),
            "launch -> first checked reply": statistics.median(self.first),
            "guest clock: interpreter started": start,
            "  then listening after": listening - start,
            "  then built after": built,
        }


async def main(runs: int, baseline: Path | None = None, native_runs: int = 5) -> None:
    ours = Boots(ensure_image())
    base = Boots(load(baseline)) if baseline is not None else None
    load_before = os.getloadavg()[0]
    floor: list[float] = []
    with tempfile.TemporaryDirectory(prefix="vmbench") as tmp:
        directory = Path(tmp)
        floor_cfg = dataclasses.replace(
            config(ours.image, directory, "floor"), initrd=directory / "floor.img"
        )
        floor_initrd(floor_cfg.initrd)
        for n in range(runs):  # interleaved, so load on the machine hits all alike
            floor.append(await boot_floor(floor_cfg))
            # The baseline first in every other round: neither always follows the floor.
            order = [(base, "baseline"), (ours, "pod")] if base is not None else [(ours, "pod")]
            for boots, name in order if n % 2 == 0 else reversed(order):
                await boots.boot(directory, name)
    sizes = ours.image.manifest.sizes
    mib = 2**20
    f, o = statistics.median(floor), statistics.median(ours.ready)
    print(
        f"runs: {runs} each, {floor_cfg.accel.value.upper()}, 2 vCPUs, 512 MiB; load average "
        f"{load_before:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    print(f"floor (same kernel+flags, initramfs that powers off): median {f:.2f} s  {floor}")
    print(f"ours  (launch -> agent Health/Check SERVING):          median {o:.2f} s  {ours.ready}")
    print(f"  = {o / f:.2f}x the floor")
    s = statistics.median(ours.first)
    print(
        f"first AgentService reply (GetGuestDetails, policy-checked): median {s:.2f} s  "
        f"{ours.first}"
    )
    print(f"  = {s / f:.2f}x the floor (target <= {TARGET}x: {TARGET * f:.2f} s)")
    start, listening, built = ours.guest_medians()
    print(
        f"guest clock (median): agent's interpreter started at {start:.2f} s, listening at "
        f"{listening:.2f} s, AgentService built {built:.2f} s after that"
    )
    python = listening - start + built
    print(f"  the guest's Python part (interpreter start to policy in force): {python:.2f} s")
    if s > TARGET * f:
        headroom = (TARGET - 1) * f
        if python > headroom:
            why = (
                ": under TCG (no usable KVM on this machine) every guest instruction is "
                "emulated: bytecode, imports, dm-verity's hashing of each block read"
                if floor_cfg.accel is Accel.TCG
                else ""
            )
            print(
                f"  target not met: the Python part alone is {python / headroom:.1f}x the "
                f"{headroom:.2f} s headroom the target leaves over the floor{why}"
            )
        else:
            print("  target not met, though the Python part fits the headroom: see the rest")
    if native_runs > 0:
        print_native(ours.image, native_runs, python, f)
    print(
        f"root image {sizes['root_image_bytes'] / mib:.1f} MiB (target < 200 MiB; "
        f"tree {sizes['root_tree_bytes'] / mib:.1f} MiB), initrd "
        f"{sizes['initrd_bytes'] / mib:.1f} MiB, kernel {sizes['kernel_bytes'] / mib:.1f} MiB"
    )
    if base is not None:
        compare(base, ours, baseline)


def print_native(image: GuestImage, runs: int, python: float, floor: float) -> None:
    """The guest's Python part run natively (bench.guest_native) next to its figure here."""
    document = boot_document()
    try:
        native = guest_native.medians(
            guest_native.measure(
                image, encode(document.raw), " ".join(insecure_cmdline(document.digest)), runs
            )
        )
    except guest_native.Unavailable as err:
        print(f"the guest's Python part at native speed: not measured: {err}")
        return
    print(
        f"the guest's Python part at native speed (bench.guest_native: this image's root "
        f"chrooted on the host, contrast-init's flags, the same initdata; median of {runs}):"
    )
    print(
        f"  listening after {1000 * native.listening:.0f} ms, then built after "
        f"{1000 * native.built:.0f} ms: {1000 * native.python:.0f} ms in all; the guest's "
        f"{python:.2f} s is {python / native.python:.0f}x that"
    )
    print(
        f"  at native speed it fits the {TARGET}x target's headroom over any floor of at "
        f"least {native.python / (TARGET - 1):.2f} s (this run's floor: {floor:.2f} s); "
        "the initrd's module loads and verity set-up are not in it"
    )


def compare(base: Boots, ours: Boots, where: Path | None) -> None:
    """The baseline image's medians next to ours, booted alternately in the same run."""
    print(f"baseline image {where} (booted alternately with ours, medians: baseline -> ours):")
    after = ours.figures()
    for name, before in base.figures().items():
        print(f"  {name:34} {before:6.2f} -> {after[name]:6.2f} s  ({after[name] - before:+.2f} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument(
        "--baseline-image",
        type=Path,
        help="an earlier guest image's directory (as guest.image build writes it, e.g. a "
        "copy of build/guest/<key>): booted alternately with ours, its medians printed next "
        "to ours",
    )
    parser.add_argument(
        "--native-runs",
        type=int,
        default=5,
        help="starts of the guest's Python part natively on the host (bench.guest_native); "
        "0 skips them",
    )
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.baseline_image, args.native_runs))
