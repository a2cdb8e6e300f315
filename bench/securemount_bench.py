"""Secure image store: format time of a 10 GiB disk; pull and memory, store vs RAM.

``--integrity-no-wipe`` is what keeps this in seconds: a full dm-integrity wipe writes
every sector and its tag (Kata's trusted ephemeral storage: ~90 s per 16 GiB on real
hardware, far longer under TCG). The baseline, in the same run, is the same call on a
256 MiB disk: the part of the format that does not grow with the device. Also shown:
how much of each sparse backing file the format wrote (a wipe would write all of it).

Then, same run, an image with a 256 MiB layer is pulled by the guest agent
(CreateContainer, image_guest_pull) once into today's RAM store and once onto the
encrypted store (SecureMount called first, as the wiring will): the pull's time and
the guest's MemAvailable and Shmem (tmpfs) afterwards.

    .venv/bin/python -m bench.securemount_bench [--runs N] [--gib 10] [--pull-mib 256]
        [--baseline-image DIR]

``--baseline-image`` (an earlier image's ``build/guest/<key>`` copy) repeats the pull
onto the store with that image, same run: how a change to the guest's crypto is seen.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ttrpc
from agent.initdata.launch import prepare
from agent.initdata.pod import from_toml
from agent.transport.client import AgentClient
from agent.transport.connect import connect
from agent.vm import console
from agent.vm.config import Disk, Platform, UserNet
from agent.vm.manager import VM
from api.guest import securemount_pb2
from api.kata import agent_pb2, types_pb2
from bench.pod_steps import PULLED
from bench.vm_boot_bench import config
from devkit import ocibuild as ob
from devkit.registry import Registry
from guest.image.build import ensure_image
from guest.image.manifest import GuestImage, load
from tests.integration.guestagent import requests as rq
from tests.integration.guestagent.conftest import AGENT_SERVICE

SERVICE = securemount_pb2.DESCRIPTOR.services_by_name["SecureMountService"]
SERIAL = "image-store"
MIB = 1 << 20


def store_request(device_id: str) -> securemount_pb2.SecureMountRequest:
    return securemount_pb2.SecureMountRequest(
        volume_type="block-device",
        options={"deviceId": device_id, "encryptionType": "luks2", "dataIntegrity": "true"},
        mount_point="/run/contrast/images",
    )


async def format_once(image: GuestImage, directory: Path, size: int) -> tuple[float, int]:
    """Seconds SecureMount took for a sparse disk of ``size`` bytes, and bytes it wrote."""
    disk = directory / "store.img"
    disk.unlink(missing_ok=True)
    with disk.open("wb") as f:
        f.truncate(size)
    base = config(image, directory, "store")
    cfg = dataclasses.replace(
        base, disks=(*base.disks, Disk("store", disk, serial=SERIAL)), memory_mib=768
    )
    vm = await VM.launch(cfg)
    client = await connect(cfg.transport)
    try:
        await vm.wait_ready(300)
        facts = AgentClient.features(await AgentClient(client).guest_details(timeout=120))
        name = next(k[6:] for k, v in facts.items() if v.startswith(f"serial:{SERIAL},"))
        request = store_request(facts[f"block.{name}.dev"])
        started = time.monotonic()
        await ttrpc.ServiceStub(client, SERVICE).SecureMount(request, timeout=1800)
        seconds = time.monotonic() - started
    finally:
        await client.close()
        await vm.stop()
    written = os.stat(disk).st_blocks * 512
    disk.unlink()
    return seconds, written


# --- pull onto the store vs into RAM -------------------------------------------------

PULL_MAC = "52:54:00:12:34:58"
STORE_DISK_BYTES = 2 << 30


def pull_image(mib: int) -> ob.Image:
    """busybox plus one uncompressed layer of ``mib`` MiB of incompressible bytes."""
    busybox = Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
    entries = [ob.directory("bin"), ob.file("bin/busybox", busybox, 0o755)]
    entries += [ob.symlink(f"bin/{n}", "busybox") for n in ("sh", "cat", "sleep")]
    entries += [ob.directory(d) for d in ("etc", "proc", "sys", "dev", "tmp")]
    rng = random.Random(7)
    data = b"".join(rng.randbytes(MIB) for _ in range(mib))
    payload = [ob.directory("data"), ob.file("data/payload.bin", data)]
    layers = [ob.Layer(ob.layer_tar(entries)), ob.Layer(ob.layer_tar(payload), "none")]
    return ob.build_image(layers)


def meminfo(text: str) -> dict[str, int]:
    fields = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


@dataclass(frozen=True)
class PullResult:
    pull_seconds: float  # CreateContainer of the pulled image, at the host
    guest_pull_seconds: float  # the guest puller's own figure
    available: int  # MemAvailable after the pull
    shmem: int  # tmpfs (the RAM store) and other shared memory
    format_seconds: float | None


async def pull_once(
    image: GuestImage, directory: Path, registry: Registry, ref: str, on_store: bool
) -> PullResult:
    guest_registry = f"10.0.2.2:{registry.port}"
    policy = "package agent_policy\n\ndefault AllowRequestsFailingPolicy := true\n"
    registries = f'[registries."{guest_registry}"]\ninsecure = true\n'
    document = (
        'version = "0.1.0"\nalgorithm = "sha256"\n\n[data]\n'
        f"\"policy.rego\" = '''\n{policy}'''\n\"imagepull.toml\" = '''\n{registries}'''\n"
    ).encode()
    pod = directory / "pod"
    shutil.rmtree(pod, ignore_errors=True)
    pod.mkdir()
    launch = prepare(from_toml(document), Platform.INSECURE, pod)
    base = config(image, directory, "pull")
    disks = [launch.disk()]
    disk = directory / "pull-store.img"
    disk.unlink(missing_ok=True)
    if on_store:
        with disk.open("wb") as f:
            f.truncate(STORE_DISK_BYTES)
        disks.append(Disk("store", disk, serial=SERIAL))
    cfg = dataclasses.replace(
        base, cmdline=(*image.manifest.cmdline, *launch.kernel_cmdline()), disks=tuple(disks),
        user_net=UserNet(mac=PULL_MAC), memory_mib=1024,
    )  # fmt: skip
    vm = await VM.launch(cfg)
    client = await connect(cfg.transport)
    agent: Any = ttrpc.ServiceStub(client, AGENT_SERVICE)
    image_ref = ref.replace(registry.host, guest_registry)
    try:
        await vm.wait_ready(300)
        format_seconds = None
        if on_store:
            facts = AgentClient.features(await AgentClient(client).guest_details(timeout=120))
            name = next(k[6:] for k, v in facts.items() if v.startswith(f"serial:{SERIAL},"))
            started = time.monotonic()
            await ttrpc.ServiceStub(client, SERVICE).SecureMount(
                store_request(facts[f"block.{name}.dev"]), timeout=1800
            )
            format_seconds = time.monotonic() - started
        await agent.UpdateInterface(
            agent_pb2.UpdateInterfaceRequest(interface=types_pb2.Interface(
                name="eth0", hwAddr=PULL_MAC, mtu=1500,
                IPAddresses=[types_pb2.IPAddress(address="10.0.2.15", mask="24")])),
            timeout=120,
        )  # fmt: skip
        await agent.UpdateRoutes(
            agent_pb2.UpdateRoutesRequest(routes=agent_pb2.Routes(
                Routes=[types_pb2.Route(dest="", gateway="10.0.2.2", device="eth0")])),
            timeout=60,
        )  # fmt: skip
        await agent.CreateSandbox(agent_pb2.CreateSandboxRequest(hostname="b", sandbox_id="s"))
        await agent.CreateContainer(rq.create_pause("pause"), timeout=120)
        await agent.StartContainer(agent_pb2.StartContainerRequest(container_id="pause"))
        started = time.monotonic()
        await agent.CreateContainer(
            rq.create_container("w", ["sleep", "100000"], image_ref), timeout=1800
        )
        pull_seconds = time.monotonic() - started
        await agent.StartContainer(agent_pb2.StartContainerRequest(container_id="w"))
        process = rq.process(["cat", "/proc/meminfo"])
        await agent.ExecProcess(
            agent_pb2.ExecProcessRequest(container_id="w", exec_id="m", process=process)
        )
        out = b""
        while True:
            reply = await agent.ReadStdout(
                agent_pb2.ReadStreamRequest(container_id="w", exec_id="m", len=65536)
            )
            if not reply.data:
                break
            out += reply.data
        fields = meminfo(out.decode())
        log_text = console.tail(cfg.console_log, 1 << 20)
        guest_pull = [float(m[2]) for m in PULLED.finditer(log_text)]
    finally:
        await client.close()
        await vm.stop()
        disk.unlink(missing_ok=True)
    return PullResult(
        pull_seconds, guest_pull[-1] if guest_pull else float("nan"),
        fields["MemAvailable"], fields["Shmem"], format_seconds,
    )  # fmt: skip


async def pull_part(
    image: GuestImage, directory: Path, mib: int, baseline: GuestImage | None = None
) -> None:
    built = pull_image(mib)
    with Registry(directory / "registry") as registry:
        digest = registry.upload(built.blobs, built.manifest, "bench/payload", "v1")
        ref = f"{registry.host}/bench/payload@{digest}"
        ram = await pull_once(image, directory, registry, ref, on_store=False)
        store = await pull_once(image, directory, registry, ref, on_store=True)
        rows = [("into RAM (tmpfs store, today)", ram), ("onto the encrypted store", store)]
        if baseline is not None:
            rows.append(
                (
                    "the store, baseline image",
                    await pull_once(baseline, directory, registry, ref, on_store=True),
                )
            )
    print(f"pull of an image with a {mib} MiB layer (uncompressed), VM 1024 MiB, same run:")
    for label, r in rows:
        fmt = f", format {r.format_seconds:.1f} s first" if r.format_seconds else ""
        print(f"  {label:>30}: CreateContainer {r.pull_seconds:6.1f} s (guest pull "
              f"{r.guest_pull_seconds:.1f} s){fmt}; MemAvailable {r.available / MIB:6.0f} MiB, "
              f"Shmem {r.shmem / MIB:5.0f} MiB")  # fmt: skip
    saved = (store.available - ram.available) / MIB
    print(f"  memory kept free by the store: {saved:.0f} MiB for a {mib} MiB layer")


async def main(runs: int, gib: int, pull_mib: int, baseline: Path | None = None) -> None:
    image = ensure_image()
    if pull_mib:
        with tempfile.TemporaryDirectory(prefix="smbench") as tmp:
            await pull_part(image, Path(tmp), pull_mib, load(baseline) if baseline else None)
    if not runs:
        return
    big, small = gib << 30, 256 * MIB
    results: dict[int, list[tuple[float, int]]] = {big: [], small: []}
    with tempfile.TemporaryDirectory(prefix="smbench") as tmp:
        for _ in range(runs):  # interleaved, so load on the machine hits both alike
            for size in (small, big):
                results[size].append(await format_once(image, Path(tmp), size))
    print(f"runs: {runs} each, TCG, 2 vCPUs, 768 MiB; SecureMount (LUKS2 + hmac-sha256, "
          "no wipe, ext4, mount) timed at the host")  # fmt: skip
    for size, label in ((small, "baseline 256 MiB"), (big, f"{gib} GiB")):
        times = [t for t, _ in results[size]]
        wrote = statistics.median(w for _, w in results[size]) / MIB
        runs_text = [round(t, 2) for t in times]
        print(f"{label:>17}: median {statistics.median(times):6.2f} s  {runs_text}  "
              f"wrote {wrote:.1f} MiB of {size / MIB:.0f}")  # fmt: skip
    ratio = statistics.median(t for t, _ in results[big]) / statistics.median(
        t for t, _ in results[small]
    )
    print(f"{gib} GiB / 256 MiB: {ratio:.2f}x (a wiping format grows with the size: "
          f"{(big // small)}x the data)")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1, help="format runs; 0: skip that part")
    parser.add_argument("--gib", type=int, default=10)
    parser.add_argument("--pull-mib", type=int, default=256, help="0: skip the pull part")
    parser.add_argument(
        "--baseline-image",
        type=Path,
        help="an earlier guest image's directory: the pull onto the store repeated with it",
    )
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.gib, args.pull_mib, args.baseline_image))
