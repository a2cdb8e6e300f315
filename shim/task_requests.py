"""Reading a Task request: its namespace, runtime options, OCI spec and the
sandbox it belongs to, checked and converted for :mod:`shim.task`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from agent.sandbox import config as runtime_config
from agent.sandbox.errors import RuntimeConfigError, TaskStateError
from api.runtimeoptions.v1 import api_pb2 as runtimeoptions
from ttrpc import CallContext, InvalidArgument

NAMESPACE_KEY = "containerd-namespace-ttrpc"
SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
CONTAINER_TYPE = "io.kubernetes.cri.container-type"
OPTIONS_TYPE = "runtimeoptions.v1.Options"


def request_namespace(ctx: CallContext) -> str:
    namespace = ctx.get(NAMESPACE_KEY)
    if not namespace:
        raise InvalidArgument(f"request without the {NAMESPACE_KEY} metadata")
    return namespace


def config_path_of(options: Any) -> str:
    if options is None or not options.value:
        return ""
    if options.type_url.rsplit("/", 1)[-1] != OPTIONS_TYPE:
        raise RuntimeConfigError(
            f"runtime options of type {options.type_url!r}, not {OPTIONS_TYPE}"
        )
    parsed = runtimeoptions.Options()
    parsed.ParseFromString(options.value)
    return parsed.config_path


def runtime_config_of(task_id: str, options: Any) -> runtime_config.RuntimeConfig:
    """The runtime configuration the options' ConfigPath names; raises RuntimeConfigError."""
    config_path = config_path_of(options)
    if not config_path:
        raise RuntimeConfigError(
            f"task {task_id}: the runtime options carry no ConfigPath "
            "(containerd's runtime entry needs options.ConfigPath)"
        )
    return runtime_config.load(Path(config_path))


def netns_of(oci: dict[str, Any]) -> Path | None:
    for namespace in oci.get("linux", {}).get("namespaces", []):
        if namespace.get("type") == "network" and namespace.get("path"):
            return Path(namespace["path"])
    return None


def sandbox_run_dir(run_dir: Path, namespace: str, sandbox_id: str) -> Path:
    """A sandbox's directory for sockets, logs and disks: named by a short hash, since
    CRI's 64-hex sandbox ids would push socket paths past the 107-byte limit."""
    digest = hashlib.sha256(f"{namespace}/{sandbox_id}".encode()).hexdigest()[:16]
    return run_dir / "vm" / digest


def read_spec(bundle: str) -> dict[str, Any]:
    path = Path(bundle) / "config.json"
    try:
        spec = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TaskStateError(f"cannot read the OCI spec {path}: {err}") from err
    if not isinstance(spec, dict):
        raise TaskStateError(f"{path} is not a JSON object")
    return spec
