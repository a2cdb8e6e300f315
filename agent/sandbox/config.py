"""The runtime configuration of one handler: the TOML file named by the containerd
runtime options' ``ConfigPath`` (``packaging/node/runtime.toml`` is its template).

Format (every key but ``platform`` and ``[guest]`` paths has a default)::

    platform = "qemu-insecure"        # metal-qemu-snp | metal-qemu-tdx | qemu-insecure

    [guest]
    kernel = "/opt/contrast/<handler>/share/vmlinuz"
    initrd = "/opt/contrast/<handler>/share/initrd.img"
    rootfs = "/opt/contrast/<handler>/share/rootfs.img"
    firmware = "/opt/contrast/<handler>/share/OVMF.fd"   # required for snp and tdx
    manifest = "/opt/contrast/<handler>/share/manifest.json"  # the image's kernel cmdline ...
    # cmdline = ["console=ttyS0", ...]                      # ... or the cmdline itself

    [vm]
    vcpus = 1                 # default per pod; annotations may ask for up to max_vcpus
    memory_mib = 512
    max_vcpus = 8
    max_memory_mib = 16384

    [timeouts]
    boot_seconds = 120        # launch to guest agent ready
    agent_call_seconds = 60   # one guest agent request
    stop_seconds = 20         # ACPI powerdown before quit/SIGKILL

    [annotations]
    # Pod annotations that may influence the VM; anything else under
    # io.katacontainers. is refused (see agent.sandbox.annotations).
    allowed = ["io.katacontainers.config.hypervisor.cc_init_data", ...]

Unknown keys are errors: a typo must not silently become a default.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.sandbox.errors import RuntimeConfigError
from agent.vm.config import Platform

PLATFORMS = {
    "metal-qemu-snp": Platform.SNP,
    "metal-qemu-tdx": Platform.TDX,
    "qemu-insecure": Platform.INSECURE,
}

INITDATA_ANNOTATION = "io.katacontainers.config.hypervisor.cc_init_data"
VCPUS_ANNOTATION = "io.katacontainers.config.hypervisor.default_vcpus"
MEMORY_ANNOTATION = "io.katacontainers.config.hypervisor.default_memory"
DEFAULT_ALLOWED = (INITDATA_ANNOTATION, VCPUS_ANNOTATION, MEMORY_ANNOTATION)
KNOWN_ANNOTATIONS = frozenset(DEFAULT_ALLOWED)


@dataclass(frozen=True)
class GuestConfig:
    kernel: Path
    initrd: Path
    rootfs: Path
    cmdline: tuple[str, ...]
    firmware: Path | None = None


@dataclass(frozen=True)
class VmSizes:
    vcpus: int = 1
    memory_mib: int = 512
    max_vcpus: int = 8
    max_memory_mib: int = 16384


@dataclass(frozen=True)
class Timeouts:
    boot_seconds: float = 120.0
    agent_call_seconds: float = 60.0
    stop_seconds: float = 20.0


@dataclass(frozen=True)
class RuntimeConfig:
    """One handler's runtime configuration, validated."""

    path: Path
    platform_name: str
    platform: Platform
    guest: GuestConfig
    vm: VmSizes
    timeouts: Timeouts
    allowed_annotations: frozenset[str]


def _table(doc: dict[str, Any], key: str, path: Path, allowed: set[str]) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise RuntimeConfigError(f"{path}: [{key}] must be a table")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise RuntimeConfigError(f"{path}: unknown key(s) in [{key}]: {', '.join(unknown)}")
    return value


def _path(table: dict[str, Any], key: str, where: str, *, required: bool) -> Path | None:
    value = table.get(key)
    if value is None:
        if required:
            raise RuntimeConfigError(f"{where}: {key} is required")
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise RuntimeConfigError(f"{where}: {key} must be an absolute path, got {value!r}")
    return Path(value)


