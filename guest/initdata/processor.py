"""The initdata processor: runs once at boot, before the guest agent.

It reads the initdata disk, checks it, compares its digest with the value the launch
bound (through a :class:`~guest.initdata.tee.TeeSource`) and publishes each ``[data]``
entry under ``/run/measured-cfg/``. On any failure, including no initdata at all, it
publishes only a deny-all ``policy.rego`` carrying the reason, so every agent request
fails with a message the user can read.

Publication is atomic: files are written and fsynced in a fresh sibling directory that
is then renamed into place, so the agent never sees a half-written configuration.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from guest import fsatomic
from guest.initdata import disk, document
from guest.initdata.binding import bind
from guest.initdata.errors import InitdataError
from guest.initdata.policy import deny_all
from guest.initdata.tee import LaunchValue, TeeSource

log = logging.getLogger(__name__)

OUTPUT_DIR = Path("/run/measured-cfg")
FILE_MODE = 0o644
DIR_MODE = 0o755


@dataclass(frozen=True)
class Outcome:
    """What the processor published: the measured configuration, or deny-all and why."""

    trusted: bool
    reason: str
    digest: bytes | None
    files: tuple[str, ...]


def verify(doc: document.Initdata, launch: LaunchValue) -> None:
    """Raise InitdataError unless ``doc``'s digest is the value bound at launch."""
    expected = bind(doc.digest, launch.platform)
    if hmac.compare_digest(expected, launch.value):
        return
    zero = " (all zero: no initdata was bound at launch)" if not any(launch.value) else ""
    raise InitdataError(
        f"initdata digest mismatch: the document's {doc.algorithm} digest gives "
        f"{launch.platform.field} {expected.hex()}, but the launch bound "
        f"{launch.value.hex()}{zero} ({launch.evidence})"
    )


def process(disk_path: Path | None, source: TeeSource, output: Path = OUTPUT_DIR) -> Outcome:
    """Check the initdata disk against the TEE and publish the result under ``output``.

    Never raises for a bad or missing document: that outcome is deny-all. Raises
    InitdataError only when not even the deny-all policy can be written.
    """
    try:
        doc = _trusted_document(disk_path, source)
        _publish(output, doc.data)
    except InitdataError as err:
        return refuse(str(err), output)
    log.info(
        "initdata %s digest %s verified; published %s",
        doc.algorithm,
        doc.digest.hex(),
        ", ".join(sorted(doc.data)),
    )
    return Outcome(trusted=True, reason="", digest=doc.digest, files=tuple(sorted(doc.data)))


def refuse(reason: str, output: Path = OUTPUT_DIR) -> Outcome:
    """Publish the deny-all policy carrying ``reason``; raises InitdataError if impossible."""
    log.error("initdata refused, publishing deny-all: %s", reason)
    _publish(output, {document.POLICY_NAME: deny_all(reason)})
    return Outcome(trusted=False, reason=reason, digest=None, files=(document.POLICY_NAME,))


def _trusted_document(disk_path: Path | None, source: TeeSource) -> document.Initdata:
    if disk_path is None:
        raise InitdataError("no initdata disk is attached to this pod-VM: nothing to enforce")
    doc = document.parse(disk.read(disk_path))
    document.require_policy(doc)
    verify(doc, source.read())
    return doc


def _publish(output: Path, files: Mapping[str, str]) -> None:
    parent = output.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.new-", dir=parent))
    except OSError as err:
        raise InitdataError(f"cannot create a staging directory in {parent}: {err}") from err
    try:
        staging.chmod(DIR_MODE)
        for name, content in sorted(files.items()):
            document.check_name(name)
            _write(staging, name, content.encode("utf-8"))
        fsatomic.sync_dir(staging)
        _swap(staging, output)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise InitdataError(f"cannot publish {output}: {err}") from err
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write(root: Path, name: str, data: bytes) -> None:
    target = root / name
    try:
        for folder in reversed(target.relative_to(root).parents[:-1]):
            path = root / folder
            if not path.is_dir():
                path.mkdir(mode=DIR_MODE)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        for folder in target.relative_to(root).parents[:-1]:
            fsatomic.sync_dir(root / folder)
    except OSError as err:
        raise InitdataError(f"cannot write initdata [data] entry {name!r}: {err}") from err


def _swap(staging: Path, output: Path) -> None:
    old: Path | None = None
    try:
        if output.exists() or output.is_symlink():
            old = output.with_name(f".{output.name}.old-{secrets.token_hex(4)}")
            output.rename(old)
        staging.rename(output)
        fsatomic.sync_dir(output.parent)
    except OSError as err:
        raise InitdataError(f"cannot publish {output}: {err}") from err
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
