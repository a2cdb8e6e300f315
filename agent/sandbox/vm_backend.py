"""The production backend: one QEMU pod-VM per sandbox, its guest agent over the
host-guest transport, the pod's initdata bound into the launch.

Steps of :meth:`PodVmBackend.create`: initdata (validated, written as a disk, its
digest bound into SNP host-data / TDX mrconfigid / the insecure command line), the
pod network (a tap mirrored with the CNI interface in the pod's netns, see
:mod:`agent.network`), the VM configuration from the runtime config and the pod's
allowed annotations, QEMU launch, transport connection, wait for the agent, the
guest's network (UpdateInterface, UpdateRoutes, AddARPNeighbors), ``CreateSandbox``.
Any failure stops the VM and removes the tap again: a failed sandbox leaves no QEMU
and no tap behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path

from agent import initdata
from agent.network import pod as pod_network
from agent.network import portforward
from agent.network.errors import NetworkError
from agent.network.guest import configure_guest
from agent.sandbox import devices as pod_devices
from agent.sandbox import podcgroup
from agent.sandbox.backend import PodSandbox, SandboxSpec
from agent.sandbox.config import RuntimeConfig
from agent.sandbox.errors import BackendError, SandboxError
from agent.sandbox.guest import GuestSandbox
from agent.sandbox.state import SandboxRecord, VmRecord
from agent.sandbox.vm_process import NAME, kill_orphan, runs_our_qemu, stop_by_pid
from agent.transport import choose
from agent.transport.client import AgentClient
from agent.transport.connect import connect
from agent.transport.errors import AgentTransportError
from agent.transport.reconnect import connect_serving
from agent.vm.config import Disk, Platform, VirtioSerialTransport, VMConfig, VsockTransport
from agent.vm.errors import SpawnSetupError, VMError
from agent.vm.manager import VM
from ttrpc import TtrpcError

log = logging.getLogger(__name__)


class _Marks:
    """Milliseconds each step of a sandbox's launch took, for its log line."""

    def __init__(self) -> None:
        self._last = time.monotonic()
        self._steps: list[tuple[str, float]] = []

    def mark(self, step: str) -> None:
        now = time.monotonic()
        self._steps.append((step, 1000 * (now - self._last)))
        self._last = now

    def __str__(self) -> str:
        return ", ".join(f"{step} {ms:.1f} ms" for step, ms in self._steps)


def _guest_cid() -> int:
    """A random vsock CID (3..2^32-16); a collision fails the launch, not another pod."""
    return 3 + int.from_bytes(os.urandom(4)) % (0xFFFFFFF0 - 3)


