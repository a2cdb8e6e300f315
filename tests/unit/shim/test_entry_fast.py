"""The entry's short way: its settings agree with agent.daemon.settings; ``start``
registers the task and prints the relay's address, ``delete`` prints the daemon's
DeleteResponse, without importing the protobuf runtime, argparse, dataclasses or
asyncio (what made the entry slow, bench/pod_shim.py)."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

import ttrpc
from agent.daemon import settings
from api.containerd.task.v2 import shim_pb2
from api.node import relay_pb2
from api.node import shim_pb2 as node_pb2
from api.runtimeoptions.v1 import api_pb2 as runtimeoptions
from shim import main
from tests.unit.shim.test_bootstrap import options

VALUES = {
    "CONTRAST_RUN_DIR": ["/run/c", "/run/c/", "run", "//run", "/a/./b", "/a/../b", "/"],
    "CONTRAST_STATE_DIR": ["/var/s", "s", "/s/."],
    "CONTRAST_BACKEND": ["pod-vm", "local-agent", "qemu", ""],
    "CONTRAST_AGENT_SOCKET": ["", "/a.sock"],
    "CONTRAST_DAEMON_SUPERVISED": ["", "0", "1", "yes"],
    "CONTRAST_RELAY_EXIT_IDLE": ["1", "2"],
    "CONTRAST_LOG_MAX_BYTES": ["", "0", "10", "x", "\u0661"],
    "CONTRAST_LOG_BACKUPS": ["3", "-1"],
    "CONTRAST_GC_SECONDS": ["0", "1.5", "60"],
}


class Recording(Mapping[str, str]):
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self.env[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.env)

    def __len__(self) -> int:
        return len(self.env)

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.read.add(key)
        return self.env.get(key, default)


def envs() -> Iterator[dict[str, str]]:
    """Each variable's values with the others unset, and pairs of variables."""
    yield {}
    items = [(name, value) for name, values in VALUES.items() for value in values]
    for (one, first), (other, second) in itertools.combinations(items, 2):
        yield {one: first} if one == other else {one: first, other: second}


def test_entry_settings_are_the_daemons_or_its_error() -> None:
    plain = 0
    for env in envs():
        try:
            expected: object = main.EntrySettings.of(settings.from_env(env))
        except settings.SettingsError as err:
            expected = f"error: {err}"
        try:
            got = main.entry_settings(env)
            answer: object = got
        except main.ShimError as err:
            answer = f"error: {err}"
        if isinstance(answer, main.EntrySettings) and isinstance(expected, main.EntrySettings):
            assert (answer.run_dir, answer.supervised) == (expected.run_dir, expected.supervised)
        else:
            assert answer == expected, env
        plain += main._plainly_valid(env)
    assert plain > 50


def test_the_short_way_names_what_the_daemon_names() -> None:
    assert str(settings.from_env({}).run_dir) == main.DEFAULT_RUN_DIR
    assert (main.SOCKET, main.RELAY_SOCKET, main.LOG_FILE, main.RELAY_LOG_FILE) == (
        settings.SOCKET, settings.RELAY_SOCKET, settings.LOG_FILE, settings.RELAY_LOG_FILE
    )  # fmt: skip
    config = settings.from_env({"CONTRAST_RUN_DIR": "/r"})
    entry = main.EntrySettings.of(config)
    assert (entry.socket, entry.relay_socket) == (str(config.socket), str(config.relay_socket))


def test_the_short_way_checks_every_variable_the_daemon_reads() -> None:
    """A variable added to agent.daemon.settings must be checked by the short way too."""
    daemon, entry = Recording({}), Recording({})
    settings.from_env(daemon)
    main._plainly_valid(entry)
    assert daemon.read <= entry.read | {"CONTRAST_AGENT_SOCKET"}, daemon.read - entry.read


HEAVY = ("google", "api", "argparse", "dataclasses", "asyncio", "typing", "socket", "agent")
START = """
import sys
before = set(sys.modules)
from shim import main
code = main.main(sys.argv[2:])
sys.stdout.flush()
new = {name.split(".")[0] for name in set(sys.modules) - before}
print("\\nimported:", " ".join(sorted(new & set(sys.argv[1].split(",")))), file=sys.stderr)
sys.exit(code)
"""


