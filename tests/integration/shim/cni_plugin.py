"""A CNI plugin for tests: the pod's ``eth0`` as the bridge plugin makes it, except that
the host end of the veth goes into a node netns the test created (``node_netns`` in the
network config), never into the machine's own network namespace.

containerd runs it as ``python3 cni_plugin.py`` via a wrapper in its CNI bin_dir; the
CNI protocol is environment variables in, the network config on stdin, a result JSON
on stdout (CNI spec 0.4.0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def main() -> int:
    command = os.environ["CNI_COMMAND"]
    config = json.load(sys.stdin)
    if command == "VERSION":
        print(json.dumps({"cniVersion": "0.4.0", "supportedVersions": ["0.3.1", "0.4.0"]}))
        return 0
    node = config["node_netns"]
    netns_name = os.path.basename(os.environ.get("CNI_NETNS", ""))
    host_end = "veth" + os.environ["CNI_CONTAINERID"][:8]
    if command == "DEL":
        subprocess.run(
            ["ip", "-n", node, "link", "del", host_end], capture_output=True, check=False
        )
        return 0
    if command == "CHECK":
        return 0
    ifname = os.environ["CNI_IFNAME"]
    address, gateway = config["address"], config["gateway"]
    ip(
        "-n",
        node,
        "link",
        "add",
        host_end,
        "type",
        "veth",
        "peer",
        "name",
        ifname,
        "netns",
        netns_name,
    )
    ip("-n", node, "link", "set", host_end, "master", config["bridge"], "up")
    ip("-n", netns_name, "link", "set", ifname, "up")
    ip("-n", netns_name, "link", "set", "lo", "up")
    ip("-n", netns_name, "addr", "add", address, "dev", ifname)
    ip("-n", netns_name, "route", "add", "default", "via", gateway, "dev", ifname)
    print(
        json.dumps(
            {
                "cniVersion": config["cniVersion"],
                "interfaces": [{"name": ifname, "sandbox": os.environ["CNI_NETNS"]}],
                "ips": [{"version": "4", "address": address, "gateway": gateway, "interface": 0}],
                "routes": [{"dst": "0.0.0.0/0", "gw": gateway}],
                "dns": {},
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
