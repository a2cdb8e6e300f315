"""Choosing KVM or TCG. /dev/kvm existing proves nothing (on our build machines it
hangs), so KVM is used only when the CPU shows vmx/svm and a probe VM really runs."""

from __future__ import annotations

import functools
import logging
import subprocess
import tempfile
from pathlib import Path

from agent.vm.config import Accel

log = logging.getLogger(__name__)

# A boot sector: mov al,1; out 0xf4,al; hlt. Through isa-debug-exit QEMU then exits
# with status (1 << 1) | 1 = 3, which only a guest that really executed can cause.
_BOOT_SECTOR = bytes([0xB0, 0x01, 0xE6, 0xF4, 0xF4]).ljust(510, b"\0") + b"\x55\xaa"
_PROBE_EXIT = 3


def cpu_virtualization(cpuinfo: str) -> bool:
    """Whether /proc/cpuinfo's flags show hardware virtualization (vmx or svm)."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = line.partition(":")[2].split()
            return "vmx" in flags or "svm" in flags
    return False


def probe(qemu: str, accel: Accel, timeout: float = 5.0) -> bool:
    """Boot the probe sector under ``accel``; True when it ran to its exit port.

    A probe that hangs is killed after ``timeout`` seconds and counts as failed.
    """
    with tempfile.TemporaryDirectory(prefix="contrast-accel-") as tmp:
        disk = Path(tmp) / "probe.img"
        disk.write_bytes(_BOOT_SECTOR)
        argv = [
            qemu, "-machine", f"pc,accel={accel.value}", "-nodefaults", "-no-user-config",
            "-display", "none", "-no-reboot", "-m", "16M",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-drive", f"file={str(disk).replace(',', ',,')},format=raw,if=ide",
        ]  # fmt: skip
        try:
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            log.warning("%s probe hung for %s s: not using it", accel.value, timeout)
            return False
        except OSError as err:
            log.warning("%s probe could not start %s: %s", accel.value, qemu, err)
            return False
    if proc.returncode != _PROBE_EXIT:
        log.warning(
            "%s probe exited %d: %s", accel.value, proc.returncode, proc.stderr.decode()[-300:]
        )
    return proc.returncode == _PROBE_EXIT


@functools.cache
def detect(
    qemu: str = "qemu-system-x86_64",
    cpuinfo: Path = Path("/proc/cpuinfo"),
    probe_timeout: float = 5.0,
) -> Accel:
    """KVM when the CPU flags and a probe VM agree, else TCG; cached per process."""
    try:
        flags = cpu_virtualization(cpuinfo.read_text())
    except OSError:
        flags = False
    if flags and probe(qemu, Accel.KVM, probe_timeout):
        log.info("acceleration: KVM")
        return Accel.KVM
    log.info("acceleration: TCG (%s)", "KVM probe failed" if flags else "no vmx/svm in cpuinfo")
    return Accel.TCG
