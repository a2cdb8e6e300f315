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

``start`` is on every pod's path, twice, so this module imports nothing at its top but
what ``start`` needs, and ``start`` needs neither protobuf nor argparse, dataclasses or
pathlib (each costs the fresh process more than its calls): the usual command line is
read by :mod:`shim.flags`, the environment by :func:`entry_settings`, the messages are
:mod:`shim.messages`' hand encodings; so does ``delete`` while a daemon answers.
Anything unusual (a flag argparse would refuse, a setting that is not plainly valid,
stdin or a reply the hand decoders leave alone) goes the long way, through argparse,
:mod:`agent.daemon.settings` and the generated code, so its answer and error message
are theirs. ``bench/pod_shim.py`` measures the entry.
"""

from __future__ import annotations

import os
import sys
import time

from shim import bootstrap, flags, messages, wire

# typing costs the entry's start-up a few ms; type checkers read the name alone.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping

    from agent.daemon import settings as daemon_settings

NODE_SERVICE = "contrast.node.v1.Shim"  # api/node/shim.proto
RELAY_SERVICE = "contrast.node.v1.Relay"  # api/node/relay.proto
# Only waited when no daemon answers. The daemon reattaches its pods' VMs before serving,
# which takes a while on a loaded node; a start that gives up early would fail the pod.
DAEMON_START_SECONDS = 60.0
CALL_SECONDS = 30.0
# As agent.daemon.settings names them (tests/unit/shim/test_entry_fast.py compares).
DEFAULT_RUN_DIR = "/run/contrast"
SOCKET = "daemon.sock"
RELAY_SOCKET = "relay.sock"
LOG_FILE = "daemon.log"
RELAY_LOG_FILE = "relay.log"


class ShimError(Exception):
    """The shim entry could not do what containerd asked; the message says why."""


class EntrySettings:
    """What the entry needs of :class:`agent.daemon.settings.Settings`."""

    __slots__ = ("run_dir", "supervised")

    def __init__(self, run_dir: str, supervised: bool) -> None:
        self.run_dir = run_dir
        self.supervised = supervised

    @property
    def socket(self) -> str:
        return f"{self.run_dir}/{SOCKET}"

    @property
    def relay_socket(self) -> str:
        return f"{self.run_dir}/{RELAY_SOCKET}"

    @classmethod
    def of(cls, config: daemon_settings.Settings) -> EntrySettings:
        return cls(str(config.run_dir), config.supervised)


def _plain_path(text: str) -> bool:
    """An absolute path that pathlib keeps as written."""
    return (
        text.startswith("/")
        and text != "/"
        and not text.endswith(("/", "/."))
        and "//" not in text
        and "/./" not in text
    )


def _plain_number(text: str, least: int) -> bool:
    return text == "" or (text.isascii() and text.isdigit() and int(text) >= least)


def _plainly_valid(env: Mapping[str, str]) -> bool:
    """True when :func:`agent.daemon.settings.from_env` accepts ``env`` and keeps its
    directories as written (checked by tests/unit/shim/test_entry_fast.py); False
    leaves the decision to it."""
    backend = env.get("CONTRAST_BACKEND", "pod-vm")
    return (
        all(
            _plain_path(env[name])
            for name in ("CONTRAST_RUN_DIR", "CONTRAST_STATE_DIR")
            if name in env
        )
        and (
            backend == "pod-vm"
            or (backend == "local-agent" and bool(env.get("CONTRAST_AGENT_SOCKET")))
        )
        and all(
            env.get(name, "") in ("", "0", "1")
            for name in ("CONTRAST_DAEMON_SUPERVISED", "CONTRAST_RELAY_EXIT_IDLE")
        )
        and _plain_number(env.get("CONTRAST_LOG_MAX_BYTES", ""), 1)
        and _plain_number(env.get("CONTRAST_LOG_BACKUPS", ""), 1)
        and _plain_number(env.get("CONTRAST_GC_SECONDS", ""), 0)
    )


def entry_settings(env: Mapping[str, str] = os.environ) -> EntrySettings:
    """The daemon's run directory and supervision from ``env``; raises ShimError with
    agent.daemon.settings' message for a bad environment."""
    if _plainly_valid(env):
        return EntrySettings(
            env.get("CONTRAST_RUN_DIR", DEFAULT_RUN_DIR),
            env.get("CONTRAST_DAEMON_SUPERVISED", "") == "1",
        )
    from agent.daemon import settings as daemon_settings

    try:
        return EntrySettings.of(daemon_settings.from_env(env))
    except daemon_settings.SettingsError as err:
        raise ShimError(str(err)) from err


