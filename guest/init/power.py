"""The ACPI power button, so the host's system_powerdown shuts the guest down cleanly."""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from pathlib import Path

log = logging.getLogger(__name__)

# struct input_event on 64-bit: timeval (2 x long), type u16, code u16, value s32.
_EVENT = struct.Struct("llHHi")
EV_KEY = 1
KEY_POWER = 116


def find_power_button(sys: Path = Path("/sys")) -> Path | None:
    """The /dev/input/event* node of the ACPI "Power Button" device."""
    for entry in sorted((sys / "class/input").glob("event*")):
        try:
            if (entry / "device/name").read_text().strip() == "Power Button":
                return Path("/dev/input") / entry.name
        except OSError:
            continue
    return None


def pressed(data: bytes) -> bool:
    """Whether a buffer of input events contains a power key press."""
    usable = len(data) - len(data) % _EVENT.size
    for offset in range(0, usable, _EVENT.size):
        _, _, kind, code, value = _EVENT.unpack_from(data, offset)
        if kind == EV_KEY and code == KEY_POWER and value == 1:
            return True
    return False


async def wait_for_power_button(timeout: float = 10.0) -> None:
    """Return when the power button is pressed; never returns if there is none."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (device := find_power_button()) is None:
        if loop.time() > deadline:
            log.warning("no ACPI power button: system_powerdown will not stop this guest")
            await asyncio.Event().wait()
        await asyncio.sleep(0.1)
    fd = os.open(device, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    event = asyncio.Event()
    loop.add_reader(fd, event.set)
    try:
        while True:
            await event.wait()
            event.clear()
            try:
                data = os.read(fd, _EVENT.size * 64)
            except BlockingIOError:
                continue
            if pressed(data):
                return
    finally:
        loop.remove_reader(fd)
        os.close(fd)
