"""The guest agent's services over a real ttrpc connection, and its guest facts."""

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.transport.client import AgentClient
from api.kata import agent_pb2
from guest.agent import channel, details
from guest.agent.policy import Policy
from guest.agent.server import AgentConfig, build_agent, build_server
from guest.init import power
from ttrpc import Client, PermissionDenied, Unimplemented

# The agent checks GetGuestDetails against its policy like every AgentService request.
DETAILS_ONLY = "package agent_policy\n\nGuestDetailsRequest := true\n"


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[AgentClient]:
    config = AgentConfig(run_dir=tmp_path / "run", policy_path=tmp_path / "absent.rego")
    server = build_server(build_agent(config, agent_policy=Policy(DETAILS_ONLY)))
    ours, theirs = socket.socketpair()
    await server.serve_fd(theirs.detach())
    client = AgentClient(await Client.from_fd(ours.detach()))
    yield client
    await client.close()
    await server.close()


async def test_health_check_is_serving(agent: AgentClient) -> None:
    assert await agent.check()


async def test_guest_details_carry_version_and_facts(agent: AgentClient) -> None:
    reply = await agent.guest_details()
    assert reply.agent_details.version
    assert reply.agent_details.device_handlers == ["blk"]


async def test_other_rpcs_are_denied_or_unimplemented(agent: AgentClient) -> None:
    with pytest.raises(PermissionDenied, match="CreateContainerRequest is blocked by policy"):
        await agent.agent.CreateContainer(agent_pb2.CreateContainerRequest(container_id="c"))
    with pytest.raises(Unimplemented):
        await agent.agent.MemHotplugByProbe(agent_pb2.MemHotplugByProbeRequest())


def fake_system(tmp_path: Path) -> tuple[Path, Path]:
    proc, sys = tmp_path / "proc", tmp_path / "sys"
    proc.mkdir()
    (proc / "mounts").write_text(
        "rootfs / rootfs rw 0 0\n/dev/mapper/root / erofs ro,relatime 0 0\nproc /proc proc rw 0 0\n"
    )
    for name, serial, sectors in (("vda", "contrast-root", "128"), ("vdb", "data1", "2048")):
        (sys / "block" / name).mkdir(parents=True)
        (sys / "block" / name / "serial").write_text(serial + "\n")
        (sys / "block" / name / "size").write_text(sectors + "\n")
    return proc, sys


def test_facts_from_proc_and_sys(tmp_path: Path) -> None:
    proc, sys = fake_system(tmp_path)
    root = details.root_mount(proc, sys)
    assert root is not None
    assert (root.device, root.fstype, root.options) == ("/dev/mapper/root", "erofs", "ro,relatime")
    features = details.as_features(root, details.block_devices(sys))
    assert "root.device=/dev/mapper/root" in features
    assert "block.vda=serial:contrast-root,bytes:65536" in features
    assert "block.vdb=serial:data1,bytes:1048576" in features


def crypto_entry(name: str, driver: str, priority: int, **extra: str) -> str:
    fields = {"name": name, "driver": driver, "module": "kernel", "priority": str(priority)}
    fields |= {"refcnt": "1", "selftest": "passed", "internal": "no", "type": "cipher"} | extra
    return "".join(f"{key:<13}: {value}\n" for key, value in fields.items())


def test_crypto_facts_name_the_implementation_the_kernel_hands_out(tmp_path: Path) -> None:
    (tmp_path / "crypto").write_text(
        "\n".join(
            [
                crypto_entry("sha256", "sha256-generic", 100),
                crypto_entry("aes", "aes-generic", 100),
                crypto_entry("__aes", "__aes-aesni", 300, internal="yes"),
                crypto_entry("aes", "aes-aesni", 300, module="aesni_intel"),
                crypto_entry("sha256", "sha256-avx2", 170, module="sha256_ssse3"),
                crypto_entry("sha256", "sha256-broken", 400, selftest="unknown"),
                crypto_entry("sha256", "sha256-internal", 500, internal="yes"),
                crypto_entry("xts(aes)", "xts-aes-aesni", 401),
            ]
        )
    )
    drivers = details.crypto_drivers(tmp_path)
    assert drivers == {"aes": "aes-aesni", "sha256": "sha256-avx2"}
    features = details.as_features(None, [], drivers)
    assert features == ["crypto.aes=aes-aesni", "crypto.sha256=sha256-avx2"]
    assert details.crypto_drivers(tmp_path / "absent") == {}


def test_feature_strings_parse_back(tmp_path: Path) -> None:
    proc, sys = fake_system(tmp_path)
    reply = agent_pb2.GuestDetailsResponse(
        agent_details=agent_pb2.AgentDetails(
            extra_features=details.as_features(
                details.root_mount(proc, sys), details.block_devices(sys)
            )
        )
    )
    facts = AgentClient.features(reply)
    assert facts["root.fstype"] == "erofs"
    assert facts["block.vdb"] == "serial:data1,bytes:1048576"


def test_find_port_by_name(tmp_path: Path) -> None:
    for vport, name in (("vport0p0", "other"), ("vport0p1", "agent.channel.0")):
        (tmp_path / "class/virtio-ports" / vport).mkdir(parents=True)
        (tmp_path / "class/virtio-ports" / vport / "name").write_text(name + "\n")
    assert channel.find_port(sys=tmp_path) == Path("/dev/vport0p1")
    assert channel.find_port("missing", sys=tmp_path) is None


def test_power_button_events() -> None:
    event = struct.Struct("llHHi")
    press = event.pack(0, 0, power.EV_KEY, power.KEY_POWER, 1)
    release = event.pack(0, 0, power.EV_KEY, power.KEY_POWER, 0)
    sync = event.pack(0, 0, 0, 0, 0)
    assert power.pressed(sync + press + sync)
    assert not power.pressed(release + sync)
    assert not power.pressed(press[:-1])


def test_find_power_button(tmp_path: Path) -> None:
    for event, name in (("event0", "AT Keyboard"), ("event1", "Power Button")):
        (tmp_path / "class/input" / event / "device").mkdir(parents=True)
        (tmp_path / "class/input" / event / "device/name").write_text(name + "\n")
    assert power.find_power_button(tmp_path) == Path("/dev/input/event1")


async def test_serve_port_reopens_after_the_host_leaves(tmp_path: Path) -> None:
    # A FIFO stands in for the port: it is not a character device, so opening fails
    # and serve_port must keep trying instead of ending.
    fifo = tmp_path / "port"
    fifo.write_bytes(b"")
    task = asyncio.create_task(channel.serve_port(build_server(), fifo))
    await asyncio.sleep(0.2)
    assert not task.done()
    task.cancel()
