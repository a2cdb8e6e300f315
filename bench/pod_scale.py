"""Pods started at once through containerd's CRI, the way a Deployment scale-up arrives,
next to one pod alone in the same run.

One containerd 1.6 with our handler and runc (devkit.crinode), the digest-pinned busybox
image already pulled by containerd. For each runtime: one pod alone, then ``--pods``
pods whose RunPodSandbox calls are issued together (one thread each, released by a
barrier), each running CreateContainer and StartContainer and waiting for its first
CRI log line. Printed: every pod's time from the common start to its first output,
the total wall time until the last pod's output, and, for ours, when each pod's QEMU
was launched (from the node daemon's log, host clock): launches spread out by about
one VM boot each would mean the daemon serializes pods behind each other's boot.
Every pod must be ready; all are stopped and removed afterwards and nothing may be
left behind.

Under TCG the pod-VMs' CPUs are emulated on this machine's two cores (shared with
whatever else runs), so N pods at once take up to about N times one pod's boot even
when nothing in the daemon waits for another pod; the launch column is the figure
that shows whether the daemon does.

    .venv/bin/python -m bench.pod_scale [--pods 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench import pod_steps
from bench.pod_cri import ALLOW_EVERY_REQUEST, FIRST_LINE, INITDATA, WORKLOAD
from devkit.crilog import wait_for_line
from devkit.crinode import CriNode, cri_node
from guest.image.build import ensure_image
from guest.initdata import codec, document


@dataclass(frozen=True)
class Started:
    """One pod: its sandbox id, seconds from the common start to its first output, and
    the wall-clock (epoch) start."""

    name: str
    pod_id: str
    output: float


def one_pod(
    node: CriNode, handler: str, annotations: dict[str, str], name: str,
    barrier: threading.Barrier | None, clock: list[float],
) -> Started:  # fmt: skip
    """RunPodSandbox (after the barrier), CreateContainer, StartContainer, first line."""
    spec = node.pod(name, annotations)
    if barrier is not None:
        barrier.wait()
    started = clock[0] if clock else time.monotonic()
    pod_id = node.cri.run_pod_spec(spec, handler).pod_sandbox_id
    cid = node.cri.create_container(pod_id, spec, "first", image=node.image, command=WORKLOAD)
    node.cri.start_container(cid)
    wait_for_line(Path(spec.log_directory) / "first.log", FIRST_LINE, 1200, poll=0.02)
    return Started(name, pod_id, time.monotonic() - started)


def remove(node: CriNode, pods: list[Started]) -> None:
    for pod in pods:
        node.cri.stop_pod(pod.pod_id)
        node.cri.remove_pod(pod.pod_id)


def at_once(
    node: CriNode, handler: str, annotations: dict[str, str], prefix: str, count: int
) -> tuple[list[Started], float, float]:
    """``count`` pods issued together; (pods, total wall seconds, epoch of the start)."""
    barrier = threading.Barrier(count + 1)
    clock: list[float] = []
    with ThreadPoolExecutor(count) as pool:
        futures = [
            pool.submit(one_pod, node, handler, annotations, f"{prefix}{i}", barrier, clock)
            for i in range(count)
        ]
        clock.append(time.monotonic())  # before the barrier opens: every pod's zero
        wall = time.time()
        barrier.wait()
        pods = []
        errors = []
        for future in futures:
            try:
                pods.append(future.result())
            except Exception as err:  # every pod must be ready: report each failure
                errors.append(err)
    total = time.monotonic() - clock[0]
    remove(node, pods)
    if errors:
        raise SystemExit(f"{len(errors)} of {count} pods failed: {errors}")
    return pods, total, wall


def launches(node: CriNode, pods: list[Started], since: float) -> dict[str, float]:
    """Seconds from ``since`` (epoch) to each pod's QEMU launch, from the daemon's log."""
    lines = node.node.daemon_log().splitlines()
    found = {}
    for pod in pods:
        needle = f"sandbox-{pod.pod_id[:12]}: starting "
        for line in lines:
            if needle in line:
                found[pod.name] = pod_steps.log_time(line) - since
                break
    return found


def main(count: int) -> None:
    image = ensure_image()
    with (
        tempfile.TemporaryDirectory(prefix="pods-", dir="/tmp") as tmp,
        cri_node(image, parent=Path(tmp)) as node,
    ):
        policy = document.create(
            {document.POLICY_NAME: ALLOW_EVERY_REQUEST, "imagepull.toml": node.puller_settings()},
            "sha384",
        )
        ours = {INITDATA: codec.encode_annotation(policy.raw)}
        node.cri.pull_image(node.image)
        # The node's first pod of each runtime starts containerd's, relay's and daemon's
        # first use: not measured.
        for handler, annotations, name in ((node.runc_handler, {}, "warm-runc"),
                                           (node.handler, ours, "warm-ours")):  # fmt: skip
            remove(node, [one_pod(node, handler, annotations, name, None, [])])
        results = {}
        for label, handler, annotations in (("runc", node.runc_handler, {}),
                                            ("ours", node.handler, ours)):  # fmt: skip
            alone = one_pod(node, handler, annotations, f"{label}-alone", None, [])
            remove(node, [alone])
            pods, total, wall = at_once(node, handler, annotations, f"{label}-", count)
            launched = launches(node, pods, wall) if label == "ours" else {}
            results[label] = (alone, pods, total, launched)
        left = node.leftovers()
        if left:
            raise SystemExit(f"the bench's pods left behind: {left}")
    print(f"{count} pods at once through containerd 1.6's CRI (RunPodSandbox to the first")
    print("output of the pod's container), next to one pod alone in the same run; seconds:")
    for label, (alone, pods, total, launched) in results.items():
        times = sorted(p.output for p in pods)
        print(f"  {label}: one pod alone {alone.output:.2f}; {count} at once: all ready after "
              f"{total:.2f} (median pod {statistics.median(times):.2f}, "
              f"{total / alone.output:.1f}x one alone)")  # fmt: skip
        for pod in sorted(pods, key=lambda p: p.output):
            where = f", QEMU launched at {launched[pod.name]:.2f}" if pod.name in launched else ""
            print(f"    {pod.name:8} first output at {pod.output:6.2f}{where}")
        if launched:
            spread = max(launched.values()) - min(launched.values())
            print(
                f"  QEMU launches of the {count} pods within {1000 * spread:.0f} ms of each other"
            )
            print("  (a daemon that serialized pods behind each other's VM boot would spread")
            print(f"   them about one boot apart: {alone.output:.0f} s each)")
    print("TCG: every pod-VM's CPU is emulated on this machine's 2 cores, shared with other")
    print("work, so pods at once take up to N times one pod even though none waits for another;")
    print("under KVM the boots would overlap on the node's cores.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=5, help="pods started at once")
    main(parser.parse_args().pods)
