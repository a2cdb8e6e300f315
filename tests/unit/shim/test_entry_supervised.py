"""The shim entry starts a daemon only when nobody supervises it."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.daemon import lifecycle, settings
from shim import main


def _settings(run_dir: Path, supervised: bool) -> settings.Settings:
    env = {"CONTRAST_RUN_DIR": str(run_dir), "CONTRAST_STATE_DIR": str(run_dir / "state")}
    if supervised:
        env["CONTRAST_DAEMON_SUPERVISED"] = "1"
    return settings.from_env(env)


@pytest.mark.parametrize("supervised", [True, False])
def test_a_supervised_daemon_is_waited_for_never_spawned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, supervised: bool
) -> None:
    spawned: list[str] = []
    monkeypatch.setattr(
        lifecycle, "spawn_detached", lambda module, *_a, **_k: spawned.append(module)
    )
    monkeypatch.setattr(main, "DAEMON_START_SECONDS", 0.2)
    with pytest.raises(main.ShimError, match="node daemon did not come up"):
        main.ensure_daemon(main.EntrySettings.of(_settings(tmp_path, supervised)))
    assert spawned == ([] if supervised else ["agent.daemon"])
