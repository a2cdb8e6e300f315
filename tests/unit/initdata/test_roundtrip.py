"""create -> annotation -> host (decode, bind, disk file, QEMU argv) -> guest processor.

The TEE is played by the QEMU command line itself: the fake source reports what the
``sev-snp-guest``/``tdx-guest`` object was told to bind, as the hardware would.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from agent.initdata import PodInitdata, from_annotations, prepare
from agent.vm.argv import PassedFds, build_argv
from agent.vm.config import Platform as VmPlatform
from agent.vm.qemuopts import split
from guest.initdata import codec, document
from guest.initdata.binding import Platform
from guest.initdata.processor import process
from guest.initdata.tee import InsecureSource, LaunchValue
from tests.unit.initdata.test_qemu_args import vm_config

POLICY = "package agent_policy\n\ndefault CreateContainerRequest := true\nmsg := \"it's ''' ok\"\n"


class QemuBound:
    """Reports the value the QEMU argument list binds at launch."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv

    def read(self) -> LaunchValue:
        for option in self.argv:
            fields = dict(split(option))
            if option.startswith("sev-snp-guest,"):
                value = base64.b64decode(fields["host-data"])
                return LaunchValue(Platform.SNP, value, "QEMU sev-snp-guest")
            if option.startswith("tdx-guest,"):
                value = base64.b64decode(fields["mrconfigid"])
                return LaunchValue(Platform.TDX, value, "QEMU tdx-guest")
        raise AssertionError("no confidential guest object in the argv")


def pod_of(doc: document.Initdata) -> PodInitdata:
    pod = from_annotations({codec.ANNOTATION: codec.encode_annotation(doc.raw)})
    assert pod is not None and pod.raw == doc.raw
    return pod


def launch_argv(
    doc: document.Initdata, platform: VmPlatform, state: Path
) -> tuple[list[str], Path]:
    launch = prepare(pod_of(doc), platform, state)
    return build_argv(vm_config(launch, state), PassedFds(qmp=3, agent=4)), launch.disk_path


@pytest.mark.parametrize("algorithm", document.ALGORITHMS)
@pytest.mark.parametrize("platform", [VmPlatform.SNP, VmPlatform.TDX])
def test_round_trip_hardware(tmp_path: Path, algorithm: str, platform: VmPlatform) -> None:
    doc = document.create({"policy.rego": POLICY, "aa.toml": "x = 1\n"}, algorithm)
    argv, disk_path = launch_argv(doc, platform, tmp_path)
    out = tmp_path / "measured-cfg"
    outcome = process(disk_path, QemuBound(argv), out)
    assert outcome.trusted, outcome.reason
    assert (out / "policy.rego").read_text() == POLICY
    assert (out / "aa.toml").read_text() == "x = 1\n"


def test_round_trip_insecure(tmp_path: Path) -> None:
    doc = document.create({"policy.rego": POLICY})
    argv, disk_path = launch_argv(doc, VmPlatform.INSECURE, tmp_path)
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(argv[argv.index("-append") + 1] + "\n")
    outcome = process(disk_path, InsecureSource(cmdline), tmp_path / "measured-cfg")
    assert outcome.trusted, outcome.reason


@pytest.mark.parametrize("platform", [VmPlatform.SNP, VmPlatform.TDX, VmPlatform.INSECURE])
def test_swapped_document_is_caught(tmp_path: Path, platform: VmPlatform) -> None:
    bound = document.create({"policy.rego": POLICY})
    swapped = document.create(
        {"policy.rego": "package agent_policy\ndefault ExecProcessRequest := true\n"}
    )
    argv, _ = launch_argv(bound, platform, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, swapped_disk = launch_argv(swapped, platform, other)
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(argv[argv.index("-append") + 1] + "\n")
    source = InsecureSource(cmdline) if platform is VmPlatform.INSECURE else QemuBound(argv)
    outcome = process(swapped_disk, source, tmp_path / "measured-cfg")
    assert not outcome.trusted
    assert "initdata digest mismatch" in outcome.reason
    policy = (tmp_path / "measured-cfg" / "policy.rego").read_text()
    assert "default ExecProcessRequest := false" in policy
