"""Pod churn through containerd's CRI: what the node daemon holds after every round.

One CRI node (``devkit.crinode``, containerd 1.6, TCG), small pod-VMs. A first pod
starts the relay and the daemon; the daemon's RSS, open fds and asyncio tasks then are
the start level. Then ``--cycles`` pods (50) are created and removed, ``--parallel``
(3) at a time, in rounds of ``--round`` (10): each pod runs a container whose output
reaches its CRI log and answers an ExecSync. After each round (no pod left) the
daemon's figures print next to the start level, and containerd's own RSS and fds next
to theirs at the start. The baseline, in the same run through the same containerd: the
same cycles with runc, printing containerd's figures per round (how much a CRI host
process moves under runc churn). At the end, everything a pod could have left behind
is listed (``devkit.churn.leftovers``: QEMU, veth, tap netns, mounts, cgroups, state
files, run-dir sockets, logs over the cap); the bench exits 1 if anything is.

    CONTRAST_IMAGE_CACHE=... .venv/bin/python -m bench.churn_bench [--cycles 50]
        [--parallel 3] [--round 10] [--runc-cycles 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from devkit import churn
from devkit.crinode import CriNode, cri_node
from guest.image.build import ensure_image
from guest.image.manifest import GuestImage


def rounds(total: int, size: int) -> list[range]:
    return [range(i, min(i + size, total)) for i in range(0, total, size)]


def runc_baseline(node: CriNode, cycles: int, parallel: int, size: int) -> None:
    ctd = churn.containerd_pid(node)
    start = churn.proc_stats(ctd)
    print(f"runc baseline, {cycles} cycles, {parallel} at a time")
    print(f"  start      containerd {start.line()}")
    done, traces = 0, []
    for chunk in rounds(cycles, size):
        began = time.monotonic()
        names = [f"runc-{i}" for i in chunk]
        traces += churn.churn_round(node, node.runc_handler, names, parallel, {})
        done += len(chunk)
        now = churn.proc_stats(ctd)
        print(f"  after {done:3d}  containerd {now.line()}  ({time.monotonic() - began:.0f} s)")
    left = [line for trace in traces for line in churn.pod_remains(trace)]
    print(f"  runc pods left behind: {left or 'nothing (netns, cgroups)'}")


def ours(node: CriNode, cycles: int, parallel: int, size: int) -> list[str]:
    annotations = churn.allow_all_annotations(node)
    traces = [churn.pod_cycle(node, node.handler, "first", annotations)]  # relay, daemon
    ctd = churn.containerd_pid(node)
    start, ctd_start = churn.daemon_stats(node), churn.proc_stats(ctd)
    files = churn.run_dir_files(node)
    print(f"ours, {cycles} cycles, {parallel} at a time, pod-VMs of {churn.SMALL_VM_MIB} MiB")
    print(f"  start      daemon {start.line()}; containerd {ctd_start.line()}")
    done, began_all = 0, time.monotonic()
    for chunk in rounds(cycles, size):
        began = time.monotonic()
        names = [f"pod-{i}" for i in chunk]
        traces += churn.churn_round(node, node.handler, names, parallel, annotations)
        done += len(chunk)
        took = time.monotonic() - began
        now = churn.settled(node, start, fd_slack=0)
        ctd_now = churn.proc_stats(ctd).line()
        pace = f"{took:.0f} s, {took / len(chunk):.0f} s/pod"
        print(f"  after {done:3d}  daemon {now.line()}; containerd {ctd_now}  ({pace})")
        grown = {
            name: count for name, count in now.tasks_by_coroutine
            if count > dict(start.tasks_by_coroutine).get(name, 0)
        }  # fmt: skip
        if grown:
            print(f"             tasks above the start: {grown}")
    total = time.monotonic() - began_all
    print(
        f"  {cycles} cycles in {total:.0f} s ({total / cycles:.0f} s per pod, {parallel} at once)"
    )
    print(f"  start tasks by coroutine: {dict(start.tasks_by_coroutine)}")
    return churn.leftovers(node, files, traces)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=3)
    parser.add_argument("--round", type=int, default=10, help="cycles between measurements")
    parser.add_argument("--runc-cycles", type=int, default=50)
    args = parser.parse_args()
    image: GuestImage = ensure_image()
    with (
        tempfile.TemporaryDirectory(prefix="churn-", dir="/tmp") as tmp,
        cri_node(image, parent=Path(tmp)) as node,
    ):
        churn.use_small_vms(node)
        node.cri.pull_image(node.image)
        if args.runc_cycles:
            runc_baseline(node, args.runc_cycles, args.parallel, args.round)
        left = ours(node, args.cycles, args.parallel, args.round)
        if left:
            print("left behind:", *left, sep="\n  ")
            return 1
        print("left behind: nothing (QEMU, veth, netns, mounts, cgroups, state, run dir, logs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
