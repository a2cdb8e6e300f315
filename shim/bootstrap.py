"""What containerd hands ``start`` on stdin, and how ``start`` answers, per containerd release.

- containerd 1.6 - 2.2 write the runtime options (a marshalled ``Any``, possibly
  nothing) on stdin and read the shim's address from stdout as plain text (or JSON).
- containerd 2.3+ speak the bootstrap protocol
  (``api/containerd/runtime/bootstrap/v1/bootstrap.proto``): stdin carries a
  ``BootstrapParams`` whose ``extensions`` hold the runtime options, and stdout is
  parsed as a ``BootstrapResult`` first (then JSON, then plain text).

Both payloads decode as either message (an ``Any``'s type URL reads as the params'
``instance_id``, its value as ``namespace``), so stdin is taken for ``BootstrapParams``
only when those two equal the shim's ``-id`` and ``-namespace``, as containerd's own
shims decide (``pkg/shim`` ``parseBootstrapParams``). Taking the params for an Any was
the bug containerd 2.3.4 showed: ``runtime options of type 'c2'`` (``c2`` the task id).
"""

from __future__ import annotations

from shim import messages
from shim.messages import AnyMessage

RUNTIME_NAME = "io.containerd.contrast-cc.v2"
SHIM_VERSION = "0.1.0"
OPTIONS_TYPE = "runtimeoptions.v1.Options"
# The task API our address serves (containerd.task.v2.Task; v3 would promise the
# streaming API as well, which we do not serve).
TASK_API_VERSION = 2


class BootstrapError(Exception):
    """stdin is neither containerd's bootstrap parameters nor runtime options."""


class StartInput:
    """What ``start`` learned from stdin (a plain class, not a dataclass: importing
    dataclasses costs the entry more than the rest of its start-up, bench/pod_shim.py)."""

    __slots__ = ("bootstrap", "grpc_address", "options", "ttrpc_address")

    def __init__(
        self,
        options: AnyMessage | None,
        bootstrap: bool = False,
        ttrpc_address: str = "",
        grpc_address: str = "",
    ) -> None:
        self.options = options
        # Only with the bootstrap protocol (empty otherwise: take flags and environment).
        self.bootstrap = bootstrap
        self.ttrpc_address = ttrpc_address
        self.grpc_address = grpc_address

    def _key(self) -> tuple[AnyMessage | None, bool, str, str]:
        return (self.options, self.bootstrap, self.ttrpc_address, self.grpc_address)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StartInput):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        options, bootstrap, ttrpc_address, grpc_address = self._key()
        return (
            f"StartInput(options={options!r}, bootstrap={bootstrap!r}, "
            f"ttrpc_address={ttrpc_address!r}, grpc_address={grpc_address!r})"
        )


def _runtime_options(extensions: list[AnyMessage | None]) -> AnyMessage | None:
    """The extension carrying the runtime options: ``runtimeoptions.v1.Options`` when
    there is one, else the first extension (the daemon then names its type)."""
    values = [value for value in extensions if value is not None]
    for value in values:
        if value.type_url.rsplit("/", 1)[-1] == OPTIONS_TYPE:
            return value
    return values[0] if values else None


def read_start_input(data: bytes, task_id: str, namespace: str) -> StartInput:
    """Decode ``start``'s stdin; raises BootstrapError when it is neither form."""
    if not data:
        return StartInput(None)
    try:
        return _read_by_hand(data, task_id, namespace)
    except messages.Unusual:
        return _read_with_protobuf(data, task_id, namespace)


def _read_by_hand(data: bytes, task_id: str, namespace: str) -> StartInput:
    """As :func:`_read_with_protobuf` decides; raises messages.Unusual where it is not sure."""
    try:
        params = messages.BootstrapParams.parse(data)
    except messages.BadText:
        params = None  # what the protobuf runtime refuses is no BootstrapParams
    if params is not None and params.instance_id == task_id and params.namespace == namespace:
        return StartInput(
            _runtime_options(params.extensions),
            bootstrap=True,
            ttrpc_address=params.ttrpc_address,
            grpc_address=params.grpc_address,
        )
    return StartInput(AnyMessage.parse(data))


def _read_with_protobuf(data: bytes, task_id: str, namespace: str) -> StartInput:
    """The generated code's reading, for what the hand decoders leave to it."""
    from google.protobuf import any_pb2
    from google.protobuf.message import DecodeError

    from api.containerd.runtime.bootstrap.v1 import bootstrap_pb2

    def light(value: any_pb2.Any) -> AnyMessage:
        return AnyMessage(value.type_url, value.value, value.SerializeToString())

    params = bootstrap_pb2.BootstrapParams()
    try:
        params.ParseFromString(data)
    except DecodeError:
        pass
    else:
        if params.instance_id == task_id and params.namespace == namespace:
            values = [
                light(ext.value) if ext.HasField("value") else None for ext in params.extensions
            ]
            return StartInput(
                _runtime_options(values),
                bootstrap=True,
                ttrpc_address=params.containerd_ttrpc_address,
                grpc_address=params.containerd_grpc_address,
            )
    options = any_pb2.Any()
    try:
        options.ParseFromString(data)
    except DecodeError as err:
        raise BootstrapError(
            f"stdin is neither containerd's bootstrap parameters for task {task_id} in "
            f"namespace {namespace!r} nor runtime options (a protobuf Any): {err}"
        ) from err
    return StartInput(light(options))


def start_answer(address: str, start_input: StartInput) -> bytes:
    """What ``start`` prints: a ``BootstrapResult`` to a containerd that sent bootstrap
    parameters, else the plain address (which containerd 1.6 - 2.2 expect)."""
    if not start_input.bootstrap:
        return address.encode()
    return messages.bootstrap_result(TASK_API_VERSION, address, "ttrpc")


def runtime_info(data: bytes) -> bytes:
    """What ``-info`` prints: a ``containerd.types.RuntimeInfo`` with our name and version
    and the options from stdin (an Any, possibly nothing); raises BootstrapError when
    stdin is not an Any."""
    if not data:
        return messages.runtime_info(RUNTIME_NAME, SHIM_VERSION, None)
    try:
        return messages.runtime_info(RUNTIME_NAME, SHIM_VERSION, AnyMessage.parse(data))
    except messages.Unusual:
        pass
    from google.protobuf.message import DecodeError

    from api.containerd.types import introspection_pb2

    info = introspection_pb2.RuntimeInfo(
        name=RUNTIME_NAME, version=introspection_pb2.RuntimeVersion(version=SHIM_VERSION)
    )
    try:
        info.options.ParseFromString(data)
    except DecodeError as err:
        raise BootstrapError(f"the options on stdin are not a protobuf Any: {err}") from err
    return info.SerializeToString()
