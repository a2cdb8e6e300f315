"""A container's cgroup: statistics and OOM kills, read from the cgroup files.

The guest mounts cgroup v2 at /sys/fs/cgroup. A host with the legacy (v1) layout,
where the agent runs with runc for development and tests, is read through the v1
files of the memory, cpuacct and pids controllers.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from api.kata import agent_pb2
from guest.agent.errors import AgentError

CGROUP_ROOT = Path("/sys/fs/cgroup")
_MAX = 2**64 - 1


@dataclass(frozen=True)
class Cgroup:
    """The cgroup at ``path`` (as in the spec's cgroupsPath) under ``root``."""

    path: str
    root: Path = CGROUP_ROOT

    @property
    def unified(self) -> bool:
        return (self.root / "cgroup.controllers").exists()

    def _file(self, controller: str, name: str) -> Path:
        rel = self.path.lstrip("/")
        if self.unified:
            return self.root / rel / name
        return self.root / controller / rel / name

    def _read(self, controller: str, name: str) -> str | None:
        try:
            return self._file(controller, name).read_text()
        except OSError:
            return None

    def _int(self, controller: str, name: str) -> int:
        text = self._read(controller, name)
        if text is None:
            return 0
        text = text.strip()
        return _MAX if text == "max" else int(text) if text.isdigit() else 0

    def _keyed(self, controller: str, name: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for line in (self._read(controller, name) or "").splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[1].isdigit():
                out[fields[0]] = int(fields[1])
        return out

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer killed in this cgroup so far."""
        if self.unified:
            return self._keyed("memory", "memory.events").get("oom_kill", 0)
        return self._keyed("memory", "memory.oom_control").get("oom_kill", 0)

    def pids(self) -> list[int]:
        """Every process in the cgroup and its sub-groups (``cgroup.procs``), sorted.

        Pids are those of the agent's pid namespace. Raises AgentError when the
        cgroup is gone or unreadable.
        """
        top = self._file("pids", "")
        found: set[int] = set()
        try:
            for directory, _, files in os.walk(top, onerror=_raise):
                if "cgroup.procs" in files:
                    text = (Path(directory) / "cgroup.procs").read_text()
                    found.update(int(line) for line in text.split() if line.isdigit())
        except OSError as err:
            raise AgentError(f"cannot list the processes of cgroup {top}: {err}") from err
        return sorted(found)

    def kill(self) -> None:
        """SIGKILL every process in the cgroup and its sub-groups: one write to
        ``cgroup.kill`` (v2, Linux 5.14+, no pid can be reused meanwhile), else each pid
        of :meth:`pids`. Raises AgentError when the cgroup cannot be read or written."""
        if self.unified and (switch := self._file("", "cgroup.kill")).exists():
            try:
                switch.write_text("1")
            except OSError as err:
                raise AgentError(
                    f"cannot kill the processes of cgroup {switch.parent}: {err}"
                ) from err
            return
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                os.kill(pid, signal.SIGKILL)

    def exists(self) -> bool:
        return self._file("memory", "").exists()

    def stats(self) -> agent_pb2.CgroupStats:
        """CPU, memory and pids figures in the agent protocol's shape (CPU in ns)."""
        if self.unified:
            cpu = self._keyed("cpu", "cpu.stat")
            cpu_usage = agent_pb2.CpuUsage(
                total_usage=cpu.get("usage_usec", 0) * 1000,
                usage_in_usermode=cpu.get("user_usec", 0) * 1000,
                usage_in_kernelmode=cpu.get("system_usec", 0) * 1000,
            )
            throttling = agent_pb2.ThrottlingData(
                periods=cpu.get("nr_periods", 0),
                throttled_periods=cpu.get("nr_throttled", 0),
                throttled_time=cpu.get("throttled_usec", 0) * 1000,
            )
            mem_stat = self._keyed("memory", "memory.stat")
            usage = agent_pb2.MemoryData(
                usage=self._int("memory", "memory.current"),
                max_usage=self._int("memory", "memory.peak"),
                failcnt=self._keyed("memory", "memory.events").get("max", 0),
                limit=self._int("memory", "memory.max"),
            )
            swap = agent_pb2.MemoryData(
                usage=self._int("memory", "memory.swap.current"),
                limit=self._int("memory", "memory.swap.max"),
            )
            cache = mem_stat.get("file", 0)
        else:
            cpu_usage = agent_pb2.CpuUsage(total_usage=self._int("cpuacct", "cpuacct.usage"))
            throttling = agent_pb2.ThrottlingData()
            mem_stat = self._keyed("memory", "memory.stat")
            usage = agent_pb2.MemoryData(
                usage=self._int("memory", "memory.usage_in_bytes"),
                max_usage=self._int("memory", "memory.max_usage_in_bytes"),
                failcnt=self._int("memory", "memory.failcnt"),
                limit=self._int("memory", "memory.limit_in_bytes"),
            )
            swap = agent_pb2.MemoryData()
            cache = mem_stat.get("cache", 0)
        return agent_pb2.CgroupStats(
            cpu_stats=agent_pb2.CpuStats(cpu_usage=cpu_usage, throttling_data=throttling),
            memory_stats=agent_pb2.MemoryStats(
                cache=cache, usage=usage, swap_usage=swap, use_hierarchy=True, stats=mem_stat
            ),
            pids_stats=agent_pb2.PidsStats(
                current=self._int("pids", "pids.current"), limit=self._int("pids", "pids.max")
            ),
        )


def _raise(err: OSError) -> None:
    raise err
