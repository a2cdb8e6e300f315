"""Hostile policies: ones regopy cannot compile, crashes on, or evaluates for too long.

The agent must stay up and deny every request naming the problem. The crash is real:
regopy 1.5 segfaults on the first query of the bundle a policy with two ``default``
rules for one name builds. It happens only in a forked child here (the checker's, or
the one this test forks), never in the test process.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import regopy

import ttrpc
from agent.transport.client import AgentClient
from api.kata import agent_pb2
from guest.agent import policycheck
from guest.agent.errors import PolicyError
from guest.agent.policy import RULES, Policy, load, untrusted
from guest.agent.server import AgentConfig, build_agent, build_server
from ttrpc import Client

TWO_DEFAULTS = (
    "package agent_policy\n\n"
    "default GuestDetailsRequest := false\n"
    "default GuestDetailsRequest := true\n"
)
# Finite (about a second on an idle host, longer under load), far beyond the bounds used.
SLOW_BODY = "every i in numbers.range(1, 500) { every j in numbers.range(1, 500) { i + j > 0 } }"
SLOW_RULE = f"package agent_policy\nimport rego.v1\nGuestDetailsRequest if {{ {SLOW_BODY} }}\n"
# Never finishes (the checker's child is killed at its bound).
ENDLESS_REASON = (
    "package agent_policy\nimport rego.v1\n"
    'policy_reason := "never" if { every i in numbers.range(1, 1000000) '
    "{ every j in numbers.range(1, 1000000) { i + j > 0 } } }\n"
)
GOOD = "package agent_policy\n\nGuestDetailsRequest := true\nSetPolicyRequest := true\n"


def children() -> set[str]:
    """This process's children (killed and reaped ones are gone from the list)."""
    found: set[str] = set()
    for task in Path("/proc/self/task").iterdir():
        found |= set((task / "children").read_text().split())
    return found


def test_two_default_rules_are_refused_in_process_without_a_crash() -> None:
    # Before the bundle's ok() was checked, this segfaulted the process at the first query.
    with pytest.raises(PolicyError, match="does not compile: regopy built no usable bundle"):
        Policy(TWO_DEFAULTS)


def test_the_checker_names_regopys_own_message() -> None:
    with pytest.raises(PolicyError, match=r"^policy.rego: policy does not compile: Multiple defa"):
        policycheck.check(TWO_DEFAULTS)


def test_a_syntax_error_is_named_with_its_place() -> None:
    with pytest.raises(PolicyError, match=r"does not compile: this is unclosed \(policy.rego:3:"):
        policycheck.check("package agent_policy\n\nGuestDetailsRequest := {{\n")


def test_a_real_regopy_segfault_in_the_check_is_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the ok() check the child queries the broken bundle: regopy really crashes.
    monkeypatch.setattr(regopy.Bundle, "ok", lambda self: True)
    before = children()
    with pytest.raises(PolicyError) as caught:
        policycheck.check(TWO_DEFAULTS)
    assert str(caught.value) == (
        "policy.rego: the policy crashed the Rego engine (Segmentation fault): refused"
    )
    assert children() == before  # still here, and the child is reaped, not a zombie


def test_a_check_that_never_ends_is_killed_at_its_bound() -> None:
    before = children()
    with pytest.raises(PolicyError, match=r"checking the policy took longer than 0.5 s"):
        policycheck.check(ENDLESS_REASON, timeout=0.5)
    assert children() == before


def test_a_compiling_policy_passes_the_check() -> None:
    assert untrusted(GOOD).evaluate("GuestDetailsRequest", {}).allowed


@pytest.mark.parametrize(
    ("text", "why"),
    [(TWO_DEFAULTS, "Multiple default rules"), ("package agent_policy\nx := {\n", "unclosed")],
)
def test_a_hostile_policy_file_denies_every_request_naming_why(
    tmp_path: Path, text: str, why: str
) -> None:
    path = tmp_path / "policy.rego"
    path.write_text(text)
    policy = load(path)
    for rule in RULES[:-2]:  # the request rules (not policy_reason, AllowRequests...)
        decision = policy.evaluate(rule, {})
        assert not decision.allowed, rule
        assert why in decision.reason, (rule, decision.reason)


def join_runaway(policy: Policy) -> None:
    # The runaway query is finite here: wait for it so no thread is left burning a core.
    thread = policy._worker._thread
    assert thread is not None
    policy._worker.stop()
    thread.join()


def test_an_evaluation_over_its_bound_disables_the_policy() -> None:
    policy = Policy(SLOW_RULE + "ExecProcessRequest := true\n", eval_timeout=0.05)
    try:
        first = policy.evaluate("GuestDetailsRequest", {})
        expected = (
            "policy evaluation of GuestDetailsRequest took longer than 0.05 s: "
            "the policy is disabled"
        )
        assert first == first.__class__(False, expected)
        # Every later request, even one the policy allows, is denied with that reason.
        assert policy.evaluate("ExecProcessRequest", {}) == first.__class__(False, expected)
    finally:
        join_runaway(policy)


