"""Hostile Rego: policies generated from fragments of the language (duplicate and
conflicting rules, recursion, comprehensions, builtins, partial sets, functions), run
through the agent's untrusted-policy path.

The check (a forked child) must answer with a policy or a PolicyError naming the
problem, whatever regopy does with the text: crashes included, which the events
count. A policy the check accepts is then evaluated, in a forked child of this test
(the agent evaluates in process), on arbitrary inputs: every answer must be a
Decision, and no evaluation may crash regopy.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from guest.agent import policycheck
from guest.agent.errors import PolicyError
from guest.agent.policy import Policy
from tests.unit.fuzz.settings import fuzz_slow

RULE_NAMES = [
    "CreateContainerRequest", "GuestDetailsRequest", "ExecProcessRequest", "policy_reason",
    "AllowRequestsFailingPolicy", "helper", "f",
]  # fmt: skip
VALUES = st.sampled_from(
    ["true", "false", '"text"', "1", "0.5", "null", "{}", "[]", '{"allowed": true}',
     '{"allowed": true, "ops": [{"op": "add", "path": "/pstate/x", "value": 1}]}',
     '{"allowed": true, "ops": [{"op": "remove", "path": "/"}]}', "input", "data"]
)  # fmt: skip
EXPRESSIONS = st.sampled_from(
    [
        "input.a == 1", "input.container_id != \"\"", "not input.c", "some x in input.list",
        "count(input.list) > 2", "data.pstate[input.container_id]", "helper",
        "every x in input.list { x > 0 }", "y := [z | some z in input.list]",
        'startswith(input.s, "a")', 'regex.match("a+b*", input.s)', "f(input.a) == 2",
        'object.get(input, "x", 1) == 1', "json.marshal(input) != \"\"",
        'sprintf("%v", [input]) != ""', 'concat("/", input.list) == "a"',
        "count(numbers.range(1, 50)) == 50", "input.OCI.Process.Args[0] == \"sh\"",
        "CreateContainerRequest", "GuestDetailsRequest", "policy_reason == \"x\"",
        "x := input.a / 0", "to_number(input.s) > 1", "input.a.b.c.d == 1",
        'units.parse_bytes(input.s) > 0', "base64.decode(input.s) == \"\"",
        'glob.match("*", [], input.s)', "time.now_ns() > 0", "trace(\"x\")",
        "walk(input, [p, v])", "abs(input.a) > 1", "array.slice(input.list, 0, 2) == []",
    ]
)  # fmt: skip


@st.composite
def rules(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(RULE_NAMES))
    body = "; ".join(draw(st.lists(EXPRESSIONS, min_size=1, max_size=3)))
    value = draw(VALUES)
    shapes = [
        f"default {name} := {value}",
        f"{name} := {value}",
        f"{name} if {{ {body} }}",
        f"{name} := {value} if {{ {body} }}",
        f"{name} contains {value} if {{ {body} }}",
        f"{name}[input.s] := {value} if {{ {body} }}",
        f"{name}(x) := {value} if {{ {body} }}",
        f"{name} if {{ {body} }} else := {value}",
    ]
    return draw(st.sampled_from(shapes))


@st.composite
def policies(draw: st.DrawFn) -> str:
    head = draw(st.sampled_from(["package agent_policy\n", "package agent_policy.x\n", ""]))
    imports = draw(st.sampled_from(["import rego.v1\n", "", "import future.keywords\n"]))
    return head + imports + "\n".join(draw(st.lists(rules(), min_size=1, max_size=6))) + "\n"


INPUTS = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "a": st.one_of(st.integers(-3, 3), st.text(max_size=3), st.none()),
            "s": st.text(max_size=6),
            "list": st.lists(st.one_of(st.integers(-2, 2), st.text(max_size=2)), max_size=3),
            "container_id": st.sampled_from(["", "x", "c1"]),
            "c": st.booleans(),
        },
    ),
    min_size=1,
    max_size=3,
)


def evaluate_forked(text: str, inputs: list[dict[str, Any]]) -> list[Any] | str:
    """Each request rule's decisions for ``inputs``, evaluated in a forked child as the
    agent does in process; a string naming the signal if regopy crashed."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        code = 0
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # regopy's printed errors
            policy = Policy(text, eval_timeout=60)
            out = [
                [policy.evaluate(rule, doc).allowed for rule in RULE_NAMES[:3]] for doc in inputs
            ]
            os.write(write, json.dumps(out).encode())
        except BaseException:
            code = 3
        os._exit(code)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return signal.Signals(os.WTERMSIG(status)).name
    assert os.WEXITSTATUS(status) == 0, f"evaluation raised (exit {os.WEXITSTATUS(status)})"
    decisions: list[Any] = json.loads(b"".join(chunks))
    return decisions


@fuzz_slow
@given(policies(), INPUTS)
def test_hostile_rego_is_refused_or_evaluated_without_a_crash(
    text: str, inputs: list[dict[str, Any]]
) -> None:
    try:
        policycheck.check(text, timeout=60)
    except PolicyError as err:
        message = str(err)
        assert message.startswith("policy.rego: "), message
        if "crashed the Rego engine" in message:
            event("refused: crashed regopy in the check")
        else:
            event("refused: " + message.split(":")[2].strip()[:30])
        return
    event("accepted")
    decisions = evaluate_forked(text, inputs)
    assert not isinstance(decisions, str), f"regopy crashed ({decisions}) evaluating:\n{text}"
    assert all(isinstance(d, bool) for row in decisions for d in row)
