from __future__ import annotations

import json

import pytest
from regopy import Interpreter

from guest.initdata import policy


def evaluate(module: str, rule: str) -> object:
    rego = Interpreter()
    rego.add_module("policy", module)
    out = rego.query(f"x := data.agent_policy.{rule}")
    if str(out) == "undefined":
        return "undefined"
    return json.loads(out.binding("x").json())


def test_deny_all_compiles_and_denies_every_request() -> None:
    module = policy.deny_all("initdata digest mismatch: a != b")
    rego = Interpreter()
    rego.add_module("policy", module)
    names = ", ".join(f'"{n}": data.agent_policy.{n}' for n in policy.REQUESTS)
    out = rego.query(f"x := {{{names}}}")
    decisions = json.loads(out.binding("x").json())
    assert decisions == dict.fromkeys(policy.REQUESTS, False)
    assert "CreateContainerRequest" in decisions and "SetPolicyRequest" in decisions


def test_reason_is_retrievable() -> None:
    module = policy.deny_all("initdata digest mismatch: a != b")
    assert evaluate(module, "policy_reason") == "initdata: initdata digest mismatch: a != b"
    assert evaluate(module, "CreateContainerRequest") is False
    # A name the module does not define stays undefined: the agent's default-deny covers it.
    assert evaluate(module, "NoSuchRequest") == "undefined"


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ('quote " and backslash \\', 'quote " and backslash \\'),
        ("two\nlines\r\n and\ttabs", "two lines and tabs"),
        ("unicode é and \x00 nul", "unicode ? and ? nul"),
        ('"} \ndefault CreateContainerRequest := true\n#', None),
    ],
)
def test_reason_cannot_break_out_of_the_string(reason: str, expected: str | None) -> None:
    module = policy.deny_all(reason)
    got = evaluate(module, "policy_reason")
    assert isinstance(got, str) and got.startswith("initdata: ")
    if expected is not None:
        assert got == "initdata: " + expected
    assert evaluate(module, "CreateContainerRequest") is False
    assert module.count("\n") == len(policy.REQUESTS) + 5


def test_long_reason_is_bounded() -> None:
    got = evaluate(policy.deny_all("x" * 10_000), "policy_reason")
    assert isinstance(got, str) and len(got) <= policy.MAX_REASON_CHARS + len("initdata: ")
    assert got.endswith("...")
