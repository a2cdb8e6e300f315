"""The agent's Rego policy, evaluated with regopy as Kata's agent does with regorus.

Contract (Kata ``src/agent/policy``): every request is the query
``data.agent_policy.<RequestName>`` with the request as ``input``; the result is
either a boolean or an object ``{"allowed": bool, "ops": [JSON patch]}`` whose ops,
when allowed, patch the data document (policy state lives under ``data.pstate``,
empty at start and after every SetPolicy). Anything else denies: an undefined rule,
a rule that fails to evaluate, a result of another type. ``AllowRequestsFailingPolicy
:= true`` in the policy turns denials into allows, as in Kata (for debugging).

``data.agent_policy.policy_reason`` (a string), when the policy defines it, is put
into every denial message (the initdata processor's deny-all convention).

Hostile policies: a policy from outside (the initdata file, SetPolicy) is first
compiled in a forked child (:mod:`guest.agent.policycheck`), since some Rego crashes
regopy. Every evaluation runs on the policy's own thread (regopy's calls release the
GIL) within ``eval_timeout``: a request whose evaluation takes longer is denied and the
policy is disabled, every later request denied with the same reason, because the
interpreter is still busy with the runaway query and cannot be stopped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from regopy import Bundle, BundleFormat, Interpreter, RegoError

from api.kata import agent_pb2
from guest.agent import jsonpatch, policycheck
from guest.agent.errors import PolicyError
from guest.agent.policyworker import Worker

log = logging.getLogger(__name__)

POLICY_PATH = Path("/run/measured-cfg/policy.rego")
PACKAGE = "agent_policy"
REASON_RULE = "policy_reason"
ALLOW_FAILURES_RULE = "AllowRequestsFailingPolicy"
MAX_POLICY_BYTES = 16 * 1024 * 1024
# A genpolicy rule takes milliseconds even under TCG: the bound catches a runaway one.
EVAL_TIMEOUT = 10.0
# In the compile error of a bundle regopy could not build (it prints why on stdout).
NOT_BUILT = "regopy built no usable bundle"
# Compiled once per policy (and per state change) as bundle entry points: a query of
# a bundle skips regopy's per-query compilation (0.2 ms instead of 1-2 ms).
RULES = (
    *sorted(
        {m.input_type.name for m in agent_pb2.DESCRIPTOR.services_by_name["AgentService"].methods}
    ),
    REASON_RULE,
    ALLOW_FAILURES_RULE,
)


def deny_all_policy(reason: str) -> str:
    """A policy denying every request (no rule defined) and carrying ``reason``."""
    return f"package {PACKAGE}\n\n{REASON_RULE} := {json.dumps(reason)}\n"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    # Why it was denied: the policy's policy_reason and/or an evaluation failure.
    reason: str = ""


class Policy:
    """One compiled policy plus its state document. Evaluations run one at a time on
    the policy's own thread; call it from one event loop (or one thread)."""

    def __init__(
        self,
        text: str,
        name: str = "policy.rego",
        eval_timeout: float = EVAL_TIMEOUT,
        bundle: Path | None = None,
        *,
        compile_state_at_once: bool = False,
    ) -> None:
        """Compile ``text`` in this process: trusted text, or text :func:`untrusted`
        checked. ``bundle``: load that binary bundle of ``text`` (built by
        :meth:`save`) instead of compiling. ``compile_state_at_once``: a state change
        is compiled before its request's decision is handed over, not after (the
        baseline of bench/policy_check_bench). Raises PolicyError naming the failure."""
        if len(text.encode()) > MAX_POLICY_BYTES:
            raise PolicyError(f"{name}: policy larger than {MAX_POLICY_BYTES} bytes")
        self.text = text
        self.name = name
        self.eval_timeout = eval_timeout
        self._disabled = ""  # why, once an evaluation overran its bound
        self._compile_state_at_once = compile_state_at_once
        self._worker = Worker()
        weakref.finalize(self, self._worker.stop)
        self._data: dict[str, Any] = {"pstate": {}}
        self._rules = set(RULES)
        self._input = "{}"
        self._rego, self._bundle = self._compile() if bundle is None else self._load(bundle)
        try:
            self._allow_failures = self._constant(ALLOW_FAILURES_RULE) is True
        except PolicyError as err:  # as undefined: every request is still decided
            log.warning("%s: %s; taken as false", name, err)
            self._allow_failures = False

    def save(self, path: Path) -> None:
        """Write the compiled bundle (empty state) in regopy's binary format to ``path``.

        Loading it is about 30 times faster than compiling. Raises PolicyError.
        """
        try:
            self._rego.save_bundle(str(path), self._bundle, BundleFormat.Binary)
        except RegoError as err:
            raise PolicyError(f"{self.name}: cannot save the compiled bundle: {err}") from err

    def _load(self, path: Path) -> tuple[Interpreter, Bundle]:
        rego = Interpreter()
        try:
            bundle = rego.load_bundle(str(path), BundleFormat.Binary)
        except RegoError as err:
            raise PolicyError(f"{self.name}: cannot load its compiled bundle: {err}") from err
        if not bundle.ok():
            raise PolicyError(f"{self.name}: cannot load its compiled bundle: {NOT_BUILT}")
        rego.set_input_term(self._input)
        return rego, bundle

    def _compile(self) -> tuple[Interpreter, Bundle]:
        rego = Interpreter()
        try:
            rego.add_module(self.name, self.text)
            rego.add_data_json(json.dumps(self._data))
            entrypoints = [f"{PACKAGE}/{rule}" for rule in sorted(self._rules)]
            bundle = rego.build("x := true", entrypoints)
        except RegoError as err:
            raise PolicyError(
                f"{self.name}: policy does not compile: {_one_line(str(err))}"
            ) from err
        # A failed build returns a bundle anyway; querying it segfaults (regopy 1.5,
        # e.g. two default rules for one name).
        if not bundle.ok():
            raise PolicyError(f"{self.name}: policy does not compile: {NOT_BUILT}")
        rego.set_input_term(self._input)
        return rego, bundle

    @property
    def state(self) -> dict[str, Any]:
        """The policy's data document (``pstate`` and whatever ops added)."""
        return json.loads(json.dumps(self._data))  # type: ignore[no-any-return]

    def _constant(self, rule: str) -> Any:
        self._set_input("{}")
        return self._query(rule)

    def _set_input(self, text: str) -> None:
        self._input = text
        self._rego.set_input_term(text)

    def _query(self, rule: str) -> Any:
        """The value of data.agent_policy.<rule>, or None when undefined.

        Raises PolicyError when evaluation fails.
        """
        if rule not in self._rules:
            self._rules.add(rule)
            self._rego, self._bundle = self._compile()
        try:
            out = self._rego.query_bundle_entrypoint(self._bundle, f"{PACKAGE}/{rule}")
            # Read the printed form: regopy aborts the process on a binding of an
            # undefined result, and frees nodes with their Output.
            text = str(out)
            if not out.ok():
                raise PolicyError(f"evaluating {rule} failed: {_one_line(text)}")
            if text == "undefined":
                return None
            expressions = json.loads(text)["expressions"]
        # regopy's Output parses what the engine printed, which is not always JSON (a
        # rule that is a function, ``policy_reason(x) := ...``): JSONDecodeError.
        except (RegoError, ValueError, KeyError, TypeError) as err:
            raise PolicyError(f"evaluating {rule} failed: {type(err).__name__}: {err}") from err
        if not isinstance(expressions, list) or len(expressions) != 1:
            raise PolicyError(f"evaluating {rule} gave no single result: {_one_line(text)}")
        return expressions[0]

    def reason(self) -> str:
        """The policy's policy_reason, or "" when it has none (or it is not a string)."""
        try:
            value = self._query(REASON_RULE)
        except PolicyError:
            return ""
        return value if isinstance(value, str) else ""

    def evaluate(self, request: str, input_doc: dict[str, Any]) -> Decision:
        """Decide ``request`` (e.g. "CreateContainerRequest") for ``input_doc``.

        Blocks at most ``eval_timeout`` seconds. Never raises for a policy's fault: any
        failure is a denial whose reason says why.
        """
        if self._disabled:
            return self._deny_disabled(request)
        job = self._worker.submit(lambda: self._evaluate(request, input_doc))
        try:
            return job.result(self.eval_timeout)
        except FutureTimeout:
            return self._overran(request)

    async def decide(self, request: str, input_doc: dict[str, Any]) -> Decision:
        """:meth:`evaluate` without blocking the event loop meanwhile."""
        if self._disabled:
            return self._deny_disabled(request)
        job = self._worker.submit(lambda: self._evaluate(request, input_doc))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(job), self.eval_timeout)
        except TimeoutError:
            return self._overran(request)

    async def alone(self, job: Callable[[], T]) -> T:
        """Run ``job`` on this policy's thread, after the evaluations queued before it
        and before any queued after, without a time bound. SetPolicy checks the new
        policy this way, so its fork never copies the agent while this thread is inside
        regopy (the child could inherit a lock held mid-call). A disabled policy's
        thread is stuck in its runaway query: the job runs on a thread of its own."""
        if self._disabled:
            return await asyncio.to_thread(job)
        return await asyncio.wrap_future(self._worker.submit(job))

    def _overran(self, request: str) -> Decision:
        self._disabled = (
            f"policy evaluation of {request} took longer than {self.eval_timeout:g} s: "
            "the policy is disabled"
        )
        log.error("%s: %s", self.name, self._disabled)
        return self._deny_disabled(request)

    def _deny_disabled(self, request: str) -> Decision:
        # No policy_reason: the interpreter is busy with the runaway query.
        if self._allow_failures:
            log.warning(
                "policy: %s denied (%s), allowed by %s", request, self._disabled,
                ALLOW_FAILURES_RULE,
            )  # fmt: skip
            return Decision(True)
        return Decision(False, self._disabled)

    def _evaluate(self, request: str, input_doc: dict[str, Any]) -> Decision:
        if self._disabled:  # since this evaluation was queued (a state update failed)
            return self._deny_disabled(request)
        try:
            self._set_input(json.dumps(input_doc))
            value = self._query(request)
        except (PolicyError, RegoError, ValueError) as err:
            return self._deny(request, f"policy evaluation failed: {_one_line(str(err))}")
        if value is None:
            return self._deny(request, "")
        if isinstance(value, bool):
            return Decision(True) if value else self._deny(request, "")
        if isinstance(value, dict) and isinstance(value.get("allowed"), bool):
            if not value["allowed"]:
                return self._deny(request, "")
            ops = value.get("ops")
            if ops is not None:
                try:
                    self._apply(ops)
                except PolicyError as err:
                    return self._deny(request, str(err))
            return Decision(True)
        return self._deny(request, f"policy returned {type(value).__name__}, not a decision")

    def _deny(self, request: str, failure: str) -> Decision:
        if self._allow_failures:
            log.warning(
                "policy: %s denied (%s), allowed by %s", request, failure, ALLOW_FAILURES_RULE
            )
            return Decision(True)
        parts = [p for p in (self.reason(), failure) if p]
        return Decision(False, "; ".join(parts))

    def _apply(self, ops: Any) -> None:
        """Apply JSON patch ``ops`` to the data document; the policy is compiled with it
        on this thread as soon as the current decision is handed over (_recompile).

        regopy's bundles hold their data (and it merges added data instead of replacing
        it), so a state change means a new interpreter and a whole compile: 100-200 ms
        for a genpolicy-sized policy natively. The request that changed the state does
        not wait for it: its container is made (its image pulled) meanwhile. The next
        evaluation, even one already queued, runs after the compile, with the new state.
        """
        try:
            patched = jsonpatch.apply(self._data, ops)
        except jsonpatch.PatchError as err:
            raise PolicyError(f"policy state update failed: {err}") from err
        if not isinstance(patched, dict):
            raise PolicyError("policy state update failed: the data document must stay an object")
        self._data = patched
        if self._compile_state_at_once:
            self._recompile()
        else:
            self._worker.after_this_job(self._recompile)

    def _recompile(self) -> None:
        """Compile the policy with the current data document; on failure, disable it.

        The request whose ops changed the state was allowed already; every later one is
        denied, since no interpreter holds the state the policy said it has."""
        try:
            self._rego, self._bundle = self._compile()
        except Exception as err:  # any failure disables the policy
            self._disabled = (
                f"policy state update failed: {_one_line(str(err))}: the policy is disabled"
            )
            log.exception("%s: %s", self.name, self._disabled)