DELETED = shim_pb2.DeleteResponse(pid=42, exit_status=137, exited_at=Timestamp(seconds=9, nanos=1))


class Node:
    def __init__(self) -> None:
        self.registered: list[node_pb2.RegisterRequest] = []
        self.cleaned: list[node_pb2.CleanupRequest] = []

    async def Cleanup(
        self, request: node_pb2.CleanupRequest, ctx: ttrpc.CallContext
    ) -> shim_pb2.DeleteResponse:
        self.cleaned.append(request)
        return DELETED

    async def Register(
        self, request: node_pb2.RegisterRequest, ctx: ttrpc.CallContext
    ) -> node_pb2.RegisterResponse:
        self.registered.append(request)
        if request.id == "refused":
            raise ttrpc.InvalidArgument("task refused: no containerd ttrpc address")
        return node_pb2.RegisterResponse(address="unix:///daemon-ns/x.sock")

    async def Listen(
        self, request: relay_pb2.ListenRequest, ctx: ttrpc.CallContext
    ) -> relay_pb2.ListenResponse:
        return relay_pb2.ListenResponse(address=f"unix:///relay/{request.namespace}.sock")


async def _run_entry(
    run_dir: Path, bundle: Path, stdin: bytes, *args: str
) -> tuple[int, bytes, str]:
    env = {**os.environ, "CONTRAST_RUN_DIR": str(run_dir), "TTRPC_ADDRESS": "/c.ttrpc"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", START, ",".join(HEAVY), "-namespace", "k8s.io",
        "-address", "/c.sock", "-publish-binary", "/usr/bin/containerd", *args,
        cwd=bundle, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, out, err.decode()


async def _run_start(run_dir: Path, bundle: Path, task: str, stdin: bytes) -> tuple[int, str, str]:
    code, out, err = await _run_entry(run_dir, bundle, stdin, "-id", task, "start")
    return code, out.decode(), err


@pytest.mark.allow_programs("python", "python3")
async def test_start_and_delete_take_the_short_way(tmp_path: Path) -> None:
    node = Node()
    run_dir = tmp_path / "run"
    bundle = tmp_path / "bundle"
    run_dir.mkdir()
    bundle.mkdir()
    daemon, relay = ttrpc.Server(), ttrpc.Server()
    daemon.register(node_pb2.DESCRIPTOR.services_by_name["Shim"], node)
    relay.register(relay_pb2.DESCRIPTOR.services_by_name["Relay"], node)
    await daemon.serve_unix(str(run_dir / "daemon.sock"))
    await relay.serve_unix(str(run_dir / "relay.sock"))
    given = options("/etc/x.toml")
    try:
        code, out, err = await _run_start(run_dir, bundle, "c1", given.SerializeToString())
        refused = await _run_start(run_dir, bundle, "refused", b"")
        deleted = await _run_entry(run_dir, bundle, b"", "-id", "c1", "-bundle", "/b", "delete")
    finally:
        await daemon.close()
        await relay.close()
    assert code == 0, err
    assert out == "unix:///relay/k8s.io.sock"
    assert (bundle / "address").read_text() == out
    assert err.strip() == "imported:"  # none of HEAVY
    first = node.registered[0]
    assert (first.namespace, first.id, first.bundle) == ("k8s.io", "c1", str(bundle))
    assert (first.ttrpc_address, first.grpc_address) == ("/c.ttrpc", "/c.sock")
    assert first.options == given
    config = runtimeoptions.Options.FromString(first.options.value)
    assert config.config_path == "/etc/x.toml"
    assert refused[0] == 1
    assert refused[2].startswith(
        "containerd-shim-contrast-cc-v2 start: the node daemon refused task refused: "
        "task refused: no containerd ttrpc address\n"
    )
    assert not node.registered[1].HasField("options")
    assert deleted == (0, DELETED.SerializeToString(), "\nimported: \n")
    assert [(c.namespace, c.id, c.bundle) for c in node.cleaned] == [("k8s.io", "c1", "/b")]
