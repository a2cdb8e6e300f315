"""The secure mount's steps against fake cryptsetup, mkfs.ext4 and mount programs.

The fakes (on PATH, osbuild's way) record their command lines and what they read on
stdin, so the tests see the order of the steps, where the key went (stdin only, the
same key for format and open, never an argument or a log line) and what is undone
after a failure. The device is a regular file standing in for the resolved node.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from guest.agent.children import Reaper
from guest.securemount import ext4, luks, store
from guest.securemount.device import BlockDevice
from guest.securemount.errors import DeviceError, InvalidRequest, StateError, StepError
from tests.unit.securemount.test_luks_ext4 import DRY_RUN, HEADER

pytestmark = pytest.mark.allow_programs("modprobe", "cryptsetup", "mkfs.ext4", "mount")

FAKE = """#!{python}
import json, os, sys
here = {here!r}
argv = [os.path.basename(sys.argv[0]), *sys.argv[1:]]
stdin = sys.stdin.buffer.read()
with open(os.path.join(here, "calls.jsonl"), "a") as log:
    log.write(json.dumps({{"argv": argv, "stdin": stdin.hex()}}) + "\\n")
config = json.load(open(os.path.join(here, "config.json")))
step = " ".join(argv[:2])
if step in config.get("fail", []):
    print(f"{{step}}: simulated failure", file=sys.stderr)
    sys.exit(1)
if argv[:2] == ["cryptsetup", "luksHeaderBackup"]:
    open(argv[argv.index("--header-backup-file") + 1], "wb").write(b"LUKS\\xba\\xbe")
elif argv[:2] == ["cryptsetup", "luksDump"]:
    print(json.dumps(config["header"]))
elif argv[:2] == ["cryptsetup", "open"]:
    open(os.path.join(config["mapper"], argv[-1]), "wb").write(b"\\xff" * 8192)
elif argv[:2] == ["cryptsetup", "close"]:
    os.unlink(os.path.join(config["mapper"], argv[-1]))
elif argv[0] == "mkfs.ext4" and "-n" in argv:
    print(config["dry_run"])
