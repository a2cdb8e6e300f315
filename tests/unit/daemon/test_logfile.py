"""Bounded log files of a detached daemon or relay: rotation at a size cap without
losing or splitting a record, stdout/stderr following the current file, rotation at
spawn, and the limits' environment settings."""

from __future__ import annotations

import logging
import os
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.daemon import logfile, settings
from agent.daemon.lifecycle import spawn_detached
from agent.daemon.logfile import LogLimits

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO [\w.]+: record (\d+) (x*)end$")


@pytest.fixture
def quiet_fd() -> Iterator[int]:
    """A descriptor of our own for the handler to point at its file (not our stderr)."""
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        yield fd
    finally:
        os.close(fd)


@pytest.fixture
def logger(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    log = logging.getLogger(f"test.logfile.{request.node.name}")
    log.propagate = False
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def files_oldest_first(path: Path) -> list[Path]:
    backups = sorted(path.parent.glob(f"{path.name}.*"), key=lambda p: -int(p.suffix[1:]))
    return [*backups, path]


def records(path: Path) -> list[int]:
    """Record numbers in the files, oldest first; every line must be a whole record."""
    numbers: list[int] = []
    for file in files_oldest_first(path):
        for line in file.read_text().splitlines():
            match = LINE.match(line)
            assert match, f"{file.name}: not a whole record: {line!r}"
            numbers.append(int(match[1]))
    return numbers


def test_rotation_keeps_every_record_whole_and_in_order(
    tmp_path: Path, logger: logging.Logger, quiet_fd: int
) -> None:
    path = tmp_path / "daemon.log"
    limits = LogLimits(max_bytes=1000, backups=100)
    logfile.log_to_file(path, logging.INFO, limits, logger=logger, follow=(quiet_fd,))
    for n in range(300):
        logger.info("record %d %send", n, "x" * (n % 97))
    files = files_oldest_first(path)
    assert len(files) > 10  # it rotated, often
    assert all(file.stat().st_size <= limits.max_bytes for file in files)
    assert records(path) == list(range(300))  # nothing lost, nothing split


def test_backups_bound_the_files(tmp_path: Path, logger: logging.Logger, quiet_fd: int) -> None:
    path = tmp_path / "relay.log"
    limits = LogLimits(max_bytes=500, backups=2)
    logfile.log_to_file(path, logging.INFO, limits, logger=logger, follow=(quiet_fd,))
    for n in range(1000):
        logger.info("record %d %send", n, "x" * 20)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["relay.log", "relay.log.1", "relay.log.2"]
    kept = records(path)
    assert kept == list(range(kept[0], 1000))  # the newest records, without a gap
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 3 * limits.max_bytes


def test_a_record_longer_than_the_cap_stays_whole(
    tmp_path: Path, logger: logging.Logger, quiet_fd: int
) -> None:
    path = tmp_path / "daemon.log"
    logfile.log_to_file(path, logging.INFO, LogLimits(100, 3), logger=logger, follow=(quiet_fd,))
    logger.info("record 1 end")
    logger.info("record 2 %send", "x" * 300)
    logger.info("record 3 end")
    assert records(path) == [1, 2, 3]


def test_followed_descriptors_write_into_the_current_file_and_count(
    tmp_path: Path, logger: logging.Logger, quiet_fd: int
) -> None:
    """What reaches the descriptor directly (a traceback on stderr) goes into the
    current file, across rotations, and counts towards its size."""
    path = tmp_path / "daemon.log"
    logfile.log_to_file(path, logging.INFO, LogLimits(300, 5), logger=logger, follow=(quiet_fd,))
    for n in range(20):
        logger.info("record %d end", n)
    assert (tmp_path / "daemon.log.1").exists()
    os.write(quiet_fd, b"Traceback: a crash\n")
    assert path.read_text().endswith("Traceback: a crash\n")
    os.write(quiet_fd, b"y" * 400 + b"\n")  # over the cap by itself
    logger.info("record 99 end")
    assert path.read_text().splitlines()[-1].endswith("record 99 end")
    assert "Traceback: a crash" in (tmp_path / "daemon.log.1").read_text()
    assert "record 99" not in (tmp_path / "daemon.log.1").read_text()


def test_limits_must_allow_a_file_and_a_backup(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1 byte and 1 backup"):
        logfile.FollowingRotatingHandler(tmp_path / "x.log", LogLimits(1000, 0), follow=())


def test_spawn_rotates_a_full_file_so_a_crash_loop_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "daemon.log"
    limits = LogLimits(max_bytes=100, backups=2)
    path.write_bytes(b"old\n" * 10)  # 40 bytes: under the cap, appended to
    with logfile.open_for_child(path, limits) as log:
        log.write(b"z" * 80)
    assert path.read_bytes() == b"old\n" * 10 + b"z" * 80
    assert not (tmp_path / "daemon.log.1").exists()
    for n in range(10):  # a child that dies before it logs, again and again
        with logfile.open_for_child(path, limits) as log:
            log.write(f"crash {n} ".encode() + b"t" * 120)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "daemon.log",
        "daemon.log.1",
        "daemon.log.2",
    ]
    assert path.read_bytes().startswith(b"crash 9 ")
    assert (tmp_path / "daemon.log.2").read_bytes().startswith(b"crash 7 ")


CHILD = """
import argparse, logging, sys
from pathlib import Path
from agent.daemon import logfile, settings

parser = argparse.ArgumentParser()
parser.add_argument("--log-file", type=Path)
args = parser.parse_args()
logfile.log_to_file(args.log_file, logging.INFO, settings.log_limits())
log = logging.getLogger("child")
for n in range(200):
    log.info("record %d %send", n, "x" * 10)
print("stdout line", flush=True)
raise SystemExit("child: a fatal error on stderr")
"""


@pytest.mark.allow_programs(os.path.basename(sys.executable))
def test_a_detached_child_keeps_its_log_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """spawn_detached end to end: the child's records, its stdout and its last words
    on stderr all land in the bounded files; none grows past the cap."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "logchild.py").write_text(textwrap.dedent(CHILD))
    repo = Path(__file__).resolve().parents[3]
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path / 'pkg'}:{repo}")
    monkeypatch.setenv("CONTRAST_LOG_MAX_BYTES", "2000")
    monkeypatch.setenv("CONTRAST_LOG_BACKUPS", "3")
    run_dir = tmp_path / "run"
    child = spawn_detached("logchild", run_dir, "daemon.log")
    assert child.wait(timeout=60) == 1
    path = run_dir / "daemon.log"
    files = files_oldest_first(path)
    assert [p.name for p in files] == ["daemon.log.3", "daemon.log.2", "daemon.log.1", "daemon.log"]
    assert all(p.stat().st_size <= 2000 for p in files)
    tail = path.read_text().splitlines()
    assert tail[-2:] == ["stdout line", "child: a fatal error on stderr"]
    kept = records_until(files, "stdout line")
    assert kept == list(range(kept[0], 200))


def records_until(files: list[Path], stop: str) -> list[int]:
    numbers: list[int] = []
    for file in files:
        for line in file.read_text().splitlines():
            if line == stop:
                return numbers
            match = LINE.match(line)
            assert match, f"{file.name}: not a whole record: {line!r}"
            numbers.append(int(match[1]))
    return numbers


def test_limits_from_the_environment() -> None:
    assert settings.log_limits({}) == LogLimits(4 * 1024 * 1024, 3)
    env = {"CONTRAST_LOG_MAX_BYTES": "65536", "CONTRAST_LOG_BACKUPS": "5"}
    assert settings.log_limits(env) == LogLimits(65536, 5)
    assert settings.from_env(env).log_limits == LogLimits(65536, 5)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONTRAST_LOG_MAX_BYTES", "0"),
        ("CONTRAST_LOG_MAX_BYTES", "4M"),
        ("CONTRAST_LOG_BACKUPS", "-1"),
        ("CONTRAST_LOG_BACKUPS", "0"),
    ],
)
def test_bad_limits_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(settings.SettingsError, match=f"{name}='{re.escape(value)}'"):
        settings.from_env({name: value})
