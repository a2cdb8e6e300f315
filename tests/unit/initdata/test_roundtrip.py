"""create -> annotation -> host (decode, bind, disk file) -> guest processor."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from agent.initdata import PodInitdata, from_annotations, prepare
from guest.initdata import codec, document
from guest.initdata.binding import Platform
from guest.initdata.processor import process
from guest.initdata.tee import InsecureSource, LaunchValue

POLICY = "package agent_policy\n\ndefault CreateContainerRequest := true\nmsg := \"it's ''' ok\"\n"


class QemuBound:
    """Stands in for the TEE: reports what QEMU was told to bind at launch."""

    def __init__(self, platform: Platform, properties: dict[str, str]) -> None:
        self.platform = platform
        self.properties = properties

    def read(self) -> LaunchValue:
        field = "host-data" if self.platform is Platform.SNP else "mrconfigid"
        value = base64.b64decode(self.properties[field])
        return LaunchValue(self.platform, value, "QEMU properties")


@pytest.mark.parametrize("algorithm", document.ALGORITHMS)
@pytest.mark.parametrize("platform", [Platform.SNP, Platform.TDX])
def test_round_trip_hardware(tmp_path: Path, algorithm: str, platform: Platform) -> None:
    doc = document.create({"policy.rego": POLICY, "aa.toml": "x = 1\n"}, algorithm)
    pod = from_annotations({codec.ANNOTATION: codec.encode_annotation(doc.raw)})
    assert pod is not None and pod.raw == doc.raw
    launch = prepare(pod, platform, tmp_path)
    out = tmp_path / "measured-cfg"
    source = QemuBound(platform, launch.confidential_properties())
    outcome = process(launch.disk_path, source, out)
    assert outcome.trusted, outcome.reason
    assert (out / "policy.rego").read_text() == POLICY
    assert (out / "aa.toml").read_text() == "x = 1\n"


def test_round_trip_insecure(tmp_path: Path) -> None:
    doc = document.create({"policy.rego": POLICY})
    pod = from_annotations({codec.ANNOTATION: codec.encode_annotation(doc.raw)})
    assert pod is not None
    launch = prepare(pod, Platform.INSECURE, tmp_path)
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("console=hvc0 root=/dev/dm-0 " + " ".join(launch.kernel_cmdline()) + "\n")
    outcome = process(launch.disk_path, InsecureSource(cmdline), tmp_path / "measured-cfg")
    assert outcome.trusted, outcome.reason


def test_swapped_document_is_caught(tmp_path: Path) -> None:
    bound = document.create({"policy.rego": POLICY})
    swapped = document.create(
        {"policy.rego": "package agent_policy\ndefault ExecProcessRequest := true\n"}
    )
    launch_bound = prepare(pod_of(bound), Platform.SNP, tmp_path)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    launch_swapped = prepare(pod_of(swapped), Platform.SNP, other_dir)
    source = QemuBound(Platform.SNP, launch_bound.confidential_properties())
    outcome = process(launch_swapped.disk_path, source, tmp_path / "measured-cfg")
    assert not outcome.trusted
    assert "initdata digest mismatch" in outcome.reason
    policy = (tmp_path / "measured-cfg" / "policy.rego").read_text()
    assert "default ExecProcessRequest := false" in policy


def pod_of(doc: document.Initdata) -> PodInitdata:
    pod = from_annotations({codec.ANNOTATION: codec.encode_annotation(doc.raw)})
    assert pod is not None
    return pod
