"""Issue 17's daemon restarts under load: while pods are being created and removed
through containerd's CRI, the node daemon is SIGKILLed (``KILLS`` times, each at a
different step of a pod in flight: RunPodSandbox, CreateContainer/StartContainer,
Stop/RemovePodSandbox). The relay holds containerd's shim connections and starts the
next daemon, as it does on a node (``shim/README.md``).

Two long-running pods (``KEEPERS``) are there throughout, each with a container that
prints a line a second; two workers create and remove pods one after the other
meanwhile. A pod cycle caught by a kill may fail (its CRI error is printed): its pod
must then be removable. Afterwards:

- every long-running pod is READY with its container RUNNING in the same pod-VM and
  answering an ExecSync;
- containerd's view and the daemon's agree: the sandboxes of our handler that
  ListPodSandbox shows are exactly the daemon's sandbox state files, its containers
  exactly those records' containers, and a QEMU runs for each and no other. A Create
  cut by a kill can leave a sandbox containerd gave up on (answered UNAVAILABLE) whose
  VM the dead daemon had started and the next one reattached: the daemon's sweep
  (``agent.sandbox.gc``, every ``CONTRAST_GC_SECONDS``, here 10 s) destroys it after
  two sweeps without a container in containerd, so agreement is awaited for at most
  ``AGREE_SWEEPS`` sweeps (printed: what disagreed meanwhile);
- once every pod is removed, nothing is left (``devkit.churn.leftovers``).

- each long-running container's output goes on reaching its CRI log after the kills
  (the pod's QEMU holds the log FIFOs while no daemon runs, agent.sandbox.outputkeep):
  its log shows ticks printed after the last kill. Lines a killed daemon had read from
  the guest but not yet written are lost; the log is printed.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from agent.sandbox.state import StateStore
from api.containerd.cri.runtime.v1 import api_pb2
from devkit import churn
from devkit.cri import read_log
from devkit.crilog import wait_for_line
from devkit.crinode import CriNode, cri_node
from devkit.errors import DevkitError
from guest.image.manifest import GuestImage
from tests.conftest import require_programs
from tests.integration.vm.conftest import guest_image

pytestmark = pytest.mark.vm
__all__ = ["guest_image"]

KEEPERS = 2
WORKERS = 2
KILL_AT = ("run", "create", "remove")  # the step of a pod in flight each kill waits for
POD_TIMEOUT = churn.POD_TIMEOUT
GC_SECONDS = 10
AGREE_SWEEPS = 6  # the gc's two, and room for a sweep that meets a busy loaded node
TICKER = ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"]


@pytest.fixture(scope="module")
def node(guest_image: GuestImage) -> Iterator[CriNode]:
    require_programs("containerd", "ip", "nsenter", "docker-registry", "busybox", "pgrep")
    # containerd passes our environment on to the shim, and so to the daemon.
    old = os.environ.get("CONTRAST_GC_SECONDS")
    os.environ["CONTRAST_GC_SECONDS"] = str(GC_SECONDS)
    try:
        with cri_node(guest_image) as crinode:
            churn.use_small_vms(crinode)
            yield crinode
    finally:
        if old is None:
            del os.environ["CONTRAST_GC_SECONDS"]
        else:
            os.environ["CONTRAST_GC_SECONDS"] = old


class Load:
    """Workers cycling pods until told to stop; what each step is doing."""

    def __init__(self, node: CriNode, annotations: dict[str, str]) -> None:
        self.node = node
        self.annotations = annotations
        self.stop = threading.Event()
        self.lock = threading.Condition()
        self.stages: dict[int, str] = {}
        self.ended = 0  # cycles ended, either way
        self.traces: list[churn.PodTrace] = []
        self.failures: list[str] = []

    def stage(self, worker: int, stage: str) -> None:
        with self.lock:
            self.stages[worker] = stage
            self.lock.notify_all()

    def work(self, worker: int) -> None:
        n = 0
        while not self.stop.is_set():
            name = f"load-{worker}-{n}"
            n += 1
            try:
                trace = churn.pod_cycle(
                    self.node, self.node.handler, name, self.annotations,
                    on_stage=functools.partial(self.stage, worker),
                )  # fmt: skip
                with self.lock:
                    self.traces.append(trace)
            except (grpc.RpcError, DevkitError) as err:
                detail = err.details() if isinstance(err, grpc.RpcError) else str(err)
                with self.lock:
                    self.failures.append(f"{name}: {detail}")
            finally:
                with self.lock:
                    self.stages[worker] = "between"
                    self.ended += 1
                    self.lock.notify_all()

    def wait_for(self, stage: str, timeout: float = POD_TIMEOUT) -> None:
        with self.lock:
            if not self.lock.wait_for(lambda: stage in self.stages.values(), timeout):
                raise AssertionError(f"no pod reached {stage!r} in {timeout:.0f} s")

    def wait_for_ends(self, after: int, timeout: float = POD_TIMEOUT) -> None:
        with self.lock:
            if not self.lock.wait_for(lambda: self.ended > after, timeout):
                raise AssertionError(f"no pod cycle ended in {timeout:.0f} s")


def kill_daemon(node: CriNode) -> int:
    """SIGKILL the daemon; return once the relay's next one serves (its pid file)."""
    old = node.node.daemon_pid()
    assert old is not None
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + POD_TIMEOUT
    while node.node.daemon_pid() in (None, old):
        assert time.monotonic() < deadline, "no daemon after the kill"
        time.sleep(0.2)
    return old


