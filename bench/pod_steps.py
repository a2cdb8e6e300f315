"""Where a pod's time goes after its pod-VM is ready: host side vs guest side, per step.

Read from two logs of the same pod (bench.pod_bench):

- the node daemon's log (host clock, logging's asctime): the pod-VM ready, each
  task's ``registered`` (the shim's ``start`` reached the daemon), ``created`` and
  ``started``, and the round trip of each guest agent call (``guest agent X took N ms``);
- the pod-VM's console log (the guest agent's own clock): how long the guest agent
  took to serve each request (``XRequest served in N ms (policy M ms)``, measured
  from the request's arrival to its reply), the guest puller's ``pulled ...`` figure
  and the agent's start (``built in N ms``: initdata, imports, policy compilation).

The guest's figures are durations on its own clock, so no clock has to match the
host's. Guest side = what the guest agent spent serving the calls; host side = the
step's wall time on the host minus that (containerd, CRI, our shim, relay, daemon,
the transport to the guest and back). Under TCG every guest figure is CPU emulated
(roughly ten times slower than under KVM); the host side runs at native speed.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path

SERVED = re.compile(r"contrast-guest-agent: (\w+Request) served in ([0-9.]+) ms")
PULLED = re.compile(r"pulled (\S+): \d+ layers, \d+ fetched, ([0-9.]+)s")
BUILT = re.compile(r"serving AgentService \(built in ([0-9.]+) ms\)")
CONSOLE = re.compile(r"-chardev file,id=console,path=(\S+)")
TOOK = re.compile(r"pid (\d+): guest agent (\w+) took ([0-9.]+) ms")
# shim.control: the shim entry's process age when it registered (its exec, to a tick).
SHIM_AGE = re.compile(r"; shim pid \d+ started (\d+) ms ago\)")
# agent.sandbox.vm_backend: the daemon's steps of a sandbox's launch.
LAUNCHED = re.compile(r"sandbox (\S+): launched in (.*)$")
LAUNCH_STEP = re.compile(r"([^,]+?) ([0-9.]+) ms")


@dataclass(frozen=True)
class Step:
    """One step after the pod-VM is ready: wall seconds on the host, of which the
    daemon waited ``call`` seconds for its guest agent call, of which the guest agent
    served ``guest`` seconds (``pull``: the guest pull inside it)."""

    name: str
    wall: float
    call: float
    guest: float
    pull: float = 0.0

    @property
    def host(self) -> float:
        """Host only: containerd, CRI, our shim, relay and daemon."""
        return self.wall - self.call

    @property
    def transport(self) -> float:
        """The call's round trip minus the guest's serving: virtio-serial both ways and
        the guest agent's ttrpc framing (partly guest CPU, so emulated here)."""
        return self.call - self.guest


@dataclass(frozen=True)
class PodTimes:
    """One of our pods, seconds from RunPodSandbox (host clock)."""

    launch: float  # QEMU started
    ready: float  # pod-VM ready: booted, guest network set, CreateSandbox done
    steps: tuple[Step, ...]  # ready -> first output
    agent_start: float  # the guest agent's start (in the boot): initdata, imports, policy
    pull: float  # the guest puller's figure for the workload image
    # In the boot too (before "ready"): the guest agent serving the guest network
    # (UpdateInterface waits for the NIC's driver, loaded during boot) and CreateSandbox.
    setup: tuple[tuple[str, float], ...] = ()
    # RunPodSandbox -> launch, split: containerd until it executes our shim (None when
    # the daemon's log does not tell), the shim until it registered, then the daemon;
    # ``launch_steps``: the daemon's own steps of the launch (seconds each).
    shim_exec: float | None = None
    registered: float = 0.0
    launch_steps: tuple[tuple[str, float], ...] = ()

    @property
    def containerd(self) -> float | None:
        """containerd's share of the host side: before it executes our shim, for the
        sandbox and for the container (what runc's pods wait for too)."""
        if self.shim_exec is None:
            return None
        waits = [s.wall for s in self.steps if s.name == CONTAINERD_STEP]
        return self.shim_exec + sum(waits)


class LogError(Exception):
    """A line the split needs is not in the logs."""


def log_time(line: str) -> float:
    """Epoch seconds of a daemon log line (logging's asctime, local time)."""
    return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _find(lines: list[str], needle: str, what: str, after: float = 0.0) -> float:
    for line in lines:
        if needle in line and log_time(line) >= after:
            return log_time(line)
    raise LogError(f"no {what} ({needle!r}) in the daemon's log")


def _registered(lines: list[str], task_id: str, after: float) -> tuple[float, float | None]:
    """When ``task_id`` registered, and how long its shim had run then (None: unknown)."""
    needle = f"task k8s.io/{task_id} registered"
    for line in lines:
        if needle in line and log_time(line) >= after:
            age = SHIM_AGE.search(line)
            return log_time(line), None if age is None else float(age[1]) / 1000
    raise LogError(f"no shim start of {task_id} ({needle!r}) in the daemon's log")


def _launch_steps(lines: list[str], pod_id: str) -> tuple[tuple[str, float], ...]:
    for line in lines:
        if (found := LAUNCHED.search(line)) and found[1] == pod_id:
            return tuple((m[1].strip(), float(m[2]) / 1000) for m in LAUNCH_STEP.finditer(found[2]))
    return ()


