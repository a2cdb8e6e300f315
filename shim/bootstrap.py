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

from dataclasses import dataclass

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from api.containerd.runtime.bootstrap.v1 import bootstrap_pb2
from api.containerd.types import introspection_pb2

RUNTIME_NAME = "io.containerd.contrast-cc.v2"
SHIM_VERSION = "0.1.0"
OPTIONS_TYPE = "runtimeoptions.v1.Options"
# The task API our address serves (containerd.task.v2.Task; v3 would promise the
# streaming API as well, which we do not serve).
TASK_API_VERSION = 2


class BootstrapError(Exception):
    """stdin is neither containerd's bootstrap parameters nor runtime options."""


@dataclass(frozen=True)
class StartInput:
    """What ``start`` learned from stdin."""

    options: any_pb2.Any | None
    # Only with the bootstrap protocol (empty otherwise: take flags and environment).
    bootstrap: bool = False
    ttrpc_address: str = ""
    grpc_address: str = ""


def _as_params(data: bytes, task_id: str, namespace: str) -> bootstrap_pb2.BootstrapParams | None:
    params = bootstrap_pb2.BootstrapParams()
    try:
        params.ParseFromString(data)
    except DecodeError:
        return None
    if params.instance_id != task_id or params.namespace != namespace:
        return None
    return params


def _runtime_options(params: bootstrap_pb2.BootstrapParams) -> any_pb2.Any | None:
    """The extension carrying the runtime options: ``runtimeoptions.v1.Options`` when
    there is one, else the first extension (the daemon then names its type)."""
    values = [ext.value for ext in params.extensions if ext.HasField("value")]
    for value in values:
        if value.type_url.rsplit("/", 1)[-1] == OPTIONS_TYPE:
            return value
    return values[0] if values else None


def read_start_input(data: bytes, task_id: str, namespace: str) -> StartInput:
    """Decode ``start``'s stdin; raises BootstrapError when it is neither form."""
    if not data:
        return StartInput(None)
    params = _as_params(data, task_id, namespace)
    if params is not None:
        return StartInput(
            _runtime_options(params),
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
    return StartInput(options)


def start_answer(address: str, start_input: StartInput) -> bytes:
    """What ``start`` prints: a ``BootstrapResult`` to a containerd that sent bootstrap
    parameters, else the plain address (which containerd 1.6 - 2.2 expect)."""
    if not start_input.bootstrap:
        return address.encode()
    result = bootstrap_pb2.BootstrapResult(
        version=TASK_API_VERSION, address=address, protocol="ttrpc"
    )
    return result.SerializeToString()


def runtime_info(data: bytes) -> bytes:
    """What ``-info`` prints: a ``containerd.types.RuntimeInfo`` with our name and version
    and the options from stdin (an Any, possibly nothing); raises BootstrapError when
    stdin is not an Any."""
    info = introspection_pb2.RuntimeInfo(
        name=RUNTIME_NAME, version=introspection_pb2.RuntimeVersion(version=SHIM_VERSION)
    )
    if data:
        try:
            info.options.ParseFromString(data)
        except DecodeError as err:
            raise BootstrapError(f"the options on stdin are not a protobuf Any: {err}") from err
    return info.SerializeToString()
