"""A container's pids from its cgroup (guest.agent.cgroups.Cgroup.pids), on cgroup
trees laid out as the kernel does (v2 unified, v1 per controller)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from guest.agent.cgroups import Cgroup
from guest.agent.errors import AgentError


def test_unified_tree_with_sub_groups(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    group = tmp_path / "contrast" / "c1"
    (group / "inner").mkdir(parents=True)
    (group / "cgroup.procs").write_text("42\n7\n")
    (group / "inner" / "cgroup.procs").write_text("99\n")
    (tmp_path / "contrast" / "cgroup.procs").write_text("1\n")  # the parent: not c1's
    assert Cgroup("/contrast/c1", tmp_path).pids() == [7, 42, 99]


def test_legacy_tree_reads_the_pids_controller(tmp_path: Path) -> None:
    group = tmp_path / "pids" / "contrast" / "c1"
    group.mkdir(parents=True)
    (group / "cgroup.procs").write_text("5\n")
    assert Cgroup("/contrast/c1", tmp_path).pids() == [5]


def test_empty_group(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("pids\n")
    (tmp_path / "contrast" / "c1").mkdir(parents=True)
    (tmp_path / "contrast" / "c1" / "cgroup.procs").write_text("")
    assert Cgroup("/contrast/c1", tmp_path).pids() == []


def test_missing_group_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("pids\n")
    with pytest.raises(AgentError, match=re.escape(str(tmp_path / "contrast" / "gone"))):
        Cgroup("/contrast/gone", tmp_path).pids()
