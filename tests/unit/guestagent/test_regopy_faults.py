"""Rego that genpolicy's policies use and regopy (rego-cpp) gets wrong.

Each test states what OPA's semantics give. The ones regopy fails are strict xfails:
a regopy that fixes one makes its test XPASS, which fails the suite, so the mark and
its note in the issue tracker are removed the day it is fixed. Kata's agent evaluates
the same policies with regorus, which has none of these faults.
"""

from __future__ import annotations

import tomllib

import pytest

from guest.agent.errors import PolicyError
from guest.agent.policy import Policy
from tests.unit.initdata import vectors

HEAD = "package agent_policy\n\nimport rego.v1\n\nf(x) := y if {\n    y := x + 1\n}\n\n"
XS = {"xs": [1, 2]}


def allowed(rule_body: str) -> bool:
    """Whether the set ``{ p | some j; <rule_body> }`` is {2, 3} for input {"xs": [1, 2]},
    asked as genpolicy asks its mount matching (a request allowed when the set matches)."""
    policy = Policy(
        HEAD
        + f"matches := {{ p | some j; {rule_body} }}\n\n"
        + "CreateContainerRequest if {\n    matches == {2, 3}\n}\n"
    )
    return policy.evaluate("CreateContainerRequest", XS).allowed


def test_a_comprehension_over_a_function_of_a_bound_variable() -> None:
    # The control: the same set, the iterated element bound first.
    assert allowed("x := input.xs[j]; p := f(x)")


@pytest.mark.xfail(
    strict=True,
    reason="regopy 1.5.2: a function call on an iterated reference inside a comprehension "
    "yields the empty set",
)
def test_a_comprehension_over_a_function_of_an_iterated_reference() -> None:
    assert allowed("p := f(input.xs[j])")


@pytest.mark.xfail(
    strict=True,
    raises=PolicyError,
    reason="regopy 1.5.2: 'Unable to unify due to cycle' for genpolicy's mount matching "
    "(p_matches := { p_index | some i_index; p_index = allow_mount(...) })",
)
def test_genpolicys_mount_matching_by_unification() -> None:
    assert allowed("p = f(input.xs[j])")


@pytest.mark.xfail(
    strict=True,
    raises=PolicyError,
    reason="regopy 1.5.2 cannot compile trustee's genpolicy policy: 'Unable to unify due "
    "to cycle' at its mount matching",
)
def test_trustees_genpolicy_policy_compiles() -> None:
    document = tomllib.loads(vectors.read("trustee-init-data-with-policy.toml").decode())
    policy = Policy(document["data"]["policy.rego"])
    assert policy.state == {"pstate": {}}
