"""The agent's CgroupStats as containerd's cgroup v2 Metrics (agent.sandbox.metrics)."""

from __future__ import annotations

from agent.sandbox.metrics import TYPE_URL, from_agent
from api.containerd.cgroups.v2 import metrics_pb2
from api.kata import agent_pb2


def cgroup_v2_stats() -> agent_pb2.CgroupStats:
    """What the guest agent reads from a cgroup v2 group (CPU in ns, memory.stat keys)."""
    return agent_pb2.CgroupStats(
        cpu_stats=agent_pb2.CpuStats(
            cpu_usage=agent_pb2.CpuUsage(
                total_usage=5_123_456_789, usage_in_usermode=4_000_000_999,
                usage_in_kernelmode=1_000_000_000,
            ),
            throttling_data=agent_pb2.ThrottlingData(
                periods=10, throttled_periods=3, throttled_time=7_000_000
            ),
        ),
        memory_stats=agent_pb2.MemoryStats(
            cache=4096,
            usage=agent_pb2.MemoryData(usage=8_388_608, max_usage=9_000_000, limit=2**27),
            swap_usage=agent_pb2.MemoryData(usage=0, limit=2**64 - 1),
            stats={"anon": 6_000_000, "file": 4096, "inactive_file": 1024, "pgfault": 77,
                   "usage": 1, "memory_not_a_field": 5},
        ),
        pids_stats=agent_pb2.PidsStats(current=3, limit=100),
    )  # fmt: skip


def test_cpu_in_microseconds() -> None:
    cpu = from_agent(cgroup_v2_stats()).cpu
    assert (cpu.usage_usec, cpu.user_usec, cpu.system_usec) == (5_123_456, 4_000_000, 1_000_000)
    assert (cpu.nr_periods, cpu.nr_throttled, cpu.throttled_usec) == (10, 3, 7_000)


def test_memory_from_structured_fields_and_stat_keys() -> None:
    memory = from_agent(cgroup_v2_stats()).memory
    # usage is memory.current (structured), never the memory.stat key of that name.
    assert (memory.usage, memory.usage_limit, memory.max_usage) == (8_388_608, 2**27, 9_000_000)
    assert (memory.swap_usage, memory.swap_limit) == (0, 2**64 - 1)
    assert (memory.anon, memory.file, memory.inactive_file, memory.pgfault) == (
        6_000_000, 4096, 1024, 77
    )  # fmt: skip
    # containerd's CRI working set: usage - inactive_file.
    assert memory.usage - memory.inactive_file == 8_387_584


def test_pids_and_wire_form() -> None:
    metrics = from_agent(cgroup_v2_stats())
    assert (metrics.pids.current, metrics.pids.limit) == (3, 100)
    assert TYPE_URL == "io.containerd.cgroups.v2.Metrics"
    assert metrics_pb2.Metrics.DESCRIPTOR.full_name == TYPE_URL
    again = metrics_pb2.Metrics.FromString(metrics.SerializeToString())
    assert again == metrics


def test_upstream_field_numbers() -> None:
    # containerd/cgroups cgroup2/stats/metrics.proto: what containerd decodes.
    fields = {f.name: f.number for f in metrics_pb2.Metrics.DESCRIPTOR.fields}
    assert fields == {"pids": 1, "cpu": 2, "memory": 4, "rdma": 5, "io": 6, "hugetlb": 7,
                      "memory_events": 8}  # fmt: skip
    memory = {f.name: f.number for f in metrics_pb2.MemoryStat.DESCRIPTOR.fields}
    assert (memory["anon"], memory["inactive_file"], memory["usage"], memory["usage_limit"]) == (
        1, 13, 32, 33
    )  # fmt: skip
    assert metrics_pb2.CPUStat.DESCRIPTOR.fields_by_name["usage_usec"].number == 1


def test_blkio_and_hugetlb() -> None:
    stats = agent_pb2.CgroupStats(
        blkio_stats=agent_pb2.BlkioStats(
            io_service_bytes_recursive=[
                agent_pb2.BlkioStatsEntry(major=8, minor=0, op="Read", value=100),
                agent_pb2.BlkioStatsEntry(major=8, minor=0, op="Write", value=200),
                agent_pb2.BlkioStatsEntry(major=8, minor=0, op="Total", value=300),
            ],
            io_serviced_recursive=[agent_pb2.BlkioStatsEntry(major=8, minor=0, op="Read", value=4)],
        ),
        hugetlb_stats={"2MB": agent_pb2.HugetlbStats(usage=2097152, max_usage=4194304)},
    )
    metrics = from_agent(stats)
    assert [(e.major, e.minor, e.rbytes, e.wbytes, e.rios, e.wios) for e in metrics.io.usage] == [
        (8, 0, 100, 200, 4, 0)
    ]
    assert [(h.pagesize, h.current, h.max) for h in metrics.hugetlb] == [("2MB", 2097152, 4194304)]
