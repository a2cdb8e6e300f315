"""Pod volumes the guest makes itself (Kata's emptyDir drivers), shared by containers.

- ``local``: a directory at the storage's mount point (``mode=`` from its options);
- ``ephemeral``: a tmpfs mounted there (``size=``, ``mode=``, ``nr_inodes=``).

Mount points must lie under VOLUME_ROOT/<driver>/ (Kata's layout); containers then
bind-mount them (spec.SHARED_PREFIXES). Everything goes at DestroySandbox.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from api.kata import agent_pb2
from guest.agent.children import Reaper, run
from guest.agent.errors import InvalidRequest

log = logging.getLogger(__name__)

VOLUME_ROOT = Path("/run/kata-containers/sandbox")
DRIVERS = ("local", "ephemeral")
_OPTION = re.compile(r"^(size=[0-9]+[kmgKMG%]?|mode=0?[0-7]{3,4}|nr_inodes=[0-9]+[kmg]?)$")


class Volumes:
    """The sandbox's local and ephemeral volumes, keyed by mount point."""

    def __init__(self, reaper: Reaper, root: Path = VOLUME_ROOT) -> None:
        self.reaper = reaper
        self.root = root
        self._made: dict[Path, str] = {}

    def _mount_point(self, storage: agent_pb2.Storage) -> Path:
        base = self.root / storage.driver
        point = Path(storage.mount_point)
        if ".." in point.parts or not point.is_relative_to(base) or point == base:
            raise InvalidRequest(
                f"{storage.driver} volume mount point {storage.mount_point!r} is not under {base}"
            )
        return point

    async def prepare(self, storage: agent_pb2.Storage) -> None:
        """Create the volume once (later containers share it). Raises InvalidRequest,
        CommandError."""
        point = self._mount_point(storage)
        if point in self._made:
            return
        options = list(storage.options)
        bad = [o for o in options if not _OPTION.match(o)]
        if bad:
            raise InvalidRequest(f"{storage.driver} volume {point}: options {bad} not allowed")
        point.mkdir(parents=True, exist_ok=True)
        if storage.driver == "ephemeral":
            args = ["mount", "-t", "tmpfs", "-o", ",".join(["nosuid", "nodev", *options])]
            await run(self.reaper, [*args, "tmpfs", str(point)], timeout=30)
        else:
            for option in options:
                if option.startswith("mode="):
                    point.chmod(int(option.removeprefix("mode="), 8))
        self._made[point] = storage.driver
        log.info("%s volume at %s", storage.driver, point)

    async def cleanup(self) -> None:
        """Unmount and remove every volume made (errors are logged, not raised)."""
        for point, driver in list(self._made.items()):
            if driver == "ephemeral":
                try:
                    await run(self.reaper, ["umount", str(point)], timeout=30)
                except Exception as err:  # noqa: BLE001 - best effort, keep removing
                    log.warning("umount %s: %s", point, err)
            shutil.rmtree(point, ignore_errors=True)
            del self._made[point]
