"""Helpers of the pod-VM tests (test_pod_vm.py, test_pod_vm_network.py and the
containerd-driven tests): runtime config for the real guest image, bundles as CRI
writes them, the QEMUs a test left, and the network test's policy and ICMP probe."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from agent.sandbox import config as runtime_config
from guest.image.manifest import GuestImage
from tests.integration.guestagent.requests import ALLOW_ALL


def write_config(image: GuestImage, path: Path) -> runtime_config.RuntimeConfig:
    path.write_text(
        f"""
platform = "qemu-insecure"
[guest]
kernel = "{image.kernel}"
initrd = "{image.initrd}"
rootfs = "{image.root}"
manifest = "{image.directory / "manifest.json"}"
[timeouts]
boot_seconds = 300
"""
    )
    return runtime_config.load(path)


def qemus_under(folder: Path) -> list[str]:
    found = subprocess.run(
        ["pgrep", "-a", "qemu-system"], capture_output=True, text=True, check=False
    )
    return [line for line in found.stdout.splitlines() if str(folder) in line]


def pause_bundle(
    folder: Path, annotations: dict[str, str], pod_id: str = "pod1", netns: Path | None = None
) -> Path:
    """The sandbox container's bundle as containerd's CRI writes it (trimmed)."""
    bundle = folder / "bundles" / pod_id
    bundle.mkdir(parents=True)
    spec = {
        "ociVersion": "1.0.2-dev",
        "process": {
            "user": {"uid": 65535, "gid": 65535},
            "args": ["/pause"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": pod_id,
        "mounts": [
            {
                "destination": "/proc",
                "type": "proc",
                "source": "proc",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
        ],
        "annotations": {
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.sandbox-id": pod_id,
            **annotations,
        },
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore"],
        },
    }
    # Without a netns: a network namespace of its own and empty (no path), as CRI never
    # leaves it out but for a host-network pod, which the daemon refuses.
    network = {"type": "network", "path": str(netns)} if netns is not None else {"type": "network"}
    spec["linux"]["namespaces"].append(network)  # type: ignore[index]
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


# An ICMP echo request (no ping(8) on our machines), retried until a reply comes.
ICMP_ECHO = """
import socket, struct, sys, time
def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(2)
body = struct.pack("!BBHHH", 8, 0, 0, 0x4242, 1) + b"contrast"
packet = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    s.sendto(packet, (sys.argv[1], 0))
    try:
        while True:
            data, (source, _) = s.recvfrom(1024)
            icmp = data[(data[0] & 0x0F) * 4:]
            if source == sys.argv[1] and icmp[0] == 0 and icmp[4:6] == b"BB":
                print("reply from", source)
                sys.exit(0)
    except TimeoutError:
        continue
print("no reply")
"""

NETWORK_POLICY = ALLOW_ALL + "".join(
    f"default {name} := true\n"
    for name in ("UpdateInterfaceRequest", "UpdateRoutesRequest", "AddARPNeighborsRequest")
)


def container_bundle(folder: Path, image: str, args: list[str]) -> Path:
    """A workload container's bundle as CRI writes it (trimmed), in sandbox pod1."""
    bundle = folder / "bundles" / "app"
    bundle.mkdir(parents=True)
    spec = {
        "ociVersion": "1.0.2-dev",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin"],
            "cwd": "/",
        },
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
        ],
        "annotations": {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.sandbox-id": "pod1",
            "io.kubernetes.cri.image-name": image,
        },
        "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                                 {"type": "mount"}]},
    }  # fmt: skip
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle
