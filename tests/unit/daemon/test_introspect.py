"""SIGUSR1 makes the daemon write its RSS, open fds and live asyncio tasks (by
coroutine) atomically into its run directory."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

from agent.daemon import introspect


async def a_pod_watcher(release: asyncio.Event) -> None:
    await release.wait()


async def test_sigusr1_writes_tasks_fds_and_rss(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    introspect.install(tmp_path)
    release = asyncio.Event()
    watchers = [asyncio.create_task(a_pod_watcher(release)) for _ in range(3)]
    path = tmp_path / introspect.STATS_FILE
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        while not path.exists():  # the handler runs on the loop, after this yields
            await asyncio.sleep(0.01)
        stats = json.loads(path.read_text())
        assert stats["pid"] == os.getpid()
        assert stats["tasks_by_coroutine"]["a_pod_watcher"] == 3
        assert stats["tasks"] == sum(stats["tasks_by_coroutine"].values()) >= 4  # + this test
        assert abs(stats["fds"] - len(os.listdir("/proc/self/fd"))) <= 1  # listdir's own fd
        assert stats["rss_kib"] > 1000
        assert [p.name for p in tmp_path.iterdir()] == [introspect.STATS_FILE]  # no temp left

        release.set()
        await asyncio.gather(*watchers)
        path.unlink()
        os.kill(os.getpid(), signal.SIGUSR1)
        while not path.exists():
            await asyncio.sleep(0.01)
        assert "a_pod_watcher" not in json.loads(path.read_text())["tasks_by_coroutine"]
    finally:
        release.set()
        loop.remove_signal_handler(signal.SIGUSR1)
