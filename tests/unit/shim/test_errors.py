"""Sandbox-layer errors as the ttrpc statuses containerd 1.6 turns into errdefs."""

from __future__ import annotations

import pytest

from agent.sandbox.errors import (
    BackendError,
    ImageRefError,
    TaskStateError,
    UnknownTaskError,
)
from shim.errors import to_status
from ttrpc import Code


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ImageRefError("image reg.example/app:1: not in containerd"), Code.FAILED_PRECONDITION),
        (TaskStateError("task c1 is running"), Code.FAILED_PRECONDITION),
        (UnknownTaskError("task c1 not found"), Code.NOT_FOUND),
        (BackendError("qemu died"), Code.INTERNAL),
    ],
)  # fmt: skip
def test_status_code_and_message(error: Exception, code: Code) -> None:
    status = to_status(error)
    assert status.code is code
    assert status.message == str(error)  # containerd keeps it: it names the image
