"""shim.control.process_age: how long the registering shim had run (bench.pod_steps
splits containerd's share of a pod start off with it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from shim.control import process_age


@pytest.mark.allow_programs("python", "python3")
def test_age_of_a_process_started_now_and_of_one_started_earlier() -> None:
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as child:
        try:
            young = process_age(child.pid)
            ours = process_age(os.getpid())
            assert young is not None and ours is not None
            assert -0.02 <= young < 5.0  # a clock tick of rounding either way
            assert ours > young
            time.sleep(0.3)
            older = process_age(child.pid)
            assert older is not None and older >= young + 0.25
        finally:
            child.kill()


def test_age_of_no_such_process_is_unknown() -> None:
    assert process_age(2**22 + 1) is None  # above pid_max's limit
