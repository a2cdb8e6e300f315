"""Persisted state of every sandbox: one JSON file per sandbox, written atomically.

Layout under the daemon's state directory::

    sandboxes/<namespace>/<sandbox-id>.json

A restarted daemon loads every file (:meth:`StateStore.load_all`) and hands each
record to its backend to reattach. Writes go to a temp file in the same directory,
are fsynced, renamed over the old file, and the directory is fsynced: a crash leaves
the old state or the new one, never a torn file.
"""

from __future__ import annotations

import enum
import json
import logging
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.sandbox.errors import StateError
from guest import fsatomic

log = logging.getLogger(__name__)

# containerd's identifiers: alphanumerics, then also . _ -; namespaces likewise.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
FORMAT = 1


def check_id(value: str, what: str) -> str:
    """``value`` if it is a safe identifier (it becomes a file name); else StateError."""
    if not _ID.match(value):
        raise StateError(f"{what} {value!r} is not a valid identifier")
    return value


class Status(enum.Enum):
    """A process's life, as containerd's task status names it."""

    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Stdio:
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


@dataclass(frozen=True)
class ProcessRecord:
    """The init process of a container (``exec_id`` empty) or an exec."""

    exec_id: str
    stdio: Stdio
    status: Status = Status.CREATED
    pid: int = 0
    exit_status: int = 0
    exited_at_ns: int = 0


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    bundle: str
    init: ProcessRecord
    is_sandbox: bool
    execs: tuple[ProcessRecord, ...] = ()

    def process(self, exec_id: str) -> ProcessRecord | None:
        if not exec_id:
            return self.init
        return next((p for p in self.execs if p.exec_id == exec_id), None)

    def with_process(self, process: ProcessRecord) -> ContainerRecord:
        if not process.exec_id:
            return replace(self, init=process)
        others = tuple(p for p in self.execs if p.exec_id != process.exec_id)
        return replace(self, execs=(*others, process))

    def without_exec(self, exec_id: str) -> ContainerRecord:
        return replace(self, execs=tuple(p for p in self.execs if p.exec_id != exec_id))


@dataclass(frozen=True)
class VmRecord:
    """How to find a sandbox's VM again after a daemon restart (backend-specific keys)."""

    backend: str
    pid: int
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SandboxRecord:
    namespace: str
    id: str
    # containerd's ttrpc address for events, from the shim's start.
    ttrpc_address: str
    config_path: str
    vm: VmRecord | None = None
    containers: tuple[ContainerRecord, ...] = ()

    def container(self, container_id: str) -> ContainerRecord | None:
        return next((c for c in self.containers if c.id == container_id), None)

    def with_container(self, container: ContainerRecord) -> SandboxRecord:
        others = tuple(c for c in self.containers if c.id != container.id)
        return replace(self, containers=(*others, container))

    def without_container(self, container_id: str) -> SandboxRecord:
        return replace(self, containers=tuple(c for c in self.containers if c.id != container_id))


def _encode(record: SandboxRecord) -> bytes:
    def convert(value: Any) -> Any:
        if isinstance(value, Status):
            return value.value
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        return value

    data = convert(asdict(record))
    return json.dumps({"format": FORMAT, "sandbox": data}, indent=1, sort_keys=True).encode()


def _process(data: dict[str, Any]) -> ProcessRecord:
    return ProcessRecord(
        exec_id=data["exec_id"],
        stdio=Stdio(**data["stdio"]),
        status=Status(data["status"]),
        pid=data["pid"],
        exit_status=data["exit_status"],
        exited_at_ns=data["exited_at_ns"],
    )


def _decode(raw: bytes) -> SandboxRecord:
    doc = json.loads(raw)
    if doc.get("format") != FORMAT:
        raise ValueError(f"unsupported state format {doc.get('format')!r}")
    data = doc["sandbox"]
    vm = data["vm"]
    return SandboxRecord(
        namespace=data["namespace"],
        id=data["id"],
        ttrpc_address=data["ttrpc_address"],
        config_path=data["config_path"],
        vm=VmRecord(vm["backend"], vm["pid"], dict(vm["details"])) if vm else None,
        containers=tuple(
            ContainerRecord(
                id=c["id"],
                bundle=c["bundle"],
                init=_process(c["init"]),
                is_sandbox=c["is_sandbox"],
                execs=tuple(_process(e) for e in c["execs"]),
            )
            for c in data["containers"]
        ),
    )


class StateStore:
    """Sandbox records on disk below ``root`` (the daemon's state directory)."""

    def __init__(self, root: Path) -> None:
        self.root = root / "sandboxes"

    def path(self, namespace: str, sandbox_id: str) -> Path:
        return self.root / check_id(namespace, "namespace") / f"{check_id(sandbox_id, 'id')}.json"

    def save(self, record: SandboxRecord) -> None:
        """Write ``record`` atomically; raises StateError."""
        path = self.path(record.namespace, record.id)

        def error(what: str, err: OSError) -> StateError:
            return StateError(f"cannot write sandbox state {path}: {err}")

        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as err:
            raise StateError(f"cannot write sandbox state {path}: {err}") from err
        fsatomic.write_file(path, _encode(record), prefix=f".{path.name}.", error=error)

    def remove(self, namespace: str, sandbox_id: str) -> None:
        """Forget a sandbox (no error when it is already gone); raises StateError."""
        path = self.path(namespace, sandbox_id)
        try:
            path.unlink(missing_ok=True)
            if path.parent.exists():
                fsatomic.sync_dir(path.parent)
        except OSError as err:
            raise StateError(f"cannot remove sandbox state {path}: {err}") from err

    def load(self, namespace: str, sandbox_id: str) -> SandboxRecord | None:
        """One sandbox's record, None when there is none; raises StateError when unreadable."""
        path = self.path(namespace, sandbox_id)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StateError(f"cannot read sandbox state {path}: {err}") from err
        try:
            return _decode(raw)
        except (ValueError, KeyError, TypeError) as err:
            raise StateError(f"sandbox state {path} is corrupt: {err}") from err

    def load_all(self) -> tuple[list[SandboxRecord], list[StateError]]:
        """Every readable record, and an error for each file that is not.

        Leftover temp files of an interrupted write are removed.
        """
        records: list[SandboxRecord] = []
        errors: list[StateError] = []
        if not self.root.is_dir():
            return records, errors
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for tmp in folder.glob(".*.json.*"):
                tmp.unlink(missing_ok=True)
            for path in sorted(folder.glob("*.json")):
                try:
                    record = self.load(folder.name, path.stem)
                except StateError as err:
                    errors.append(err)
                    continue
                if record is not None:
                    records.append(record)
        return records, errors
