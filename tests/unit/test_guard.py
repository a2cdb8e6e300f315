"""The unit tier's subprocess guard really blocks programs."""

import subprocess

import pytest

from tests.conftest import SubprocessForbidden


def test_undeclared_program_is_refused() -> None:
    with pytest.raises(SubprocessForbidden, match="'true'"):
        subprocess.run(["true"], check=False)


@pytest.mark.allow_programs("true")
def test_declared_program_runs() -> None:
    assert subprocess.run(["true"], check=False).returncode == 0


async def test_asyncio_subprocess_is_guarded() -> None:
    import asyncio

    with pytest.raises(SubprocessForbidden):
        await asyncio.create_subprocess_exec("false")
