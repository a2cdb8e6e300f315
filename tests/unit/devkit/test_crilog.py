"""Waiting for a line in a CRI container log: the lines up to the match, the first line
at all, a timeout naming the prefix, a file that is not there yet."""

from __future__ import annotations

from pathlib import Path

import pytest

from devkit.crilog import LogTimeout, wait_for_line

T = "2026-11-22T15:00:00.000000001Z"


def test_the_lines_up_to_the_match(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_text(f"{T} stdout F a\n{T} stderr P b\n{T} stderr F : 1\n{T} stdout F c\n")
    assert wait_for_line(log, "b:", 1) == ["a", "b: 1"]
    assert wait_for_line(log, "", 1) == ["a"]


def test_a_timeout_names_the_prefix_and_what_was_there(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_text(f"{T} stdout F a\n")
    with pytest.raises(LogTimeout, match=r"no line starting 'z' .*\['a'\]"):
        wait_for_line(log, "z", 0.1, poll=0.02)


def test_a_log_not_written_yet_has_no_lines(tmp_path: Path) -> None:
    with pytest.raises(LogTimeout, match=r"\[\]"):
        wait_for_line(tmp_path / "absent.log", "", 0.1, poll=0.02)
