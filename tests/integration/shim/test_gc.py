"""Sandboxes containerd forgot, collected against a real containerd 1.6 (temporary root):
the daemon reattaches two persisted sandboxes of namespace ``default``; containerd has a
container record for one ("kept", made by ``ctr containers create``) and never had the
other ("ghost"). The ghost's state goes after two sweeps, with the reason in the log;
"kept" stays until ``ctr containers rm`` removes its record behind our back."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from agent.sandbox.state import SandboxRecord, StateStore
from devkit.containerd import running_containerd
from tests.conftest import require_programs
from tests.integration.shim.image import write_image
from tests.integration.shim.node import REPO, node_env
from tests.integration.shim.test_containerd import ctr

IMAGE = "docker.io/library/contrast-gc-test:1"


def wait_until_gone(path: Path, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while path.exists():
        assert time.monotonic() < deadline, f"{path} was not collected:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def test_sandboxes_containerd_does_not_have_are_collected(tmp_path: Path) -> None:
    require_programs("containerd", "ctr")
    archive = tmp_path / "image.tar"
    write_image(archive, IMAGE, {"hello": b"#!/bin/sh\necho hello\n"})
    with (
        running_containerd("version = 2\n", tmp_path / "containerd") as containerd,
        node_env("local-agent", agent_socket=Path("/nonexistent/agent.sock")) as node,
    ):
        imported = ctr(containerd, "images", "import", "--snapshotter", "native", str(archive))
        assert imported.returncode == 0, imported.stderr
        created = ctr(containerd, "containers", "create", "--snapshotter", "native", IMAGE, "kept")
        assert created.returncode == 0, created.stderr
        store = StateStore(node.state_dir)
        for sandbox_id in ("kept", "ghost"):
            store.save(
                SandboxRecord(
                    namespace="default",
                    id=sandbox_id,
                    ttrpc_address=f"{containerd.socket}.ttrpc",  # as containerd sets it
                    config_path=str(tmp_path / "runtime.toml"),
                )
            )
        log = tmp_path / "daemon.log"
        with open(log, "wb") as out:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "agent.daemon"],
                cwd=REPO, env={**node.env, "CONTRAST_GC_SECONDS": "1"},
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            wait_until_gone(store.path("default", "ghost"), log)
            text = log.read_text()
            assert "sandbox default/ghost: containerd (" in text
            assert "no such container for 2 sweeps in a row: it forgot the pod" in text
            time.sleep(3)  # more sweeps: containerd has "kept"
            assert store.path("default", "kept").exists()
            assert "sandbox default/kept: containerd" not in log.read_text()
            removed = ctr(containerd, "containers", "rm", "kept")
            assert removed.returncode == 0, removed.stderr
            wait_until_gone(store.path("default", "kept"), log)
            assert daemon.poll() is None
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
