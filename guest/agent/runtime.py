"""The OCI runtime's command line (crun in the guest; runc works the same way).

Every call goes through :func:`guest.agent.children.run`. The runtime's own messages
go to a log file per call, because its stdio may be a container's stdio.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from guest.agent.children import Reaper, Stdio, run
from guest.agent.errors import AgentError

STATE_ROOT = Path("/run/contrast/runtime")
TIMEOUT = 60.0


@dataclass(frozen=True)
class RuntimeConfig:
    program: str = "crun"  # or "runc"
    state_root: Path = STATE_ROOT

    def binary(self) -> str:
        """The program's path. Raises AgentError when it is not installed."""
        found = shutil.which(self.program)
        if found is None:
            raise AgentError(f"OCI runtime {self.program!r} is not installed")
        return found


class Runtime:
    """crun/runc subcommands for containers the agent manages."""

    def __init__(self, config: RuntimeConfig, reaper: Reaper) -> None:
        self.config = config
        self.reaper = reaper
        self._binary: str | None = None  # resolved at first use: building costs nothing

    async def _run(self, args: list[str], stdio: Stdio | None = None) -> str:
        if self._binary is None:
            self._binary = self.config.binary()
            self.config.state_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, log_path = tempfile.mkstemp(prefix="runtime-", suffix=".log")
        os.close(fd)
        try:
            log_option = (
                [f"--log=file:{log_path}"] if self.config.program == "crun" else ["--log", log_path]
            )
            argv = [self._binary, "--root", str(self.config.state_root), *log_option, *args]
            return await run(
                self.reaper,
                argv,
                timeout=TIMEOUT,
                stdio=stdio,
                log_path=log_path if stdio is not None else None,
            )
        finally:
            Path(log_path).unlink()

    async def create(
        self, cid: str, bundle: Path, pid_file: Path, stdio: Stdio, console_socket: Path | None
    ) -> None:
        """``create``: the container's init waits for ``start``; its pid lands in pid_file."""
        args = ["create", "--bundle", str(bundle), "--pid-file", str(pid_file)]
        if console_socket is not None:
            args += ["--console-socket", str(console_socket)]
        await self._run([*args, cid], stdio)

    async def start(self, cid: str) -> None:
        await self._run(["start", cid])

    async def exec(
        self,
        cid: str,
        process_json: Path,
        pid_file: Path,
        stdio: Stdio,
        console_socket: Path | None,
    ) -> None:
        """``exec -d``: the process is reparented to the agent (a subreaper)."""
        args = ["exec", "-d", "--pid-file", str(pid_file), "--process", str(process_json)]
        if console_socket is not None:
            args += ["--console-socket", str(console_socket)]
        await self._run([*args, cid], stdio)

    async def kill(self, cid: str, sig: int, all_processes: bool = False) -> None:
        args = ["kill", *(["--all"] if all_processes else []), cid, str(sig)]
        await self._run(args)

    async def delete(self, cid: str) -> None:
        await self._run(["delete", "--force", cid])

    async def update(self, cid: str, resources_json: Path) -> None:
        await self._run(["update", "--resources", str(resources_json), cid])

    async def pause(self, cid: str) -> None:
        await self._run(["pause", cid])

    async def resume(self, cid: str) -> None:
        await self._run(["resume", cid])
