"""Untrusted Rego is compiled first in a forked child, so a crash cannot end the agent.

regopy is C++ behind ctypes: some policies crash it (two ``default`` rules for one name
build a broken bundle that segfaults the first query; regopy 1.5) or keep it busy for
ever. The agent is the pod-VM's only service: a crash powers the VM off with no
message, a hang leaves every request unanswered. :func:`check` forks, compiles the
policy in the child exactly as :class:`~guest.agent.policy.Policy` does in the agent
(build, the bundle's ``ok``, the constant rules ``policy_reason`` and
``AllowRequestsFailingPolicy``), and reads the child's verdict from a pipe within a
time bound. Only a policy the child compiled is then compiled in the agent itself: the
same text and data give the same result.

A fork, not a new interpreter: the agent has regopy and the generated messages loaded
already, so the child starts in about a millisecond instead of an interpreter's
start-up and imports (hundreds of ms under TCG). The child runs nothing but regopy and
``os._exit``; it takes no lock another thread may hold.

The verdict comes from the pipe, never from the exit status: the agent's reaper
(``children.Reaper``) may reap the child first. A pidfd taken before the child is let
go names the process for the kill and the wait, so a reused pid is never touched.
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import json
import logging
import os
import re
import select
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from guest.agent.errors import PolicyError

log = logging.getLogger(__name__)

# Compiling a genpolicy-sized policy takes well under a second on a host, a few under
# TCG: the bound only catches a policy that would never finish.
CHECK_TIMEOUT = 60.0
MAX_VERDICT_BYTES = 64 * 1024
CRASH_MARK = "Fatal Python error: "
_LOCATED = re.compile(r"(?P<where>\S+\.rego:\d+:\d+): (?P<message>\S.*)")


def check(text: str, name: str = "policy.rego", timeout: float = CHECK_TIMEOUT) -> None:
    """Compile ``text`` in a forked child; return when it compiled there.

    Raises PolicyError as :func:`compile_isolated`.
    """
    with compile_isolated(text, name, timeout):
        pass


@contextlib.contextmanager
def compile_isolated(
    text: str, name: str = "policy.rego", timeout: float = CHECK_TIMEOUT
) -> Iterator[Path]:
    """Compile ``text`` in a forked child; yields the path of the bundle it built.

    The child saves the bundle (regopy's binary format, in a memfd of ours), then
    loads and queries the saved bundle as the agent will. Raises PolicyError naming
    the failure: the compile error (regopy's own message), a crash of the Rego engine
    (the signal), or a check that took longer than ``timeout`` seconds (the child is
    killed).
    """
    bundle = os.memfd_create("policy-bundle", os.MFD_CLOEXEC)
    try:
        started = time.monotonic()
        verdict = _run_child(text, name, timeout, bundle)
        log.info(
            "%s checked in a forked child in %.1f ms (its compile %s ms, reload and "
            "query %s ms)", name, 1000 * (time.monotonic() - started),
            verdict.get("compile_ms"), verdict.get("reload_ms"),
        )  # fmt: skip
        yield Path(f"/proc/self/fd/{bundle}")
    finally:
        os.close(bundle)


def _run_child(text: str, name: str, timeout: float, bundle: int) -> dict[str, object]:
    go_r, go_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        pid = os.fork()
    except OSError as err:
        for fd in (go_r, go_w, out_r, out_w):
            os.close(fd)
        raise PolicyError(f"{name}: cannot start the policy check: {err}") from err
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        os.close(go_w)
        os.close(out_r)
        _child(text, name, go_r, out_w, bundle)
    os.close(go_r)
    os.close(out_w)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as err:
        os.close(go_w)
        os.close(out_r)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)  # the child waits for go_w's EOF: it is still ours
        raise PolicyError(f"{name}: cannot watch the policy check: {err}") from err
    try:
        os.close(go_w)  # EOF: the child may start
        output, finished = _read_until_eof(out_r, timeout)
    except BaseException:
        os.close(out_r)
        _end(pidfd)
        raise
    os.close(out_r)
    if finished and (verdict := _ok(output)) is not None:
        # The child closed its end before exiting: it is tearing down (slow under TCG
        # for a copy of the agent), which need not hold up the agent's start.
        threading.Thread(target=_end, args=(pidfd,), name="policy-check-reap", daemon=True).start()
        return verdict
    status = _end(pidfd)
    if not finished:
        raise PolicyError(
            f"{name}: checking the policy took longer than {timeout:g} s "
            "(compiling it and evaluating its constant rules): refused"
        )
    return _judge(name, output, status)


def _ok(output: bytes) -> dict[str, object] | None:
    """The child's verdict if it says the policy compiled, else None."""
    try:
        verdict = json.loads(output.decode(errors="replace"))
    except ValueError:
        return None
    return verdict if isinstance(verdict, dict) and verdict.get("ok") is True else None


def _judge(name: str, output: bytes, status: int | None) -> dict[str, object]:
    """The child's verdict when it compiled the policy; else raises PolicyError."""
    if (ok := _ok(output)) is not None:
        return ok
    text = output.decode(errors="replace")
    try:
        verdict = json.loads(text)
    except ValueError:
        verdict = None
    if isinstance(verdict, dict) and isinstance(verdict.get("error"), str):
        raise PolicyError(verdict["error"])
    crash = next((line for line in text.splitlines() if line.startswith(CRASH_MARK)), "")
    how = crash.removeprefix(CRASH_MARK) or _describe(status)
    raise PolicyError(f"{name}: the policy crashed the Rego engine ({how}): refused")


def _describe(status: int | None) -> str:
    if status is None:
        return "the checking process ended without an answer"
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.WEXITSTATUS(status)} without an answer"


def _read_until_eof(fd: int, timeout: float) -> tuple[bytes, bool]:
    """Everything written to ``fd`` until EOF, and whether EOF came within ``timeout``."""
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), False
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks), True
        if size < MAX_VERDICT_BYTES:
            chunks.append(chunk)
            size += len(chunk)