def _pid(lines: list[str], pod_id: str) -> int:
    for line in lines:
        if f"/{pod_id}: pod-VM pid " in line:
            return int(line.split(": pod-VM pid ")[1].split()[0])
    raise LogError(f"no pod-VM pid of pod {pod_id} in the daemon's log")


def console_path(daemon_log: str, pod_id: str) -> Path:
    """The pod-VM's console log, from the QEMU command line the daemon logged."""
    for line in daemon_log.splitlines():
        if f"sandbox-{pod_id[:12]}: starting " in line and (found := CONSOLE.search(line)):
            return Path(found[1])
    raise LogError(f"no QEMU launch of pod {pod_id} in the daemon's log")


def guest_served(console: str) -> list[tuple[str, float]]:
    """(request, seconds) for every request the guest agent logged, in order."""
    return [(m[1], float(m[2]) / 1000) for m in SERVED.finditer(console)]


def pod_times(
    daemon_log: str, console: str, pod_id: str, cid: str, since: float, output: float
) -> PodTimes:
    """The split for pod ``pod_id`` whose workload container ``cid`` printed its first
    line ``output`` seconds after ``since`` (epoch: RunPodSandbox). Raises LogError."""
    lines = daemon_log.splitlines()
    sandbox_registered, sandbox_age = _registered(lines, pod_id, since)
    launch = _find(lines, f"sandbox-{pod_id[:12]}: starting ", "QEMU launch", since)
    ready = _find(lines, f"/{pod_id}: pod-VM pid ", "pod-VM ready", launch)
    pid = _pid(lines, pod_id)
    calls = [
        (found[2], float(found[3]) / 1000)
        for line in lines
        if (found := TOOK.search(line)) and int(found[1]) == pid and log_time(line) >= ready
    ]
    calls = [call for call in calls if call[0] != "CreateSandbox"]  # logged with "ready"
    if [name for name, _ in calls[:4]] != ["CreateContainer", "StartContainer"] * 2:
        raise LogError(f"unexpected guest agent calls after the pod-VM was ready: {calls}")
    pause_create_call, pause_start_call, create_call, start_call = (t for _, t in calls[:4])
    pause_created = _find(lines, f"task k8s.io/{pod_id} created", "sandbox created", ready)
    pause_started = _find(lines, f"task k8s.io/{pod_id} started", "sandbox started", ready)
    registered, container_age = _registered(lines, cid, ready)
    created = _find(lines, f"task k8s.io/{cid} created", "container created", registered)
    started = _find(lines, f"task k8s.io/{cid} started", "container started", created)
    served = guest_served(console)
    names = [name for name, _ in served]
    try:
        first = names.index("CreateSandboxRequest") + 1
    except ValueError as err:
        raise LogError("no CreateSandboxRequest served in the console log") from err
    setup = tuple(served[:first])
    after = served[first:]
    expected = ["CreateContainerRequest", "StartContainerRequest"] * 2
    # Stop/remove requests may follow; signals do not come before the first output.
    if [name for name, _ in after[:4]] != expected:
        raise LogError(f"unexpected guest requests after CreateSandbox: {names[first:]}")
    pause_create, pause_start, create, start = (seconds for _, seconds in after[:4])
    pulls = PULLED.findall(console)
    if len(pulls) != 1:
        raise LogError(f"{len(pulls)} 'pulled' lines in the console log, expected 1")
    pull = float(pulls[0][1])
    built = BUILT.search(console)
    if built is None:
        raise LogError("no 'built in' line of the guest agent in the console log")
    end = since + output
    steps = (
        Step("sandbox Task Create (pause CreateContainer)", pause_created - ready,
             pause_create_call, pause_create),
        Step("sandbox Task Start (pause StartContainer)", pause_started - pause_created,
             pause_start_call, pause_start),
        *_shim_steps(pause_started, registered, container_age),
        Step("container Task Create (pull, CreateContainer)", created - registered,
             create_call, create, pull),
        Step("container Task Start (StartContainer)", started - created, start_call, start),
        Step("first line: to containerd's CRI log (*)", end - started, 0.0, 0.0),
    )  # fmt: skip
    return PodTimes(
        launch=launch - since,
        ready=ready - since,
        steps=steps,
        agent_start=float(built[1]) / 1000,
        pull=pull,
        setup=setup,
        shim_exec=None if sandbox_age is None else sandbox_registered - sandbox_age - since,
        registered=sandbox_registered - since,
        launch_steps=_launch_steps(lines, pod_id),
    )


CONTAINERD_STEP = "containerd: CRI calls until our shim runs"


def _shim_steps(since: float, registered: float, age: float | None) -> tuple[Step, ...]:
    """From the sandbox started to the container's shim registered: containerd's part
    (CRI's calls, its CreateContainer) and the shim's, when its age is known."""
    if age is None:
        return (Step("containerd: CRI calls, the container's shim start", registered - since,
                     0.0, 0.0),)  # fmt: skip
    return (
        Step(CONTAINERD_STEP, registered - age - since, 0.0, 0.0),
        Step("the container's shim start (exec -> Register)", age, 0.0, 0.0),
    )
