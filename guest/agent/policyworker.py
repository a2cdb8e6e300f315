"""The one thread a Policy's regopy calls run on (guest.agent.policy).

Evaluations, the state's compiles and SetPolicy's check run there one at a time, in
the order submitted, so a caller can stop waiting for a runaway query without another
call entering regopy meanwhile.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")
Job = tuple[Callable[[], Any], "Future[Any]"]


class Worker:
    """One daemon thread running a policy's regopy calls, so a caller can stop waiting.

    A runaway query cannot be interrupted; its thread is left to it (a daemon thread,
    nothing joins it) and the policy is disabled.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._after: list[Callable[[], None]] = []
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=_work, args=(self._jobs, self._after), name="policy", daemon=True
                )
                self._thread.start()
        self._jobs.put((job, future))
        return future

    def after_this_job(self, follow_up: Callable[[], None]) -> None:
        """From a job: run ``follow_up`` on this thread once the job's result is handed
        over, before the next job (even one queued already) starts. It must not raise."""
        self._after.append(follow_up)

    def stop(self) -> None:
        self._jobs.put(None)


def _work(jobs: queue.SimpleQueue[Job | None], after: list[Callable[[], None]]) -> None:
    # A function, not a method: the thread must not keep its Policy alive (a follow-up
    # holds it only until it has run).
    while (item := jobs.get()) is not None:
        job, future = item
        del item
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(job())
            except BaseException as err:  # noqa: BLE001 - handed to the waiting caller
                future.set_exception(err)
        del job, future
        while after:
            after.pop(0)()
