"""The shim entry's own cost: what containerd waits for twice per pod (the sandbox's and
the container's ``containerd-shim-contrast-cc-v2 start``) and once per task at removal
(``delete``), against a running node daemon and relay, next to the interpreter's
floors and the entry as it was before its short way (``--baseline``), measured in the
same run.

- floors: the venv's interpreter running nothing (``python -c pass``: site with the
  venv's ``.pth`` files, here an editable install's finder), and the bare interpreter
  (``python -I -S -c pass``: what the launcher starts from);
- imports: ``-v`` (the entry's imports, no call);
- start: register a task with the daemon and ask the relay for the namespace's
  address (two unix-socket ttrpc calls), as containerd 1.6 runs it;
- delete: release that task (the daemon answers a DeleteResponse).

Three entries, each run as containerd runs it (the executable, in the bundle):

- before: ``shim/`` at ``--baseline`` (default: the commit before the entry's
  hand-written messages, ``shim/messages.py``), exported with ``git archive`` and put
  first on ``sys.path`` of ``python -c`` importing ``shim.main`` (as a console script);
- console script: the venv's ``containerd-shim-contrast-cc-v2`` (pip's, with site);
- launcher: ``shim.launcher``'s script (``#!python -IS``, its own ``sys.path``), as
  devkit's nodes and the node image run it (``devkit.node.SHIM``).

All three against the same daemon and relay (the working tree's). Each run is a fresh
process, the kinds interleaved so that load on the machine hits all alike; medians of
``--runs``; the load average is printed with the figures.

    .venv/bin/python -m bench.pod_shim [--runs 20] [--baseline REV]
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from devkit.node import BIN, REPO, Node, node_env, shim_launcher

CONSOLE_SCRIPT = BIN / "containerd-shim-contrast-cc-v2"
LAUNCH = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); from shim.main import main; sys.exit(main())"
)


def timed(run: Callable[[], subprocess.CompletedProcess[bytes]]) -> float:
    started = time.monotonic()
    done = run()
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{done.args} failed: {done.stderr.decode(errors='replace')}")
    return elapsed


def default_baseline() -> str:
    """The commit before the one that added shim/messages.py."""
    added = subprocess.run(
        ["git", "-C", str(REPO), "log", "--diff-filter=A", "--format=%H", "--", "shim/messages.py"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    if not added:
        raise SystemExit("no commit adds shim/messages.py: name one with --baseline")
    return f"{added[-1]}^"


def export_shim(rev: str, into: Path) -> Path:
    """``shim/`` as it was at ``rev``, under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev, "shim"],
        capture_output=True, check=False,
    )  # fmt: skip
    if archive.returncode != 0:
        raise SystemExit(f"git archive {rev} shim: {archive.stderr.decode(errors='replace')}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def main(runs: int, baseline: str) -> None:
    def python(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, *args], capture_output=True, check=False)

    def entry(
        node: Node, command: list[str], *args: str, cwd: Path
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*command, "-namespace", "default", "-address", str(node.root / "containerd.sock"),
             "-publish-binary", "/usr/bin/containerd", *args],
            cwd=cwd, capture_output=True, env=node.env, timeout=120, check=False,
        )  # fmt: skip

    figures: dict[str, list[float]] = {}

    def add(label: str, seconds: float) -> None:
        figures.setdefault(label, []).append(seconds)

    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pod-shim-") as scratch, node_env("pod-vm") as node:
        old = export_shim(baseline, Path(scratch))
        commands = {
            "before": [sys.executable, "-c", LAUNCH, str(old)],
            "console": [str(CONSOLE_SCRIPT)],
            "launcher": [str(shim_launcher())],
        }
        bundle = node.root / "bundle"
        bundle.mkdir()
        warm = entry(node, commands["launcher"], "-id", "warm", "start", cwd=bundle)
        if warm.returncode != 0:  # it started the daemon and the relay
            raise SystemExit(f"the first start failed: {warm.stderr.decode(errors='replace')}")
        for i in range(runs):
            add("floor", timed(lambda: python("-c", "pass")))
            add("bare", timed(lambda: python("-I", "-S", "-c", "pass")))
            for name, command in commands.items():
                task = f"{name}{i}"
                run = functools.partial(entry, node, command, cwd=bundle)
                add(f"{name} -v", timed(functools.partial(run, "-v")))
                add(f"{name} start", timed(functools.partial(run, "-id", task, "start")))
                delete = functools.partial(run, "-id", task, "-bundle", str(bundle), "delete")
                add(f"{name} delete", timed(delete))
    medians = {label: 1000 * statistics.median(values) for label, values in figures.items()}
    floor, bare = medians["floor"], medians["bare"]
    print(
        f"shim entry, fresh process each, medians of {runs} (ms), load {load[0]:.1f} "
        f"{load[1]:.1f} {load[2]:.1f}; before = shim/ at {baseline}"
    )
    print(f"  {'floor: the venv python -c pass':34} {floor:6.1f}")
    print(f"  {'bare: python -I -S -c pass':34} {bare:6.1f}")
    rows = (("imports: -v", "-v"), ("start: Register + relay Listen", "start"),
            ("delete: Cleanup", "delete"))  # fmt: skip
    print(f"  {'':34} {'before':>7} {'console':>8} {'launcher':>9}  (launcher over the bare floor)")
    for label, kind in rows:
        before, console, fast = (medians[f"{name} {kind}"] for name in commands)
        print(f"  {label:34} {before:7.1f} {console:8.1f} {fast:9.1f}  ({fast - bare:+.0f})")
    # Twice per pod: the sandbox's start and the container's; a delete for each.
    for name in ("before", "console"):
        saved = 2 * (
            medians[f"{name} start"] - medians["launcher start"]
            + medians[f"{name} delete"] - medians["launcher delete"]
        )
        print(f"  per pod (two starts, two deletes), launcher vs {name}: {saved:.0f} ms less")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--baseline", default="", help="git revision of the 'before' shim/")
    parsed = parser.parse_args()
    main(parsed.runs, parsed.baseline or default_baseline())
