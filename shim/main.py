"""``containerd-shim-contrast-cc-v2``: the executable containerd runs for every task.

containerd 1.6 runs, in the task's bundle directory::

    <shim> -namespace NS -address CONTAINERD_SOCK -publish-binary CONTAINERD [-id ID] [-debug] start
    <shim> -namespace NS -address ... -publish-binary ... -id ID -bundle BUNDLE delete

with ``TTRPC_ADDRESS`` (containerd's ttrpc socket, for events) in the environment
and, for ``start``, the runtime options (a protobuf ``Any``) on stdin. containerd 2.3+
writes its bootstrap parameters there instead (the options among their extensions)
and gets a ``BootstrapResult`` back (:mod:`shim.bootstrap`).

- ``start`` makes sure the node daemon runs (starting it when it does not),
  registers the task with it, makes sure the node relay (:mod:`agent.relay`) runs and
  listens for the task's namespace, writes the relay's address into the bundle's
  ``address`` file (containerd reads it back when it restarts) and prints the
  address as ``unix:///run/contrast/ns/<namespace>.sock``. The prefix matters: containerd
  1.6's shim dialer takes an address *without* ``unix://`` for an abstract socket
  (it dials ``"\\x00" + address``); with the prefix it dials the filesystem path,
  and so do later containerd releases.
- ``delete`` asks the daemon to release the task and prints its
  ``containerd.task.v2.DeleteResponse`` (protobuf) on stdout; with the daemon gone it
  releases the task from the persisted state itself.

Exit codes: 0 done, 1 failed (one line on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from agent.daemon import settings as daemon_settings
from api.containerd.task.v2 import shim_pb2
from api.node import relay_pb2
from api.node import shim_pb2 as node_pb2
from shim import bootstrap, wire

NODE_SERVICE = node_pb2.DESCRIPTOR.services_by_name["Shim"]
RELAY_SERVICE = relay_pb2.DESCRIPTOR.services_by_name["Relay"]
# Only waited when no daemon answers. The daemon reattaches its pods' VMs before serving,
# which takes a while on a loaded node; a start that gives up early would fail the pod.
DAEMON_START_SECONDS = 60.0
CALL_SECONDS = 30.0


class ShimError(Exception):
    """The shim entry could not do what containerd asked; the message says why."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    """containerd's Go-style flags (``-namespace x``, ``-namespace=x``, ``--namespace x``)."""
    parser = argparse.ArgumentParser(prog="containerd-shim-contrast-cc-v2", allow_abbrev=False)
    for flag in ("namespace", "address", "publish-binary", "id", "bundle", "socket"):
        parser.add_argument(f"-{flag}", f"--{flag}", default="")
    parser.add_argument("-debug", "--debug", action="store_true")
    parser.add_argument("-v", "--version", action="store_true")
    parser.add_argument("-info", "--info", action="store_true")
    parser.add_argument("action", nargs="?", choices=["start", "delete"])
    return parser.parse_args(argv)


def _connect(socket: Path) -> wire.Connection | None:
    try:
        return wire.Connection(socket, CALL_SECONDS)
    except wire.Unreachable:
        return None


def ensure_running(
    socket: Path, module: str, log_name: str, run_dir: Path, what: str, *, spawn: bool = True
) -> wire.Connection:
    """A connection to ``socket``, starting ``python -m module`` detached first when
    nobody answers there (only waiting for it when ``spawn`` is false); raises ShimError."""
    client = _connect(socket)
    if client is not None:
        return client
    if spawn:
        from agent.daemon.lifecycle import spawn_detached  # only when nobody answers

        spawn_detached(module, run_dir, log_name)
    deadline = time.monotonic() + DAEMON_START_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.05)
        client = _connect(socket)
        if client is not None:
            return client
    log = run_dir / log_name
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise ShimError(
        f"the {what} did not come up on {socket} within "
        f"{DAEMON_START_SECONDS:.0f} s; its log {log} ends: {tail.strip()}"
    )


def ensure_daemon(config: daemon_settings.Settings) -> wire.Connection:
    """A connection to the daemon, starting it first when nobody answers; raises ShimError.

    A supervised daemon (``CONTRAST_DAEMON_SUPERVISED=1``: systemd or the kubelet restarts
    it) is only waited for: a second daemon started here would race its supervisor's."""
    return ensure_running(
        config.socket,
        "agent.daemon",
        daemon_settings.LOG_FILE,
        config.run_dir,
        "node daemon",
        spawn=not config.supervised,
    )


def ensure_relay(config: daemon_settings.Settings) -> wire.Connection:
    """A connection to the relay, starting it first when nobody answers; raises ShimError."""
    return ensure_running(
        config.relay_socket,
        "agent.relay",
        daemon_settings.RELAY_LOG_FILE,
        config.run_dir,
        "node relay",
    )


