"""initdata in booted pod-VMs (insecure platform, TCG): the policy the host bound at
launch is the one in force, and a guest that cannot trust its initdata denies everything.

Three boots, one per case:
- a valid document: its policy decides (an allowed request is served, a denied one is
  PERMISSION_DENIED naming the request and the policy's reason);
- the host binds document A's digest on the (insecure) launch channel but attaches a disk
  holding document B: every AgentService request is denied, naming the digest mismatch;
- no initdata disk at all: every request is denied with that reason.

The guest's processor turns a refusal into a deny-all policy whose ``policy_reason`` the
agent appends to its denial, so the host reads the reason in the error message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from google.protobuf import message_factory

import ttrpc
from agent.initdata.launch import prepare
from agent.initdata.pod import PodInitdata, from_toml
from agent.transport.client import AgentClient
from agent.transport.connect import connect
from agent.vm.config import Disk, Platform, VMConfig
from agent.vm.manager import VM
from api.kata import agent_pb2
from guest.agent.service import AgentService
from guest.image.manifest import GuestImage
from tests.integration.vm.conftest import guest_image, vm_config, vm_dir

__all__ = ["guest_image", "vm_dir"]  # fixtures used here

pytestmark = pytest.mark.vm

BOOT_TIMEOUT = 300.0
REASON = "initdata in-VM test policy: guest details and SIGKILL only"

POLICY = f"""package agent_policy

import rego.v1

policy_reason := "{REASON}"

GuestDetailsRequest := true

SignalProcessRequest if input.signal == 9
"""


def document(policy: str) -> PodInitdata:
    head = 'version = "0.1.0"\nalgorithm = "sha384"\n\n[data]\n'
    return from_toml(f"{head}\"policy.rego\" = '''\n{policy}'''\n".encode())


def pod_config(
    image: GuestImage, directory: Path, bound: PodInitdata | None, attached: PodInitdata | None
) -> VMConfig:
    """The test VM with ``bound``'s digest on the insecure launch channel and a disk
    holding ``attached`` (either may be None: nothing bound / no disk)."""
    base = vm_config(image, directory, "initdata")
    cmdline: tuple[str, ...] = ()
    if bound is not None:
        (directory / "bound").mkdir()
        cmdline = prepare(bound, Platform.INSECURE, directory / "bound").kernel_cmdline()
    disks: tuple[Disk, ...] = ()
    if attached is not None:
        (directory / "attached").mkdir()
        disks = (prepare(attached, Platform.INSECURE, directory / "attached").disk(),)
    # These replace the allow-all initdata disk and cmdline words vm_config adds.
    return dataclasses.replace(base, cmdline=(*image.manifest.cmdline, *cmdline), disks=disks)


@asynccontextmanager
async def booted(config: VMConfig) -> AsyncIterator[AgentClient]:
    vm = await VM.launch(config)
    try:
        await vm.wait_ready(BOOT_TIMEOUT)
        agent = AgentClient(await connect(config.transport))
        try:
            # Readiness is not policy-checked: the agent answers even when it denies all.
            assert await agent.check()
            yield agent
        finally:
            await agent.close()
    finally:
        await vm.stop()


async def assert_everything_denied(agent: AgentClient, reason: str) -> int:
    """Call every AgentService RPC with an empty request: each one the agent serves is
    PERMISSION_DENIED "<Request> is blocked by policy: <reason...>", the others
    UNIMPLEMENTED; none succeeds. Returns how many were denied."""
    denied = 0
    for method in agent_pb2.DESCRIPTOR.services_by_name["AgentService"].methods:
        request = message_factory.GetMessageClass(method.input_type)()
        call = getattr(agent.agent, method.name)
        if not hasattr(AgentService, method.name):
            with pytest.raises(ttrpc.Unimplemented):
                await call(request, timeout=30)
            continue
        with pytest.raises(ttrpc.PermissionDenied) as err:
            await call(request, timeout=30)
        prefix = f"{method.input_type.name} is blocked by policy: "
        assert err.value.message.startswith(prefix), err.value.message
        assert reason in err.value.message, err.value.message
        denied += 1
    return denied


async def test_valid_initdata_policy_in_force(guest_image: GuestImage, vm_dir: Path) -> None:
    valid = document(POLICY)
    async with booted(pod_config(guest_image, vm_dir, valid, valid)) as agent:
        # Allowed by the policy: served.
        facts = AgentClient.features(await agent.guest_details())
        assert facts["root.device"] == "/dev/mapper/root"
        # Allowed for SIGKILL: the policy lets it through to the agent, which has no
        # such container (NOT_FOUND, not PERMISSION_DENIED).
        with pytest.raises(ttrpc.NotFound):
            await agent.agent.SignalProcess(
                agent_pb2.SignalProcessRequest(container_id="none", signal=9), timeout=30
            )
        # Same request with SIGTERM, and a request the policy never allows: denied,
        # naming the request (the rule) and the policy's own reason.
        with pytest.raises(ttrpc.PermissionDenied) as term:
            await agent.agent.SignalProcess(
                agent_pb2.SignalProcessRequest(container_id="none", signal=15), timeout=30
            )
        assert term.value.message == f"SignalProcessRequest is blocked by policy: {REASON}"
        with pytest.raises(ttrpc.PermissionDenied) as create:
            await agent.agent.CreateSandbox(
                agent_pb2.CreateSandboxRequest(sandbox_id="s"), timeout=30
            )
        assert create.value.message == f"CreateSandboxRequest is blocked by policy: {REASON}"


async def test_swapped_document_denies_everything(guest_image: GuestImage, vm_dir: Path) -> None:
    bound = document(POLICY)
    # The host attaches another document: one allowing everything.
    swapped = document("package agent_policy\n\ndefault AllowRequestsFailingPolicy := true\n")
    assert bound.digest != swapped.digest
    async with booted(pod_config(guest_image, vm_dir, bound, swapped)) as agent:
        denied = await assert_everything_denied(agent, "initdata digest mismatch")
        assert denied >= 20
        # The reason names both values: what the attached document gives, what was bound.
        with pytest.raises(ttrpc.PermissionDenied) as err:
            await agent.guest_details()
        message = err.value.message
        assert swapped.digest.hex() in message
        assert bound.digest.hex() in message


async def test_no_initdata_denies_everything(guest_image: GuestImage, vm_dir: Path) -> None:
    async with booted(pod_config(guest_image, vm_dir, None, None)) as agent:
        denied = await assert_everything_denied(agent, "no initdata disk is attached")
        assert denied >= 20