T = TypeVar("T")


def untrusted(text: str, name: str = "policy.rego") -> Policy:
    """``text`` from outside the guest image: compiled in a child, loaded here.

    The child compiles it, saves the bundle, loads and queries that saved bundle as
    this process then does. Raises PolicyError naming why it was refused (see
    :func:`policycheck.compile_isolated`).
    """
    started = time.monotonic()
    with policycheck.compile_isolated(text, name) as bundle:
        policy = Policy(text, name, bundle=bundle)
    log.info(
        "%s compiled in a child process and loaded here in %.1f ms",
        name, 1000 * (time.monotonic() - started),
    )  # fmt: skip
    return policy


def load(path: Path = POLICY_PATH) -> Policy:
    """The policy in force at start: ``path``, else a deny-all policy saying why.

    A policy that does not compile, crashes the Rego engine or takes too long to
    check is replaced by a deny-all one naming the error, so every request fails with
    a message the user can read.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Policy(deny_all_policy(f"no policy: {path} does not exist"), "default-policy.rego")
    except (OSError, UnicodeDecodeError) as err:
        return Policy(deny_all_policy(f"cannot read {path}: {err}"), "default-policy.rego")
    try:
        return untrusted(text, path.name)
    except PolicyError as err:
        log.warning("policy %s rejected: %s", path, err)
        return Policy(deny_all_policy(str(err)), "default-policy.rego")


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= 500 else flat[:497] + "..."
