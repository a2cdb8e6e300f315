"""runtimeclass.yaml's overhead.podFixed.memory is the recorded measurement plus its margin."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from agent.sandbox.config import VmSizes
from bench.overhead_bench import RECORD, podfixed_mib

REPO = Path(__file__).parents[3]


def test_podfixed_memory_is_the_measured_worst_case_plus_the_margin() -> None:
    record = json.loads(RECORD.read_text())
    runtime_class = yaml.safe_load((REPO / "packaging/runtimeclass.yaml").read_text())
    assert runtime_class["overhead"]["podFixed"]["memory"] == f"{podfixed_mib(record)}Mi"
    # Measured at the size pods get by default (the runtime config's [vm] memory_mib).
    assert record["memory_mib"] == VmSizes().memory_mib
    runtime_toml = (REPO / "packaging/node/runtime.toml").read_text()
    assert f"\nmemory_mib = {VmSizes().memory_mib}\n" in runtime_toml


def test_the_margin_covers_more_than_the_guest_ram() -> None:
    small = {"memory_mib": 512, "qemu_own_mib": 40.0, "daemon_per_pod_mib": 1.0}
    assert podfixed_mib(small) == 592  # 512 + 41 + 32 (the minimum margin) = 585 -> 592
    large = {"memory_mib": 512, "qemu_own_mib": 300.0, "daemon_per_pod_mib": 20.0}
    assert podfixed_mib(large) == 912  # 512 + 320 + 80 (25%) = 912
