"""Pod churn on a CRI node (:mod:`devkit.crinode`): pods created and removed through
containerd's CRI, several at once, with what the node daemon holds measured between
rounds and what the pods could have left behind listed afterwards.

Used by ``bench/churn_bench.py`` (50 cycles, printed per round next to the start level
and a runc baseline) and ``tests/e2e/test_churn.py`` (fewer cycles, asserting "nothing
left" and "back to the start level"). The daemon's numbers come from its own SIGUSR1
snapshot (:mod:`agent.daemon.introspect`): RSS, open fds, live asyncio tasks by
coroutine.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from agent.daemon import introspect
from agent.daemon.logfile import LogLimits
from agent.sandbox.state import StateStore
from api.kata import agent_pb2
from devkit.crilog import wait_for_line
from devkit.crinode import CriNode
from devkit.errors import DevkitError
from guest.initdata import codec, document

INITDATA = "io.katacontainers.config.hypervisor.cc_init_data"
CGROUP_ROOT = Path("/sys/fs/cgroup")
POD_TIMEOUT = 900.0  # a VM boot under TCG on a loaded machine, plus the guest's pull
SMALL_VM_MIB = 256
# Every request allowed, each by its own rule (as a real policy allows).
ALLOW_ALL = "package agent_policy\n\n" + "".join(
    f"default {name} := true\n"
    for name in sorted(
        {m.input_type.name for m in agent_pb2.DESCRIPTOR.services_by_name["AgentService"].methods}
    )
)


@dataclass(frozen=True)
class ProcessStats:
    """One process's resident memory (KiB) and open fds; asyncio tasks when known."""

    pid: int
    rss_kib: int
    fds: int
    tasks: int | None = None
    tasks_by_coroutine: tuple[tuple[str, int], ...] = ()

    def line(self) -> str:
        tasks = "" if self.tasks is None else f", {self.tasks} asyncio tasks"
        return f"RSS {self.rss_kib / 1024:.1f} MiB, {self.fds} fds{tasks}"


def daemon_stats(crinode: CriNode, timeout: float = 60.0) -> ProcessStats:
    """The node daemon's snapshot, asked for by SIGUSR1. Raises DevkitError when no
    daemon runs or none answers within ``timeout`` (a bound for a broken daemon, not
    a measure)."""
    pid = crinode.node.daemon_pid()
    if pid is None:
        raise DevkitError(f"no node daemon runs (no pid file in {crinode.node.run_dir})")
    path = crinode.node.run_dir / introspect.STATS_FILE
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise DevkitError(f"daemon {pid} wrote no {path} within {timeout:.0f} s")
        time.sleep(0.1)
    data = json.loads(path.read_text())
    path.unlink()
    return ProcessStats(
        data["pid"], data["rss_kib"], data["fds"], data["tasks"],
        tuple(sorted(data["tasks_by_coroutine"].items())),
    )  # fmt: skip


def proc_stats(pid: int) -> ProcessStats:
    """RSS and open fds of any process, from ``/proc/<pid>``."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return ProcessStats(pid, rss, sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir()))


def containerd_pid(crinode: CriNode) -> int:
    """The node's containerd (started on its own ``--address``)."""
    address = str(crinode.containerd.socket)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd") and address.encode() in argv:
            return int(entry.name)
    raise DevkitError(f"no containerd process serves {address}")


def use_small_vms(crinode: CriNode, memory_mib: int = SMALL_VM_MIB) -> None:
    """Pod-VMs of ``memory_mib`` from now on (the handler's runtime config gains a
    ``[vm]`` table; the daemon reads it per pod)."""
    text = crinode.runtime_config.read_text()
    if "[vm]" not in text:
        crinode.runtime_config.write_text(f"{text}[vm]\nmemory_mib = {memory_mib}\n")


def allow_all_annotations(crinode: CriNode) -> dict[str, str]:
    data = {document.POLICY_NAME: ALLOW_ALL, "imagepull.toml": crinode.puller_settings()}
    return {INITDATA: codec.encode_annotation(document.create(data, "sha384").raw)}


@dataclass(frozen=True)
class PodTrace:
    """What one pod had on the host: its sandbox and container ids, its netns."""

    pod_id: str
    container_ids: tuple[str, ...]
    netns: str


def pod_cycle(
    crinode: CriNode, handler: str, name: str, annotations: dict[str, str],
    on_stage: Callable[[str], None] = lambda _: None,
) -> PodTrace:  # fmt: skip
    """One pod's life: RunPodSandbox, a container of the busybox image whose output
    reaches its CRI log, an ExecSync answering, StopPodSandbox, RemovePodSandbox
    (also when a step failed). ``on_stage`` hears "run", "create", "exec" and "remove"
    before each. Raises what the failed step raised."""
    cri = crinode.cri
    spec = crinode.pod(name, annotations)
    on_stage("run")
    pod_id = cri.run_pod_spec(spec, handler, timeout=POD_TIMEOUT).pod_sandbox_id
    try:
        on_stage("create")
        command = ["sh", "-c", f"echo up {name}; exec sleep 3600"]
        cid = cri.create_container(
            pod_id, spec, "work", image=crinode.image, command=command, timeout=POD_TIMEOUT
        )
        netns = sandbox_netns(crinode, pod_id, cid)
        cri.start_container(cid, timeout=POD_TIMEOUT)
        wait_for_line(Path(spec.log_directory) / "work.log", f"up {name}", POD_TIMEOUT)
        on_stage("exec")
        done = cri.exec_sync(cid, ["sh", "-c", f"echo exec {name}"])
        if (done.stdout, done.exit_code) != (f"exec {name}\n".encode(), 0):
            raise DevkitError(f"pod {name}: ExecSync answered {done}")
    finally:
        on_stage("remove")
        cri.stop_pod(pod_id)
        cri.remove_pod(pod_id)
    return PodTrace(pod_id, (cid,), netns)


