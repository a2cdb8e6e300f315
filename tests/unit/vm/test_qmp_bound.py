"""A QMP command QEMU never answers fails in time, naming the command (issue 14)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agent.vm.errors import QemuError
from agent.vm.qmp import Monitor

GREETING = {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""},
                    "capabilities": []}}  # fmt: skip
WAIT = 30.0  # only bounds a failure


async def test_an_unanswered_command_fails_naming_it(tmp_path: Path) -> None:
    asked: list[str] = []

    async def qemu(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(json.dumps(GREETING).encode() + b"\n")
        decoder = json.JSONDecoder()
        pending = ""
        while chunk := await reader.read(4096):  # qemu.qmp sends objects without newlines
            pending += chunk.decode()
            while pending.strip():
                message, end = decoder.raw_decode(pending.lstrip())
                pending = pending.lstrip()[end:]
                asked.append(message["execute"])
                if message["execute"] == "qmp_capabilities":  # then silence: a wedged QEMU
                    reply = {"return": {}, **({"id": message["id"]} if "id" in message else {})}
                    writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        writer.close()

    socket = tmp_path / "qmp.sock"
    server = await asyncio.start_unix_server(qemu, path=str(socket))
    monitor = Monitor("pod1")
    try:
        await monitor.connect(socket, timeout=WAIT)
        with pytest.raises(QemuError, match=r"pod1: QMP query-status: no answer within 0.3 s"):
            await asyncio.wait_for(monitor.execute("query-status", timeout=0.3), WAIT)
        assert asked == ["qmp_capabilities", "query-status"]
    finally:
        await monitor.close()
        server.close()
        await server.wait_closed()
