"""Planning and applying a change to the containerd config (or template) on the host."""

from __future__ import annotations

import difflib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from installer import containerd_config, targets, template
from installer.atomicfile import write_atomic, write_backup
from installer.containerd_config import RuntimeEntry
from installer.errors import ConfigError, WriteError
from installer.host import Host
from installer.targets import ConfigTarget

log = logging.getLogger(__name__)

# Written when there is no config and no containerd binary to ask for its defaults:
# containerd fills every setting not named in its config file with its built-in default.
MINIMAL_CONFIG = """\
# Written by contrast-node-installer: there was no config file. containerd applies its
# built-in defaults to every setting that is not named here.
version = 2
"""
DEFAULT_CONFIG_TIMEOUT = 60.0


@dataclass(frozen=True)
class ConfigChange:
    """The config file before (None: absent) and after our edit."""

    path: PurePosixPath
    old: str | None
    new: str | None  # None only when old is None too: nothing there, nothing to write

    @property
    def changed(self) -> bool:
        return self.old != self.new

    def diff(self) -> str:
        """A unified diff from the current file to the new one (empty when unchanged)."""
        if not self.changed or self.new is None:
            return ""
        old = [] if self.old is None else self.old.splitlines(keepends=True)
        label = str(self.path).lstrip("/")
        lines = difflib.unified_diff(
            old,
            self.new.splitlines(keepends=True),
            fromfile="/dev/null" if self.old is None else f"a/{label}",
            tofile=f"b/{label}",
        )
        return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def read_text(path: Path, shown: PurePosixPath) -> str | None:
    """The file's text, or None when it does not exist; raises ConfigError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ConfigError(f"{shown}: cannot read: {err.strerror or err}") from err
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{shown}: not UTF-8 text: {err}") from err


def default_config(host: Host) -> str:
    """What a missing config starts from: ``containerd config default`` of the host's own
    containerd when it has one, else a minimal ``version = 2`` file."""
    if host.has_program("containerd"):
        log.info("no containerd config: starting from `containerd config default`")
        return host.run(["containerd", "config", "default"], timeout=DEFAULT_CONFIG_TIMEOUT).stdout
    log.warning("no containerd config and no containerd binary: writing a minimal version 2 file")
    return MINIMAL_CONFIG


def plan_add(
    host: Host, target: ConfigTarget, entry: RuntimeEntry, version: int | None = None
) -> ConfigChange:
    """The config with our runtime added; raises ConfigError (nothing is written here)."""
    shown = str(target.path)
    old = read_text(host.path(target.path), target.path)
    if target.template:
        version = version or targets.template_version(host, target, old)
        return ConfigChange(target.path, old, template.add_runtime(old, version, entry, shown))
    base = default_config(host) if old is None else old
    doc = containerd_config.parse(base, shown if old is not None else f"{shown} (defaults)")
    file_version = containerd_config.read_version(doc, shown)
    if version is not None and version != file_version:
        raise ConfigError(f"{shown}: has version {file_version}, but --config-version {version}")
    containerd_config.set_runtime(doc, file_version, entry, shown)
    return ConfigChange(target.path, old, doc.as_string())


def plan_remove(
    host: Host, target: ConfigTarget, handler: str, version: int | None = None
) -> ConfigChange:
    """The config without our runtime; unchanged when there is no config or no runtime."""
    shown = str(target.path)
    old = read_text(host.path(target.path), target.path)
    if old is None:
        return ConfigChange(target.path, None, None)
    if target.template:
        version = version or targets.template_version(host, target, old)
        return ConfigChange(target.path, old, template.remove_runtime(old, version, handler, shown))
    doc = containerd_config.parse(old, shown)
    file_version = containerd_config.read_version(doc, shown)
    containerd_config.remove_runtime(doc, file_version, handler, shown)
    return ConfigChange(target.path, old, doc.as_string())


def apply(host: Host, change: ConfigChange, now: float | None = None) -> Path | None:
    """Write the new config: backup first, then an atomic replace. Returns the backup.

    Raises ConfigError if the file changed since it was planned, WriteError on I/O
    failure (the file then still has its old content).
    """
    path = host.path(change.path)
    if change.new is None:
        raise ConfigError(f"{change.path}: nothing to write")
    if read_text(path, change.path) != change.old:
        raise ConfigError(f"{change.path}: changed while we were editing it; nothing written")
    backup = None
    if change.old is not None:
        st = path.stat()
        mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
        backup = write_backup(path, change.old.encode("utf-8"), time.time() if now is None else now)
        log.info("backed up %s to %s", change.path, backup.name)
    else:
        mode, owner = 0o644, None
        try:
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as err:
            raise WriteError(f"{path.parent}: cannot create directory: {err}") from err
        if os.geteuid() == 0:
            owner = (0, 0)
    write_atomic(path, change.new.encode("utf-8"), mode, owner)
    log.info("wrote %s", change.path)
    return backup
