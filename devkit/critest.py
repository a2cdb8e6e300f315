"""The CRI validation suite (``critest`` from ``../shared/peers``) against a CRI node,
for runc and for our handler on the same node, with a pass/fail table side by side.

:func:`conformance_node` is a :func:`devkit.crinode.cri_node` made ready for the suite:

- the suite's images (:mod:`devkit.critest_images`) in the node's registry, served under
  the names critest uses through containerd registry mirrors (``hosts.toml`` for
  ``registry.k8s.io``, ``gcr.io`` and ``k8s.gcr.io`` naming the loopback registry); the
  guest's puller gets the same mirrors in the pods' initdata (``imagepull.toml``);
- a CNI conflist chaining the standard ``portmap`` plugin after ours (hostPort specs);
- a sandbox image whose process is named ``pause``;
- a CRI proxy (:mod:`devkit.criproxy`) giving our handler's pods an initdata annotation
  (allow-every-request policy + puller settings), as a user's pod manifest would.

:func:`run_suite` runs critest inside the node's network namespace (it dials pods and
containerd's stream server there) and reads its ginkgo JSON report (v1.27's
``--report-dir`` writes nothing); :func:`table` renders results side by side.
Afterwards it removes what the suite leaves on the host: the SysV shm segments its
HostIpc specs make (``ipcmk``), its ``/tmp/podLogTest*`` directories.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api.kata import agent_pb2
from devkit import critest_images as images
from devkit.command import run
from devkit.crinode import PAUSE, CriNode, cri_node
from devkit.criproxy import CriProxy
from devkit.critest_specs import UNSERVABLE, by_design, not_offered
from devkit.errors import DevkitError
from devkit.topology import ip
from guest.image.manifest import GuestImage
from guest.initdata import codec, document

REPO = Path(__file__).parents[1]
PEERS = REPO.parent / "shared" / "peers"
PEERS_CACHE = Path(os.environ.get("CONTRAST_PEERS_CACHE", "/var/tmp/contrast-peers"))
INITDATA = "io.katacontainers.config.hypervisor.cc_init_data"
# The version containerd 1.6's own CI runs, and the one for containerd 2.x.
CRITEST_FOR = {"1.6": "v1.27.0", "2.0.11": "v1.36.0", "2.3.4": "v1.36.0"}

ALLOW_EVERY_REQUEST = "package agent_policy\n\n" + "".join(
    f"default {name} := true\n"
    for name in sorted(
        {m.input_type.name for m in agent_pb2.DESCRIPTOR.services_by_name["AgentService"].methods}
    )
)


class PeersMissing(DevkitError):
    """``../shared/peers`` (or the program asked for) is not on this machine."""


def peer_program(name: str) -> Path:
    """``name`` (e.g. ``critest-v1.27.0``) unpacked from ``../shared/peers`` into the
    cache (``$CONTRAST_PEERS_CACHE``, checked against SHA256SUMS by its install.sh)."""
    if not (PEERS / "install.sh").is_file() or not (PEERS / f"{name}.xz").is_file():
        raise PeersMissing(f"{PEERS}/{name}.xz not present (the shared peer programs)")
    target = PEERS_CACHE / name
    if not os.access(target, os.X_OK):
        run(["sh", str(PEERS / "install.sh"), str(PEERS_CACHE)], timeout=600)
    return target


def puller_settings(mirror: str) -> str:
    """The guest puller's settings: the suite's registries mirrored to ``mirror``."""
    lines = [f'[registries."{mirror}"]', "insecure = true"]
    for registry in images.MIRRORED:
        lines += [f'[registries."{registry}"]', f'mirror = "{mirror}"']
    return "\n".join(lines) + "\n"


def initdata_annotation(mirror: str) -> str:
    data = {document.POLICY_NAME: ALLOW_EVERY_REQUEST, "imagepull.toml": puller_settings(mirror)}
    return codec.encode_annotation(document.create(data, "sha384").raw)


def write_mirror_hosts(folder: Path, mirror: str) -> None:
    """``<folder>/<registry>/hosts.toml`` for each mirrored registry: pulls go to
    ``mirror`` over plain HTTP (containerd asks it ``/v2/<repo>/...?ns=<registry>``)."""
    for registry in images.MIRRORED:
        (folder / registry).mkdir(parents=True, exist_ok=True)
        (folder / registry / "hosts.toml").write_text(
            f'server = "https://{registry}"\n\n[host."http://{mirror}"]\n'
            '  capabilities = ["pull", "resolve"]\n'
        )


def write_portmap_conflist(conf_dir: Path, bin_dir: Path) -> Path:
    """A conflist (sorted before the node's own config, so containerd takes it) that
    chains ``portmap`` after the devkit plugin, whose config it copies."""
    own = sorted(conf_dir.glob("*.conf"))
    if not own:
        raise DevkitError(f"no CNI config in {conf_dir}")
    plugin = json.loads(own[0].read_text())
    version = plugin.pop("cniVersion")
    name = plugin.pop("name")
    conflist = {
        "cniVersion": version, "name": name,
        "plugins": [plugin, {"type": "portmap", "capabilities": {"portMappings": True}}],
    }  # fmt: skip
    portmap = bin_dir / "portmap"
    if not portmap.exists():
        source = Path("/usr/lib/cni/portmap")
        if not source.exists():
            raise DevkitError(f"{source} not found (Debian: containernetworking-plugins)")
        portmap.symlink_to(source)
    path = conf_dir / "05-critest.conflist"
    path.write_text(json.dumps(conflist))
    return path


@dataclass(frozen=True)
class ConformanceNode:
    """A CRI node prepared for critest; ``endpoint`` is the proxy's CRI address."""

    crinode: CriNode
    proxy: CriProxy
    containerd_version: str

    @property
    def endpoint(self) -> str:
        return self.proxy.address


def _cri_config(crinode: CriNode) -> dict[str, Any]:
    info = crinode.containerd.cri_status().info
    config = json.loads(info.get("config", "{}"))
    return config if isinstance(config, dict) else {}


def _wait_for_portmap(crinode: CriNode, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        loaded = crinode.containerd.cri_status().info.get("cniconfig", "")
        if "portmap" in loaded:
            return
        if time.monotonic() > deadline:
            raise DevkitError(f"containerd did not load the portmap conflist: {loaded[:2000]}")
        time.sleep(0.5)


@contextlib.contextmanager
def conformance_node(
    image: GuestImage, parent: Path = Path("/tmp"), containerd: str | None = None
) -> Iterator[ConformanceNode]:
    """A CRI node ready for critest (see the module docstring); ``containerd``: a
    version ``devkit.crinode.cri_node`` knows (default: Debian's 1.6)."""
    kwargs: dict[str, Any] = {} if containerd is None else {"containerd": containerd}
    with cri_node(image, parent, **kwargs) as crinode:
        registry = crinode.registry
        for reference, built in images.suite_images().items():
            _, repository, tag = images.split(reference)
            registry.upload(built.blobs, built.manifest, repository, tag)
        pause = images.pause()
        registry.upload(pause.blobs, pause.manifest, "contrast/pause", "3.6")
        crinode.cri.pull_image(PAUSE)  # the tag now names the image of a `pause` process
        config = _cri_config(crinode)
        work = crinode.node.root / "ctd"
        hosts = Path(config.get("registry", {}).get("configPath") or work / "certs.d")
        write_mirror_hosts(hosts, crinode.registry_host)
        cni = config.get("cni", {})
        bins = cni.get("binDir") or next(iter(cni.get("binDirs") or []), None)  # 2.3: a list
        conf = cni.get("confDir") or work / "cni"
        write_portmap_conflist(Path(conf), Path(bins or work / "cni-bin"))
        _wait_for_portmap(crinode)
        annotations = {INITDATA: initdata_annotation(crinode.registry_host)}
        socket = crinode.node.root / "critest-cri.sock"
        with CriProxy(socket, crinode.containerd.socket, crinode.handler, annotations) as proxy:
            yield ConformanceNode(crinode, proxy, containerd or "1.6")


@dataclass(frozen=True)
class SpecResult:
    name: str  # the spec's full text (containers and leaf), as ginkgo prints it
    state: str  # passed failed skipped pending panicked timedout interrupted aborted
    seconds: float
    message: str = ""


@dataclass(frozen=True)
class SuiteRun:
    handler: str
    critest: str
    results: list[SpecResult]
    seconds: float
    log: Path
    report: Path
    leftovers: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for result in self.results:
            found[result.state] = found.get(result.state, 0) + 1
        return found

    def state_of(self, name: str) -> str | None:
        return next((r.state for r in self.results if r.name == name), None)


def parse_report(path: Path) -> list[SpecResult]:
    """The ``It`` specs of a ginkgo v2 JSON report; raises DevkitError when unreadable."""
    try:
        suites = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DevkitError(f"critest's report {path} is unreadable: {err}") from err
    results = []
    for suite in suites:
        for spec in suite.get("SpecReports") or []:
            if spec.get("LeafNodeType") != "It":
                continue
            name = " ".join([*spec.get("ContainerHierarchyTexts", []), spec["LeafNodeText"]])
            failure = spec.get("Failure") or {}
            message = failure.get("Message", "") if spec["State"] != "skipped" else ""
            results.append(
                SpecResult(name, spec["State"], spec.get("RunTime", 0) / 1e9, message.strip())
            )
    return results


def _shm_segments() -> set[str]:
    lines = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    return {line.split()[1] for line in lines if line.split()}


def _log_dirs() -> set[Path]:
    return set(Path("/tmp").glob("podLogTest*"))


def run_suite(
    node: ConformanceNode,
    handler: str,
    out_dir: Path,
    *,
    focus: Sequence[str] = (),
    skip: Sequence[str] = UNSERVABLE,
    timeout: float = 3 * 3600,
) -> SuiteRun:
    """critest for ``handler`` on ``node``; its report and log under ``out_dir``."""
    version = CRITEST_FOR.get(node.containerd_version, "v1.36.0")
    critest = peer_program(f"critest-{version}")
    out_dir.mkdir(parents=True, exist_ok=True)
    report, log = out_dir / f"{handler}.json", out_dir / f"{handler}.log"
    netns = node.crinode.topology.path(node.crinode.topology.node)
    argv = [
        "nsenter", f"--net={netns}", "--", str(critest),
        f"--runtime-endpoint={node.endpoint}", f"--image-endpoint={node.endpoint}",
        f"--runtime-handler={handler}", "--ginkgo.no-color", "--ginkgo.v",
        # Without them v1.27's image calls get a zero deadline (DeadlineExceeded at once).
        "--runtime-service-timeout=10m", "--image-service-timeout=10m",
        f"--ginkgo.json-report={report}", f"--ginkgo.junit-report={out_dir / handler}.xml",
        f"--ginkgo.timeout={int(timeout)}s",
    ]  # fmt: skip
    argv += [f"--ginkgo.focus={pattern}" for pattern in focus]
    argv += [f"--ginkgo.skip={re.escape(name)}" for name in skip]
    shm_before, dirs_before = _shm_segments(), _log_dirs()
    start = time.monotonic()
    with open(log, "wb") as out:
        try:
            subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=out_dir, timeout=timeout + 300, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as err:
            raise DevkitError(f"critest for {handler} ran past {err.timeout:.0f} s: {log}") from err
    seconds = time.monotonic() - start
    leftovers = _clean_host(shm_before, dirs_before)
    ip("-n", node.crinode.topology.node, "neigh", "flush", "dev", "cni0")
    if not report.exists():
        raise DevkitError(f"critest wrote no report; its log ends:\n{log.read_text()[-4000:]}")
    return SuiteRun(handler, version, parse_report(report), seconds, log, report, leftovers)


def _clean_host(shm_before: set[str], dirs_before: set[Path]) -> list[str]:
    """Remove the shm segments and log dirs the suite made; what was removed."""
    removed = []
    for shmid in sorted(_shm_segments() - shm_before):
        with contextlib.suppress(DevkitError):
            run(["ipcrm", "-m", shmid], timeout=30)
            removed.append(f"shm segment {shmid}")
    for folder in sorted(_log_dirs() - dirs_before):
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(str(folder))
    return removed


def _cell(run_: SuiteRun, name: str) -> str:
    result = next((r for r in run_.results if r.name == name), None)
    if result is None:
        return "-"
    if result.state == "skipped":
        return "skipped"
    return f"{result.state} ({result.seconds:.1f} s)"


def table(runs: Sequence[SuiteRun], title: str = "") -> str:
    """A markdown table: one row per spec, one column per handler, then the totals."""
    names: list[str] = []
    for run_ in runs:
        names += [r.name for r in run_.results if r.name not in names]
    header = "| spec | " + " | ".join(f"{r.handler} ({r.critest})" for r in runs) + " |"
    lines = [f"# {title}", ""] if title else []
    lines += [header, "|---" * (len(runs) + 1) + "|"]
    for name in sorted(names):
        if all(r.state_of(name) in ("skipped", None) for r in runs):
            continue  # not run: focused out, a benchmark, or skipped by the suite itself
        cells = " | ".join(_cell(r, name) for r in runs)
        note = f" (by design: {design.what} refused)" if (design := by_design(name)) else ""
        lines.append(f"| {name.replace('|', '/')}{note} | {cells} |")
    lines.append("")
    for run_ in runs:
        counts = ", ".join(f"{n} {state}" for state, n in sorted(run_.counts().items()))
        lines.append(f"- {run_.handler}: {counts}; {run_.seconds:.0f} s")
    return "\n".join(lines) + "\n"


def failures(run_: SuiteRun) -> list[SpecResult]:
    return [r for r in run_.results if r.state not in ("passed", "skipped")]


def regressions(baseline: SuiteRun, ours: SuiteRun) -> list[str]:
    """Specs passing on ``baseline`` (runc) but not on ``ours``, by-design ones and
    those skipped for a feature containerd does not report for ours aside."""
    return [
        r.name for r in baseline.results
        if r.state == "passed" and ours.state_of(r.name) != "passed" and not by_design(r.name)
        and not (ours.state_of(r.name) == "skipped" and not_offered(r.name))
    ]  # fmt: skip


def write_table(runs: Sequence[SuiteRun], out_dir: Path, title: str) -> Path:
    """The table (and each run's failure messages) as ``<out_dir>/results.md``."""
    text = table(runs, title)
    for run_ in runs:
        for result in failures(run_):
            text += f"\n## {run_.handler}: {result.name}\n\n```\n{result.message[:3000]}\n```\n"
    path = out_dir / "results.md"
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m devkit.critest [--guest DIR] [--focus RE]... [--out DIR]``: the suite
    for runc and our handler on one node; prints and writes the table."""
    import argparse

    from guest.image.build import ensure_image
    from guest.image.manifest import load

    parser = argparse.ArgumentParser(prog="python -m devkit.critest")
    parser.add_argument("--guest", type=Path, help="a built guest image directory")
    parser.add_argument("--containerd", help="a version devkit.crinode knows (default 1.6)")
    parser.add_argument("--focus", action="append", default=[])
    parser.add_argument("--handler", action="append", choices=["runc", "ours"])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "critest")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()  # critest, which writes the reports, runs elsewhere
    image = load(args.guest) if args.guest else ensure_image()
    runs = []
    with conformance_node(image, containerd=args.containerd) as node:
        out = args.out / node.containerd_version
        chosen = args.handler or ["runc", "ours"]
        for which in chosen:
            handler = node.crinode.runc_handler if which == "runc" else node.crinode.handler
            runs.append(run_suite(node, handler, out, focus=args.focus))
            print(table(runs[-1:]), flush=True)
        path = write_table(runs, out, f"critest on containerd {node.containerd_version}")
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
