"""A pod's whole host memory at the default VM size: what RuntimeClass overhead.podFixed must hold.

Through containerd 1.6's CRI (devkit.crinode) with our handler, two pods at the runtime
config's default size (VmSizes: 1 vCPU, 512 MiB), each a busybox ``sleep``; for each:

- QEMU's RSS split by /proc/<pid>/smaps into the guest's RAM (the one anonymous mapping
  of ``-m`` size: what the guest has touched) and QEMU's own memory (everything else:
  code, device emulation, the TCG translation cache, I/O buffers), once the container
  runs and again after the container touched most of the guest's free memory
  (``dd bs=<80% of MemAvailable>``: the guest's pages stay resident in QEMU after it
  frees them);
- the daemon's RSS with one pod and with two: its share per pod.

Baseline printed in the same run: the same pod through runc (its shim, pause and
sleep processes' RSS), the host memory such a pod has without a VM.

The pod's worst case is ALL the guest's RAM touched (a workload may fill it; no balloon
gives it back) + QEMU's own (the larger of the two measurements) + the daemon's share.
``--record`` writes the figures to packaging/overhead.json; podfixed_mib() turns them
into runtimeclass.yaml's overhead.podFixed.memory (a unit test checks the yaml).

    .venv/bin/python -m bench.overhead_bench [--record]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.sandbox.config import VmSizes
from bench.pod_cri import ALLOW_EVERY_REQUEST, INITDATA
from devkit.crilog import wait_for_line
from devkit.crinode import CriNode, cri_node
from guest.image.build import ensure_image
from guest.initdata import codec, document

RECORD = Path(__file__).resolve().parents[1] / "packaging" / "overhead.json"
# The margin on top of the worst case, and why (runtimeclass.yaml repeats it): QEMU's
# own memory grows with what a pod uses that these pods do not (hotplugged block
# devices, more vCPUs' TCG state, network and virtio-serial buffers under load), the
# daemon's share with containers, execs and volumes per pod. 25% of that non-guest part,
# at least 32 MiB, then rounded up to 16 MiB.
MARGIN_FRACTION = 0.25
MARGIN_MIN_MIB = 32
ROUND_MIB = 16
READY = "overhead pod ready"


@dataclass(frozen=True)
class QemuMemory:
    rss_mib: float
    guest_ram_mib: float  # resident pages of the guest's RAM mapping
    own_mib: float  # the rest of QEMU's RSS


def qemu_memory(pid: int, memory_mib: int) -> QemuMemory:
    """QEMU's RSS, split into the guest RAM mapping (size ``memory_mib``) and the rest."""
    rss = guest = 0
    size = 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key == "Size":
            size = int(rest.split()[0])
        elif key == "Rss":
            kib = int(rest.split()[0])
            rss += kib
            if memory_mib * 1024 <= size <= memory_mib * 1024 + 4096 and guest == 0:
                guest = kib
    if guest == 0:
        raise RuntimeError(f"no {memory_mib} MiB guest RAM mapping in /proc/{pid}/smaps")
    return QemuMemory(round(rss / 1024, 1), round(guest / 1024, 1), round((rss - guest) / 1024, 1))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for pid {pid}")


def podfixed_mib(record: dict[str, float]) -> int:
    """overhead.podFixed.memory (MiB) from a recorded measurement."""
    non_guest = record["qemu_own_mib"] + record["daemon_per_pod_mib"]
    margin = max(MARGIN_MIN_MIB, MARGIN_FRACTION * non_guest)
    total = record["memory_mib"] + non_guest + margin
    return ROUND_MIB * math.ceil(total / ROUND_MIB)