"""


class Fakes:
    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bin = root / "bin"
        self.bin.mkdir()
        self.mapper = root / "mapper"
        self.mapper.mkdir()
        self.config: dict[str, Any] = {
            "header": HEADER, "dry_run": DRY_RUN, "mapper": str(self.mapper), "fail": [],
        }  # fmt: skip
        self.write_config()
        for name in ("modprobe", "cryptsetup", "mkfs.ext4", "mount"):
            program = self.bin / name
            program.write_text(FAKE.format(python=sys.executable, here=str(self.bin)))
            program.chmod(0o755)
        monkeypatch.setenv("PATH", f"{self.bin}:/usr/bin:/bin")

    def write_config(self) -> None:
        (self.bin / "config.json").write_text(json.dumps(self.config))

    def calls(self) -> list[dict[str, Any]]:
        log = self.bin / "calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def steps(self) -> list[str]:
        return [" ".join(c["argv"][:2]) for c in self.calls()]


@pytest.fixture
async def reaper() -> AsyncIterator[Reaper]:
    reaper = Reaper()
    reaper.start()
    yield reaper
    reaper.stop()


Make = Callable[..., store.SecureStore]


def o_direct_works(directory: Path) -> bool:
    probe = directory / "o-direct-probe"
    probe.write_bytes(b"")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_DIRECT))
    except OSError:
        return False
    finally:
        probe.unlink()
    return True


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fakes:
    return Fakes(tmp_path, monkeypatch)


@pytest.fixture
def make(tmp_path: Path, fakes: Fakes, reaper: Reaper, monkeypatch: pytest.MonkeyPatch) -> Make:
    disk = tmp_path / "vdc"
    disk.write_bytes(b"")

    def resolve(device_id: str, *_: Any) -> BlockDevice:
        number = {"254:32": 32, "254:48": 48}[device_id]
        size = 16 << 20 if number == 48 else 1 << 30
        return BlockDevice(f"vd{number}", disk, 254, number, size)

    monkeypatch.setattr(store, "resolve", resolve)
    if not o_direct_works(tmp_path):  # e.g. tmpfs before Linux 6.6: zero without it

        def zero_buffered(device: str, path: Path, blocks: list[int]) -> None:
            with path.open("r+b") as f:
                for block in blocks:
                    f.seek(block * ext4.BLOCK_SIZE)
                    f.write(bytes(ext4.BLOCK_SIZE))

        monkeypatch.setattr(ext4, "zero_blocks", zero_buffered)

    def build(**kw: Any) -> store.SecureStore:
        return store.SecureStore(
            reaper, tmp_path / "images", work_dir=tmp_path / "work",
            mapping=luks.Mapping("contrast-store", fakes.mapper), lock_dir=tmp_path / "locks",
            **kw,
        )  # fmt: skip

    return build


FULL = ["modprobe -a", "cryptsetup luksFormat", "cryptsetup luksHeaderBackup",
        "cryptsetup luksDump", "cryptsetup open", "mkfs.ext4 -n", "mkfs.ext4 -q",
        "mount -t"]  # fmt: skip


async def test_steps_in_order_and_the_key_on_stdin_only(
    make: Make, fakes: Fakes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secure = make()
    mounted = await secure.mount("254:32", tmp_path / "images")
    assert fakes.steps() == FULL
    calls = fakes.calls()
    assert calls[0]["argv"] == ["modprobe", "-a", "aesni_intel", "sha256_ssse3"]
    key = calls[1]["stdin"]
    assert len(bytes.fromhex(key)) == 64
    assert calls[4]["stdin"] == key  # open gets the same key, on stdin too
    assert all(c["stdin"] == "" for i, c in enumerate(calls) if i not in (1, 4))
    everything = json.dumps([c["argv"] for c in calls]) + caplog.text
    assert key not in everything and key.upper() not in everything
    # Opened with the copy of the header in guest memory, which is gone afterwards.
    opened = calls[4]["argv"]
    assert opened[opened.index("--header") + 1] == str(tmp_path / "work/header-vd32")
    assert not (tmp_path / "work/header-vd32").exists()
    # Block 0 of the mapping zeroed before mkfs (the fake made it all 0xff).
    with (fakes.mapper / "contrast-store").open("rb") as mapped:
        assert mapped.read(4096) == bytes(4096)
    mapped_path, images = str(fakes.mapper / "contrast-store"), str(tmp_path / "images")
    assert calls[-1]["argv"][-2:] == [mapped_path, images]
    assert (tmp_path / "images/sha256").is_dir()  # the store's layout, made again
    assert mounted.device.device_id == "254:32"
    # Again for the same device: the mounted store, nothing run.
    assert await secure.mount("254:32", tmp_path / "images") is mounted
    assert len(fakes.calls()) == len(FULL)


async def test_another_device_after_the_mount_is_refused(make: Make, tmp_path: Path) -> None:
    secure = make(min_bytes=1 << 20)
    await secure.mount("254:32", tmp_path / "images")
    with pytest.raises(StateError, match=r"already on .*254:32"):
        await secure.mount("254:48", tmp_path / "images")


async def test_failed_step_names_device_and_step_and_closes_the_mapping(
    make: Make, fakes: Fakes, tmp_path: Path
) -> None:
    fakes.config["fail"] = ["mkfs.ext4 -q"]
    fakes.write_config()
    secure = make()
    with pytest.raises(StepError) as failed:
        await secure.mount("254:32", tmp_path / "images")
    message = str(failed.value)
    assert message.startswith(f"secure mount of {tmp_path / 'vdc'} (254:32): mkfs.ext4 failed:")
    assert "simulated failure" in message
    assert fakes.steps() == [*FULL[:7], "cryptsetup close"]
    assert not (fakes.mapper / "contrast-store").exists()
    assert secure.mounted is None
    assert fakes.calls()[1]["stdin"] not in message
    # A retry formats afresh, under a new key.
    fakes.config["fail"] = []
    fakes.write_config()
    await secure.mount("254:32", tmp_path / "images")
    keys = [c["stdin"] for c in fakes.calls() if c["argv"][:2] == ["cryptsetup", "luksFormat"]]
    assert len(keys) == 2 and keys[0] != keys[1]


async def test_without_the_cpu_crypto_modules_the_store_is_made_all_the_same(
    make: Make, fakes: Fakes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fakes.config["fail"] = ["modprobe -a"]
    fakes.write_config()
    await make().mount("254:32", tmp_path / "images")
    assert fakes.steps() == FULL
    assert "CPU crypto modules failed" in caplog.text
    assert "the store uses the kernel's generic aes and sha256" in caplog.text


async def test_header_other_than_formatted_is_never_opened(
    make: Make, fakes: Fakes, tmp_path: Path
) -> None:
    fakes.config["header"] = {**HEADER, "tokens": {"0": {"type": "host-made"}}}
    fakes.write_config()
    with pytest.raises(StepError, match="header check failed: the tokens"):
        await make().mount("254:32", tmp_path / "images")
    assert fakes.steps() == FULL[:4]  # no open, so nothing to close


async def test_refusals_before_anything_runs(make: Make, fakes: Fakes, tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match=r"254:48\): size check failed: 16777216 bytes"):
        await make().mount("254:48", tmp_path / "images")
    with pytest.raises(InvalidRequest, match="is not the image store"):
        await make().mount("254:32", tmp_path / "elsewhere")
    (tmp_path / "images/sha256/abc").mkdir(parents=True)
    with pytest.raises(StateError, match=r"already holds pulled content \(sha256\)"):
        await make().mount("254:32", tmp_path / "images")
    assert fakes.calls() == []
