"""The relay works in its run directory (agent/relay/main.py ``pinned``): once started,
it reaches the directory, and rotates its log file there, when the path it was started
with leads elsewhere (its daemon container removed, the mounts in it detached)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.daemon.logfile import FollowingRotatingHandler, LogLimits
from agent.daemon.settings import Settings
from agent.relay import main as relay_main


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[FollowingRotatingHandler]:
    (tmp_path / "run").mkdir()
    handler = FollowingRotatingHandler(
        tmp_path / "run/relay.log", LogLimits(max_bytes=300, backups=2), follow=()
    )
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        handler.close()


def test_the_run_directory_is_reached_when_its_path_leads_elsewhere(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    log_file: FollowingRotatingHandler,
) -> None:
    monkeypatch.chdir(tmp_path)  # pinned() changes our cwd: restored afterwards
    run = tmp_path / "run"
    config = relay_main.pinned(Settings(run, tmp_path / "state", "pod-vm", None))
    assert config.socket == Path("daemon.sock")
    assert config.daemon_ns_dir / "k8s.io.sock" == Path("daemon-ns/k8s.io.sock")
    host = tmp_path / "host-run"
    run.rename(host)  # the path now leads nowhere; the directory lives on elsewhere
    (host / "daemon.sock").touch()
    assert config.socket.exists()
    for n in range(30):
        logging.getLogger("agent.relay.test").warning("relay line %d of the test", n)
    assert (host / "relay.log.1").exists()
    assert "relay line 29 of the test" in (host / "relay.log").read_text()
    assert "Logging error" not in capsys.readouterr().err
    assert not run.exists()