def parse_args(argv: list[str]) -> argparse.Namespace:
    """containerd's Go-style flags (``-namespace x``, ``-namespace=x``, ``--namespace x``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="containerd-shim-contrast-cc-v2", allow_abbrev=False)
    for flag in flags.VALUES:
        parser.add_argument(f"-{flag}", f"--{flag}", default="")
    for flag, dest in flags.SWITCHES.items():
        parser.add_argument(f"-{flag}", f"--{dest}", action="store_true")
    parser.add_argument("action", nargs="?", choices=list(flags.ACTIONS))
    return parser.parse_args(argv)


def _connect(socket: str) -> wire.Connection | None:
    try:
        return wire.Connection(socket, CALL_SECONDS)
    except wire.Unreachable:
        return None


def ensure_running(
    socket: str, module: str, log_name: str, run_dir: str, what: str, *, spawn: bool = True
) -> wire.Connection:
    """A connection to ``socket``, starting ``python -m module`` detached first when
    nobody answers there (only waiting for it when ``spawn`` is false); raises ShimError."""
    client = _connect(socket)
    if client is not None:
        return client
    if spawn:
        from pathlib import Path  # only when nobody answers, as the daemon's modules

        from agent.daemon.lifecycle import spawn_detached
        from agent.daemon.settings import SettingsError

        try:
            spawn_detached(module, Path(run_dir), log_name)
        except SettingsError as err:  # the log limits
            raise ShimError(str(err)) from err
    deadline = time.monotonic() + DAEMON_START_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.05)
        client = _connect(socket)
        if client is not None:
            return client
    log = f"{run_dir}/{log_name}"
    try:
        with open(log, errors="replace") as file:
            tail = file.read()[-2000:]
    except FileNotFoundError:
        tail = ""
    raise ShimError(
        f"the {what} did not come up on {socket} within "
        f"{DAEMON_START_SECONDS:.0f} s; its log {log} ends: {tail.strip()}"
    )


def ensure_daemon(config: EntrySettings) -> wire.Connection:
    """A connection to the daemon, starting it first when nobody answers; raises ShimError.

    A supervised daemon (``CONTRAST_DAEMON_SUPERVISED=1``: systemd or the kubelet restarts
    it) is only waited for: a second daemon started here would race its supervisor's."""
    return ensure_running(
        config.socket, "agent.daemon", LOG_FILE, config.run_dir, "node daemon",
        spawn=not config.supervised,
    )  # fmt: skip


def ensure_relay(config: EntrySettings) -> wire.Connection:
    """A connection to the relay, starting it first when nobody answers; raises ShimError."""
    return ensure_running(
        config.relay_socket, "agent.relay", RELAY_LOG_FILE, config.run_dir, "node relay"
    )


def _reply_address(payload: bytes, generated: str, what: str) -> str:
    """``address`` of a Register/Listen reply; the generated ``api.node.<generated>``
    decides what the hand decoder leaves (raises WireError as wire.Connection.call)."""
    try:
        return messages.address_of(payload)
    except messages.Unusual:
        pass
    from google.protobuf.message import DecodeError

    from api.node import relay_pb2, shim_pb2

    try:
        if generated == "ListenResponse":
            return relay_pb2.ListenResponse.FromString(payload).address
        return shim_pb2.RegisterResponse.FromString(payload).address
    except DecodeError as err:
        raise wire.WireError(f"{what}: the reply does not decode: {err}") from err


def relay_listen(config: EntrySettings, namespace: str) -> str:
    """The relay's address for ``namespace`` (containerd dials it); raises ShimError."""
    with ensure_relay(config) as client:
        try:
            payload = client.call_raw(
                RELAY_SERVICE, "Listen", messages.listen_request(namespace), CALL_SECONDS
            )
            return _reply_address(
                payload, "ListenResponse", f"{RELAY_SERVICE}/Listen on {config.relay_socket}"
            )
        except wire.WireError as err:
            raise ShimError(f"the node relay cannot serve namespace {namespace}: {err}") from err


def namespace_of(args: flags.Args | argparse.Namespace) -> str:
    return str(args.namespace or os.environ.get("NAMESPACE", ""))


