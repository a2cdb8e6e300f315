"""The host's OCI spec (Kata's protobuf form) turned into a config.json for the guest.

The host is untrusted and its paths mean nothing in the guest, so the spec is adapted
as Kata's agent does, with these rules (each dropped item is reported in ``notes``):

- root: always ``rootfs`` inside the bundle (the image puller's overlay mount).
- mounts: kernel file systems (proc, sysfs, tmpfs, devpts, mqueue, cgroup) are kept;
  a bind mount from where the host may put files (CopyFile's directory and the
  emptyDir volumes, SHARED_PREFIXES) is kept, and must exist; otherwise
  /etc/hostname, /etc/hosts and /etc/resolv.conf come from the sandbox's files in
  the guest and /dev/shm becomes a tmpfs. Any other mount is refused
  (InvalidRequest naming it): the host provides every mount or fails the container
  itself (agent.volumes), a mount is never silently dropped.
- namespaces: network is dropped (containers use the VM's network, set up by the
  agent); ipc and uts join the sandbox (pause) container's; pid joins it only when
  the request asks for the sandbox pid namespace; user and time are dropped (no
  host id mappings apply); mount and cgroup are always new.
- cgroups: ``<cgroup parent>/<container id>`` (cgroup v2 in the guest), whatever
  path the host chose.
- hooks (host programs) and devices that do not exist in the guest are dropped, except
  the block devices the host announced (``GuestContext.devices``, guest.agent.devices).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api.kata import oci_linux_pb2, oci_pb2, oci_process_pb2
from guest.agent.errors import InvalidRequest

OCI_VERSION = "1.0.2"
PROC_SYS = Path("/proc/sys")
_SYSCTL_NAME = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_-]+)+")
CGROUP_PARENT = "/contrast"
KERNEL_FILESYSTEMS = frozenset({"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2"})
SANDBOX_FILES = ("hostname", "hosts", "resolv.conf")
SHM_SIZE = 64 * 1024 * 1024
# Bind mount sources the guest accepts: what CopyFile wrote (Kata's layout). Anything
# else of the guest (its root, /run/measured-cfg) is never mounted into a container.
SHARED_PREFIXES = (
    "/run/kata-containers/shared/containers/",
    # emptyDir volumes the guest made itself (guest.agent.volumes).
    "/run/kata-containers/sandbox/local/",
    "/run/kata-containers/sandbox/ephemeral/",
)


@dataclass(frozen=True)
class GuestContext:
    """What the guest decides for a container, independent of the host's spec."""

    container_id: str
    cgroup_parent: str = CGROUP_PARENT
    # Directory holding hostname, hosts, resolv.conf for the pod (None: none).
    sandbox_files: Path | None = None
    # The sandbox container's init: its ipc/uts (and pid, see join_pid_ns) are joined.
    sandbox_pid: int | None = None
    join_pid_ns: bool = False
    exists: Callable[[str], bool] = field(default=os.path.exists)
    # Container paths of the block devices the host announced (guest.agent.devices):
    # their nodes are created in the container even though no such path is in the guest.
    devices: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Adapted:
    config: dict[str, Any]
    notes: tuple[str, ...]  # what was dropped or replaced, for the log
    # net.* sysctls: the pod's network namespace is the guest's own (containers get none
    # of their own, and crun refuses net.* without one), so the guest sets them there.
    pod_sysctls: tuple[tuple[str, str], ...] = ()