class PodVmBackend:
    """Sandboxes as QEMU pod-VMs (agent.vm) reached over agent.transport."""

    name = NAME

    def __init__(self) -> None:
        self._vms: dict[int, VM] = {}
        # Reattached VMs (no VM object: QEMU is another daemon's child): stop timeouts.
        self._stop_seconds: dict[int, float] = {}
        # kubectl port-forward: the pod netns's localhost led into each VM.
        self._forwards = portforward.Forwards()

    def _vm_config(self, spec: SandboxSpec, launch: initdata.InitdataLaunch | None) -> VMConfig:
        config = spec.config
        guest = config.guest
        disks: tuple[Disk, ...] = (launch.disk(),) if launch else ()
        cmdline = guest.cmdline + (launch.kernel_cmdline() if launch else ())
        return VMConfig(
            name=f"sandbox-{spec.id[:12]}",
            kernel=guest.kernel,
            initrd=guest.initrd,
            root=Disk("root", guest.rootfs, read_only=True, serial="contrast-root"),
            cmdline=cmdline,
            console_log=spec.run_dir / "console.log",
            qmp_socket=spec.run_dir / "qmp.sock",
            transport=choose.choose(spec.run_dir, _guest_cid()),
            vcpus=spec.settings.vcpus,
            memory_mib=spec.settings.memory_mib,
            platform=config.platform,
            # The insecure platform boots QEMU's default firmware (SeaBIOS, direct kernel).
            firmware=guest.firmware if config.platform is not Platform.INSECURE else None,
            snp=launch.snp() if launch else None,
            tdx=launch.tdx() if launch else None,
            disks=disks,
        )

    def planned(self, spec: SandboxSpec) -> VmRecord:
        details = {"console_log": str(spec.run_dir / "console.log")}
        if spec.netns is not None:
            details["netns"] = str(spec.netns)
        if spec.cgroups_path:
            details[podcgroup.CGROUPS_PATH_KEY] = spec.cgroups_path
        return VmRecord(backend=NAME, pid=0, details=details)

    async def create(self, spec: SandboxSpec) -> PodSandbox:
        marks = _Marks()
        spec.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            pod = (
                initdata.from_annotation(spec.settings.initdata) if spec.settings.initdata else None
            )
            launch = initdata.prepare(pod, spec.config.platform, spec.run_dir) if pod else None
            vm_config = self._vm_config(spec, launch)
        except (initdata.InitdataError, VMError) as err:
            _remove_run_dir({"console_log": str(spec.run_dir / "console.log")})
            raise BackendError(f"sandbox {spec.id}: {err}") from err
        marks.mark("initdata")
        if launch is None:
            log.warning(
                "sandbox %s: no initdata annotation: the guest denies every request", spec.id
            )
        try:
            network = await pod_network.setup(spec.netns, spec.id)
        except NetworkError as err:
            _remove_run_dir({"console_log": str(spec.run_dir / "console.log")})
            raise BackendError(f"sandbox {spec.id}: pod network: {err}") from err
        marks.mark("pod network")
        try:
            return await self._launch(spec, vm_config, network, marks)
        except BaseException:
            if spec.netns is not None:
                await _teardown(spec.netns, spec.id)
            # QEMU stopped already (its console's tail is in the error): nothing stays.
            _remove_run_dir({"console_log": str(spec.run_dir / "console.log")})
            raise

    async def _launch(
        self,
        spec: SandboxSpec,
        vm_config: VMConfig,
        network: tuple[pod_network.PodNetwork, int] | None,
        marks: _Marks,
    ) -> GuestSandbox:
        """QEMU in the pod's cgroup when the spec names one (see agent.sandbox.podcgroup),
        else in ours; a failed launch removes the cgroup directories it created."""
        placement = None
        if spec.cgroups_path:
            placement = podcgroup.prepare(spec.cgroups_path, podcgroup.mounted())
        marks.mark("cgroup")
        try:
            return await self._boot(spec, vm_config, network, placement, marks)
        except BaseException:
            if placement is not None:
                await _remove_cgroup(f"sandbox {spec.id}", placement.created)
            raise

    async def _boot(
        self,
        spec: SandboxSpec,
        vm_config: VMConfig,
        network: tuple[pod_network.PodNetwork, int] | None,
        placement: podcgroup.Placement | None,
        marks: _Marks,
    ) -> GuestSandbox:
        tap_fd = None
        if network is not None:
            vm_config = dataclasses.replace(vm_config, net=network[0].nic())
            tap_fd = network[1]
        boot_seconds = spec.config.timeouts.boot_seconds
        boot_deadline = asyncio.get_running_loop().time() + boot_seconds
        try:
            vm = await VM.launch(
                vm_config, tap_fd=tap_fd, preexec=placement.join if placement else None
            )
        except SpawnSetupError as err:
            assert placement is not None
            raise podcgroup.CgroupError(
                f"sandbox {spec.id}: QEMU could not join its pod cgroup "
                f"{placement.cgroups_path} ({', '.join(map(str, placement.leaves))}): {err}"
            ) from err
        except VMError as err:
            raise BackendError(f"sandbox {spec.id}: {err}") from err
        finally:
            if tap_fd is not None:
                os.close(tap_fd)  # QEMU holds its own copy
        marks.mark("QEMU + QMP up")
        # bench.pod_steps reads this line: the daemon's share of RunPodSandbox.
        log.info("sandbox %s: launched in %s", spec.id, marks)
        timeout = spec.config.timeouts.agent_call_seconds
        address = portforward.pod_address(network[0].interfaces) if network else None
        # kubectl port-forward's listener and iptables rule need the netns only: set up
        # while the guest boots, not after it (two nsenter + iptables runs, 15-60 ms
        # here, were on every pod's way to ready).
        forward = None
        if spec.netns is not None and address:
            forward = asyncio.create_task(
                self._forwards.open(vm.process.pid, spec.netns, spec.id, address)
            )
        try:
            if placement is not None:
                podcgroup.verify(vm.process.pid, placement)
            client = await connect(vm_config.transport)
            await vm.wait_ready(boot_seconds)
            details = {
                "qmp_socket": str(vm_config.qmp_socket),
                "console_log": str(vm_config.console_log),
                **_transport_details(vm_config),
            }
            if spec.netns is not None:
                details["netns"] = str(spec.netns)
            if address:
                details["pod_address"] = address
            if placement is not None:
                details.update(placement.details())
            record = VmRecord(backend=NAME, pid=vm.process.pid, details=details)
            sandbox = GuestSandbox(AgentClient(client), record, timeout)
            sandbox.devices = pod_devices.PodDevices(
                pod_devices.LaunchedVM(vm), spec.run_dir / pod_devices.STATE_FILE
            )
            if network is not None:
                # The guest's first AgentService requests also wait for its agent to
                # load the policy (initdata, the policy's compile): boot work, which on a
                # loaded node (pods starting at once) can take longer than one call's
                # timeout. They may use what is left of the boot's budget.
                first = max(timeout, boot_deadline - asyncio.get_running_loop().time())
                try:
                    await configure_guest(sandbox.agent.agent, network[0], spec.id, first)
                except (TtrpcError, TimeoutError) as err:
                    raise BackendError(f"sandbox {spec.id}: guest network: {err}") from err
            await sandbox.create_sandbox(spec.hostname, spec.id, spec.dns)
            if forward is not None:
                await forward  # logs its failure: the pod runs without port-forward then
        except BaseException as err:  # cancellation too: no VM or listener outlives it
            await self._drop_forward(forward, vm.process.pid)
            await vm.stop(spec.config.timeouts.stop_seconds)
            if isinstance(err, (VMError, AgentTransportError)) and not isinstance(
                err, SandboxError
            ):
                raise BackendError(f"sandbox {spec.id}: {err}") from err
            raise
        self._vms[vm.process.pid] = vm
        log.info("sandbox %s/%s: pod-VM pid %d ready", spec.namespace, spec.id, vm.process.pid)
        return sandbox

    async def _drop_forward(self, forward: asyncio.Task[None] | None, pid: int) -> None:
        """A failed launch's port-forward: its set-up cancelled, its listener closed."""
        if forward is None:
            return
        forward.cancel()
        await asyncio.gather(forward, return_exceptions=True)
        await self._forwards.close(pid)

    async def reattach(self, record: SandboxRecord, config: RuntimeConfig) -> PodSandbox:
        """Find the pod-VM of an earlier daemon: its QEMU must still run (pid and command
        line), and its guest agent must answer on a new connection (the guest reopens
        its end of the port when the host side goes away). Raises BackendError."""
        vm = record.vm
        if vm is None or vm.backend != NAME:
            raise BackendError(f"sandbox {record.id} was not created by the {NAME} backend")
        if not runs_our_qemu(vm):
            raise BackendError(f"sandbox {record.id}: its QEMU (pid {vm.pid}) is gone")
        if "agent_socket" in vm.details:
            transport: VirtioSerialTransport | VsockTransport = VirtioSerialTransport(
                socket=Path(vm.details["agent_socket"])
            )
        elif vm.details.get("guest_cid", "").isdigit():
            transport = VsockTransport(guest_cid=int(vm.details["guest_cid"]))
        else:
            raise BackendError(f"sandbox {record.id}: its state records no agent transport")
        try:
            agent = await connect_serving(transport, config.timeouts.agent_call_seconds)
        except AgentTransportError as err:
            raise BackendError(f"sandbox {record.id}: {err}") from err
        log.info("sandbox %s/%s: reattached to pod-VM pid %d", record.namespace, record.id, vm.pid)
        sandbox = GuestSandbox(agent, vm, config.timeouts.agent_call_seconds)
        if vm.details.get("qmp_socket"):  # the block devices attached by the earlier daemon
            qmp = Path(vm.details["qmp_socket"])
            name = f"sandbox-{record.id[:12]}"
            sandbox.devices = pod_devices.PodDevices(
                pod_devices.ReattachedVM(qmp, name), qmp.parent / pod_devices.STATE_FILE
            )
        self._stop_seconds[vm.pid] = config.timeouts.stop_seconds
        if vm.details.get("netns") and vm.details.get("pod_address"):
            netns_path, address = Path(vm.details["netns"]), vm.details["pod_address"]
            await self._forwards.open(vm.pid, netns_path, record.id, address)
        return sandbox

    async def destroy(self, sandbox: PodSandbox) -> None:
        assert isinstance(sandbox, GuestSandbox)
        vm = self._vms.pop(sandbox.record.pid, None)
        await self._forwards.close(sandbox.record.pid)
        try:
            with contextlib.suppress(SandboxError):
                await sandbox.destroy_sandbox()
            await sandbox.devices.remove_all()  # failures logged; QEMU's exit frees them
            await sandbox.close()
        finally:
            if vm is not None:
                await vm.stop()
            else:  # reattached: not our child, stop it by pid
                timeout = self._stop_seconds.pop(sandbox.record.pid, 20.0)
                await stop_by_pid(sandbox.record, timeout)
            await _remove_cgroup(
                f"pod-VM pid {sandbox.record.pid}",
                podcgroup.created_dirs(sandbox.record.details),
            )
            if sandbox.record.details.get("netns"):
                await _teardown(Path(sandbox.record.details["netns"]), "")
            _remove_run_dir(sandbox.record.details)

    async def close(self) -> None:
        """Drop our QMP connections; the VMs keep running for the next daemon."""
        vms, self._vms = list(self._vms.values()), {}
        await self._forwards.close_all()
        for vm in vms:
            await vm.monitor.close()

    async def cleanup(self, record: SandboxRecord) -> None:
        """Kill the VM of a sandbox whose daemon is gone, if it still runs, and remove
        our tap and qdiscs from its netns."""
        if record.vm is None or record.vm.backend != NAME:
            return
        kill_orphan(record.vm, remove_cgroup=False)  # not blocking the loop: below
        await _remove_cgroup(f"sandbox {record.id}", podcgroup.created_dirs(record.vm.details))
        if record.vm.details.get("netns"):
            await _teardown(Path(record.vm.details["netns"]), record.id)
        _remove_run_dir(record.vm.details)