def start(args: flags.Args | argparse.Namespace, given: bootstrap.StartInput) -> str:
    """Register the task with the (possibly just started) daemon; its address."""
    config = entry_settings()
    namespace = namespace_of(args)
    with ensure_daemon(config) as client:
        request = messages.register_request(
            namespace,
            args.id,
            os.getcwd(),  # noqa: PTH109 (pathlib costs the entry's start-up)
            given.ttrpc_address or os.environ.get("TTRPC_ADDRESS", ""),
            given.grpc_address or args.address,
            given.options,
        )
        try:
            payload = client.call_raw(NODE_SERVICE, "Register", request, CALL_SECONDS)
            what = f"{NODE_SERVICE}/Register on {config.socket}"
            _reply_address(payload, "RegisterResponse", what)
        except wire.CallStatus as err:
            raise ShimError(f"the node daemon refused task {args.id}: {err.message}") from err
        except wire.WireError as err:
            raise ShimError(f"registering task {args.id} with the node daemon: {err}") from err
    # The daemon serves the namespace on reply.address; containerd dials the relay, which
    # holds its connections while the daemon restarts.
    address = relay_listen(config, namespace)
    with open("address", "w") as file:
        file.write(address)
    return address


def delete_locally(config: daemon_settings.Settings, namespace: str, task_id: str) -> None:
    """Release a task from the persisted state while no daemon runs; raises ShimError."""
    # Only on this path: the state files, QEMU/QMP modules.
    from agent.sandbox.errors import SandboxError
    from agent.sandbox.state import StateStore
    from agent.sandbox.vm_process import kill_orphan

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


def delete(args: flags.Args | argparse.Namespace) -> bytes:
    """Release the task; the ``DeleteResponse`` to print. Raises ShimError."""
    config = entry_settings()
    namespace = args.namespace or os.environ.get("NAMESPACE", "")
    client = _connect(config.socket)
    if client is None:
        return _delete_without_daemon(namespace, args.id)
    what = f"{NODE_SERVICE}/Cleanup on {config.socket}"
    with client:
        request = messages.cleanup_request(namespace, args.id, args.bundle or os.getcwd())  # noqa: PTH109
        try:
            payload = client.call_raw(NODE_SERVICE, "Cleanup", request, CALL_SECONDS)
            return _delete_response(payload, what)
        except wire.WireError as err:
            raise ShimError(f"the node daemon could not release task {args.id}: {err}") from err


def _delete_response(payload: bytes, what: str) -> bytes:
    """The daemon's DeleteResponse as the generated class re-serializes it; raises WireError."""
    try:
        return messages.canonical_delete_response(payload)
    except messages.Unusual:
        pass
    from google.protobuf.message import DecodeError

    from api.containerd.task.v2 import shim_pb2

    try:
        return shim_pb2.DeleteResponse.FromString(payload).SerializeToString()
    except DecodeError as err:
        raise wire.WireError(f"{what}: the reply does not decode: {err}") from err


def _delete_without_daemon(namespace: str, task_id: str) -> bytes:
    import signal

    from agent.daemon import settings as daemon_settings
    from agent.events.envelope import timestamp
    from api.containerd.task.v2 import shim_pb2

    try:
        config = daemon_settings.from_env()
    except daemon_settings.SettingsError as err:
        raise ShimError(str(err)) from err
    delete_locally(config, namespace, task_id)
    response = shim_pb2.DeleteResponse(
        exit_status=128 + signal.SIGKILL, exited_at=timestamp(time.time_ns())
    )
    return response.SerializeToString()


def _stdin() -> bytes:
    return b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args: flags.Args | argparse.Namespace | None = flags.parse(argv)
    if args is None:  # argparse's answer, and its usage errors
        args = parse_args(argv)
    if args.version:
        print(f"containerd-shim-contrast-cc-v2 (contrast-node {bootstrap.SHIM_VERSION})")
        return 0
    if args.info:  # containerd 2.x asks before it starts a task
        try:
            sys.stdout.buffer.write(bootstrap.runtime_info(_stdin()))
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
            given = bootstrap.read_start_input(_stdin(), args.id, namespace_of(args))
            address = start(args, given)
            sys.stdout.buffer.write(bootstrap.start_answer(address, given))
            sys.stdout.buffer.flush()
        else:
            sys.stdout.buffer.write(delete(args))
            sys.stdout.buffer.flush()
    except (ShimError, bootstrap.BootstrapError, OSError) as err:
        print(f"containerd-shim-contrast-cc-v2 {args.action}: {err}", file=sys.stderr)
        return 1
    return 0
