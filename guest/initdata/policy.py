"""The deny-all agent policy written whenever initdata cannot be trusted.

Convention for the guest agent (package ``agent_policy``, as in Kata):

- every request is evaluated as ``data.agent_policy.<RequestName>``; here each one is
  ``false``;
- ``data.agent_policy.policy_reason`` is a string saying why the policy denies. An
  agent that finds it appends it to its denial: ``<RequestName> is blocked by policy:
  <policy_reason>``. Any policy may define it; this one always does.
"""

from __future__ import annotations

import json

PACKAGE = "agent_policy"
REASON_RULE = "policy_reason"
MAX_REASON_CHARS = 2000

# The request message names of grpc.AgentService (kata agent.proto) plus the two
# extra names Kata's allow-all policy lists (PullImageRequest, ReadContainerTerminationMessage).
REQUESTS = (
    "AddARPNeighborsRequest",
    "AddSwapRequest",
    "CloseStdinRequest",
    "CopyFileRequest",
    "CreateContainerRequest",
    "CreateSandboxRequest",
    "DestroySandboxRequest",
    "ExecProcessRequest",
    "GetIPTablesRequest",
    "GetMetricsRequest",
    "GetOOMEventRequest",
    "GuestDetailsRequest",
    "ListInterfacesRequest",
    "ListRoutesRequest",
    "MemHotplugByProbeRequest",
    "OnlineCPUMemRequest",
    "PauseContainerRequest",
    "PullImageRequest",
    "ReadContainerTerminationMessage",
    "ReadStreamRequest",
    "RemoveContainerRequest",
    "RemoveStaleVirtiofsShareMountsRequest",
    "ReseedRandomDevRequest",
    "ResizeVolumeRequest",
    "ResumeContainerRequest",
    "SetGuestDateTimeRequest",
    "SetIPTablesRequest",
    "SetPolicyRequest",
    "SignalProcessRequest",
    "StartContainerRequest",
    "StartTracingRequest",
    "StatsContainerRequest",
    "StopTracingRequest",
    "TtyWinResizeRequest",
    "UpdateContainerRequest",
    "UpdateEphemeralMountsRequest",
    "UpdateInterfaceRequest",
    "UpdateRoutesRequest",
    "VolumeStatsRequest",
    "WaitProcessRequest",
    "WriteStreamRequest",
)


def sanitize(reason: str) -> str:
    """One line of printable ASCII, bounded: safe in a Rego string and in a ttrpc status."""
    flat = "".join(c if " " <= c <= "~" else "?" for c in " ".join(reason.split()))
    if len(flat) > MAX_REASON_CHARS:
        flat = flat[: MAX_REASON_CHARS - 3] + "..."
    return flat


def deny_all(reason: str) -> str:
    """A valid Rego module that denies every request and carries ``reason``."""
    text = "initdata: " + sanitize(reason)
    lines = [
        f"package {PACKAGE}",
        "",
        "# Written by the initdata processor: the pod's initdata could not be trusted.",
        f"{REASON_RULE} := {json.dumps(text)}",
        "",
    ]
    lines += [f"default {name} := false" for name in REQUESTS]
    return "\n".join(lines) + "\n"
