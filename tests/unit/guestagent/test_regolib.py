"""regopy's library is loaded with the GIL released, and regopy then reuses that load.

Both run in a fresh interpreter: in this one regopy is loaded already."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from guest.agent import regolib
from guest.agent.errors import PolicyError

PYTHON = os.path.basename(sys.executable)
REPO = Path(__file__).parents[3]


def fresh(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


PRELOAD_THEN_IMPORT = """
import json, sys
from guest.agent import regolib

def mapped():
    with open("/proc/self/maps") as maps:
        return sorted({line.split()[4] for line in maps if regolib.LIBRARY in line})

path = regolib.preload()
before = mapped()
import regopy
regopy.Interpreter().query("x := 1")
print(json.dumps({"path": str(path), "before": before, "after": mapped()}))
"""


@pytest.mark.allow_programs(PYTHON)
def test_regopy_uses_the_preloaded_library() -> None:
    done = fresh(PRELOAD_THEN_IMPORT)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["path"] == str(regolib.library_path())
    assert len(seen["before"]) == 1  # one inode, mapped by preload before the import
    assert seen["after"] == seen["before"]  # regopy's dlopen only took a reference


# dlopen of a FIFO blocks in open() until a writer comes: the main thread can only
# become that writer if the loading thread released the GIL. If it held it, this
# program hangs and the test fails on its timeout.
BLOCKED_LOAD = """
import sys, threading
from pathlib import Path
from guest.agent import regolib
from guest.agent.errors import PolicyError

fifo = Path(sys.argv[1])
errors = []

def load():
    try:
        regolib.load(fifo)
    except PolicyError as err:
        errors.append(str(err))

loader = threading.Thread(target=load)
loader.start()
with open(fifo, "wb") as writer:  # needs the GIL while the loader waits in dlopen
    writer.write(b"not an ELF file" * 10)
loader.join()
print(errors[0])
"""


@pytest.mark.allow_programs(PYTHON)
def test_other_threads_run_while_the_library_loads(tmp_path: Path) -> None:
    fifo = tmp_path / "blocking.so"
    os.mkfifo(fifo)
    try:
        done = fresh(BLOCKED_LOAD, str(fifo))
    except subprocess.TimeoutExpired:
        pytest.fail("dlopen held the GIL: the other thread never ran")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"cannot load {fifo}: ")


def test_a_missing_library_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "librego_shared.so"
    with pytest.raises(PolicyError, match=f"cannot load {missing}: .*No such file"):
        regolib.load(missing)
