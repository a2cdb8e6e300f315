"""The relay's idle exit and the sandbox collector's period, from the environment."""

from __future__ import annotations

import pytest

from agent.daemon.settings import SettingsError, from_env


def test_defaults() -> None:
    config = from_env({})
    assert (config.supervised, config.relay_exit_idle, config.gc_seconds) == (False, False, 60.0)


def test_the_launchers_settings() -> None:
    config = from_env(
        {
            "CONTRAST_DAEMON_SUPERVISED": "1",
            "CONTRAST_RELAY_EXIT_IDLE": "1",
            "CONTRAST_GC_SECONDS": "0",
        }
    )
    assert (config.supervised, config.relay_exit_idle, config.gc_seconds) == (True, True, 0.0)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CONTRAST_RELAY_EXIT_IDLE", "yes", "CONTRAST_RELAY_EXIT_IDLE='yes': expected 0 or 1"),
        ("CONTRAST_DAEMON_SUPERVISED", "2", "CONTRAST_DAEMON_SUPERVISED='2': expected 0 or 1"),
        ("CONTRAST_GC_SECONDS", "-5", "CONTRAST_GC_SECONDS='-5': expected a whole number"),
        ("CONTRAST_GC_SECONDS", "1.5", "CONTRAST_GC_SECONDS='1.5': expected a whole number"),
    ],
)
def test_bad_values_are_named(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        from_env({name: value})