def _end(pidfd: int) -> int | None:
    """Kill the child if it still runs and reap it; its wait status if we reaped it."""
    try:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        try:
            result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        except ChildProcessError:
            return None  # the agent's reaper took it
        if result is None:
            return None
        if result.si_code == os.CLD_EXITED:
            return result.si_status << 8
        return result.si_status  # killed or dumped: the signal number
    finally:
        os.close(pidfd)


def _child(  # pragma: no cover
    text: str, name: str, go_r: int, out_w: int, bundle: int
) -> NoReturn:
    """Compile in this forked child, write the verdict to ``out_w``, ``_exit``."""
    code = 0
    try:
        # A collection would write to every tracked object: copies of the agent's
        # pages (copy-on-write), slow under TCG. The child lives for one compile.
        gc.disable()
        with contextlib.suppress(ValueError):
            signal.set_wakeup_fd(-1)  # the agent's event loop is not ours
        os.read(go_r, 1)  # EOF once the parent holds our pidfd
        os.close(go_r)
        # regopy prints compile errors on stdout: keep them, they name the problem.
        capture = os.memfd_create("policy-check-output")
        os.dup2(capture, 1)
        os.dup2(capture, 2)
        # A crash writes "Fatal Python error: Segmentation fault" here, then dies.
        faulthandler.enable(file=out_w, all_threads=False)
        verdict = _compile(text, name, capture, Path(f"/proc/self/fd/{bundle}"))
    except BaseException as err:  # noqa: BLE001 - the child must reach _exit whatever happens
        verdict = {"error": f"{name}: the policy check failed: {type(err).__name__}: {err}"}
        code = 1
    try:
        data = json.dumps(verdict).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(out_w, view) :]
        os.close(out_w)  # the agent's EOF now, not after this process is torn down
    finally:
        os._exit(code)


def _compile(
    text: str, name: str, capture: int, bundle: Path
) -> dict[str, object]:  # pragma: no cover
    from guest.agent.policy import Policy

    try:
        started = time.monotonic()
        Policy(text, name).save(bundle)
        compiled = time.monotonic()
        Policy(text, name, bundle=bundle).reason()  # what the agent then does
    except PolicyError as err:
        # regopy's printed message reads better than its error's s-expression.
        detail = first_error(_read(capture)) if "does not compile" in str(err) else ""
        if not detail:
            return {"error": str(err)}
        return {"error": f"{name}: policy does not compile: {detail}"}
    reloaded = time.monotonic()
    return {
        "ok": True,
        "compile_ms": round(1000 * (compiled - started), 1),
        "reload_ms": round(1000 * (reloaded - compiled), 1),
    }


def _read(fd: int) -> str:  # pragma: no cover
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, MAX_VERDICT_BYTES).decode(errors="replace")


def first_error(printed: str) -> str:
    """The first error regopy printed, one line: after "Errors:" the message and its
    "-- <where>" line, or a "<file>.rego:<line>:<column>: <message>" line."""
    lines = [line.strip() for line in printed.splitlines()]
    if "Errors:" in lines:
        start = lines.index("Errors:") + 1
        message = next((line for line in lines[start:] if line), "")
        if message and not message.startswith("--"):
            where = next((line for line in lines[start:] if line.startswith("-- ")), "")
            if ".rego:" in where:
                message += f" ({where.removeprefix('-- ')})"
            return message[:500]
    for line in lines:
        found = _LOCATED.match(line)
        if found:
            return f"{found['message'].rstrip(':')} ({found['where']})"[:500]
    return ""
