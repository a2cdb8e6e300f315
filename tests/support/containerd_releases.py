"""Which containerd a test runs on: Debian's 1.6, or 2.0.11 / 2.3.4 from ../shared/peers.

A release this machine lacks skips the test, and fails it under ``CI=true`` (CI has the
shared folder and Debian's containerd). Parametrize with ``VERSIONS`` and call
:func:`require_release` in the test or its fixture.
"""

from __future__ import annotations

import os

import pytest

from devkit.containerd import VERSIONS, ContainerdRelease, ReleaseMissing, release

__all__ = ["VERSIONS", "require_release"]


def require_release(version: str) -> ContainerdRelease:
    """The containerd ``version``, unpacked when it is a peer's; skips (CI: fails) when absent."""
    try:
        return release(version)
    except ReleaseMissing as err:
        message = f"containerd {version} not available: {err}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI must have ../shared/peers and Debian's containerd)")
        pytest.skip(message)