def tree_rss_mib(pid: int) -> float:
    """RSS of ``pid`` and all its descendants."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += rss_mib(current)
        for task in Path(f"/proc/{current}/task").iterdir():
            todo += [int(c) for c in (task / "children").read_text().split()]
    return round(total, 1)


def runc_pod_rss(node: CriNode) -> float:
    """The same busybox pod through runc: its shim's process tree's RSS."""
    spec = node.pod("runc")
    pod_id = node.cri.run_pod_spec(spec, node.runc_handler).pod_sandbox_id
    cid = node.cri.create_container(
        pod_id, spec, "sleep", image=node.image,
        command=["/bin/sh", "-c", f"echo {READY}; exec sleep 3600"],
    )  # fmt: skip
    node.cri.start_container(cid)
    wait_for_line(Path(spec.log_directory) / "sleep.log", READY, 120)
    found = subprocess.run(
        ["pgrep", "-f", f"containerd-shim-runc-v2.* -id {pod_id}"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    [shim] = [int(p) for p in found.stdout.split()]
    rss = tree_rss_mib(shim)
    node.cri.stop_pod(pod_id)
    node.cri.remove_pod(pod_id)
    return rss


def qemu_pids(node: CriNode) -> set[int]:
    return {int(line.split()[0]) for line in node.qemus()}


def start_pod(node: CriNode, name: str, annotations: dict[str, str]) -> tuple[str, str, int]:
    """A running pod; its id, its container's id and its QEMU's pid."""
    before = qemu_pids(node)
    spec = node.pod(name, annotations)
    pod_id = node.cri.run_pod_spec(spec, node.handler).pod_sandbox_id
    cid = node.cri.create_container(
        pod_id, spec, "sleep", image=node.image,
        command=["/bin/sh", "-c", f"echo {READY}; exec sleep 3600"],
    )  # fmt: skip
    node.cri.start_container(cid)
    wait_for_line(Path(spec.log_directory) / "sleep.log", READY, 600)
    [pid] = qemu_pids(node) - before
    return pod_id, cid, pid


def touch_guest_memory(node: CriNode, cid: str) -> int:
    """Let the container allocate 80% of the guest's MemAvailable at once; the MiB."""
    meminfo = node.cri.exec_sync(cid, ["cat", "/proc/meminfo"]).stdout.decode()
    available = next(
        int(line.split()[1]) for line in meminfo.splitlines() if "MemAvailable" in line
    )
    mib = int(available * 0.8 / 1024)
    reply = node.cri.exec_sync(
        cid, ["dd", "if=/dev/zero", "of=/dev/null", f"bs={mib}M", "count=1"], timeout=600
    )
    if reply.exit_code != 0:
        raise RuntimeError(f"dd of {mib} MiB in the guest failed: {reply.stderr.decode()}")
    return mib


def main(record: bool) -> None:
    memory = VmSizes().memory_mib
    image = ensure_image()
    print(f"pods at the default size: {VmSizes().vcpus} vCPU, {memory} MiB (TCG here)")
    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp, cri_node(image, Path(tmp)) as node:
        policy = document.create(
            {document.POLICY_NAME: ALLOW_EVERY_REQUEST, "imagepull.toml": node.puller_settings()},
            "sha384",
        )
        annotations = {INITDATA: codec.encode_annotation(policy.raw)}
        node.cri.pull_image(node.image)
        runc_rss = runc_pod_rss(node)
        started = time.monotonic()
        _, cid_one, qemu_one = start_pod(node, "one", annotations)
        daemon = node.node.daemon_pid()
        assert daemon is not None
        daemon_one = rss_mib(daemon)
        idle = qemu_memory(qemu_one, memory)
        _, _, qemu_two = start_pod(node, "two", annotations)
        daemon_two = rss_mib(daemon)
        idle_two = qemu_memory(qemu_two, memory)
        touched_mib = touch_guest_memory(node, cid_one)
        filled = qemu_memory(qemu_one, memory)
        seconds = time.monotonic() - started
    per_pod = round(max(daemon_two - daemon_one, 0.0), 1)
    own = max(idle.own_mib, idle_two.own_mib, filled.own_mib)
    print(f"baseline: the same pod through runc: {runc_rss} MiB (shim, pause, sleep)")
    for label, m in (("pod 1 idle", idle), ("pod 2 idle", idle_two), ("pod 1 filled", filled)):
        print(
            f"{label}: QEMU RSS {m.rss_mib} MiB = guest RAM resident {m.guest_ram_mib} MiB"
            f" + QEMU's own {m.own_mib} MiB"
        )
    print(f"the container touched {touched_mib} MiB of guest memory before 'pod 1 filled'")
    print(f"daemon RSS: 1 pod {daemon_one} MiB, 2 pods {daemon_two} MiB: {per_pod} MiB per pod")
    result: dict[str, float] = {
        "memory_mib": memory,
        "qemu_own_mib": own,
        "daemon_per_pod_mib": per_pod,
        "touched_mib": touched_mib,
        "runc_pod_mib": runc_rss,
    }
    for label, m in (("idle", idle), ("filled", filled)):
        result |= {f"{label}_{key}": value for key, value in asdict(m).items()}
    fixed = podfixed_mib(result)
    print(
        f"worst case: all {memory} MiB of guest RAM + QEMU's own {own} MiB + daemon {per_pod}"
        f" MiB; with the margin: overhead.podFixed.memory {fixed}Mi ({seconds:.0f} s)"
    )
    if record:
        recorded = {**result, "accel": "tcg", "written_by": "python -m bench.overhead_bench"}
        RECORD.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
        print(f"recorded in {RECORD}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.overhead_bench")
    parser.add_argument("--record", action="store_true", help=f"write {RECORD}")
    main(parser.parse_args().record)