def relay_listen(config: daemon_settings.Settings, namespace: str) -> str:
    """The relay's address for ``namespace`` (containerd dials it); raises ShimError."""
    with ensure_relay(config) as client:
        try:
            reply = client.call(
                RELAY_SERVICE.full_name,
                "Listen",
                relay_pb2.ListenRequest(namespace=namespace),
                relay_pb2.ListenResponse,
                CALL_SECONDS,
            )
        except wire.WireError as err:
            raise ShimError(f"the node relay cannot serve namespace {namespace}: {err}") from err
    return reply.address


def namespace_of(args: argparse.Namespace) -> str:
    return str(args.namespace or os.environ.get("NAMESPACE", ""))


def start(args: argparse.Namespace, given: bootstrap.StartInput) -> str:
    """Register the task with the (possibly just started) daemon; its address."""
    config = daemon_settings.from_env()
    namespace = namespace_of(args)
    with ensure_daemon(config) as client:
        request = node_pb2.RegisterRequest(
            namespace=namespace,
            id=args.id,
            bundle=str(Path.cwd()),
            ttrpc_address=given.ttrpc_address or os.environ.get("TTRPC_ADDRESS", ""),
            grpc_address=given.grpc_address or args.address,
            options=given.options,
        )
        try:
            client.call(
                NODE_SERVICE.full_name,
                "Register",
                request,
                node_pb2.RegisterResponse,
                CALL_SECONDS,
            )
        except wire.CallStatus as err:
            raise ShimError(f"the node daemon refused task {args.id}: {err.message}") from err
        except wire.WireError as err:
            raise ShimError(f"registering task {args.id} with the node daemon: {err}") from err
    # The daemon serves the namespace on reply.address; containerd dials the relay, which
    # holds its connections while the daemon restarts.
    address = relay_listen(config, namespace)
    Path("address").write_text(address)
    return address


def delete_locally(config: daemon_settings.Settings, namespace: str, task_id: str) -> None:
    """Release a task from the persisted state while no daemon runs; raises ShimError."""
    # Only on this path: the state files, QEMU/QMP modules.
    from agent.sandbox.errors import SandboxError
    from agent.sandbox.state import StateStore
    from agent.sandbox.vm_backend import kill_orphan

    store = StateStore(config.state_dir)
    records, _ = store.load_all()
    try:
        for record in records:
            container = record.container(task_id)
            if record.namespace != namespace or container is None:
                continue
            if container.is_sandbox:
                if record.vm is not None:
                    kill_orphan(record.vm)
                store.remove(record.namespace, record.id)
            else:
                store.save(record.without_container(task_id))
    except SandboxError as err:
        raise ShimError(f"releasing task {task_id} without the daemon: {err}") from err


def delete(args: argparse.Namespace) -> shim_pb2.DeleteResponse:
    config = daemon_settings.from_env()
    namespace = args.namespace or os.environ.get("NAMESPACE", "")
    client = _connect(config.socket)
    if client is None:
        from agent.events.envelope import timestamp

        delete_locally(config, namespace, args.id)
        return shim_pb2.DeleteResponse(
            exit_status=128 + signal.SIGKILL, exited_at=timestamp(time.time_ns())
        )
    with client:
        request = node_pb2.CleanupRequest(
            namespace=namespace, id=args.id, bundle=args.bundle or str(Path.cwd())
        )
        try:
            return client.call(
                NODE_SERVICE.full_name, "Cleanup", request, shim_pb2.DeleteResponse, CALL_SECONDS
            )
        except wire.WireError as err:
            raise ShimError(f"the node daemon could not release task {args.id}: {err}") from err


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.version:
        print(f"containerd-shim-contrast-cc-v2 (contrast-node {bootstrap.SHIM_VERSION})")
        return 0
    if args.info:  # containerd 2.x asks before it starts a task
        stdin = b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()
        try:
            sys.stdout.buffer.write(bootstrap.runtime_info(stdin))
        except bootstrap.BootstrapError as err:
            print(f"containerd-shim-contrast-cc-v2 -info: {err}", file=sys.stderr)
            return 1
        sys.stdout.buffer.flush()
        return 0
    if args.action is None:
        print(
            "containerd-shim-contrast-cc-v2: an action is required: start or delete",
            file=sys.stderr,
        )
        return 2
    if not args.id:
        print("containerd-shim-contrast-cc-v2: -id is required", file=sys.stderr)
        return 2
    try:
        if args.action == "start":
            stdin = b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()
            given = bootstrap.read_start_input(stdin, args.id, namespace_of(args))
            address = start(args, given)
            sys.stdout.buffer.write(bootstrap.start_answer(address, given))
            sys.stdout.buffer.flush()
        else:
            response = delete(args)
            sys.stdout.buffer.write(response.SerializeToString())
            sys.stdout.buffer.flush()
    except (ShimError, bootstrap.BootstrapError, daemon_settings.SettingsError, OSError) as err:
        print(f"containerd-shim-contrast-cc-v2 {args.action}: {err}", file=sys.stderr)
        return 1
    return 0
