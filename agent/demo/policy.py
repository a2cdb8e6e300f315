"""The pod's initdata: a Rego policy that allows the pod's sandbox (pause) container and
exactly one workload: one image digest with one command."""

from __future__ import annotations

import json

from guest.initdata import codec, document

REASON = "contrast demo policy: only the pinned busybox image with its one command; no exec"

_POLICY = """package agent_policy

import rego.v1

default CreateContainerRequest := false
default ExecProcessRequest := false
default SetPolicyRequest := false
default CopyFileRequest := false

policy_reason := {reason}

CreateSandboxRequest := true
DestroySandboxRequest := true
StartContainerRequest := true
RemoveContainerRequest := true
ReadStreamRequest := true
WriteStreamRequest := true
CloseStdinRequest := true
TtyWinResizeRequest := true
WaitProcessRequest := true
SignalProcessRequest := true
GetOOMEventRequest := true
StatsContainerRequest := true
UpdateContainerRequest := true
GuestDetailsRequest := true
UpdateInterfaceRequest := true
UpdateRoutesRequest := true
AddARPNeighborsRequest := true

# The pod's sandbox container: the guest runs its own pause program in it, no image.
CreateContainerRequest if {{
    input.OCI.Annotations["io.kubernetes.cri.container-type"] == "sandbox"
    count(input.storages) == 0
}}

CreateContainerRequest if {{
    input.OCI.Annotations["io.kubernetes.cri.container-type"] == "container"
    input.storages[0].driver == "image_guest_pull"
    input.storages[0].source == {image}
    input.OCI.Process.Args == {args}
}}
"""


def policy(image: str, args: list[str]) -> str:
    """The Rego policy (JSON literals are Rego literals)."""
    return _POLICY.format(reason=json.dumps(REASON), image=json.dumps(image), args=json.dumps(args))


def initdata(image: str, args: list[str], registry_host: str) -> document.Initdata:
    """The initdata document: the policy and the guest puller's settings (plain HTTP to
    the demo registry)."""
    data = {
        document.POLICY_NAME: policy(image, args),
        "imagepull.toml": f'[registries."{registry_host}"]\ninsecure = true\n',
    }
    return document.create(data, "sha384")


def annotation(doc: document.Initdata) -> str:
    """The pod annotation value (``io.katacontainers.config.hypervisor.cc_init_data``)."""
    return codec.encode_annotation(doc.raw)
