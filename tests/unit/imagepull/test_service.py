"""Puller errors become ttrpc statuses at the service boundary."""

from __future__ import annotations

import pytest

import ttrpc
from guest.imagepull import errors
from guest.imagepull.service import status_for


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidReference("x"), ttrpc.Code.INVALID_ARGUMENT),
        (errors.AuthError("x"), ttrpc.Code.UNAUTHENTICATED),
        (errors.RegistryError("x"), ttrpc.Code.UNAVAILABLE),
        (errors.VerificationError("x"), ttrpc.Code.DATA_LOSS),
        (errors.UnsafeLayerError("x"), ttrpc.Code.FAILED_PRECONDITION),
        (errors.StoreError("x"), ttrpc.Code.RESOURCE_EXHAUSTED),
        (errors.MountError("x"), ttrpc.Code.INTERNAL),
    ],
)
def test_status_codes(error: errors.ImagePullError, code: ttrpc.Code) -> None:
    status = status_for(error)
    assert status.code == code and status.message == "x"
