"""The guest agent's request handling on arbitrary well-typed requests, built from the
proto descriptors of every grpc.AgentService method, sent over a real ttrpc connection.

Every request goes through the policy input conversion and a Rego evaluation; those
the policy allows (the methods below that touch nothing outside the agent when it
has no containers) go on to their handler. Every outcome is a response or a ttrpc
status the agent chose (never UNKNOWN or INTERNAL, which a stray exception becomes),
nothing logs a traceback, and the agent answers Health afterwards.

Not allowed through to a handler here: those that run programs, change the host's
network or write outside a temporary directory (CreateSandbox, CreateContainer,
ExecProcess, CopyFile, the network calls, ...), and GetOOMEvent (waits for an OOM).
"""

from __future__ import annotations

import json
import socket
import tempfile
from pathlib import Path
from typing import Any

from google.protobuf.message import Message
from hypothesis import event, given
from hypothesis import strategies as st

import ttrpc
from agent.transport.client import AgentClient
from guest.agent import policyinput
from guest.agent.policy import Policy
from guest.agent.server import AGENT_SERVICE, AgentConfig, build_agent, build_server
from tests.unit.fuzz.protos import messages
from tests.unit.fuzz.settings import fuzz, no_tracebacks_logged, run
from tests.unit.guestagent.test_policy import POLICY
from ttrpc import Client, Code

HANDLED = [
    "StartContainer", "RemoveContainer", "SignalProcess", "WaitProcess", "ListProcesses",
    "UpdateContainer", "StatsContainer", "WriteStdin", "ReadStdout", "ReadStderr",
    "CloseStdin", "TtyWinResize", "PauseContainer", "ResumeContainer", "GetGuestDetails",
    "SetPolicy",
]  # fmt: skip
METHODS = {m.name: m for m in AGENT_SERVICE.methods}
# A Kata-style policy (reads deep into input) plus the handled methods allowed.
FUZZ_POLICY = (
    POLICY.replace("default SetPolicyRequest := true\n", "").replace(
        "default StartContainerRequest := true\n", ""
    )
    + "\n".join(f"{METHODS[name].input_type.name} := true" for name in HANDLED)
    + "\n"
)
CHOSEN = {
    Code.OK, Code.PERMISSION_DENIED, Code.NOT_FOUND, Code.INVALID_ARGUMENT,
    Code.FAILED_PRECONDITION, Code.ALREADY_EXISTS, Code.UNIMPLEMENTED, Code.OUT_OF_RANGE,
}  # fmt: skip


def requests() -> st.SearchStrategy[tuple[str, Message]]:
    return st.sampled_from(sorted(METHODS)).flatmap(
        lambda name: st.tuples(st.just(name), messages(METHODS[name].input_type))
    )


async def call(name: str, request: Message, folder: Path) -> None:
    config = AgentConfig(run_dir=folder / "run", policy_path=folder / "absent.rego")
    server = build_server(build_agent(config, agent_policy=Policy(FUZZ_POLICY)))
    ours, theirs = socket.socketpair()
    await server.serve_fd(theirs.detach())
    client = AgentClient(await Client.from_fd(ours.detach()))
    stub: Any = client.agent
    try:
        await getattr(stub, name)(request, timeout=60)
        code = Code.OK
    except ttrpc.StatusError as err:
        code = err.code
    event(f"{code.name}")
    assert code in CHOSEN, (name, code)
    assert await client.check()
    await client.close()
    await server.close()


@fuzz
@given(requests())
def test_every_request_is_answered_with_a_chosen_status(case: tuple[str, Message]) -> None:
    name, request = case
    with tempfile.TemporaryDirectory() as tmp, no_tracebacks_logged():
        run(lambda: call(name, request, Path(tmp)))


@fuzz
@given(requests())
def test_every_request_is_a_json_policy_input(case: tuple[str, Message]) -> None:
    _, request = case
    document = policyinput.to_input(request)
    assert json.loads(json.dumps(document)) == document
