"""Volumes in the pod-VM: container start with the eight mounts a kubelet sends
(configMap, secret, projected token, downwardAPI, disk and memory emptyDir, etc-hosts,
termination-log) against the same container without them, ours and runc through one
containerd 1.6 (devkit.crinode), and how the copy time grows with a configMap's size.

Every figure is CreateContainer + StartContainer to the container's first log line in
an already running pod (the pod-VM's boot is the same with or without volumes: the
copies happen at the container's Create), medians of ``--runs``; the baseline (no
mounts, and runc) is measured in the same run, alternating.

    .venv/bin/python -m bench.volumes_bench [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from api.containerd.cri.runtime.v1 import api_pb2
from bench.pod_cri import ALLOW_EVERY_REQUEST, INITDATA
from devkit.crilog import wait_for_line
from devkit.crinode import CriNode, cri_node
from devkit.kubelet import KubeletPod, create_container
from guest.image.build import ensure_image
from guest.initdata import codec, document

FIRST_LINE = "first output"
WORKLOAD = ["/bin/sh", "-c", f"echo {FIRST_LINE}; exec sleep 600"]
SA = "/var/run/secrets/kubernetes.io/serviceaccount"
SIZES = (1 << 10, 64 << 10, 512 << 10, 2 << 20, (8 << 20) - (4 << 10))


def eight_mounts(kubelet: KubeletPod, name: str) -> list[api_pb2.Mount]:
    """The eight mounts of the e2e test, written the kubelet's way for container ``name``."""
    kubelet.atomic("configmap", f"cfg-{name}", {"a": b"v1", "b": b"v1"}, "/etc/cfg")
    kubelet.atomic("secret", f"sec-{name}", {"password": b"hunter2"}, "/etc/sec", mode=0o400)
    token = {"token": b"t" * 900, "ca.crt": b"C" * 1100, "namespace": b"default"}
    kubelet.atomic("projected", f"kube-api-access-{name}", token, SA)
    kubelet.atomic("downward-api", f"info-{name}", {"labels": b'app="bench"'}, "/etc/podinfo")
    kubelet.empty_dir("shared", "/shared")
    kubelet.empty_dir(f"mem-{name}", "/mem", memory_bytes=16 << 20)
    kubelet.etc_hosts("127.0.0.1\tlocalhost\n")
    kubelet.termination_log(name)
    return kubelet.mounts()


class Pod:
    """One running pod of a runtime, and the containers started in it."""

    def __init__(self, node: CriNode, handler: str, kubelet_root: Path, name: str) -> None:
        self.node = node
        annotations = {}
        if handler == node.handler:
            data = {document.POLICY_NAME: ALLOW_EVERY_REQUEST,
                    "imagepull.toml": node.puller_settings()}  # fmt: skip
            annotations[INITDATA] = codec.encode_annotation(document.create(data, "sha384").raw)
        self.spec = node.pod(name, annotations)
        self.kubelet = KubeletPod(kubelet_root, f"uid-{name}")
        self.id = node.cri.run_pod_spec(self.spec, handler, timeout=900).pod_sandbox_id
        self.count = 0

    def start(self, mounts: Callable[[str], list[api_pb2.Mount]]) -> tuple[float, float | None]:
        """Seconds from CreateContainer to the first log line of a new container, and
        (ours) the daemon's own figure for providing its volumes; the container is
        stopped and removed after."""
        self.count += 1
        name = f"c{self.count}"
        chosen = mounts(name)
        started = time.monotonic()
        cid = create_container(self.node.cri, self.id, self.spec, name, image=self.node.image,
                               command=WORKLOAD, mounts=chosen, timeout=900)  # fmt: skip
        self.node.cri.start_container(cid, timeout=900)
        wait_for_line(Path(self.spec.log_directory) / f"{name}.log", FIRST_LINE, 600, poll=0.01)
        seconds = time.monotonic() - started
        self.node.cri.stop_container(cid, grace=0)
        self.node.cri.remove_container(cid)
        found = re.search(
            rf"container {cid}: volumes provided in ([0-9.]+) ms", self.node.node.daemon_log()
        )
        return seconds, float(found.group(1)) / 1000 if found else None

    def close(self) -> None:
        self.node.cri.stop_pod(self.id)
        self.node.cri.remove_pod(self.id)
        self.kubelet.remove()


def no_mounts(name: str) -> list[api_pb2.Mount]:
    return []


def median_ms(samples: list[float]) -> str:
    return f"{1000 * statistics.median(samples):7.0f} ms" if samples else "      - ms"


def main(runs: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="kubelet-"))
    os.environ["CONTRAST_KUBELET_ROOT"] = str(root)  # containerd passes it to our daemon
    pods: list[Pod] = []
    try:
        with cri_node(ensure_image()) as node:
            node.cri.pull_image(node.image)
            ours = Pod(node, node.handler, root, "bench-vm")
            pods.append(ours)
            runc = Pod(node, node.runc_handler, root, "bench-runc")
            pods.append(runc)
            for pod in pods:  # warm: the guest's first pull of the image
                pod.start(no_mounts)
            figures: dict[tuple[str, str], list[float]] = {}
            copies: list[float] = []
            for _ in range(runs):
                for label, pod in (("ours", ours), ("runc", runc)):
                    for variant, mounts in (
                        ("without mounts", no_mounts),
                        ("eight mounts", lambda n, p=pod: eight_mounts(p.kubelet, n)),
                    ):
                        seconds, copy = pod.start(mounts)
                        figures.setdefault((label, variant), []).append(seconds)
                        if copy is not None:
                            copies.append(copy)
            print(f"container start to first output, median of {runs} (same pods, same run):")
            for (label, variant), samples in figures.items():
                print(f"  {label:5} {variant:15} {median_ms(samples)}")
            for label in ("ours", "runc"):
                extra = statistics.median(figures[(label, "eight mounts")]) - statistics.median(
                    figures[(label, "without mounts")]
                )
                print(f"  {label:5} the eight mounts cost {1000 * extra:6.0f} ms")
            print(f"  ours: providing the eight mounts (daemon's log) {median_ms(copies)}")

            print("one configMap key of growing size, each beside a container without mounts:")
            for size in SIZES:

                def sized(name: str, pod: Pod, size: int = size) -> list[api_pb2.Mount]:
                    payload = {"blob": os.urandom(size)}
                    pod.kubelet.atomic("configmap", f"big-{name}", payload, "/etc/big")
                    return pod.kubelet.mounts()

                mine, plain, theirs, copied = [], [], [], []
                for _ in range(runs):
                    plain.append(ours.start(no_mounts)[0])
                    seconds, copy = ours.start(lambda n: sized(n, ours))
                    mine.append(seconds)
                    if copy is not None:
                        copied.append(copy)
                    theirs.append(runc.start(lambda n: sized(n, runc))[0])
                extra = statistics.median(mine) - statistics.median(plain)
                print(f"  {size >> 10:5} KiB  copy {median_ms(copied)}  start ours "
                      f"{median_ms(mine)} (+{1000 * extra:5.0f} ms over none)  runc "
                      f"{median_ms(theirs)}")  # fmt: skip
            for pod in pods:
                pod.close()
            pods.clear()
    finally:
        for pod in pods:
            pod.kubelet.remove()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="containers per figure")
    main(parser.parse_args().runs)
