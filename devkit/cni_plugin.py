"""A CNI plugin for the development kit: the pod's ``eth0`` as the bridge plugin makes it,
except that the host end of the veth goes into a node netns the kit created
(``node_netns`` in the network config), never into the machine's own network namespace.

Addresses come from ``<subnet>.<first>`` .. ``<subnet>.<last>`` (``subnet``, ``first``,
``last`` in the config), one file per address under ``data_dir`` naming the container
(host-local IPAM's idea), so several pods run side by side.

containerd runs it as ``python3 cni_plugin.py`` via a wrapper in its CNI bin_dir
(``devkit.crinode``); it uses the standard library only. The CNI protocol is
environment variables in, the network config on stdin, a result JSON on stdout (CNI
spec 0.4.0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def ip(*args: str) -> None:
    subprocess.run(
        ["ip", *args], check=True, capture_output=True, timeout=10, stdin=subprocess.DEVNULL
    )


def allocate(config: dict[str, Any], container: str) -> str:
    """The address held for ``container`` (a new one when it holds none)."""
    folder = Path(config["data_dir"])
    folder.mkdir(parents=True, exist_ok=True)
    for held in folder.iterdir():
        if held.read_text() == container:
            return held.name
    for last in range(int(config["first"]), int(config["last"]) + 1):
        address = f"{config['subnet']}.{last}"
        try:
            fd = os.open(folder / address, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as out:
            out.write(container)
        return address
    raise RuntimeError(f"no free address in {config['subnet']}.{config['first']}-{config['last']}")


def release(config: dict[str, Any], container: str) -> None:
    folder = Path(config["data_dir"])
    if not folder.is_dir():
        return
    for held in folder.iterdir():
        if held.read_text() == container:
            held.unlink()


def add(config: dict[str, Any], host_end: str) -> dict[str, Any]:
    node = config["node_netns"]
    netns_name = Path(os.environ["CNI_NETNS"]).name
    ifname = os.environ["CNI_IFNAME"]
    address = allocate(config, os.environ["CNI_CONTAINERID"])
    cidr, gateway = f"{address}/{config['prefix']}", config["gateway"]
    # The address may have been a removed pod's a moment ago: the node's neighbour
    # cache would still send to that pod's MAC, stalling dials into the new one.
    subprocess.run(
        ["ip", "-n", node, "neigh", "flush", "to", address],
        capture_output=True, check=False, timeout=10, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    ip("-n", node, "link", "add", host_end, "type", "veth", "peer", "name", ifname,
       "netns", netns_name)  # fmt: skip
    ip("-n", node, "link", "set", host_end, "master", config["bridge"], "up")
    ip("-n", netns_name, "link", "set", ifname, "up")
    ip("-n", netns_name, "link", "set", "lo", "up")
    ip("-n", netns_name, "addr", "add", cidr, "dev", ifname)
    ip("-n", netns_name, "route", "add", "default", "via", gateway, "dev", ifname)
    return {
        "cniVersion": config["cniVersion"],
        "interfaces": [{"name": ifname, "sandbox": os.environ["CNI_NETNS"]}],
        "ips": [{"version": "4", "address": cidr, "gateway": gateway, "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": gateway}],
        "dns": {},
    }


def main() -> int:
    command = os.environ["CNI_COMMAND"]
    config = json.load(sys.stdin)
    if command == "VERSION":
        print(json.dumps({"cniVersion": "0.4.0", "supportedVersions": ["0.3.1", "0.4.0"]}))
        return 0
    host_end = "veth" + os.environ["CNI_CONTAINERID"][:8]
    if command == "DEL":
        subprocess.run(
            ["ip", "-n", config["node_netns"], "link", "del", host_end],
            capture_output=True, check=False, timeout=10, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        release(config, os.environ["CNI_CONTAINERID"])
        return 0
    if command == "CHECK":
        return 0
    print(json.dumps(add(config, host_end)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