def start_keeper(node: CriNode, n: int, annotations: dict[str, str]) -> tuple[str, str, Path]:
    spec = node.pod(f"keeper-{n}", annotations)
    pod_id = node.cri.run_pod_spec(spec, node.handler, timeout=POD_TIMEOUT).pod_sandbox_id
    cid = node.cri.create_container(
        pod_id, spec, "ticker", image=node.image, command=TICKER, timeout=POD_TIMEOUT
    )
    node.cri.start_container(cid, timeout=POD_TIMEOUT)
    log = Path(spec.log_directory) / "ticker.log"
    wait_for_line(log, "tick 0", POD_TIMEOUT)
    return pod_id, cid, log


def last_tick(log: Path) -> int:
    ticks = [int(x.text.split()[1]) for x in read_log(log) if x.text.startswith("tick ")]
    return ticks[-1] if ticks else -1


def wait_for_tick(log: Path, tick: int, timeout: float) -> None:
    """Until the CRI log shows ``tick <tick>`` or later; AssertionError after ``timeout``
    (a bound only: the ticker prints a line a second)."""
    deadline = time.monotonic() + timeout
    while last_tick(log) < tick:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{log}: no 'tick {tick}' within {timeout:.0f} s after the kills "
                f"(last: tick {last_tick(log)})"
            )
        time.sleep(0.2)


def remove_for_good(node: CriNode, pod_id: str, tries: int = 10) -> None:
    """Stop and remove a pod; retried while a daemon restart answers UNAVAILABLE."""
    for attempt in range(tries):
        try:
            node.cri.stop_pod(pod_id)
            node.cri.remove_pod(pod_id)
            return
        except grpc.RpcError:
            if attempt == tries - 1:
                raise
            time.sleep(3)


def agreement(node: CriNode) -> tuple[set[str], set[str], set[str], set[str]]:
    """(CRI sandboxes of our handler, daemon's sandboxes, CRI containers in them,
    daemon's containers)."""
    ours = {p.id for p in node.cri.pods() if p.runtime_handler == node.handler}
    records, errors = StateStore(node.node.state_dir).load_all()
    assert errors == [], errors
    containers = {c.id for c in node.cri.containers() if c.pod_sandbox_id in ours}
    recorded = {c.id for r in records for c in r.containers if not c.is_sandbox}
    return ours, {r.id for r in records}, containers, recorded


def test_daemon_sigkilled_while_pods_come_and_go(node: CriNode) -> None:
    assert node.cri.pull_image(node.image)
    annotations = churn.allow_all_annotations(node)
    files: set[str] = set()
    keepers = [start_keeper(node, n, annotations) for n in range(KEEPERS)]
    files = churn.run_dir_files(node)
    vms = node.qemus()
    load = Load(node, annotations)
    workers = [threading.Thread(target=load.work, args=(w,)) for w in range(WORKERS)]
    for thread in workers:
        thread.start()
    killed: list[int] = []
    try:
        for stage in KILL_AT:
            load.wait_for(stage)
            ended = load.ended
            killed.append(kill_daemon(node))
            print(f"daemon {killed[-1]} killed while a pod was at {stage!r}", flush=True)
            load.wait_for_ends(ended)  # the load goes on with the next daemon
    finally:
        load.stop.set()
        for thread in workers:
            thread.join()
    try:
        print(f"{len(load.traces)} cycles completed, {len(load.failures)} failed:")
        print(*load.failures, sep="\n")
        assert len(killed) == len(KILL_AT)
        # Pods of failed cycles: removable now (their cycle tried already).
        for pod in node.cri.pods():
            if pod.id not in {k[0] for k in keepers}:
                remove_for_good(node, pod.id)
        for _pod_id, _cid, log in keepers:  # the log goes on past the kills
            wait_for_tick(log, last_tick(log) + 3, POD_TIMEOUT)
        for _pod_id, cid, _log in keepers:
            status = node.cri.container_status(cid)
            assert status.state == api_pb2.CONTAINER_RUNNING, status
            done = node.cri.exec_sync(cid, ["sh", "-c", "echo still here"])
            assert (done.stdout, done.exit_code) == (b"still here\n", 0)
        assert {p.id for p in node.cri.pods() if p.state == api_pb2.SANDBOX_READY} == {
            k[0] for k in keepers
        }
        wanted = ({k[0] for k in keepers}, {k[1] for k in keepers})
        deadline = time.monotonic() + AGREE_SWEEPS * GC_SECONDS
        while True:
            cri_pods, daemon_pods, cri_containers, daemon_containers = agreement(node)
            agreed = cri_pods == daemon_pods == wanted[0]
            agreed = agreed and cri_containers == daemon_containers == wanted[1]
            if (agreed and node.qemus() == vms) or time.monotonic() > deadline:
                break
            print(f"not yet: daemon has {sorted(daemon_pods - cri_pods)} beyond CRI's, "
                  f"{len(node.qemus())} QEMUs", flush=True)  # fmt: skip
            time.sleep(GC_SECONDS / 2)
        assert cri_pods == daemon_pods == wanted[0]
        assert cri_containers == daemon_containers == wanted[1]
        assert node.qemus() == vms  # the keepers' VMs, the same processes, no other
    except BaseException:
        print(node.node.daemon_log()[-10000:])
        raise
    finally:
        for _pod_id, _cid, log in keepers:
            ticks = [x.text for x in read_log(log)]
            print(f"{log.parent.name}: {len(ticks)} lines, the last {ticks[-1:]}")
        for pod_id, _cid, _log in keepers:
            remove_for_good(node, pod_id)
    assert churn.leftovers(node, files, load.traces) == []
