"""devkit.ownership: what a dead owner left is swept, what a live owner has is kept."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit import ownership
from devkit.node import node_env
from devkit.registry import Registry
from devkit.topology import add_netns, delete_netns, ip
from tests.conftest import require_programs


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("netns and /run/contrast-devkit need root")


def sleeper(owner: str | None = None) -> subprocess.Popen[bytes]:
    env = {"PATH": os.environ["PATH"]}
    if owner is not None:
        env[ownership.MARKER] = owner
    return subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL, env=env)


@pytest.fixture
def dead_owner() -> str:
    """The token of a session that ran and is gone (its pid may be reused: the start
    time tells the difference)."""
    session = sleeper()
    token = ownership.token_of(session.pid)
    session.kill()
    session.wait()
    assert token is not None and not ownership.alive(token)
    return token


@pytest.fixture
def live_owner() -> Iterator[str]:
    """Another session, running concurrently with this one."""
    session = sleeper()
    token = ownership.token_of(session.pid)
    assert token is not None and ownership.alive(token)
    yield token
    session.kill()
    session.wait()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


@pytest.fixture
def names() -> Iterator[list[str]]:
    created: list[str] = []
    yield created
    for name in created:
        delete_netns(name)


def netns_of(owner: str, names: list[str]) -> str:
    name = f"cown-{secrets.token_hex(3)}"
    add_netns(name)
    names.append(name)
    ownership.record_netns(name, owner)  # as if that session had created it
    return name


def test_sweep_removes_only_what_dead_sessions_own(
    dead_owner: str, live_owner: str, procs: list[subprocess.Popen[bytes]], names: list[str]
) -> None:
    require_programs("ip", "sleep")
    orphan = sleeper(dead_owner)
    kept_live = sleeper(live_owner)
    # A session that inherited a dead session's marker but claimed its own: never swept.
    nested = sleeper(dead_owner)
    nested_token = ownership.token_of(nested.pid)
    assert nested_token is not None
    (ownership.OWNERS / nested_token).touch()
    unmarked = sleeper()
    procs.extend([orphan, kept_live, nested, unmarked])
    dead_ns = netns_of(dead_owner, names)
    live_ns = netns_of(live_owner, names)

    swept = ownership.sweep()

    assert orphan.wait(timeout=10) == -9
    assert [p.poll() for p in (kept_live, nested, unmarked)] == [None, None, None]
    assert any(line.startswith(f"{orphan.pid} sleep 600") for line in swept.processes)
    assert not {str(p.pid) for p in (kept_live, nested, unmarked)} & {
        line.split()[0] for line in swept.processes
    }
    assert dead_ns in swept.netns and live_ns not in swept.netns
    listed = ip("netns", "list")
    assert dead_ns not in listed and live_ns in listed
    assert not (ownership.NETNS / dead_ns).exists()
    assert (ownership.NETNS / live_ns).read_text() == live_owner
    (ownership.OWNERS / nested_token).unlink()


def test_what_the_kit_starts_carries_this_sessions_marker(tmp_path: Path) -> None:
    require_programs("docker-registry", "ip")
    owner = ownership.claim()
    assert ownership.alive(owner)
    with Registry(tmp_path / "registry") as registry:
        assert registry._proc is not None
        assert ownership.marker_of(registry._proc.pid) == owner
    with node_env() as node:
        assert node.env[ownership.MARKER] == owner
    name = f"cown-{secrets.token_hex(3)}"
    add_netns(name)
    try:
        assert (ownership.NETNS / name).read_text() == owner
    finally:
        delete_netns(name)
    assert not (ownership.NETNS / name).exists()
