"""shim.pods: sandbox records are written in a worker thread, so the event loop serves
others meanwhile, yet one at a time, in call order, and visible only once on disk
(also when the caller is cancelled during the write)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from agent.sandbox.errors import StateError, TaskStateError, UnknownTaskError
from agent.sandbox.state import ProcessRecord, SandboxRecord, StateStore, Status, Stdio
from shim.pods import Pod, Pods
from tests.unit.shim.test_state import record

WAIT = 30.0  # seconds a test waits for a thread before it fails (never a timing check)


class GatedStore(StateStore):
    """A real store whose writes wait for the test's go-ahead, in a record of events."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.events: list[str] = []
        self.entered = threading.Semaphore(0)
        self.gate = threading.Semaphore(0)
        self.fail = False

    def save(self, record: SandboxRecord) -> None:
        assert threading.current_thread() is not threading.main_thread()
        tag = record.config_path
        self.events.append(f"start {tag}")
        self.entered.release()
        assert self.gate.acquire(timeout=WAIT)
        if self.fail:
            self.events.append(f"failed {tag}")
            raise StateError(f"cannot write sandbox state {tag}: disk full")
        super().save(record)
        self.events.append(f"end {tag}")


def tagged(tag: str) -> SandboxRecord:
    old = record()
    return SandboxRecord(old.namespace, old.id, old.ttrpc_address, tag, old.vm, old.containers)


def to(tag: str) -> Callable[[SandboxRecord], SandboxRecord]:
    return lambda _: tagged(tag)


async def entered(store: GatedStore) -> None:
    assert await asyncio.to_thread(store.entered.acquire, timeout=WAIT)


async def test_the_loop_serves_others_while_a_record_is_written(tmp_path: Path) -> None:
    store = GatedStore(tmp_path)
    pods = Pods(store)
    pod = Pod(tagged("v0"), None, None)
    pods.adopt(pod)
    updating = asyncio.create_task(pods.update(pod, lambda _: tagged("v1")))
    await entered(store)
    # The write is blocked in its thread: the loop still runs other coroutines, which
    # see the old record (a change is visible only once persisted).
    served = await asyncio.wait_for(asyncio.sleep(0, result="served"), WAIT)
    assert served == "served"
    assert pod.record.config_path == "v0"
    assert not updating.done()
    store.gate.release()
    await asyncio.wait_for(updating, WAIT)
    assert pod.record.config_path == "v1"
    assert store.load(pod.record.namespace, pod.record.id) == tagged("v1")


async def test_writes_reach_the_disk_one_at_a_time_in_call_order(tmp_path: Path) -> None:
    store = GatedStore(tmp_path)
    pods = Pods(store)
    pod = Pod(tagged("v0"), None, None)
    adding = asyncio.create_task(pods.add(pod))
    await entered(store)
    store.gate.release()
    await asyncio.wait_for(adding, WAIT)
    updates = [asyncio.create_task(pods.update(pod, to(f"v{n}"))) for n in (1, 2, 3)]
    for _ in updates:
        await entered(store)
        await asyncio.sleep(0)
        store.gate.release()
    await asyncio.wait_for(asyncio.gather(*updates), WAIT)
    assert store.events == [
        "start v0", "end v0", "start v1", "end v1", "start v2", "end v2", "start v3", "end v3"
    ]  # fmt: skip
    assert pod.record.config_path == "v3"
    assert store.load(pod.record.namespace, pod.record.id) == tagged("v3")


@pytest.mark.parametrize("fails", [False, True])
async def test_a_cancelled_caller_waits_for_its_write(tmp_path: Path, fails: bool) -> None:
    store = GatedStore(tmp_path)
    pods = Pods(store)
    pod = Pod(tagged("v0"), None, None)
    pods.adopt(pod)
    updating = asyncio.create_task(pods.update(pod, lambda _: tagged("v1")))
    await entered(store)
    updating.cancel()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not updating.done()  # still waiting for the write in its thread
    assert pod.record.config_path == "v0"
    store.fail = fails
    store.gate.release()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(updating, WAIT)
    # Memory follows the disk: the written record is applied, a failed one is not.
    assert pod.record.config_path == ("v0" if fails else "v1")
    on_disk = store.load(pod.record.namespace, pod.record.id)
    assert on_disk == (None if fails else tagged("v1"))
    # The lock is free again for the next change.
    store.fail = False
    store.gate.release()
    await asyncio.wait_for(pods.update(pod, lambda _: tagged("v2")), WAIT)
    assert pod.record.config_path == "v2"


