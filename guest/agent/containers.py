"""Containers and their processes, run by the OCI runtime from prepared bundles.

A container's init is created with ``runtime create`` (it waits for ``start``), an
exec'd process with ``runtime exec -d``; both are reparented to the agent (a child
subreaper) and their exit codes come from the agent's reaper, so a signal shows as
128+n. OOM kills are read from the container's cgroup (``memory.events``) both
periodically and when its init exits, and queued for GetOOMEvent.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import json
import logging
import os
import shutil
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guest.agent import stdio
from guest.agent.cgroups import Cgroup
from guest.agent.children import Reaper, Stdio
from guest.agent.errors import AgentError, AlreadyExists, FailedPrecondition, NotFound
from guest.agent.runtime import Runtime

log = logging.getLogger(__name__)

CONSOLE_TIMEOUT = 30.0
OOM_POLL_SECONDS = 0.5
# Exit codes of forgotten exec'd processes kept per container, for a WaitProcess asked
# again (a host daemon that restarted replays its pending Wait; the first answer went
# to the dead connection). Oldest dropped first: probes exec often.
FINISHED_EXECS_KEPT = 256

Release = Callable[[], Awaitable[None]]


class State(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass
class Process:
    exec_id: str  # "" for the container's init
    pid: int
    stdio: stdio.ProcessStdio
    exited: asyncio.Future[int]
    waited: bool = False


@dataclass
class Container:
    id: str
    bundle: Path
    cgroup: Cgroup
    init: Process
    release: Release | None  # undoes the rootfs (unmount), run at removal
    state: State = State.CREATED
    execs: dict[str, Process] = field(default_factory=dict)
    # exec id -> exit code of exec'd processes already forgotten (insertion ordered).
    finished_execs: dict[str, int] = field(default_factory=dict)
    oom_kills: int = 0
    # No pid namespace of its own: its init's exit ends nothing else (see _init_exited).
    kill_all_on_exit: bool = False

    def process(self, exec_id: str) -> Process:
        """The init ("") or an exec'd process. Raises NotFound."""
        if not exec_id:
            return self.init
        try:
            return self.execs[exec_id]
        except KeyError:
            raise NotFound(f"container {self.id} has no process {exec_id!r}") from None


