"""The guest agent's container statistics as containerd's cgroup v2 metrics.

``Task.Stats`` answers an ``Any`` that containerd 1.6 decodes by type URL; its CRI
(ListContainerStats) accepts ``io.containerd.cgroups.v1.Metrics`` and
``io.containerd.cgroups.v2.Metrics``. The guest runs its containers on cgroup v2, so
the v2 form is the natural one: CPU in microseconds, memory by ``memory.stat`` key.

The agent's ``CgroupStats`` (Kata's shape) carries CPU in nanoseconds, memory usage,
limits and swap as structured fields, and the raw ``memory.stat`` keys in
``memory_stats.stats``. Keys that are not cgroup v2 names (an agent on a legacy v1
host: ``rss``, ``cache``, ...) are not translated, their v2 fields stay 0. Memory
events (``memory.events``) are not in the agent's answer and stay unset.
"""

from __future__ import annotations

from api.containerd.cgroups.v2 import metrics_pb2
from api.kata import agent_pb2

TYPE_URL = "io.containerd.cgroups.v2.Metrics"

# MemoryStat fields computed from the structured part, never from memory.stat keys.
_STRUCTURED = frozenset(
    {"usage", "usage_limit", "swap_usage", "swap_limit", "max_usage", "swap_max_usage"}
)
_MEMORY_STAT_KEYS = tuple(
    f.name for f in metrics_pb2.MemoryStat.DESCRIPTOR.fields if f.name not in _STRUCTURED
)


def from_agent(stats: agent_pb2.CgroupStats) -> metrics_pb2.Metrics:
    """containerd's v2 Metrics for one container's ``CgroupStats``."""
    cpu = stats.cpu_stats
    mem = stats.memory_stats
    metrics = metrics_pb2.Metrics(
        pids=metrics_pb2.PidsStat(current=stats.pids_stats.current, limit=stats.pids_stats.limit),
        cpu=metrics_pb2.CPUStat(
            usage_usec=cpu.cpu_usage.total_usage // 1000,
            user_usec=cpu.cpu_usage.usage_in_usermode // 1000,
            system_usec=cpu.cpu_usage.usage_in_kernelmode // 1000,
            nr_periods=cpu.throttling_data.periods,
            nr_throttled=cpu.throttling_data.throttled_periods,
            throttled_usec=cpu.throttling_data.throttled_time // 1000,
        ),
        memory=metrics_pb2.MemoryStat(
            usage=mem.usage.usage,
            usage_limit=mem.usage.limit,
            max_usage=mem.usage.max_usage,
            swap_usage=mem.swap_usage.usage,
            swap_limit=mem.swap_usage.limit,
            swap_max_usage=mem.swap_usage.max_usage,
            **{key: mem.stats[key] for key in _MEMORY_STAT_KEYS if key in mem.stats},
        ),
    )
    for pagesize, huge in sorted(stats.hugetlb_stats.items()):
        metrics.hugetlb.add(current=huge.usage, max=huge.max_usage, pagesize=pagesize)
    metrics.io.CopyFrom(_io(stats.blkio_stats))
    return metrics


def _io(blkio: agent_pb2.BlkioStats) -> metrics_pb2.IOStat:
    """Per-device bytes and operations (v1's recursive entries, op Read/Write)."""
    devices: dict[tuple[int, int], metrics_pb2.IOEntry] = {}

    def entry(major: int, minor: int) -> metrics_pb2.IOEntry:
        key = (major, minor)
        if key not in devices:
            devices[key] = metrics_pb2.IOEntry(major=major, minor=minor)
        return devices[key]

    for item in blkio.io_service_bytes_recursive:
        if item.op.lower() == "read":
            entry(item.major, item.minor).rbytes += item.value
        elif item.op.lower() == "write":
            entry(item.major, item.minor).wbytes += item.value
    for item in blkio.io_serviced_recursive:
        if item.op.lower() == "read":
            entry(item.major, item.minor).rios += item.value
        elif item.op.lower() == "write":
            entry(item.major, item.minor).wios += item.value
    return metrics_pb2.IOStat(usage=[devices[k] for k in sorted(devices)])
