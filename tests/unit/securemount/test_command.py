"""The run function: the secret on stdin, timeouts, failures naming device and step."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from guest.agent.children import Reaper
from guest.securemount import command
from guest.securemount.errors import StepError

pytestmark = pytest.mark.allow_programs("fake-tool")

TOOL = """#!{python}
import sys, time
data = sys.stdin.buffer.read()
if sys.argv[1] == "echo-stdin":
    sys.stdout.write(data.hex())
elif sys.argv[1] == "sleep":
    time.sleep(30)
elif sys.argv[1] == "fail":
    sys.stderr.write("no such thing")
    sys.exit(3)
"""


@pytest.fixture
async def reaper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Reaper]:
    tool = tmp_path / "fake-tool"
    tool.write_text(TOOL.format(python=sys.executable))
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    reaper = Reaper()
    reaper.start()
    yield reaper
    reaper.stop()


async def test_secret_reaches_stdin_and_nothing_else(reaper: Reaper) -> None:
    key = bytearray(range(64))
    code, out = await command.run(reaper, ["fake-tool", "echo-stdin"], device="/dev/vdc",
                                  step="luksFormat", timeout=30, secret=key)  # fmt: skip
    assert (code, out) == (0, key.hex())
    _, out = await command.run(reaper, ["fake-tool", "echo-stdin"], device="/dev/vdc",
                               step="mount", timeout=30)  # fmt: skip
    assert out == ""  # /dev/null without a secret


async def test_failures_name_device_step_and_output(reaper: Reaper) -> None:
    with pytest.raises(StepError) as failed:
        await command.run(reaper, ["fake-tool", "fail"], device="/dev/vdc (254:32)",
                          step="mkfs.ext4", timeout=30, secret=b"k" * 64)  # fmt: skip
    assert str(failed.value) == (
        "secure mount of /dev/vdc (254:32): mkfs.ext4 failed: "
        "fake-tool fail exited with status 3: no such thing"
    )
    assert "k" * 64 not in str(failed.value)
    with pytest.raises(StepError, match="open failed: fake-tool sleep timed out after 1 s"):
        await command.run(reaper, ["fake-tool", "sleep"], device="/dev/vdc", step="open",
                          timeout=1)  # fmt: skip
    with pytest.raises(StepError, match="mount failed: cannot start no-such-program"):
        await command.run(reaper, ["no-such-program"], device="/dev/vdc", step="mount",
                          timeout=1)  # fmt: skip
    with pytest.raises(StepError, match="the key did not fit into the pipe"):
        await command.run(reaper, ["fake-tool", "echo-stdin"], device="/dev/vdc",
                          step="open", timeout=30, secret=bytes(1 << 20))  # fmt: skip
