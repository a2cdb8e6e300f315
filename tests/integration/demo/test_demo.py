"""``python -m agent.demo`` end to end (one pod through containerd's CRI into a pod-VM
under TCG): its exit code and the lines a user reads, the same on each containerd
(``--containerd 1.6``, Debian's, and 2.0.11 / 2.3.4 from ../shared/peers)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from agent.demo import main as demo
from tests.conftest import require_programs
from tests.support.containerd_releases import VERSIONS, require_release

pytestmark = pytest.mark.vm


CONFIG_VERSION = {"1.6": 2, "2.0.11": 3, "2.3.4": 4}


@pytest.mark.parametrize("version", VERSIONS)
def test_demo_runs_a_confidential_pod_and_leaves_nothing(
    capsys: pytest.CaptureFixture[str], version: str
) -> None:
    require_programs(*demo.PROGRAMS)
    require_release(version)
    if os.geteuid() != 0:
        pytest.skip("the demo needs root")

    code = demo.main(["--containerd", version])

    out = capsys.readouterr().out
    assert code == 0, out
    assert (
        f"node config: containerd {version}'s own `containerd config default` "
        f"(version {CONFIG_VERSION[version]})" in out
    ), out
    assert re.search(rf"containerd {re.escape(version)} on \S+: CRI lists contrast-cc-", out), out
    steps = re.findall(r"^\[(\d)/6\] ", out, re.MULTILINE)
    assert steps == ["1", "2", "3", "4", "5", "6"], out
    assert "platform qemu-insecure: this machine has no AMD SEV-SNP or Intel TDX" in out
    assert "container> hello from a confidential pod" in out
    root_hash = re.search(r"dm-verity root hash ([0-9a-f]{64})", out)
    assert root_hash is not None, out
    assert f"container> guest root device: root CONTRAST-VERITY-{root_hash[1]}" in out
    digest = re.search(r"initdata digest \(sha384\) ([0-9a-f]{96})", out)
    assert digest is not None, out
    assert f"contrast.initdata_digest={digest[1]}" in out  # the guest's own command line
    refused = re.search(r"refused: (.*)$", out, re.MULTILINE)
    assert refused is not None, out
    assert "ExecProcessRequest is blocked by policy: contrast demo policy" in refused[1]
    assert re.search(r"CRI RunPodSandbox, handler contrast-cc-\S+ \(boots a pod-VM", out), out
    assert re.search(r"^ +pod [0-9a-f]{12} ready after ", out, re.MULTILINE), out
    assert "CRI StopPodSandbox + RemovePodSandbox: pod and container gone" in out
    assert out.rstrip().endswith("contrast demo: done")
    tag = re.search(r"containerd runs in netns cnode-([0-9a-f]+),", out)
    assert tag is not None, out
    pod_netns = re.search(
        r"its network namespace \(containerd's, set up by CNI\): (\S+)$", out, re.M
    )
    assert pod_netns is not None, out
    assert not Path(pod_netns[1]).exists()
    assert not {f"cnode-{tag[1]}", f"cpod-{tag[1]}", f"cpeer-{tag[1]}"} & set(demo._netns())
    assert demo.leftovers(Path("/tmp/contrast-demo-")) == []  # any demo root, as a prefix
