"""Policy evaluation with the real regopy and real Rego documents."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from api.kata import agent_pb2, oci_pb2, oci_process_pb2
from guest.agent import jsonpatch, policyinput
from guest.agent.errors import PolicyError
from guest.agent.policy import Policy, deny_all_policy, load
from guest.initdata.policy import deny_all as initdata_deny_all

PINNED = "registry.example/app@sha256:" + "a" * 64

# A Kata-style policy: one image and one command, exec only of "ls", stateful create.
POLICY = f"""package agent_policy

import rego.v1

default CreateContainerRequest := false
default ExecProcessRequest := false
default StartContainerRequest := true
default SetPolicyRequest := true

policy_reason := "pinned workload only" if {{ not input.allow_reason_off }}

CreateContainerRequest := {{"allowed": true, "ops": ops}} if {{
    input.storages[0].source == "{PINNED}"
    input.OCI.Process.Args == ["echo", "hello"]
    not data.pstate[input.container_id]
    ops := [{{"op": "add", "path": concat("/", ["/pstate", input.container_id]),
             "value": true}}]
}}

ExecProcessRequest if {{ input.process.Args == ["ls"] }}
"""


ARGS = ["echo", "hello"]


def create(cid: str, args: list[str], image: str = PINNED) -> agent_pb2.CreateContainerRequest:
    return agent_pb2.CreateContainerRequest(
        container_id=cid,
        OCI=oci_pb2.Spec(Process=oci_process_pb2.Process(Args=args)),
        storages=[agent_pb2.Storage(driver="image_guest_pull", source=image)],
    )


def decide(policy: Policy, request: agent_pb2.CreateContainerRequest) -> bool:
    return policy.evaluate(request.DESCRIPTOR.name, policyinput.to_input(request)).allowed


def test_pinned_image_and_command_allowed_others_denied() -> None:
    policy = Policy(POLICY)
    assert decide(policy, create("c1", ["echo", "hello"]))
    denied = policy.evaluate("CreateContainerRequest", policyinput.to_input(create("c2", ["sh"])))
    assert denied == denied.__class__(False, "pinned workload only")
    other_image = create("c3", ["echo", "hello"], image=PINNED.replace("a" * 64, "b" * 64))
    assert not decide(policy, other_image)


def test_ops_update_policy_state() -> None:
    policy = Policy(POLICY)
    assert decide(policy, create("c1", ["echo", "hello"]))
    assert policy.state == {"pstate": {"c1": True}}
    # The state now says c1 exists: the same id is refused the second time.
    assert not decide(policy, create("c1", ["echo", "hello"]))
    assert decide(policy, create("c2", ["echo", "hello"]))


def test_exec_rule() -> None:
    policy = Policy(POLICY)
    ok = agent_pb2.ExecProcessRequest(process=oci_process_pb2.Process(Args=["ls"]))
    bad = agent_pb2.ExecProcessRequest(process=oci_process_pb2.Process(Args=["sh"]))
    assert policy.evaluate("ExecProcessRequest", policyinput.to_input(ok)).allowed
    assert not policy.evaluate("ExecProcessRequest", policyinput.to_input(bad)).allowed


def test_undefined_rule_denies() -> None:
    decision = Policy(POLICY).evaluate("RemoveContainerRequest", {})
    assert not decision.allowed


def test_evaluation_error_denies_with_reason() -> None:
    policy = Policy(
        "package agent_policy\nimport rego.v1\n"
        "CreateContainerRequest := 1 if input.a\nCreateContainerRequest := 2 if input.b\n"
    )
    decision = policy.evaluate("CreateContainerRequest", {"a": True, "b": True})
    assert not decision.allowed
    assert "policy evaluation failed" in decision.reason


def test_result_of_wrong_type_denies() -> None:
    policy = Policy('package agent_policy\nCreateContainerRequest := "yes"\n')
    decision = policy.evaluate("CreateContainerRequest", {})
    assert not decision.allowed
    assert "not a decision" in decision.reason


def test_allowed_false_object_denies_and_keeps_state() -> None:
    policy = Policy(
        'package agent_policy\nCreateContainerRequest := {"allowed": false, '
        '"ops": [{"op": "add", "path": "/pstate/x", "value": 1}]}\n'
    )
    assert not policy.evaluate("CreateContainerRequest", {}).allowed
    assert policy.state == {"pstate": {}}


def test_broken_ops_deny() -> None:
    policy = Policy(
        'package agent_policy\nCreateContainerRequest := {"allowed": true, '
        '"ops": [{"op": "remove", "path": "/pstate/missing"}]}\n'
    )
    decision = policy.evaluate("CreateContainerRequest", {})
    assert not decision.allowed
    assert "policy state update failed" in decision.reason


def test_syntax_error_is_refused() -> None:
    with pytest.raises(PolicyError, match="does not compile"):
        Policy("package agent_policy\nCreateContainerRequest := {{{\n")


def test_broken_policy_file_denies_all_naming_the_error(tmp_path: Path) -> None:
    path = tmp_path / "policy.rego"
    path.write_text(
        "package agent_policy\ndefault CreateContainerRequest := true\nthis is not rego\n"
    )
    decision = load(path).evaluate("CreateContainerRequest", {})
    assert not decision.allowed
    assert "does not compile" in decision.reason


def test_missing_policy_file_denies_all(tmp_path: Path) -> None:
    decision = load(tmp_path / "absent.rego").evaluate("GuestDetailsRequest", {})
    assert not decision.allowed
    assert "does not exist" in decision.reason


def test_initdata_deny_all_reason_is_carried(tmp_path: Path) -> None:
    path = tmp_path / "policy.rego"
    path.write_text(initdata_deny_all("initdata digest mismatch: abc"))
    decision = load(path).evaluate("CreateContainerRequest", {})
    assert decision == decision.__class__(False, "initdata: initdata digest mismatch: abc")


def test_allow_requests_failing_policy() -> None:
    policy = Policy("package agent_policy\nAllowRequestsFailingPolicy := true\n")
    assert policy.evaluate("CreateContainerRequest", {}).allowed


def test_deny_all_policy_text() -> None:
    decision = Policy(deny_all_policy("because")).evaluate("SetPolicyRequest", {})
    assert decision == decision.__class__(False, "because")


def test_jsonpatch_operations() -> None:
    doc = {"pstate": {"a": [1, 2]}}
    ops = [
        {"op": "add", "path": "/pstate/a/-", "value": 3},
        {"op": "replace", "path": "/pstate/a/0", "value": 0},
        {"op": "copy", "from": "/pstate/a", "path": "/pstate/b"},
        {"op": "move", "from": "/pstate/b", "path": "/pstate/c"},
        {"op": "remove", "path": "/pstate/a/1"},
        {"op": "test", "path": "/pstate/c", "value": [0, 2, 3]},
        {"op": "add", "path": "/pstate/x~1y", "value": {}},
    ]
    assert jsonpatch.apply(doc, ops) == {"pstate": {"a": [0, 3], "c": [0, 2, 3], "x/y": {}}}
    assert doc == {"pstate": {"a": [1, 2]}}  # untouched
    with pytest.raises(jsonpatch.PatchError, match="op 0"):
        jsonpatch.apply(doc, [{"op": "test", "path": "/pstate/a", "value": []}])
    with pytest.raises(jsonpatch.PatchError):
        jsonpatch.apply(doc, [{"op": "add", "path": "pstate", "value": 1}])


class HeldCompile:
    """Stands in for a policy's recompile: waits until released, then compiles."""

    def __init__(self, policy: Policy) -> None:
        self.compile = policy._compile
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> Any:
        self.started.set()
        assert self.release.wait(120), "never released"
        return self.compile()