async def test_a_failed_write_changes_nothing(tmp_path: Path) -> None:
    store = GatedStore(tmp_path)
    pods = Pods(store)
    pod = Pod(tagged("v0"), None, None)
    store.fail = True
    store.gate.release()
    with pytest.raises(StateError, match="disk full"):
        await asyncio.wait_for(pods.add(pod), WAIT)
    assert pods.pod(pod.record.namespace, pod.record.id) is None


async def test_remove_forgets_on_disk_then_in_memory(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    pods = Pods(store)
    pod = Pod(tagged("v0"), None, None)
    await pods.add(pod)
    assert store.load(pod.record.namespace, pod.record.id) == tagged("v0")
    await pods.remove(pod)
    assert store.load(pod.record.namespace, pod.record.id) is None
    assert pods.all() == []


def created_app(tag: str) -> SandboxRecord:
    """``tagged(tag)`` with the app container's init just created (not started)."""
    old = tagged(tag)
    app = old.container("app")
    assert app is not None
    return old.with_container(app.with_process(replace(app.init, status=Status.CREATED)))


def started(now: ProcessRecord) -> ProcessRecord | None:
    """As the shim's Start: CREATED becomes RUNNING, anything else stays."""
    return replace(now, status=Status.RUNNING) if now.status is Status.CREATED else None


def stopped(now: ProcessRecord) -> ProcessRecord | None:
    """As the shim's exit watcher: the process becomes STOPPED once."""
    return None if now.status is Status.STOPPED else replace(now, status=Status.STOPPED)


async def test_a_process_change_starts_from_the_change_written_before_it(tmp_path: Path) -> None:
    # An init exits while its Start is still in flight: the exit's write is on its way
    # to the disk when Start records RUNNING. Start's step must see STOPPED, not the
    # CREATED it saw before it awaited (the containerd 2.3.4 e2e hang: RUNNING written
    # over STOPPED, then every Delete refused with "task must be stopped").
    store = GatedStore(tmp_path)
    pods = Pods(store)
    pod = Pod(created_app("v0"), None, None)
    pods.adopt(pod)
    exiting = asyncio.create_task(pods.update_process(pod, "app", "", stopped))
    await entered(store)
    starting = asyncio.create_task(pods.update_process(pod, "app", "", started))
    await asyncio.sleep(0)
    app = pod.record.container("app")
    assert app is not None and app.init.status is Status.CREATED  # the exit not visible yet
    store.gate.release()
    done = await asyncio.wait_for(exiting, WAIT)
    assert done is not None and done.status is Status.STOPPED
    assert await asyncio.wait_for(starting, WAIT) is None  # nothing to do: it exited
    for seen in (pod.record, store.load(pod.record.namespace, pod.record.id)):
        assert seen is not None
        app = seen.container("app")
        assert app is not None and app.init.status is Status.STOPPED
    assert store.events == ["start v0", "end v0"]  # Start wrote nothing


async def test_a_process_change_of_an_unknown_container_writes_nothing(tmp_path: Path) -> None:
    store = GatedStore(tmp_path)
    pods = Pods(store)
    pod = Pod(created_app("v0"), None, None)
    pods.adopt(pod)
    assert await pods.update_process(pod, "gone", "", stopped) is None
    assert await pods.update_process(pod, "app", "no-such-exec", stopped) is None
    assert store.events == []


async def test_two_execs_of_one_id_at_once_one_is_refused(tmp_path: Path) -> None:
    # The second Exec arrives while the first one's record is being written: it must be
    # checked against that record, not against the one both saw before awaiting.
    store = GatedStore(tmp_path)
    pods = Pods(store)
    pod = Pod(created_app("v0"), None, None)
    pods.adopt(pod)
    shell = ProcessRecord(exec_id="shell", stdio=Stdio(stdout="/run/o"), pid=5)
    first = asyncio.create_task(pods.add_process(pod, "app", shell))
    await entered(store)
    second = asyncio.create_task(pods.add_process(pod, "app", replace(shell, pid=7)))
    await asyncio.sleep(0)
    store.gate.release()
    await asyncio.wait_for(first, WAIT)
    with pytest.raises(TaskStateError, match="exec shell of task app exists already"):
        await asyncio.wait_for(second, WAIT)
    assert store.events == ["start v0", "end v0"]  # one write: the first exec's
    app = pod.record.container("app")
    assert app is not None
    added = app.process("shell")
    assert added is not None and added.pid == shell.pid


async def test_an_exec_of_an_unknown_container_is_refused(tmp_path: Path) -> None:
    store = GatedStore(tmp_path)
    pods = Pods(store)
    pod = Pod(created_app("v0"), None, None)
    pods.adopt(pod)
    with pytest.raises(UnknownTaskError, match="task gone not found"):
        await pods.add_process(pod, "gone", ProcessRecord(exec_id="shell", stdio=Stdio()))
    assert store.events == []