def sandbox_netns(crinode: CriNode, pod_id: str, container_id: str) -> str:
    """The pod's network namespace: the file CNI made under /var/run/netns, as our
    daemon's sandbox record names it; else the container's spec's path (runc's pods:
    ``/proc/<sandbox pid>/ns/net``, gone with that process, a number a later process
    may reuse, so not checked afterwards)."""
    records, _ = StateStore(crinode.node.state_dir).load_all()
    for record in records:
        if record.id == pod_id and record.vm is not None and record.vm.details.get("netns"):
            return record.vm.details["netns"]
    return network_namespace(crinode.cri.container_info(container_id))


def network_namespace(info: dict[str, object]) -> str:
    """The network namespace path in a container's verbose CRI info ("" for none)."""
    spec = info.get("runtimeSpec")
    namespaces = spec.get("linux", {}).get("namespaces", []) if isinstance(spec, dict) else []
    paths = [ns.get("path", "") for ns in namespaces if ns.get("type") == "network"]
    return paths[0] if paths else ""


def churn_round(
    crinode: CriNode, handler: str, names: list[str], parallel: int,
    annotations: dict[str, str],
) -> list[PodTrace]:  # fmt: skip
    """``names`` pod cycles, ``parallel`` at a time; every one runs to its end, then
    the first failure is raised."""
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = [pool.submit(pod_cycle, crinode, handler, n, annotations) for n in names]
    return [future.result() for future in futures]


def pod_remains(trace: PodTrace) -> list[str]:
    """A traced pod's netns and cgroup directories (sandbox's and containers', on
    every hierarchy: containerd's CRI names them ``k8s.io/<id>`` with cgroupfs) that
    still exist."""
    named = trace.netns and not trace.netns.startswith("/proc/")
    found = [f"netns: {trace.netns}"] if named and Path(trace.netns).exists() else []
    for ident in (trace.pod_id, *trace.container_ids):
        found += [f"cgroup: {p}" for p in CGROUP_ROOT.glob(f"*/k8s.io/{ident}")]
        found += [f"cgroup: {p}" for p in CGROUP_ROOT.glob(f"k8s.io/{ident}")]
    return found


def run_dir_files(crinode: CriNode) -> set[str]:
    """The daemon's run directory (relative names), logs and their backups left out:
    per-pod sockets, FIFOs and files would show here."""
    run = crinode.node.run_dir
    return {
        str(p.relative_to(run)) for p in run.rglob("*")
        if not p.name.startswith("daemon.log") and not p.name.startswith("relay.log")
        and p.name != introspect.STATS_FILE
    }  # fmt: skip


LIMITS = LogLimits()


def logs_over_cap(crinode: CriNode, limits: LogLimits = LIMITS) -> list[str]:
    """Log files of the daemon and relay beyond their rotation cap (more backups than
    kept, or a file over the size limit by more than one record)."""
    over = []
    for stem in ("daemon.log", "relay.log"):
        files = sorted(crinode.node.run_dir.glob(f"{stem}*"))
        if len(files) > limits.backups + 1:
            over.append(f"{stem}: {len(files)} files, cap {limits.backups + 1}")
        over += [
            f"{p.name}: {p.stat().st_size} bytes, cap {limits.max_bytes}"
            for p in files if p.stat().st_size > limits.max_bytes + 64 * 1024
        ]  # fmt: skip
    return over


def leftovers(crinode: CriNode, start_files: set[str], traces: list[PodTrace]) -> list[str]:
    """Everything :meth:`CriNode.leftovers` lists (QEMU, veths, mounts under the node
    root, state files, pod addresses), plus the traced pods' netns and cgroups,
    run-directory files that were not there at the start (``start_files``, from
    :func:`run_dir_files`: per-pod sockets, FIFOs), pods or containers containerd
    still lists, and logs beyond the rotation cap."""
    found = crinode.leftovers()
    for trace in traces:
        found += pod_remains(trace)
    found += [f"run dir: {n}" for n in sorted(run_dir_files(crinode) - start_files)]
    found += [f"CRI pod: {p.id} {p.metadata.name}" for p in crinode.cri.pods()]
    found += [f"CRI container: {c.id}" for c in crinode.cri.containers()]
    found += [f"log: {line}" for line in logs_over_cap(crinode)]
    return found


def settled(
    crinode: CriNode, start: ProcessStats, fd_slack: int, tries: int = 30,
    pause: Callable[[], None] = lambda: time.sleep(2),
) -> ProcessStats:  # fmt: skip
    """The daemon's snapshot once its fds and tasks are back to ``start`` (fds within
    ``fd_slack``), or the last of ``tries`` snapshots: a pod's end may still be
    closing when RemovePodSandbox returns."""
    stats = daemon_stats(crinode)
    for _ in range(tries):
        if stats.fds <= start.fds + fd_slack and (stats.tasks or 0) <= (start.tasks or 0):
            break
        pause()
        stats = daemon_stats(crinode)
    return stats