def test_a_state_change_is_compiled_after_its_decision_and_before_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = Policy(POLICY)
    held = HeldCompile(policy)
    monkeypatch.setattr(policy, "_compile", held)
    gate = threading.Event()

    async def main() -> None:
        # Both requests queue behind a held job: the second is queued before the first
        # is decided, so before its state change is compiled.
        blocker = asyncio.ensure_future(policy.alone(lambda: gate.wait(120)))
        first = asyncio.ensure_future(
            policy.decide("CreateContainerRequest", policyinput.to_input(create("c1", ARGS)))
        )
        again = asyncio.ensure_future(
            policy.decide("CreateContainerRequest", policyinput.to_input(create("c1", ARGS)))
        )
        await asyncio.sleep(0)
        gate.set()
        await blocker
        # Handed over while its state change waits to be compiled (released only
        # below: a decision that waited for the compile would never come)...
        assert (await first).allowed
        assert await asyncio.to_thread(held.started.wait, 120)
        assert policy.state == {"pstate": {"c1": True}}
        assert not again.done()
        held.release.set()
        # ...and the request queued meanwhile is decided on the new state: c1 exists.
        assert not (await again).allowed

    asyncio.run(main())


def test_a_state_change_that_does_not_compile_disables_the_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = Policy(POLICY)

    def broken() -> Any:
        raise PolicyError("policy.rego: policy does not compile: out of memory")

    monkeypatch.setattr(policy, "_compile", broken)
    assert decide(policy, create("c1", ARGS))  # decided before its state was compiled
    later = policy.evaluate("CreateContainerRequest", policyinput.to_input(create("c2", ARGS)))
    assert not later.allowed
    assert later.reason == (
        "policy state update failed: policy.rego: policy does not compile: out of memory: "
        "the policy is disabled"
    )
    assert not policy.evaluate("ExecProcessRequest", {"process": {"Args": ["ls"]}}).allowed
