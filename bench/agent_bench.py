"""Guest agent benchmark: policy cost per request, and container start to first byte.

    sudo .venv/bin/python -m bench.agent_bench [--rounds 200] [--starts 5]

1. Agent RPC round trip over a real ttrpc connection (socketpair, in process), the
   same request with policy evaluation on and off, alternating, with a Kata-style
   policy (pinned image, command, stateful ops): GetGuestDetails and a
   CreateContainerRequest-sized evaluation. Prints medians and the difference, which
   is what the policy adds per request (target: under 2 ms).
2. CreateContainer + StartContainer to the first byte of output, through the agent
   process (runc on this host, image pulled from a loopback registry, the second and
   later starts served from the store), next to ``runc run`` of the same busybox
   rootfs to its first byte, same run. Needs root, runc, docker-registry.
No assertions: figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import ttrpc
from api.kata import agent_pb2
from devkit.registry import Registry
from guest.agent import policyinput
from guest.agent.policy import Policy
from guest.agent.server import AgentConfig, build_agent, build_server
from tests.integration.guestagent import requests as rq
from tests.integration.guestagent.conftest import (
    AGENT_SERVICE,
    Pushed,
    busybox_image,
    start_agent,
    stop_agent,
)
from tests.unit.guestagent.test_policy import PINNED, POLICY

POLICY_WITH_DETAILS = POLICY + "\nGuestDetailsRequest := true\n"


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.3f} ms"


async def policy_round_trips(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = AgentConfig(run_dir=Path(tmp) / "run", policy_path=Path(tmp) / "absent")
        service = build_agent(config, agent_policy=Policy(POLICY_WITH_DETAILS))
        server = build_server(service)
        ours, theirs = socket.socketpair()
        await server.serve_fd(theirs.detach())
        client = await ttrpc.Client.from_fd(ours.detach())
        stub: Any = ttrpc.ServiceStub(client, AGENT_SERVICE)
        on: list[float] = []
        off: list[float] = []
        request = agent_pb2.GuestDetailsRequest()
        for i in range(rounds * 2):
            service.enforce = i % 2 == 0
            start = time.perf_counter()
            await stub.GetGuestDetails(request)
            (on if service.enforce else off).append(time.perf_counter() - start)
        await client.close()
        await server.close()
    print(f"GetGuestDetails round trip, policy on : {ms(on)}")
    print(f"GetGuestDetails round trip, policy off: {ms(off)}")
    added = statistics.median(on) - statistics.median(off)
    print(f"policy adds per request               : {added * 1000:8.3f} ms (target < 2 ms)")

    create = rq.create_container("c1", ["echo", "hello"], PINNED)
    policy = Policy(POLICY)
    evals: list[float] = []
    for n in range(rounds):
        create.container_id = f"c{n}"
        start = time.perf_counter()
        decision = policy.evaluate("CreateContainerRequest", policyinput.to_input(create))
        evals.append(time.perf_counter() - start)
        assert decision.allowed or n > 0
    print(f"CreateContainerRequest input + eval   : {ms(evals)} (stateful ops, growing state)")


async def first_byte(stub: Any, cid: str, image: str) -> float:
    start = time.perf_counter()
    await stub.CreateContainer(rq.create_container(cid, ["echo", "x"], image))
    await stub.StartContainer(agent_pb2.StartContainerRequest(container_id=cid))
    reply = await stub.ReadStdout(agent_pb2.ReadStreamRequest(container_id=cid, len=1))
    elapsed = time.perf_counter() - start
    assert reply.data == b"x"
    await stub.WaitProcess(agent_pb2.WaitProcessRequest(container_id=cid))
    await stub.RemoveContainer(agent_pb2.RemoveContainerRequest(container_id=cid))
    return elapsed


def runc_first_byte(bundle: Path, n: int) -> float:
    """``runc run`` of the same rootfs, to the first byte on its stdout."""
    read_fd, write_fd = os.pipe()
    start = time.perf_counter()
    pid = os.posix_spawnp(
        "runc",
        ["runc", "--root", str(bundle / "state"), "run", "--bundle", str(bundle), f"b{n}"],
        dict(os.environ),
        file_actions=[(os.POSIX_SPAWN_DUP2, write_fd, 1)],
    )
    os.close(write_fd)
    data = os.read(read_fd, 1)
    elapsed = time.perf_counter() - start
    os.close(read_fd)
    os.waitpid(pid, 0)
    assert data == b"x", data
    return elapsed


def baseline_bundle(directory: Path) -> Path:
    bundle = directory / "bundle"
    rootfs = bundle / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    for sub in ("proc", "sys", "dev"):
        (rootfs / sub).mkdir()
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", rootfs / "bin" / "busybox")
    (rootfs / "bin" / "echo").symlink_to("busybox")
    from guest.agent.spec import SANDBOX_FILES, GuestContext, adapt

    # The pod's /etc files, as the guest agent's sandbox keeps them for its containers.
    files = directory / "sandbox-files"
    files.mkdir()
    for name in SANDBOX_FILES:
        (files / name).write_text("")
    config = adapt(rq.spec(["echo", "x"]), GuestContext("baseline", sandbox_files=files)).config
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


async def container_starts(starts: int) -> None:
    with tempfile.TemporaryDirectory(prefix="ab-") as tmp:
        directory = Path(tmp)
        with Registry(directory / "registry") as reg:
            image = busybox_image()
            digest = reg.upload(image.blobs, image.manifest, "bench/busybox", "v1")
            pushed = Pushed(reg, f"{reg.host}/bench/busybox@{digest}")
            (directory / "agent").mkdir()
            proc = start_agent(pushed, rq.ALLOW_ALL, directory / "agent")
            client = await ttrpc.Client.connect_unix(str(proc.socket))
            stub: Any = ttrpc.ServiceStub(client, AGENT_SERVICE)
            try:
                await stub.CreateSandbox(agent_pb2.CreateSandboxRequest(hostname="bench"))
                await stub.CreateContainer(rq.create_pause("pause"))
                await stub.StartContainer(agent_pb2.StartContainerRequest(container_id="pause"))
                first = await first_byte(stub, "cold", pushed.reference)
                bundle = baseline_bundle(directory)
                ours: list[float] = []
                theirs: list[float] = []
                for n in range(starts):
                    ours.append(await first_byte(stub, f"c{n}", pushed.reference))
                    theirs.append(runc_first_byte(bundle, n))
                await stub.DestroySandbox(agent_pb2.DestroySandboxRequest())
            finally:
                await client.close()
                stop_agent(proc)
    print(f"agent Create+Start -> first byte, cold pull : {first * 1000:8.1f} ms")
    print(f"agent Create+Start -> first byte, cached    : {ms(ours)}")
    print(f"baseline runc run -> first byte             : {ms(theirs)}")
    ratio = statistics.median(ours) / statistics.median(theirs)
    print(f"ratio agent/runc                            : {ratio:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(policy_round_trips(args.rounds))
    if os.geteuid() == 0 and shutil.which("runc") and shutil.which("docker-registry"):
        asyncio.run(container_starts(args.starts))
    else:
        print("container starts skipped: needs root, runc and docker-registry")


if __name__ == "__main__":
    main()
