"""The guest's Python part at native speed: the pod-VM image's own root, on the host.

Under TCG every guest instruction is emulated, and an interpreter's bytecode dispatch
suffers most. To tell how much of the pod-VM's boot that is, this runs the same
Python part the guest runs after its kernel and initrd (interpreter start, the agent's
imports, listening; then the initdata processor and the AgentService build with the
policy's check in a forked child) from the image's own root tree, extracted from
``root.img`` with ``fsck.erofs --extract`` and chrooted into (same python3, same .pyc,
same regopy and protobuf), with the same interpreter flags as contrast-init, the same
initdata document and digest, on this machine's CPU.

It differs from the guest in what does not run on a host: the agent serves a unix
socket instead of the virtio-serial port (``--listen``), the initdata comes from a
file instead of the disk found by serial and the digest from a file instead of
/proc/cmdline (the processor's ``--disk`` and ``--cmdline``), and the files are in the
host's page cache instead of behind erofs and dm-verity. The initrd's module loads and
verity set-up need the guest kernel and are not part of it.

Needs root (chroot, a private mount namespace for /proc); :func:`measure` raises
:class:`Unavailable` with the reason otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import re
import select
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from guest.image.manifest import GuestImage

# contrast-init's interpreter flags and first line (guest/init/contrast-init.sh), with
# the initdata processor pointed at files and the agent at a unix socket.
FLAGS = ("-S", "-P", "--check-hash-based-pycs", "never")
ENTRY = """\
import gc, sys
gc.disable()
from guest.init.__main__ import import_asyncio_without_tls
import_asyncio_without_tls()
from guest.agent.__main__ import main

def process_initdata():
    from guest.initdata.cli import main as initdata_main
    status = initdata_main(["process", "--output", "/run/native/out", "--disk",
                            "/run/native/initdata", "--cmdline", "/run/native/cmdline"])
    if status != 0:
        raise SystemExit(f"initdata processor exited with {status}")

sys.exit(main(["--listen", "/run/native/agent.sock", "--policy",
               "/run/native/out/policy.rego", "--run-dir", "/run/native/agent"],
              before_policy=process_initdata))
"""
READY = re.compile(r"ready on /run/native/agent\.sock")
BUILT = re.compile(r"serving AgentService \(built in ([0-9.]+) ms\)")
TIMEOUT = 60.0


class Unavailable(Exception):
    """The native run cannot be made on this host; the message says why."""


@dataclasses.dataclass(frozen=True)
class NativeRun:
    listening: float  # seconds from the interpreter's exec to the agent's ready line
    built: float  # seconds the AgentService build took after that (the agent's figure)

    @property
    def python(self) -> float:
        return self.listening + self.built


def extract(image: GuestImage, dest: Path) -> Path:
    """Unpack the image's erofs root (its verity tree follows the filesystem) into dest."""
    if os.geteuid() != 0:
        raise Unavailable("needs root (chroot into the image's root)")
    tool = shutil.which("fsck.erofs")
    if tool is None:
        raise Unavailable("fsck.erofs (erofs-utils) is needed to unpack the root image")
    root = dest / "root"
    root.mkdir()
    done = subprocess.run(
        [tool, f"--extract={root}", str(image.root)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise Unavailable(f"fsck.erofs could not unpack {image.root}: {done.stderr.strip()}")
    return root


def run_once(root: Path, initdata: bytes, cmdline: str) -> NativeRun:
    """One start of the guest's Python part in ``root``, stopped once it is built."""
    work = root / "run" / "native"
    if work.exists():
        shutil.rmtree(work)
    (work / "agent").mkdir(parents=True)
    (work / "initdata").write_bytes(initdata)
    (work / "cmdline").write_text(cmdline + "\n")
    # A private mount namespace: /proc for the agent (memfd paths, its own stat) is
    # mounted there only, and goes away with the process whatever happens to it.
    script = (
        'mount --make-rprivate / && mount -t proc proc "$1/proc" && shift && '
        'exec chroot "$0" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin '
        "PYTHONPATH=/usr/lib/contrast/python PYTHONDONTWRITEBYTECODE=1 HOME=/root "
        '"$@"'
    )
    argv = ["unshare", "--mount", "sh", "-c", script, str(root), str(root)]
    argv += ["/usr/bin/python3", *FLAGS, "-c", ENTRY]
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    listening: float | None = None
    lines: list[str] = []
    pending = b""
    try:
        while (left := started + TIMEOUT - time.monotonic()) > 0:
            if not select.select([proc.stdout], [], [], left)[0]:
                break
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                line = raw.decode(errors="replace")
                lines.append(line)
                if listening is None and READY.search(line):
                    listening = time.monotonic() - started
                if (built := BUILT.search(line)) is not None and listening is not None:
                    return NativeRun(listening, float(built[1]) / 1000)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    tail = "\n".join([*lines[-20:], pending.decode(errors="replace")])
    raise Unavailable(f"the native run printed no ready or 'built in' line:\n{tail}")


def measure(image: GuestImage, initdata: bytes, cmdline: str, runs: int) -> list[NativeRun]:
    """``runs`` native starts of the image's Python part (the first one discarded: it
    warms the host's caches for the files and the programs it runs)."""
    with tempfile.TemporaryDirectory(prefix="guest-native") as tmp:
        root = extract(image, Path(tmp))
        run_once(root, initdata, cmdline)
        return [run_once(root, initdata, cmdline) for _ in range(runs)]


def medians(runs: list[NativeRun]) -> NativeRun:
    return NativeRun(
        statistics.median(r.listening for r in runs), statistics.median(r.built for r in runs)
    )