async def test_decide_overrunning_does_not_block_the_event_loop() -> None:
    policy = Policy(SLOW_RULE, eval_timeout=0.05)
    ticked = threading.Event()
    try:
        asyncio.get_running_loop().call_soon(ticked.set)
        decision = await policy.decide("GuestDetailsRequest", {})
        assert not decision.allowed
        assert "took longer than 0.05 s" in decision.reason
        assert ticked.is_set()
    finally:
        join_runaway(policy)


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[AgentClient]:
    """The agent's services over a socketpair, its policy file the hostile one."""
    path = tmp_path / "policy.rego"
    path.write_text(TWO_DEFAULTS)
    config = AgentConfig(run_dir=tmp_path / "run", policy_path=path)
    server = build_server(build_agent(config))
    ours, theirs = socket.socketpair()
    await server.serve_fd(theirs.detach())
    client = AgentClient(await Client.from_fd(ours.detach()))
    yield client
    await client.close()
    await server.close()


async def test_the_agent_stays_up_and_denies_naming_the_problem(agent: AgentClient) -> None:
    with pytest.raises(ttrpc.PermissionDenied) as caught:
        await agent.guest_details()
    assert str(caught.value.message) == (
        "GuestDetailsRequest is blocked by policy: policy.rego: policy does not compile: "
        "Multiple default rules"
    )
    assert await agent.check()
    with pytest.raises(ttrpc.PermissionDenied, match="Multiple default rules"):
        await agent.agent.CreateContainer(agent_pb2.CreateContainerRequest(container_id="c"))


async def test_set_policy_refuses_a_crashing_policy_and_keeps_the_old_one(
    tmp_path: Path,
) -> None:
    config = AgentConfig(run_dir=tmp_path / "run", policy_path=tmp_path / "absent.rego")
    server = build_server(build_agent(config, agent_policy=Policy(GOOD)))
    ours, theirs = socket.socketpair()
    await server.serve_fd(theirs.detach())
    client = AgentClient(await Client.from_fd(ours.detach()))
    stub: Any = client.agent
    try:
        with pytest.raises(ttrpc.InvalidArgument, match="Multiple default rules"):
            await stub.SetPolicy(agent_pb2.SetPolicyRequest(policy=TWO_DEFAULTS))
        assert await client.guest_details()  # the old policy is still in force
        await stub.SetPolicy(agent_pb2.SetPolicyRequest(policy=DETAILS_DENIED))
        with pytest.raises(ttrpc.PermissionDenied, match="replaced"):
            await client.guest_details()
    finally:
        await client.close()
        await server.close()


DETAILS_DENIED = 'package agent_policy\n\npolicy_reason := "replaced"\n'


async def test_set_policys_check_runs_between_evaluations_on_the_policys_thread() -> None:
    policy = Policy(GOOD)
    assert await policy.alone(lambda: threading.current_thread().name) == "policy"


async def test_a_disabled_policys_stuck_thread_does_not_hold_up_set_policy() -> None:
    policy = Policy(SLOW_RULE + "SetPolicyRequest := true\n", eval_timeout=0.05)
    try:
        assert not (await policy.decide("GuestDetailsRequest", {})).allowed  # now disabled
        name = await asyncio.wait_for(policy.alone(lambda: threading.current_thread().name), 30)
        assert name != "policy"
    finally:
        join_runaway(policy)


def test_a_rule_that_is_a_function_is_a_policy_error_not_a_json_error() -> None:
    # Found by tests/unit/fuzz/test_rego_policies.py: regopy's Output raised
    # JSONDecodeError for the entry point of a function, out of Policy() (the agent's
    # build, which ends the agent) and out of every denial's policy_reason lookup.
    text = "package agent_policy\n\npolicy_reason(x) := x\nCreateContainerRequest(x) := true\n"
    policy = untrusted(text)
    assert policy.reason() == ""
    decision = policy.evaluate("CreateContainerRequest", {})
    assert not decision.allowed
    assert "evaluating CreateContainerRequest failed: JSONDecodeError" in decision.reason


def test_a_compile_error_printed_with_its_place_is_named() -> None:
    # Another form regopy prints (found by the Rego fuzzer): "<file>:<line>:<col>: ...".
    text = (
        "package agent_policy\nimport rego.v1\n"
        "f(x) := 1 if { x := input.a; some x in input.list }\n"
    )
    expected = r"^policy.rego: policy does not compile: conflicting definitions of `x` "
    with pytest.raises(PolicyError, match=expected + r"\(policy.rego:3:\d+\)$"):
        policycheck.check(text)
