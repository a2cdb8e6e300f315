"""A small workload image built here from Debian's busybox-static: nothing downloaded."""

from __future__ import annotations

import shutil
from pathlib import Path

from devkit import ocibuild as ob
from devkit.errors import DevkitError

APPLETS = ("sh", "echo", "printf", "cat", "wget", "nc", "dd", "sleep", "true", "ls")


def busybox_image(applets: tuple[str, ...] = APPLETS) -> ob.Image:
    """One gzip layer: ``/bin/busybox`` (static) and a link per applet, plus the usual
    mount points. Raises DevkitError when busybox is not installed."""
    found = shutil.which("busybox") or "/bin/busybox"
    if not Path(found).is_file():
        raise DevkitError("busybox not found (Debian package busybox-static)")
    entries = [ob.directory("bin"), ob.file("bin/busybox", Path(found).read_bytes(), 0o755)]
    entries += [ob.symlink(f"bin/{name}", "busybox") for name in applets]
    entries += [ob.directory(d) for d in ("etc", "proc", "sys", "dev", "tmp")]
    return ob.build_image([ob.Layer(ob.layer_tar(entries))])