def _number(table: dict[str, Any], key: str, where: str, default: float, low: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        raise RuntimeConfigError(f"{where}: {key} must be a number >= {low}, got {value!r}")
    return float(value)


def _integer(table: dict[str, Any], key: str, where: str, default: int, low: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise RuntimeConfigError(f"{where}: {key} must be an integer >= {low}, got {value!r}")
    return value


def _cmdline(guest: dict[str, Any], where: str) -> tuple[str, ...]:
    if ("cmdline" in guest) == ("manifest" in guest):
        raise RuntimeConfigError(f"{where}: give exactly one of cmdline and manifest")
    if "cmdline" in guest:
        words = guest["cmdline"]
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise RuntimeConfigError(f"{where}: cmdline must be a list of strings")
        return tuple(words)
    manifest = _path(guest, "manifest", where, required=True)
    assert manifest is not None
    try:
        words = json.loads(manifest.read_text())["cmdline"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RuntimeConfigError(f"{where}: cannot read cmdline from {manifest}: {err}") from err
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise RuntimeConfigError(f"{where}: {manifest}: cmdline must be a list of strings")
    return tuple(words)


def parse(text: str, path: Path) -> RuntimeConfig:
    """Validate a runtime configuration document; raises RuntimeConfigError."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise RuntimeConfigError(f"{path}: not valid TOML: {err}") from err
    unknown = sorted(set(doc) - {"platform", "guest", "vm", "timeouts", "annotations"})
    if unknown:
        raise RuntimeConfigError(f"{path}: unknown key(s): {', '.join(unknown)}")
    name = doc.get("platform")
    if name not in PLATFORMS:
        raise RuntimeConfigError(
            f"{path}: platform must be one of {', '.join(PLATFORMS)}, got {name!r}"
        )
    assert isinstance(name, str)
    platform = PLATFORMS[name]
    guest = _table(
        doc, "guest", path, {"kernel", "initrd", "rootfs", "firmware", "cmdline", "manifest"}
    )
    where = f"{path} [guest]"
    kernel = _path(guest, "kernel", where, required=True)
    initrd = _path(guest, "initrd", where, required=True)
    rootfs = _path(guest, "rootfs", where, required=True)
    assert kernel is not None and initrd is not None and rootfs is not None
    firmware = _path(guest, "firmware", where, required=platform is not Platform.INSECURE)
    vm = _table(doc, "vm", path, {"vcpus", "memory_mib", "max_vcpus", "max_memory_mib"})
    where = f"{path} [vm]"
    sizes = VmSizes(
        vcpus=_integer(vm, "vcpus", where, 1, 1),
        memory_mib=_integer(vm, "memory_mib", where, 512, 64),
        max_vcpus=_integer(vm, "max_vcpus", where, 8, 1),
        max_memory_mib=_integer(vm, "max_memory_mib", where, 16384, 64),
    )
    if sizes.vcpus > sizes.max_vcpus or sizes.memory_mib > sizes.max_memory_mib:
        raise RuntimeConfigError(f"{where}: the defaults exceed max_vcpus/max_memory_mib")
    times = _table(doc, "timeouts", path, {"boot_seconds", "agent_call_seconds", "stop_seconds"})
    where = f"{path} [timeouts]"
    timeouts = Timeouts(
        boot_seconds=_number(times, "boot_seconds", where, 120.0, 1.0),
        agent_call_seconds=_number(times, "agent_call_seconds", where, 60.0, 1.0),
        stop_seconds=_number(times, "stop_seconds", where, 20.0, 0.0),
    )
    annotations = _table(doc, "annotations", path, {"allowed"})
    allowed = annotations.get("allowed", list(DEFAULT_ALLOWED))
    if not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed):
        raise RuntimeConfigError(f"{path} [annotations]: allowed must be a list of strings")
    unsupported = sorted(set(allowed) - KNOWN_ANNOTATIONS)
    if unsupported:
        raise RuntimeConfigError(
            f"{path} [annotations]: not supported by this runtime: {', '.join(unsupported)}"
        )
    return RuntimeConfig(
        path=path,
        platform_name=name,
        platform=platform,
        guest=GuestConfig(
            kernel=kernel,
            initrd=initrd,
            rootfs=rootfs,
            cmdline=_cmdline(guest, f"{path} [guest]"),
            firmware=firmware,
        ),
        vm=sizes,
        timeouts=timeouts,
        allowed_annotations=frozenset(allowed),
    )


def load(path: Path) -> RuntimeConfig:
    """Read and validate the runtime configuration at ``path``; raises RuntimeConfigError."""
    if not path.is_absolute():
        raise RuntimeConfigError(f"runtime config path {str(path)!r} is not absolute")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise RuntimeConfigError(f"cannot read runtime config {path}: {err}") from err
    return parse(text, path)
