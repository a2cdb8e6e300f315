"""``kubectl port-forward`` into a pod-VM.

containerd's CRI (1.6 and 2.x) serves ``PortForward`` itself: it enters the pod's
network namespace *on the host* and dials ``localhost:<port>`` there (IPv4 first). With
runc the pod's servers listen in that netns; ours run in the VM, so the dial is refused.
containerd offers no hook for a runtime to take the stream over.

So the daemon makes that netns's loopback lead into the VM:

- one ``iptables`` rule in the pod's netns (nat ``OUTPUT``, TCP to ``127.0.0.1`` out
  of ``lo``) redirects every such connection, whatever its port, to one listener of
  ours (``127.0.0.1:LISTEN_PORT`` in that netns; nothing else listens there: the pod's
  processes are in the VM);
- for each accepted connection the original port is read back (``SO_ORIGINAL_DST``)
  and the daemon dials ``<pod IP>:<port>`` from its *own* netns (the node's, which
  routes to pods as the kubelet's probes need) and splices the two both ways; the VM
  answers on its pod address as for any other client.

The rule dies with the netns; the listener with the daemon (a restarted daemon sets it
up again when it reattaches; the rule is only added when missing). The guest sees
connections from the node's address, not from its loopback: a server bound to
127.0.0.1 only, inside the VM, is not reachable this way. Needs ``iptables`` (and the
kernel's nat REDIRECT) on the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from agent.network import netns
from agent.network.errors import NetworkError
from api.kata import types_pb2

log = logging.getLogger(__name__)

IPTABLES = "iptables"
LISTEN_PORT = 65535
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
IPTABLES_TIMEOUT = 30.0
DIAL_TIMEOUT = 30.0
CHUNK = 64 * 1024
MATCH = ["-o", "lo", "-p", "tcp", "-d", "127.0.0.1/32",
         "-j", "REDIRECT", "--to-ports", str(LISTEN_PORT)]  # fmt: skip

Dial = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def _iptables(netns_path: Path, action: str) -> int:
    """``iptables -w -t nat <action> OUTPUT <MATCH>`` inside the netns; its exit code
    (``-C``: 1 means absent). Raises NetworkError when it cannot run, times out or
    fails otherwise."""
    argv = ["nsenter", f"--net={netns_path}", "--", IPTABLES, "-w", "-t", "nat",
            action, "OUTPUT", *MATCH]  # fmt: skip
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    except OSError as err:
        raise NetworkError(f"port-forward: cannot run {argv[0]}: {err}") from err
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), IPTABLES_TIMEOUT)
    except TimeoutError as err:
        proc.kill()
        await proc.wait()
        raise NetworkError(f"port-forward: {' '.join(argv)} timed out") from err
    code = proc.returncode
    assert code is not None
    if code != 0 and not (action == "-C" and code == 1):
        text = out.decode(errors="replace").strip()
        raise NetworkError(f"port-forward: {' '.join(argv)} exited {code}: {text}")
    return code


def original_port(conn: socket.socket) -> int:
    """The port a redirected connection was addressed to (``SO_ORIGINAL_DST``)."""
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port: int = struct.unpack_from("!H", raw, 2)[0]
    return port


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        pass  # the other side went away: the splice ends


class LoopbackForward:
    """The listener in one pod's netns and the connections it splices."""

    def __init__(self, sandbox_id: str, dial: Dial) -> None:
        self.sandbox_id = sandbox_id
        self._server: asyncio.Server | None = None
        self._dial = dial
        self._tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Stop listening and end every spliced connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._splice(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _splice(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = writer.get_extra_info("socket")
        try:
            port = original_port(conn)
            to_reader, to_writer = await asyncio.wait_for(self._dial(port), DIAL_TIMEOUT)
        except (OSError, TimeoutError) as err:
            log.info("sandbox %s: port-forward: cannot reach the pod: %s", self.sandbox_id, err)
            writer.close()
            return
        log.debug("sandbox %s: port-forward to port %d", self.sandbox_id, port)
        try:
            await asyncio.gather(_pipe(reader, to_writer), _pipe(to_reader, writer))
        finally:
            for end in (writer, to_writer):
                end.close()


def _listen_here() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", LISTEN_PORT))
        sock.listen(64)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def start(netns_path: Path, sandbox_id: str, dial: Dial) -> LoopbackForward:
    """Redirect the netns's loopback TCP to a listener that splices each connection to
    ``dial(port)``. Raises NetworkError (iptables missing or refusing, netns gone)."""
    try:
        sock = await netns.run_async(netns_path, _listen_here)
    except OSError as err:
        raise NetworkError(f"port-forward: cannot listen in {netns_path}: {err}") from err
    forward = LoopbackForward(sandbox_id, dial)
    try:
        if await _iptables(netns_path, "-C") == 1:
            await _iptables(netns_path, "-A")
        forward._server = await asyncio.start_server(forward._accepted, sock=sock)
    except BaseException:
        sock.close()
        raise
    log.info("sandbox %s: port-forward: localhost in %s leads to the VM", sandbox_id, netns_path)
    return forward


def dial_to(address: str) -> Dial:
    """Dial ``address:<port>`` from the daemon's netns."""

    async def dial(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(address, port)

    return dial


def pod_address(interfaces: Sequence[types_pb2.Interface]) -> str | None:
    """The pod's first IPv4 address (what the VM answers on), if it has one."""
    for interface in interfaces:
        for address in interface.IPAddresses:
            if address.family == types_pb2.IPFamily.v4:
                return str(address.address)
    return None


class Forwards:
    """The port-forward listeners of one daemon, by pod-VM pid."""

    def __init__(self) -> None:
        self._by_pid: dict[int, LoopbackForward] = {}

    async def open(self, pid: int, netns_path: Path, sandbox_id: str, address: str) -> None:
        """Set up port-forward for a pod; a failure is logged (the pod runs without
        kubectl port-forward), never raised."""
        try:
            self._by_pid[pid] = await start(netns_path, sandbox_id, dial_to(address))
        except NetworkError as err:
            log.warning("sandbox %s: no kubectl port-forward into the VM: %s", sandbox_id, err)

    async def close(self, pid: int) -> None:
        forward = self._by_pid.pop(pid, None)
        if forward is not None:
            await forward.close()

    async def close_all(self) -> None:
        forwards, self._by_pid = list(self._by_pid.values()), {}
        for forward in forwards:
            await forward.close()
