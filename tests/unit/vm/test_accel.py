"""KVM is chosen only when the CPU flags and a probe VM agree."""

from pathlib import Path

import pytest

from agent.vm import accel
from agent.vm.config import Accel

FLAGS_VMX = "processor\t: 0\nflags\t\t: fpu vme sse2 vmx ssse3\n"
FLAGS_NONE = "processor\t: 0\nflags\t\t: fpu vme sse2 ssse3 hypervisor\n"


def test_cpu_flags() -> None:
    assert accel.cpu_virtualization(FLAGS_VMX)
    assert accel.cpu_virtualization(FLAGS_VMX.replace("vmx", "svm"))
    assert not accel.cpu_virtualization(FLAGS_NONE)
    assert not accel.cpu_virtualization("")


def test_no_flags_means_tcg_without_probing(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(FLAGS_NONE)
    # The subprocess guard fails the test if a probe runs.
    assert accel.detect("qemu-that-must-not-run", cpuinfo) is Accel.TCG


def fake_qemu(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-qemu"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.allow_programs("fake-qemu")
def test_hanging_probe_means_tcg(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(FLAGS_VMX)
    qemu = fake_qemu(tmp_path, "exec sleep 30")
    assert not accel.probe(qemu, Accel.KVM, timeout=0.5)
    assert accel.detect(qemu, cpuinfo, probe_timeout=0.5) is Accel.TCG


@pytest.mark.allow_programs("fake-qemu")
def test_probe_that_reaches_the_exit_port_means_kvm(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(FLAGS_VMX)
    log = tmp_path / "args"
    qemu = fake_qemu(tmp_path, f'echo "$@" > {log}; exit 3')
    assert accel.detect(qemu, cpuinfo) is Accel.KVM
    args = log.read_text()
    assert "accel=kvm" in args
    assert "isa-debug-exit,iobase=0xf4,iosize=0x04" in args


@pytest.mark.allow_programs("fake-qemu")
def test_probe_with_another_exit_status_means_tcg(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(FLAGS_VMX)
    assert accel.detect(fake_qemu(tmp_path, "exit 1"), cpuinfo) is Accel.TCG
