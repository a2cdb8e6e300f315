"""The CRI validation suite (critest from ../shared/peers) for runc and our handler on the
same CRI node (devkit.critest), the table side by side written and printed.

- ``test_focused_subset`` (every ``pytest -m ""`` run): a few specs that cover a pod's
  life (RunPodSandbox, a container started, ExecSync, port-forward) pass for both handlers, and a
  host-network pod is refused on ours at RunPodSandbox with the message naming
  ``hostNetwork``, leaving nothing behind (no QEMU, veth, mount, state); its table in
  ``build/critest/<containerd>/focused/results.md``.
- ``test_full_suite`` (``CONTRAST_CRITEST_FULL=1``): the whole suite; every spec that
  passes on runc passes on ours except the by-design refusals
  (``devkit.critest_specs.BY_DESIGN``), which fail with the refusal's text. Its table
  goes to ``build/critest/<containerd>/results.md``.

One node per containerd version per module: Debian's 1.6 with critest v1.27.0 (what
containerd 1.6's own CI runs), 2.3.4 from ../shared/peers with v1.36.0.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit import critest
from devkit.critest import ConformanceNode, SuiteRun, conformance_node
from devkit.critest_specs import REFUSAL, by_design
from guest.image.manifest import GuestImage
from tests.conftest import require_programs
from tests.support.containerd_releases import require_release

pytestmark = [pytest.mark.conformance, pytest.mark.vm]

FULL = os.environ.get("CONTRAST_CRITEST_FULL") == "1"
FOCUS = (
    r"runtime should support running PodSandbox \[Conformance\]",
    r"runtime should support starting container \[Conformance\]",
    r"runtime should support execSync \[Conformance\]",
    r"runtime should support portforward \[Conformance\]",
    r"runtime should support HostNetwork is true",
)
OUT = Path(__file__).parents[2] / "build" / "critest"
CONTAINERDS = ("1.6", "2.3.4")


def _peers_or_skip(containerd: str) -> None:
    try:
        critest.peer_program(f"critest-{critest.CRITEST_FOR[containerd]}")
    except critest.PeersMissing as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{err} (CI must provide ../shared/peers)")
        pytest.skip(str(err))


@pytest.fixture(scope="module", params=CONTAINERDS)
def node(request: pytest.FixtureRequest, guest_image: GuestImage) -> Iterator[ConformanceNode]:
    require_programs(
        "containerd", "ip", "nsenter", "docker-registry", "busybox", "gcc", "iptables",
        "ipcrm", "ipcmk", "/usr/lib/cni/portmap",
    )  # fmt: skip
    require_release(request.param)
    _peers_or_skip(request.param)
    with conformance_node(guest_image, containerd=request.param) as prepared:
        yield prepared


def _report(runs: list[SuiteRun], out: Path, title: str) -> None:
    path = critest.write_table(runs, out, title)
    print(path.read_text())  # pytest shows it with -s or on failure


def test_focused_subset(node: ConformanceNode) -> None:
    crinode = node.crinode
    # Not pytest's tmp_path: concurrent pytest sessions prune each other's old basetemps.
    out = OUT / node.containerd_version / "focused"
    focus = FOCUS
    runc = critest.run_suite(node, crinode.runc_handler, out, focus=focus)
    ours = critest.run_suite(node, crinode.handler, out, focus=focus)
    title = f"critest, focused subset, containerd {node.containerd_version}"
    _report([runc, ours], out, title)
    ran = {r.name for r in runc.results if r.state != "skipped"}
    assert len(ran) == len(focus), ran  # each focus names exactly one spec
    assert all(runc.state_of(name) == "passed" for name in ran), critest.table([runc])
    refused = [r for r in ours.results if r.name.endswith("should support HostNetwork is true")]
    assert [r.state for r in refused] == ["failed"]
    assert f"hostNetwork {REFUSAL}" in refused[0].message, refused[0].message
    assert critest.regressions(runc, ours) == [], critest.table([runc, ours])
    assert node.proxy.rewritten >= len(focus)  # our pods got the initdata annotation
    assert crinode.cri.pods() == []
    assert crinode.leftovers() == []


@pytest.mark.skipif(not FULL, reason="the full suite runs with CONTRAST_CRITEST_FULL=1")
def test_full_suite(node: ConformanceNode) -> None:
    crinode = node.crinode
    out = OUT / node.containerd_version
    runc = critest.run_suite(node, crinode.runc_handler, out)
    ours = critest.run_suite(node, crinode.handler, out)
    _report([runc, ours], out, f"critest on containerd {node.containerd_version}")
    for result in ours.results:
        if (design := by_design(result.name)) and runc.state_of(result.name) == "passed":
            assert result.state == "failed", result
            assert design.message in result.message, result.message
    assert critest.regressions(runc, ours) == []
    assert crinode.leftovers() == []
