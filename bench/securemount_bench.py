"""Secure image store: SecureMount's format time for a 10 GiB sparse disk in the guest.

``--integrity-no-wipe`` is what keeps this in seconds: a full dm-integrity wipe writes
every sector and its tag (Kata's trusted ephemeral storage: ~90 s per 16 GiB on real
hardware, far longer under TCG). The baseline, in the same run, is the same call on a
256 MiB disk: the part of the format that does not grow with the device. Also shown:
how much of each sparse backing file the format wrote (a wipe would write all of it).

    .venv/bin/python -m bench.securemount_bench [--runs N] [--gib 10]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

import ttrpc
from agent.transport.client import AgentClient
from agent.transport.connect import connect
from agent.vm.config import Disk
from agent.vm.manager import VM
from api.guest import securemount_pb2
from bench.vm_boot_bench import config
from guest.image.build import ensure_image
from guest.image.manifest import GuestImage

SERVICE = securemount_pb2.DESCRIPTOR.services_by_name["SecureMountService"]
SERIAL = "image-store"
MIB = 1 << 20


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
        request = securemount_pb2.SecureMountRequest(
            volume_type="block-device",
            options={"deviceId": facts[f"block.{name}.dev"], "encryptionType": "luks2",
                     "dataIntegrity": "true"},
            mount_point="/run/contrast/images",
        )  # fmt: skip
        started = time.monotonic()
        await ttrpc.ServiceStub(client, SERVICE).SecureMount(request, timeout=1800)
        seconds = time.monotonic() - started
    finally:
        await client.close()
        await vm.stop()
    written = os.stat(disk).st_blocks * 512
    disk.unlink()
    return seconds, written


async def main(runs: int, gib: int) -> None:
    image = ensure_image()
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
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--gib", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.gib))
