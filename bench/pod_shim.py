"""The shim entry's own cost: what containerd waits for twice per pod (the sandbox's and
the container's ``containerd-shim-contrast-cc-v2 start``) and once per task at removal
(``delete``), against a running node daemon and relay, next to the interpreter's
floor measured in the same run.

- floor: the same Python interpreter (the venv's, with its site packages) running
  nothing (``python -c pass``);
- imports: ``containerd-shim-contrast-cc-v2 -v`` (the entry's imports, no call);
- start: register a task with the daemon and ask the relay for the namespace's
  address (two unix-socket ttrpc calls), as containerd 1.6 runs it;
- delete: release that task (the daemon answers a DeleteResponse).

Each is a fresh process, as containerd runs it; medians of ``--runs``.

    .venv/bin/python -m bench.pod_shim [--runs 20]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from devkit.node import SHIM
from tests.integration.shim.node import node_env


def timed(run: Callable[[], subprocess.CompletedProcess[bytes]]) -> float:
    started = time.monotonic()
    done = run()
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{done.args} failed: {done.stderr.decode(errors='replace')}")
    return elapsed


def main(runs: int) -> None:
    def python(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, *args], capture_output=True, check=False)

    floor, imports, starts, deletes = [], [], [], []
    with node_env("pod-vm") as node:
        bundle = node.root / "bundle"
        bundle.mkdir()
        node.shim("-id", "warm", "start", cwd=bundle)  # starts the daemon and relay
        for i in range(runs):  # interleaved: load on the machine hits all alike
            floor.append(timed(lambda: python("-c", "pass")))
            imports.append(
                timed(lambda: subprocess.run([str(SHIM), "-v"], capture_output=True, check=False))
            )
            task = f"task{i}"
            starts.append(timed(functools.partial(node.shim, "-id", task, "start", cwd=bundle)))
            deletes.append(
                timed(functools.partial(
                    node.shim, "-id", task, "-bundle", str(bundle), "delete", cwd=bundle))
            )  # fmt: skip
    print(f"shim entry, fresh process each, medians of {runs} (ms):")
    f = statistics.median(floor)
    for label, values in (
        ("floor: the venv's python -c pass", floor),
        ("imports: shim -v", imports),
        ("start: Register + relay Listen", starts),
        ("delete: Cleanup", deletes),
    ):
        m = statistics.median(values)
        extra = "" if values is floor else f"  ({1000 * (m - f):+.0f} over the floor)"
        print(f"  {label:34} {1000 * m:6.1f}{extra}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    main(parser.parse_args().runs)
