"""Sandbox state: atomic files that a restarted daemon reads back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.sandbox.errors import StateError
from agent.sandbox.state import (
    ContainerRecord,
    ProcessRecord,
    SandboxRecord,
    StateStore,
    Status,
    Stdio,
    VmRecord,
)


def record(sandbox_id: str = "pod1") -> SandboxRecord:
    init = ProcessRecord("", Stdio("/f/in", "/f/out", "/f/err", False), Status.RUNNING, pid=42)
    done = ProcessRecord("e1", Stdio(), Status.STOPPED, pid=42, exit_status=3, exited_at_ns=7)
    return SandboxRecord(
        namespace="k8s.io",
        id=sandbox_id,
        ttrpc_address="/run/containerd/containerd.sock.ttrpc",
        config_path="/opt/contrast/h/etc/runtime.toml",
        vm=VmRecord("pod-vm", 1234, {"qmp_socket": "/run/contrast/q.sock"}),
        containers=(
            ContainerRecord("pod1", "/b/pod1", init, is_sandbox=True),
            ContainerRecord("app", "/b/app", init, is_sandbox=False, execs=(done,)),
        ),
    )


def test_round_trip(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(record())
    assert store.load("k8s.io", "pod1") == record()
    path = store.path("k8s.io", "pod1")
    assert path == tmp_path / "sandboxes" / "k8s.io" / "pod1.json"
    assert [p.name for p in path.parent.iterdir()] == ["pod1.json"]  # no temp file left
    assert store.load("k8s.io", "other") is None


def test_record_updates_are_copies() -> None:
    old = record()
    app = old.container("app")
    assert app is not None
    new = old.with_container(app.without_exec("e1"))
    assert old.container("app") == app
    updated = new.container("app")
    assert updated is not None and updated.execs == ()
    assert new.without_container("app").container("app") is None


def test_failed_write_keeps_the_old_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = StateStore(tmp_path)
    store.save(record())

    def fail(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    changed = record().without_container("app")
    with pytest.raises(StateError, match="No space left"):
        store.save(changed)
    monkeypatch.undo()
    assert store.load("k8s.io", "pod1") == record()
    assert [p.name for p in store.path("k8s.io", "pod1").parent.iterdir()] == ["pod1.json"]


def test_load_all_reports_corrupt_files_and_sweeps_temps(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(record("pod1"))
    store.save(record("pod2"))
    folder = store.path("k8s.io", "pod1").parent
    (folder / "bad.json").write_text("{not json")
    (folder / ".pod1.json.abc123").write_text("half")
    records, errors = store.load_all()
    assert sorted(r.id for r in records) == ["pod1", "pod2"]
    assert len(errors) == 1 and "bad.json is corrupt" in str(errors[0])
    assert not (folder / ".pod1.json.abc123").exists()
    assert (folder / "bad.json").exists()  # kept for a human to look at


def test_remove_and_unsafe_ids(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(record())
    store.remove("k8s.io", "pod1")
    store.remove("k8s.io", "pod1")  # again: fine
    assert store.load_all() == ([], [])
    for bad in ("../etc", "a/b", "", ".hidden"):
        with pytest.raises(StateError, match="not a valid identifier"):
            store.path("k8s.io", bad)
