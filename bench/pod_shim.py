"""The shim entry's own cost: what containerd waits for twice per pod (the sandbox's and
the container's ``containerd-shim-contrast-cc-v2 start``) and once per task at removal
(``delete``), against a running node daemon and relay, next to the interpreter's
floors and the entry as it was before its short way (``--baseline``), measured in the
same run.

- floors: the venv's interpreter running nothing (``python -c pass``: site with the
  venv's ``.pth`` files, here an editable install's finder), and the bare interpreter
  (``python -I -S -c pass``: what an entry script with those flags would start from);
- imports: ``-v`` (the entry's imports, no call);
- start: register a task with the daemon and ask the relay for the namespace's
  address (two unix-socket ttrpc calls), as containerd 1.6 runs it;
- delete: release that task (the daemon answers a DeleteResponse);
- start under ``python -I -S`` (now only): what an entry script with those flags
  would cost; its short way imports nothing from site-packages (its fallbacks would,
  so such a script must put site-packages on ``sys.path`` itself).

"before" is ``shim/`` at ``--baseline`` (default: the commit before the entry's
hand-written messages, ``shim/messages.py``), exported with ``git archive`` and put
first on ``sys.path``; "now" is the working tree's; both are started the same way
(``python -c`` importing ``shim.main``, as the console script does), against the same
daemon and relay (the working tree's). Each run is a fresh process, as containerd runs
it, the kinds interleaved so that load on the machine hits all alike; medians of
``--runs``.

    .venv/bin/python -m bench.pod_shim [--runs 20] [--baseline REV]
"""

from __future__ import annotations

import argparse
import functools
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from devkit.node import REPO, Node, node_env

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
        node: Node, tree: Path, *args: str, cwd: Path, flags: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, *flags, "-c", LAUNCH, str(tree), "-namespace", "default", "-address",
             str(node.root / "containerd.sock"), "-publish-binary", "/usr/bin/containerd", *args],
            cwd=cwd, capture_output=True, env=node.env, timeout=120, check=False,
        )  # fmt: skip

    figures: dict[str, list[float]] = {}

    def add(label: str, seconds: float) -> None:
        figures.setdefault(label, []).append(seconds)

    with tempfile.TemporaryDirectory(prefix="pod-shim-") as scratch, node_env("pod-vm") as node:
        trees = {"before": export_shim(baseline, Path(scratch)), "now": REPO}
        bundle = node.root / "bundle"
        bundle.mkdir()
        warm = entry(node, REPO, "-id", "warm", "start", cwd=bundle)  # starts daemon, relay
        if warm.returncode != 0:
            raise SystemExit(f"the first start failed: {warm.stderr.decode(errors='replace')}")
        for i in range(runs):
            add("floor", timed(lambda: python("-c", "pass")))
            add("bare", timed(lambda: python("-I", "-S", "-c", "pass")))
            for name, tree in trees.items():
                task = f"{name}{i}"
                run = functools.partial(entry, node, tree, cwd=bundle)
                add(f"{name} -v", timed(functools.partial(run, "-v")))
                add(f"{name} start", timed(functools.partial(run, "-id", task, "start")))
                delete = functools.partial(run, "-id", task, "-bundle", str(bundle), "delete")
                add(f"{name} delete", timed(delete))
            bare = functools.partial(entry, node, REPO, cwd=bundle, flags=("-I", "-S"))
            add("now bare start", timed(functools.partial(bare, "-id", f"bare{i}", "start")))
    floor = statistics.median(figures["floor"])
    medians = {label: statistics.median(values) for label, values in figures.items()}
    print(f"shim entry, fresh process each, medians of {runs} (ms); before = shim/ at {baseline}")
    print(f"  {'floor: the venv python -c pass':44} {1000 * floor:6.1f}")
    print(f"  {'bare: python -I -S -c pass':44} {1000 * medians['bare']:6.1f}")
    rows = (("imports: -v", "-v"), ("start: Register + relay Listen", "start"),
            ("delete: Cleanup", "delete"))  # fmt: skip
    print(f"  {'':44} {'before':>6} {'now':>6}  (over the venv floor: before, now)")
    for label, kind in rows:
        before, now = medians[f"before {kind}"], medians[f"now {kind}"]
        print(
            f"  {label:44} {1000 * before:6.1f} {1000 * now:6.1f}"
            f"  ({1000 * (before - floor):+.0f}, {1000 * (now - floor):+.0f})"
        )
    bare_start = medians["now bare start"]
    print(
        f"  {'start, python -I -S (no site, no .pth)':44} {'':6} {1000 * bare_start:6.1f}"
        f"  (an entry script with those flags: {1000 * (bare_start - medians['bare']):+.0f}"
        " over the bare floor)"
    )
    # Twice per pod: the sandbox's start and the container's.
    saved = 2 * (medians["before start"] - medians["now start"])
    print(f"  per pod (two starts): {1000 * saved:.0f} ms less host time")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--baseline", default="", help="git revision of the 'before' shim/")
    parsed = parser.parse_args()
    main(parsed.runs, parsed.baseline or default_baseline())
