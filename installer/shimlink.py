"""Our shim on containerd's PATH: ``/usr/local/bin/containerd-shim-contrast-cc-v2``.

containerd 1.7 and 2.x start the shim from the runtime table's ``runtime_path``
(``/opt/contrast/<handler>/bin/...``). containerd 1.6 ignores that option (containerd
issue 8207) and looks the binary up by the name the runtime type gives it
(``io.containerd.contrast-cc.v2`` -> ``containerd-shim-contrast-cc-v2``) on its PATH,
then beside its own executable; with the runtime table alone a 1.6 node cannot start
our shim. So install also links that name in ``/usr/local/bin``, which is on the PATH
systemd gives a service (containerd's unit sets none of its own), to the installed
shim; on 1.7 and 2.x the link is unused and harmless.

The link is ours when it is a symlink into ``/opt/contrast/``: install points it at the
handler it installs (a later handler takes it over: the launcher is the same program
in every image, it finds the current daemon). Anything else at that path (the shim a
user pip-installed on bare metal, say) is not ours: install leaves it and says so.
Uninstall removes the link only when it points into the handler being removed.
"""

from __future__ import annotations

import enum
from pathlib import Path, PurePosixPath

from installer.assets import INSTALL_ROOT
from installer.atomicfile import sync_dir
from installer.containerd_config import RUNTIME_TYPE
from installer.errors import WriteError
from installer.host import Host

BIN_DIR = PurePosixPath("/usr/local/bin")


def shim_name(runtime_type: str = RUNTIME_TYPE) -> str:
    """The binary containerd looks for: ``io.containerd.<name>.<version>`` ->
    ``containerd-shim-<name>-<version>``, as containerd derives it."""
    parts = runtime_type.split(".")
    if len(parts) < 2 or not all(parts[-2:]):
        raise ValueError(f"runtime type {runtime_type!r} is not io.containerd.<name>.<version>")
    return f"containerd-shim-{parts[-2]}-{parts[-1]}"


LINK = BIN_DIR / shim_name()


class LinkAction(enum.Enum):
    CREATE = "create"
    UPDATE = "update"  # ours, pointing at another handler's shim
    UNCHANGED = "unchanged"
    FOREIGN = "not ours: left alone"
    REMOVE = "remove"
    ABSENT = "absent"
    KEPT = "points at another handler: left alone"


def _ours(target: str) -> bool:
    return PurePosixPath(target).is_relative_to(INSTALL_ROOT)


def _current(path: Path) -> str | None:
    """The link's target; None when nothing is there; "" for a file that is no link.
    Raises WriteError when the path cannot be inspected."""
    try:
        if path.is_symlink():
            return str(path.readlink())
        return "" if path.exists() else None
    except OSError as err:
        raise WriteError(f"{path}: cannot inspect: {err}") from err


def plan_link(host: Host, shim: PurePosixPath) -> LinkAction:
    """What linking :data:`LINK` to ``shim`` (a host path) would do; raises WriteError."""
    current = _current(host.path(LINK))
    if current is None:
        return LinkAction.CREATE
    if not current or not _ours(current):
        return LinkAction.FOREIGN
    return LinkAction.UNCHANGED if current == str(shim) else LinkAction.UPDATE


def link(host: Host, shim: PurePosixPath, *, dry_run: bool) -> LinkAction:
    """Point :data:`LINK` at ``shim`` unless something not ours is there (atomically: a
    new symlink renamed over the old one); raises WriteError."""
    action = plan_link(host, shim)
    if dry_run or action not in (LinkAction.CREATE, LinkAction.UPDATE):
        return action
    path = host.path(LINK)
    temp = path.with_name(f".{path.name}.contrast-new")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp.unlink(missing_ok=True)
        temp.symlink_to(str(shim))
        temp.replace(path)
        sync_dir(path.parent)
    except OSError as err:
        temp.unlink(missing_ok=True)
        raise WriteError(f"{path}: cannot link to {shim}: {err}") from err
    return action


def unlink(host: Host, handler: str, *, dry_run: bool) -> LinkAction:
    """Remove :data:`LINK` when it points into ``handler``'s directory; raises WriteError."""
    path = host.path(LINK)
    current = _current(path)
    if current is None:
        return LinkAction.ABSENT
    if not current or not _ours(current):
        return LinkAction.FOREIGN
    if not PurePosixPath(current).is_relative_to(INSTALL_ROOT / handler):
        return LinkAction.KEPT
    if not dry_run:
        try:
            path.unlink()
            sync_dir(path.parent)
        except OSError as err:
            raise WriteError(f"{path}: cannot remove: {err}") from err
    return LinkAction.REMOVE