def adapt(spec: oci_pb2.Spec, ctx: GuestContext) -> Adapted:
    """config.json for ``spec`` in the guest. Raises InvalidRequest for an unusable spec."""
    if not spec.HasField("Process") or not spec.Process.Args:
        raise InvalidRequest("the OCI spec has no process arguments")
    notes: list[str] = []
    linux = spec.Linux
    namespaces = _namespaces(linux.Namespaces, ctx, notes)
    joins_uts = any(ns["type"] == "uts" and "path" in ns for ns in namespaces)
    config: dict[str, Any] = {
        # The schema this adaptation writes (and the guest's crun 1.8 knows), not the
        # host's: containerd 2.3 sends 1.3.0, which crun refuses ("unknown version").
        "ociVersion": OCI_VERSION,
        "process": process(spec.Process),
        "root": {"path": "rootfs", "readonly": spec.Root.Readonly},
        "mounts": _mounts(spec.Mounts, ctx, notes),
        "annotations": dict(spec.Annotations),
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": f"{ctx.cgroup_parent}/{ctx.container_id}",
            "resources": resources(linux.Resources),
            "maskedPaths": list(linux.MaskedPaths),
            "readonlyPaths": list(linux.ReadonlyPaths),
            "sysctl": {k: v for k, v in linux.Sysctl.items() if not _pod_sysctl(k)},
        },
    }
    if spec.Hostname and not joins_uts:
        config["hostname"] = spec.Hostname
    elif spec.Hostname:
        notes.append("hostname: set by the sandbox's shared uts namespace")
    if linux.HasField("Seccomp") and linux.Seccomp.DefaultAction:
        config["linux"]["seccomp"] = seccomp(linux.Seccomp)
    if linux.RootfsPropagation:
        config["linux"]["rootfsPropagation"] = linux.RootfsPropagation
    devices = []
    for dev in linux.Devices:
        if dev.Path in ctx.devices or ctx.exists(dev.Path):
            devices.append(
                {
                    "path": dev.Path,
                    "type": dev.Type,
                    "major": dev.Major,
                    "minor": dev.Minor,
                    "fileMode": dev.FileMode,
                    "uid": dev.UID,
                    "gid": dev.GID,
                }
            )
        else:
            notes.append(f"device {dev.Path}: not in the guest, dropped")
    if devices:
        config["linux"]["devices"] = devices
    hooks = spec.Hooks
    hook_lists = (hooks.Prestart, hooks.Poststart, hooks.Poststop, hooks.CreateRuntime)
    if any((*hook_lists, hooks.CreateContainer, hooks.StartContainer)):
        notes.append("hooks: host programs, dropped")
    if linux.UIDMappings or linux.GIDMappings:
        notes.append("uid/gid mappings: host ids, dropped")
    pod = tuple(sorted((k, v) for k, v in linux.Sysctl.items() if _pod_sysctl(k)))
    return Adapted(config, tuple(notes), pod)


def _pod_sysctl(key: str) -> bool:
    return key.startswith("net.")


def apply_pod_sysctls(sysctls: tuple[tuple[str, str], ...], root: Path = PROC_SYS) -> None:
    """Set the pod's net.* sysctls in the guest's network namespace (the pod's).
    Raises InvalidRequest naming a malformed or unknown one."""
    for key, value in sysctls:
        if not _SYSCTL_NAME.fullmatch(key) or "\n" in value:
            raise InvalidRequest(f"sysctl {key!r}: not a sysctl name and value")
        path = root / key.replace(".", "/")
        try:
            path.write_text(value)
        except OSError as err:
            raise InvalidRequest(
                f"sysctl {key}={value}: cannot be set in the pod's network namespace: "
                f"{err.strerror or err}"
            ) from err


def process(proc: oci_process_pb2.Process) -> dict[str, Any]:
    """The OCI process object (also the process.json of an exec)."""
    if not proc.Args:
        raise InvalidRequest("the process has no arguments")
    out: dict[str, Any] = {
        "terminal": proc.Terminal,
        "user": {
            "uid": proc.User.UID,
            "gid": proc.User.GID,
            "additionalGids": list(proc.User.AdditionalGids),
        },
        "args": list(proc.Args),
        "env": list(proc.Env),
        "cwd": proc.Cwd or "/",
        "noNewPrivileges": proc.NoNewPrivileges,
    }
    if proc.Terminal and (proc.ConsoleSize.Height or proc.ConsoleSize.Width):
        out["consoleSize"] = {"height": proc.ConsoleSize.Height, "width": proc.ConsoleSize.Width}
    if proc.HasField("Capabilities"):
        caps = proc.Capabilities
        out["capabilities"] = {
            "bounding": list(caps.Bounding),
            "effective": list(caps.Effective),
            "inheritable": list(caps.Inheritable),
            "permitted": list(caps.Permitted),
            "ambient": list(caps.Ambient),
        }
    if proc.Rlimits:
        out["rlimits"] = [{"type": r.Type, "hard": r.Hard, "soft": r.Soft} for r in proc.Rlimits]
    if proc.OOMScoreAdj:
        out["oomScoreAdj"] = proc.OOMScoreAdj
    return out


def resources(res: oci_linux_pb2.LinuxResources) -> dict[str, Any]:
    """The OCI linux.resources object (also the input of ``crun update``)."""
    out: dict[str, Any] = {}
    if res.Devices:
        out["devices"] = [
            {
                "allow": d.Allow,
                "access": d.Access,
                **({"type": d.Type} if d.Type else {}),
                **({"major": d.Major} if d.Major >= 0 and d.Type and d.Type != "a" else {}),
                **({"minor": d.Minor} if d.Minor >= 0 and d.Type and d.Type != "a" else {}),
            }
            for d in res.Devices
        ]
    if res.HasField("Memory"):
        mem = res.Memory
        memory = {
            k: v
            for k, v in (
                ("limit", mem.Limit),
                ("reservation", mem.Reservation),
                ("swap", mem.Swap),
            )
            if v
        }
        if mem.DisableOOMKiller:
            memory["disableOOMKiller"] = True
        if memory:
            out["memory"] = memory
    if res.HasField("CPU"):
        cpu = res.CPU
        cpu_out: dict[str, Any] = {
            k: v
            for k, v in (("shares", cpu.Shares), ("quota", cpu.Quota), ("period", cpu.Period))
            if v
        }
        if cpu.Cpus:
            cpu_out["cpus"] = cpu.Cpus
        if cpu.Mems:
            cpu_out["mems"] = cpu.Mems
        if cpu_out:
            out["cpu"] = cpu_out
    if res.HasField("Pids") and res.Pids.Limit:
        out["pids"] = {"limit": res.Pids.Limit}
    if res.HugepageLimits:
        out["hugepageLimits"] = [
            {"pageSize": h.Pagesize, "limit": h.Limit} for h in res.HugepageLimits
        ]
    return out


