"""An asyncio implementation of the ttrpc protocol (containerd/ttrpc PROTOCOL.md).

Server::

    server = ttrpc.Server()
    server.register(task_pb2.DESCRIPTOR.services_by_name["Task"], TaskService())
    await server.serve_unix("/run/contrast/shim.sock")
    ...
    await server.close()

Client::

    client = await ttrpc.Client.connect_unix("/run/contrast/shim.sock")
    reply = await client.call("containerd.task.v2.Task", "Connect", request, ConnectResponse)
    stub = ttrpc.ServiceStub(client, task_pb2.DESCRIPTOR.services_by_name["Task"])
    reply = await stub.Connect(request)
"""

from ttrpc.client import Client, ClientConnection
from ttrpc.connection import ServerConnection
from ttrpc.context import CallContext, Metadata, MetadataArg
from ttrpc.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    Code,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    StatusError,
    TransportError,
    TtrpcError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
    status_error,
)
from ttrpc.framing import MAX_MESSAGE_LENGTH
from ttrpc.server import Server
from ttrpc.service import ServiceStub
from ttrpc.transport import PeerCheck, PeerCredentials, same_uid

__all__ = [
    "MAX_MESSAGE_LENGTH",
    "Aborted",
    "AlreadyExists",
    "CallContext",
    "Cancelled",
    "Client",
    "ClientConnection",
    "Code",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "Metadata",
    "MetadataArg",
    "NotFound",
    "OutOfRange",
    "PeerCheck",
    "PeerCredentials",
    "PermissionDenied",
    "ResourceExhausted",
    "Server",
    "ServerConnection",
    "ServiceStub",
    "StatusError",
    "TransportError",
    "TtrpcError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "same_uid",
    "status_error",
]
