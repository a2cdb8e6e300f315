"""The Contrast pods that still run on the node, as the node daemon records them.

Uninstalling a handler under running pods would strand them: containerd, restarted
without the runtime table, can no longer reach their tasks, and their pod-VMs run on
without a runtime that stops them. So uninstall refuses while the daemon keeps state for
a sandbox of the handler (``/var/lib/contrast/sandboxes/<namespace>/<id>.json``, its
``config_path`` below ``/opt/contrast/<handler>/``), naming each pod (from the CRI's
annotations in the sandbox bundle's ``config.json`` when that is readable, else the
sandbox id); ``--force`` goes ahead and names them as left running.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath

from installer.assets import INSTALL_ROOT
from installer.host import Host

STATE_DIR = PurePosixPath("/var/lib/contrast")
NAME = "io.kubernetes.cri.sandbox-name"
NAMESPACE = "io.kubernetes.cri.sandbox-namespace"


@dataclass(frozen=True)
class Pod:
    """A sandbox the node daemon runs: containerd's namespace and id, and the pod's
    Kubernetes name when its bundle says."""

    namespace: str
    sandbox_id: str
    name: str = ""

    def __str__(self) -> str:
        where = f"sandbox {self.sandbox_id[:12]} in containerd namespace {self.namespace}"
        return f"pod {self.name} ({where})" if self.name else where


def _name(host: Host, record: dict[str, object]) -> str:
    containers = record.get("containers")
    for container in containers if isinstance(containers, list) else []:
        if not isinstance(container, dict) or not container.get("is_sandbox"):
            continue
        bundle = container.get("bundle")
        if not isinstance(bundle, str) or not bundle.startswith("/"):
            continue
        try:
            spec = json.loads(host.path(bundle).joinpath("config.json").read_text())
        except (OSError, ValueError):
            return ""
        annotations = spec.get("annotations") if isinstance(spec, dict) else None
        if isinstance(annotations, dict) and annotations.get(NAME):
            return f"{annotations.get(NAMESPACE, '')}/{annotations[NAME]}".lstrip("/")
    return ""


def running(host: Host, handler: str) -> list[Pod]:
    """The pods of ``handler`` the daemon keeps state for, by namespace and id. A state
    file that cannot be read counts as a pod (its sandbox may run: we cannot tell)."""
    folder = host.path(STATE_DIR / "sandboxes")
    handler_dir = INSTALL_ROOT / handler
    pods: list[Pod] = []
    for path in sorted(folder.glob("*/*.json")):
        try:
            doc = json.loads(path.read_text())
            record = doc["sandbox"]
            config_path = PurePosixPath(record["config_path"])
        except (OSError, ValueError, KeyError, TypeError):
            pods.append(Pod(path.parent.name, path.stem, f"(unreadable state {path.name})"))
            continue
        if config_path.is_relative_to(handler_dir):
            pods.append(Pod(path.parent.name, path.stem, _name(host, record)))
    return pods
