"""What the daemon holds, on request: ``SIGUSR1`` writes ``<run dir>/daemon-stats.json``.

A leak in a long-running daemon shows as growth in one of three numbers: resident
memory, open file descriptors, live asyncio tasks. The first two are readable from
``/proc/<pid>`` by anyone; the third only from inside the event loop. So on SIGUSR1 the
daemon writes all three, with its live tasks counted by coroutine name (a leaked task
per pod names itself), atomically (temp file, fsync, rename), so a reader never sees a
half-written file. The churn bench and test (``bench/churn_bench.py``,
``tests/e2e/test_churn.py``) read it after every cycle.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import signal
from pathlib import Path

from guest import fsatomic

log = logging.getLogger(__name__)

STATS_FILE = "daemon-stats.json"


def _coroutine_name(task: asyncio.Task[object]) -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", type(coro).__name__)


def snapshot() -> dict[str, object]:
    """This process's RSS (KiB), open fds and live asyncio tasks (total and by
    coroutine); call from inside the running loop."""
    rss_kib = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kib = int(line.split()[1])
    tasks = asyncio.all_tasks()
    by_name = collections.Counter(_coroutine_name(t) for t in tasks)
    return {
        "pid": os.getpid(),
        "rss_kib": rss_kib,
        "fds": sum(1 for _ in Path("/proc/self/fd").iterdir()),
        "tasks": len(tasks),
        "tasks_by_coroutine": dict(sorted(by_name.items())),
    }


def write_stats(path: Path) -> None:
    """:func:`snapshot` into ``path``, atomically."""
    data = json.dumps(snapshot(), indent=1).encode()
    fsatomic.write_file(path, data, prefix=f".{path.name}.")


def install(run_dir: Path) -> None:
    """Answer SIGUSR1 with :func:`write_stats` into ``<run_dir>/daemon-stats.json``
    (a failed write is logged; the daemon keeps serving)."""
    path = run_dir / STATS_FILE

    def on_signal() -> None:
        try:
            write_stats(path)
        except OSError as err:
            log.warning("cannot write %s: %s", path, err)

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, on_signal)
