"""Integration tier: this session owns what it starts, and leftovers of killed sessions go.

A run killed mid-test leaves its QEMUs, node daemon, registry, containerd and netns
behind. At session start this session claims an owner marker (inherited by every program
it starts, see devkit.ownership) and sweeps away what belongs to sessions that no longer
run; what a live concurrent session owns is left alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from devkit import ownership


@pytest.fixture(scope="session", autouse=True)
def _owned_session(request: pytest.FixtureRequest) -> Iterator[None]:
    if os.geteuid() != 0:
        yield  # /run is root's, and without root no fixture starts a VM or netns
        return
    token = ownership.claim(force=True)
    swept = ownership.sweep()
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    for what in (*swept.processes, *(f"netns {name}" for name in swept.netns)):
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(f"swept leftover of a dead test session: {what}")
    yield
    ownership.release(token)