def seccomp(sec: oci_linux_pb2.LinuxSeccomp) -> dict[str, Any]:
    out: dict[str, Any] = {"defaultAction": sec.DefaultAction}
    if sec.Architectures:
        out["architectures"] = list(sec.Architectures)
    if sec.Flags:
        out["flags"] = list(sec.Flags)
    syscalls = []
    for call in sec.Syscalls:
        entry: dict[str, Any] = {"names": list(call.Names), "action": call.Action}
        if call.HasField("errnoret"):
            entry["errnoRet"] = call.errnoret
        if call.Args:
            entry["args"] = [
                {"index": a.Index, "value": a.Value, "valueTwo": a.ValueTwo, "op": a.Op}
                for a in call.Args
            ]
        syscalls.append(entry)
    if syscalls:
        out["syscalls"] = syscalls
    return out


def _namespaces(requested: Any, ctx: GuestContext, notes: list[str]) -> list[dict[str, str]]:
    wanted = {ns.Type for ns in requested}
    out: list[dict[str, str]] = []
    for kind in ("pid", "ipc", "uts", "mount", "cgroup"):
        if kind not in wanted and kind not in ("mount", "cgroup"):
            continue
        entry = {"type": kind}
        share = kind in ("ipc", "uts") or (kind == "pid" and ctx.join_pid_ns)
        if share and ctx.sandbox_pid is not None:
            entry["path"] = f"/proc/{ctx.sandbox_pid}/ns/{kind}"
        out.append(entry)
    if ctx.join_pid_ns and "pid" not in wanted and ctx.sandbox_pid is not None:
        out.append({"type": "pid", "path": f"/proc/{ctx.sandbox_pid}/ns/pid"})
    for kind in sorted(wanted - {"pid", "ipc", "uts", "mount", "cgroup"}):
        notes.append(f"namespace {kind}: dropped")
    return out


def _is_bind(mount: Any) -> bool:
    return mount.type == "bind" or any(o in ("bind", "rbind") for o in mount.options)


def _mounts(requested: Any, ctx: GuestContext, notes: list[str]) -> list[dict[str, Any]]:
    """Raises InvalidRequest for a mount the guest cannot provide."""
    out: list[dict[str, Any]] = []
    for m in requested:
        dest = m.destination
        name = dest.removeprefix("/etc/")
        if _is_bind(m) and _shared(m.source):
            if not ctx.exists(m.source):
                raise InvalidRequest(
                    f"mount {dest}: source {m.source!r} was not provided in the guest"
                )
            out.append(_mount(m))
        elif dest.startswith("/etc/") and name in SANDBOX_FILES and _is_bind(m):
            if ctx.sandbox_files is None:
                raise InvalidRequest(f"mount {dest}: the sandbox has no {name} file")
            out.append(
                {
                    "destination": dest,
                    "type": "bind",
                    "source": str(ctx.sandbox_files / name),
                    "options": ["rbind", "ro" if "ro" in m.options else "rw"],
                }
            )
            notes.append(f"mount {dest}: the sandbox's {name}")
        elif dest == "/dev/shm" and _is_bind(m):
            out.append(
                {
                    "destination": dest,
                    "type": "tmpfs",
                    "source": "shm",
                    "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={SHM_SIZE}"],
                }
            )
        elif m.type in KERNEL_FILESYSTEMS and not _is_bind(m):
            out.append(_mount(m))
        else:
            kind = "bind" if _is_bind(m) else (m.type or "untyped")
            raise InvalidRequest(
                f"mount {dest}: {kind} of {m.source!r} is not in the guest (the host copies "
                "a volume in, or refuses the container)"
            )
    return out


def _shared(source: str) -> bool:
    return ".." not in source.split("/") and source.startswith(SHARED_PREFIXES)


def _mount(m: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"destination": m.destination, "source": m.source}
    if m.type:
        out["type"] = m.type
    if m.options:
        out["options"] = list(m.options)
    return out
