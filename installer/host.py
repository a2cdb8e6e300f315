"""The node we install on: its root directory, and programs run in its namespaces.

In the DaemonSet the installer sees the host's filesystem at ``/host`` and, with
``hostPID``, reaches systemd and containerd by entering PID 1's namespaces with
``nsenter``. On bare metal the host root is ``/`` and programs run directly.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from installer.runner import Completed, Runner, run

log = logging.getLogger(__name__)

NSENTER = ("nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--")
# Where a host program is looked for when we see the host through a mount.
HOST_BIN_DIRS = ("usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin")


@dataclass(frozen=True)
class Host:
    """The node: its root as we see it, and whether its programs need ``nsenter``."""

    root: Path
    enter_namespaces: bool
    runner: Runner = run

    def path(self, host_path: str | PurePosixPath) -> Path:
        """Where a path of the host is in our view of the filesystem."""
        return self.root / PurePosixPath(host_path).relative_to("/")

    def argv(self, argv: Sequence[str]) -> list[str]:
        return [*NSENTER, *argv] if self.enter_namespaces else list(argv)

    def run(
        self, argv: Sequence[str], *, timeout: float, ok_codes: Sequence[int] = (0,)
    ) -> Completed:
        """Run a program of the host, in the host's namespaces; raises CommandError."""
        return self.runner(self.argv(argv), timeout=timeout, ok_codes=ok_codes)

    def has_program(self, name: str) -> bool:
        if not self.enter_namespaces and self.root == Path("/"):
            return shutil.which(name) is not None
        return any((self.root / d / name).is_file() for d in HOST_BIN_DIRS)