async def _teardown(netns: Path, sandbox_id: str) -> None:
    """Our tap and qdiscs out of the pod's netns; failures are logged (the VM is gone
    already and the netns is CNI's to delete)."""
    try:
        await pod_network.teardown_netns(netns, sandbox_id)
    except NetworkError as err:
        log.warning("sandbox %s: network teardown in %s failed: %s", sandbox_id, netns, err)


def _remove_run_dir(details: dict[str, str]) -> None:
    """The sandbox's run directory (console log, QMP socket, initdata disk, devices.json:
    the console log's folder), once QEMU is gone; else one stays per pod for good."""
    folder = Path(details.get("console_log", "")).parent
    if details.get("console_log") and folder.is_dir():
        shutil.rmtree(folder, onerror=_log_unremovable)


def _log_unremovable(_function: object, path: str, _info: object) -> None:
    log.warning("cannot remove %s from a removed sandbox's run directory", path)


async def _remove_cgroup(what: str, created: tuple[Path, ...]) -> None:
    """The pod cgroup directories we created, once QEMU has left them; failures are
    logged (the sandbox is gone either way)."""
    try:
        await podcgroup.remove(created)
    except podcgroup.CgroupError as err:
        log.warning("%s: %s", what, err)


def _transport_details(config: VMConfig) -> dict[str, str]:
    transport = config.transport
    if isinstance(transport, VirtioSerialTransport):
        return {"agent_socket": str(transport.socket)}
    assert isinstance(transport, VsockTransport)
    return {"guest_cid": str(transport.guest_cid)}