class Containers:
    """Every container of the sandbox, keyed by id."""

    def __init__(self, runtime: Runtime, reaper: Reaper, sockets: Path) -> None:
        self.runtime = runtime
        self.reaper = reaper
        self._sockets = sockets
        self._counter = itertools.count()
        self._containers: dict[str, Container] = {}
        self._oom: asyncio.Queue[str] = asyncio.Queue()
        self._poller: asyncio.Task[None] | None = None

    def get(self, cid: str) -> Container:
        """Raises NotFound."""
        try:
            return self._containers[cid]
        except KeyError:
            raise NotFound(f"no container {cid!r}") from None

    def ids(self) -> list[str]:
        return list(self._containers)

    def reserve(self, cid: str) -> None:
        """Raises AlreadyExists when ``cid`` is taken."""
        if cid in self._containers:
            raise AlreadyExists(f"container {cid!r} already exists")

    async def _spawn(
        self,
        terminal: bool,
        pid_file: Path,
        launch: Callable[[stdio.ProcessStdio, Path | None], Awaitable[None]],
    ) -> tuple[int, stdio.ProcessStdio]:
        """Run ``launch`` (runtime create/exec) with fresh stdio; returns pid and stdio."""
        if not terminal:
            pipes = stdio.pipes()
            try:
                await launch(pipes, None)
            except BaseException:
                await pipes.close()
                raise
            finally:
                pipes.close_child_ends()
            return _read_pid(pid_file), pipes
        self._sockets.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._sockets / f"console-{next(self._counter)}.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(path))
            listener.listen(1)
            receive = asyncio.create_task(stdio.receive_console(listener, CONSOLE_TIMEOUT))
            try:
                await launch(
                    stdio.ProcessStdio(
                        stdio.InputStream(None, False),
                        stdio.OutputStream(None),
                        stdio.OutputStream(None),
                        Stdio(),
                        False,
                    ),
                    path,
                )
            except BaseException:
                receive.cancel()
                raise
            master = await receive
        finally:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return _read_pid(pid_file), stdio.terminal(master)

    async def create(
        self, cid: str, bundle: Path, config: dict[str, Any], release: Release | None
    ) -> Container:
        """Write config.json into ``bundle`` and ``runtime create`` the container.

        Raises AlreadyExists, CommandError (the runtime's message).
        """
        self.reserve(cid)
        (bundle / "config.json").write_text(json.dumps(config))
        pid_file = bundle / "init.pid"
        terminal = bool(config["process"].get("terminal"))

        async def launch(io: stdio.ProcessStdio, console: Path | None) -> None:
            await self.runtime.create(cid, bundle, pid_file, io.child, console)

        pid, io = await self._spawn(terminal, pid_file, launch)
        cgroup = Cgroup(config["linux"]["cgroupsPath"])
        init = Process("", pid, io, self.reaper.watch(pid))
        container = Container(cid, bundle, cgroup, init, release)
        container.kill_all_on_exit = not _own_pid_namespace(config)
        self._containers[cid] = container
        init.exited.add_done_callback(lambda _: self._init_exited(container))
        self._ensure_poller()
        log.info("container %s created, init pid %d", cid, pid)
        return container

    async def start(self, cid: str) -> None:
        """Raises NotFound, FailedPrecondition (not in the created state), CommandError."""
        container = self.get(cid)
        if container.state is not State.CREATED:
            raise FailedPrecondition(f"container {cid} is {container.state.value}, not created")
        await self.runtime.start(cid)
        if container.state is State.CREATED:
            container.state = State.RUNNING
        log.info("container %s started", cid)

    async def exec(self, cid: str, exec_id: str, process: dict[str, Any]) -> Process:
        """Start ``process`` in the running container. Raises NotFound, AlreadyExists,
        FailedPrecondition, CommandError."""
        container = self.get(cid)
        if not exec_id:
            raise FailedPrecondition("an exec needs an exec_id")
        if exec_id in container.execs:
            raise AlreadyExists(f"container {cid} already has process {exec_id!r}")
        container.finished_execs.pop(exec_id, None)  # the id names a new process now
        if container.state is not State.RUNNING:
            raise FailedPrecondition(f"container {cid} is {container.state.value}, not running")
        n = next(self._counter)
        process_json = container.bundle / f"exec-{n}.json"
        pid_file = container.bundle / f"exec-{n}.pid"
        process_json.write_text(json.dumps(process))

        async def launch(io: stdio.ProcessStdio, console: Path | None) -> None:
            await self.runtime.exec(cid, process_json, pid_file, io.child, console)

        pid, io = await self._spawn(bool(process.get("terminal")), pid_file, launch)
        proc = Process(exec_id, pid, io, self.reaper.watch(pid))
        container.execs[exec_id] = proc
        log.info("container %s exec %s started, pid %d", cid, exec_id, pid)
        return proc

    async def signal(self, cid: str, exec_id: str, sig: int) -> None:
        """Signal a process (the init for an empty exec_id). A process that already
        exited is not an error (as in Kata). Raises NotFound."""
        container = self.get(cid)
        proc = container.process(exec_id)
        if proc.exited.done():
            return
        # Until the agent reaps it the pid cannot be reused: no race with its exit.
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)

    async def wait(self, cid: str, exec_id: str) -> int:
        """The process's exit code (128+n for signal n), once it exited. Raises NotFound."""
        container = self.get(cid)
        if exec_id and exec_id not in container.execs and exec_id in container.finished_execs:
            return container.finished_execs[exec_id]
        proc = container.process(exec_id)
        code = await asyncio.shield(proc.exited)
        proc.waited = True
        await self._forget_if_done(container, proc)
        return code

    async def read(self, cid: str, exec_id: str, stderr: bool, size: int) -> bytes:
        """ReadStdout/ReadStderr: up to ``size`` bytes, b"" at end of stream."""
        container = self.get(cid)
        proc = container.process(exec_id)
        data = await (proc.stdio.stderr if stderr else proc.stdio.stdout).read(size)
        if not data:
            await self._forget_if_done(container, proc)
        return data

    async def _forget_if_done(self, container: Container, proc: Process) -> None:
        """Drop an exec'd process once waited for and its output read to the end, so
        frequent execs (probes) do not pile up fds; the init stays until removal."""
        out = proc.stdio
        done = proc.waited and out.stdout.at_end and out.stderr.at_end
        if proc.exec_id and done and container.execs.pop(proc.exec_id, None) is not None:
            container.finished_execs[proc.exec_id] = proc.exited.result()
            while len(container.finished_execs) > FINISHED_EXECS_KEPT:
                del container.finished_execs[next(iter(container.finished_execs))]
            await out.close()

    def _init_exited(self, container: Container) -> None:
        container.state = State.STOPPED
        log.info("container %s init exited with %s", container.id, container.init.exited.result())
        self._check_oom(container)
        if container.kill_all_on_exit:
            # As runc's shim does for such a container: what its init started (a daemon
            # in the background, an exec) would outlive it and keep its output open, so
            # containerd, which reads that output to its end before it deletes the task,
            # would wait forever.
            try:
                container.cgroup.kill()
            except AgentError as err:
                log.warning("container %s: its other processes not killed: %s", container.id, err)

    def _check_oom(self, container: Container) -> None:
        kills = container.cgroup.oom_kills()
        if kills > container.oom_kills:
            container.oom_kills = kills
            log.info("container %s: OOM kill (%d so far)", container.id, kills)
            self._oom.put_nowait(container.id)

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll_oom())

    async def _poll_oom(self) -> None:
        while self._containers:
            for container in list(self._containers.values()):
                if container.state is State.RUNNING:
                    self._check_oom(container)
            await asyncio.sleep(OOM_POLL_SECONDS)

    async def next_oom(self) -> str:
        """The id of the next container that had an OOM kill (waits for one)."""
        return await self._oom.get()

    async def remove(self, cid: str, timeout: float | None) -> None:
        """Kill what still runs, delete the container, release its rootfs and bundle.

        ``timeout`` (seconds, None: forever) bounds the wait for the processes to die.
        Raises NotFound, AgentError when they do not die in time, CommandError.
        """
        container = self.get(cid)
        pending = [
            p.exited for p in (container.init, *container.execs.values()) if not p.exited.done()
        ]
        if pending:
            if container.state is State.CREATED:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(container.init.pid, 9)
            else:
                with contextlib.suppress(AgentError):
                    await self.runtime.kill(cid, 9, all_processes=True)
            for proc in container.execs.values():
                if not proc.exited.done():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, 9)
            _, still = await asyncio.wait([asyncio.shield(f) for f in pending], timeout=timeout)
            if still:
                raise AgentError(f"container {cid}: processes still running after {timeout}s")
        await self.runtime.delete(cid)
        for proc in (container.init, *container.execs.values()):
            await proc.stdio.close()
        del self._containers[cid]
        if container.release is not None:
            await container.release()
        shutil.rmtree(container.bundle, ignore_errors=True)
        log.info("container %s removed", cid)

    def pids(self, cid: str) -> list[int]:
        """Pids of the container's processes (its cgroup). Raises NotFound, AgentError."""
        return self.get(cid).cgroup.pids()

    def stats(self, cid: str) -> Any:
        return self.get(cid).cgroup.stats()

    async def update(self, cid: str, resources: dict[str, Any]) -> None:
        """Apply new resource limits. Raises NotFound, CommandError."""
        container = self.get(cid)
        path = container.bundle / f"resources-{next(self._counter)}.json"
        path.write_text(json.dumps(resources))
        try:
            await self.runtime.update(cid, path)
        finally:
            path.unlink()

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller


def _own_pid_namespace(config: dict[str, Any]) -> bool:
    """Whether the spec gives the container a pid namespace of its own (an entry
    without a path); joining another's or having none shares its processes' fate."""
    namespaces = (config.get("linux") or {}).get("namespaces") or []
    return any(ns.get("type") == "pid" and not ns.get("path") for ns in namespaces)


def _read_pid(pid_file: Path) -> int:
    try:
        text = pid_file.read_text().strip()
    except OSError as err:
        raise AgentError(f"the runtime wrote no pid file {pid_file}: {err}") from err
    if not text.isdigit():
        raise AgentError(f"pid file {pid_file} holds {text!r}")
    return int(text)
