from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.shim.sinks import socket_dir


@pytest.fixture
def sockets() -> Iterator[Path]:
    with socket_dir() as folder:
        yield folder
