"""A pod-VM whose initdata policy crashes regopy: the agent stays up and says why.

Two ``default`` rules for one name make regopy 1.5 build a broken bundle whose first
query segfaults; before the agent compiled untrusted Rego in a child, the guest agent
died and the VM powered off with no message. Now every request is denied naming
regopy's own error, and Health keeps answering.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import ttrpc
from agent.initdata.launch import prepare
from agent.initdata.pod import from_toml
from agent.transport.client import AgentClient
from agent.transport.connect import connect
from agent.vm import console
from agent.vm.config import Platform
from agent.vm.manager import VM
from api.kata import agent_pb2
from guest.image.manifest import GuestImage
from tests.integration.vm.conftest import guest_image, vm_config, vm_dir

__all__ = ["guest_image", "vm_dir"]  # fixtures used here

pytestmark = pytest.mark.vm

BOOT_TIMEOUT = 300.0
CRASHING = """package agent_policy

default GuestDetailsRequest := false
default GuestDetailsRequest := true
CreateSandboxRequest := true
"""
EXPECTED = (
    "is blocked by policy: policy.rego: policy does not compile: Multiple default rules"
)


async def test_a_policy_crashing_regopy_is_a_readable_denial(
    guest_image: GuestImage, vm_dir: Path
) -> None:
    base = vm_config(guest_image, vm_dir, "hostile")
    (vm_dir / "pod").mkdir()
    document = from_toml(
        ('version = "0.1.0"\nalgorithm = "sha256"\n\n[data]\n'
         f"\"policy.rego\" = '''\n{CRASHING}'''\n").encode()
    )  # fmt: skip
    launch = prepare(document, Platform.INSECURE, vm_dir / "pod")
    config = dataclasses.replace(
        base,
        cmdline=(*guest_image.manifest.cmdline, *launch.kernel_cmdline()),
        disks=(launch.disk(),),
    )
    vm = await VM.launch(config)
    try:
        await vm.wait_ready(BOOT_TIMEOUT)
        agent = AgentClient(await connect(config.transport))
        try:
            with pytest.raises(ttrpc.PermissionDenied) as caught:
                await agent.guest_details(timeout=120)
            assert caught.value.message == f"GuestDetailsRequest {EXPECTED}"
            with pytest.raises(ttrpc.PermissionDenied) as caught:
                await agent.agent.CreateSandbox(agent_pb2.CreateSandboxRequest(), timeout=60)
            assert caught.value.message == f"CreateSandboxRequest {EXPECTED}"
            assert await agent.check()  # still serving
        finally:
            await agent.close()
        log = console.tail(config.console_log, 65536)
        assert "policy.rego compiled in a child process" not in log
        assert "Multiple default rules" in log
    finally:
        print(f"--- pod-VM console tail ---\n{console.tail(config.console_log, 16384)}")
        await vm.stop()
