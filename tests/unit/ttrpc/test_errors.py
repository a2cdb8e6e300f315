"""Status codes and the typed errors they become."""

from __future__ import annotations

import pickle

import pytest

import ttrpc
from ttrpc.errors import Code, StatusError, status_error


def test_all_seventeen_grpc_codes() -> None:
    assert [c.value for c in Code] == list(range(17))
    assert int(Code.UNIMPLEMENTED) == 12
    assert int(Code.RESOURCE_EXHAUSTED) == 8


@pytest.mark.parametrize("code", [c for c in Code if c != Code.OK])
def test_each_code_has_its_own_class(code: Code) -> None:
    err = status_error(code, "why")
    assert isinstance(err, StatusError)
    assert isinstance(err, ttrpc.TtrpcError)
    assert type(err) is not StatusError
    assert err.code == code
    assert err.message == "why"
    assert str(err) == f"{code.name}: why"
    # The class is exported under its CamelCase name and fixes the code.
    name = "".join(part.capitalize() for part in code.name.split("_"))
    cls = getattr(ttrpc, name)
    assert type(err) is cls
    assert cls("x").code == code  # type: ignore[arg-type]


def test_except_by_class() -> None:
    with pytest.raises(ttrpc.Unimplemented) as caught:
        raise status_error(12, "method Nope")
    assert caught.value.code is Code.UNIMPLEMENTED


def test_unknown_code_number_is_kept_in_the_message() -> None:
    err = status_error(99, "odd")
    assert isinstance(err, ttrpc.Unknown)
    assert "99" in err.message
    assert "odd" in err.message


def test_ok_is_not_an_error() -> None:
    with pytest.raises(ValueError, match="OK"):
        status_error(0)
    with pytest.raises(ValueError, match="OK"):
        StatusError(Code.OK, "x")


def test_generic_status_error_keeps_its_code() -> None:
    err = StatusError(Code.ABORTED, "conflict")
    assert err.code == Code.ABORTED
    assert repr(err) == "StatusError(ABORTED, 'conflict')"


def test_errors_pickle() -> None:
    err = pickle.loads(pickle.dumps(ttrpc.NotFound("gone")))
    assert isinstance(err, ttrpc.NotFound)
    assert err.message == "gone"
