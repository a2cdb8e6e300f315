"""What isolating untrusted Rego costs: the forked check, the evaluation thread.

    .venv/bin/python -m bench.policy_check_bench [--rounds 20] [--evals 500]

1. Loading a policy from outside (``policy.untrusted``: compile in a forked child,
   then here) next to compiling it here only (``Policy(text)``, what the agent did
   before), for a small policy and a genpolicy-sized one (about 1500 lines).
2. One request's evaluation through the policy's thread with its time bound
   (``Policy.evaluate``) next to the same evaluation called directly on the caller's
   thread (the baseline), and the event-loop form (``Policy.decide``).
3. A state-changing request (its rule returns ops, as genpolicy's CreateContainerRequest
   does for every container) next to a stateless request of the same policy (the
   baseline): regopy's bundles hold their data, so each state change compiles the
   policy again.

Same run, same process, alternating. Figures only; the pod-VM's own figure is the
agent's console line "policy.rego checked in a child process in N ms".
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import time
from collections.abc import Callable

from guest.agent.policy import Policy, untrusted
from tests.unit.guestagent.test_policy import POLICY


def large_policy() -> str:
    """About 1500 lines: 40 request rules over helper rules, like genpolicy's output."""
    lines = ["package agent_policy", "", "import rego.v1", ""]
    for n in range(300):
        lines += [
            f"helper_{n}(x) if {{",
            f'    x.container_id != "forbidden-{n}"',
            f"    count(x.storages) < {n + 10}",
            "}",
        ]
    for n in range(40):
        lines += [f"default Request{n} := false", f"Request{n} if {{"]
        lines += [f"    helper_{(n * 7 + k) % 300}(input)" for k in range(8)]
        lines += ["}"]
    return "\n".join(lines) + "\n"


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def loads(rounds: int) -> None:
    for label, text in (("small policy", POLICY), ("genpolicy-sized", large_policy())):
        checked: list[float] = []
        plain: list[float] = []
        for _ in range(rounds):
            checked.append(median_ms(functools.partial(untrusted, text), 1))
            plain.append(median_ms(functools.partial(Policy, text), 1))
        print(
            f"{label:16} ({text.count(chr(10)):4} lines): checked + compiled "
            f"{statistics.median(checked):7.2f} ms, compiled only (baseline) "
            f"{statistics.median(plain):7.2f} ms, the check adds "
            f"{statistics.median(checked) - statistics.median(plain):7.2f} ms"
        )


async def evals(rounds: int) -> None:
    policy = Policy(POLICY + "\nGuestDetailsRequest := true\n")
    bounded: list[float] = []
    direct: list[float] = []
    awaited: list[float] = []
    for _ in range(rounds):
        bounded.append(median_ms(lambda: policy.evaluate("GuestDetailsRequest", {}), 1))
        direct.append(median_ms(lambda: policy._evaluate("GuestDetailsRequest", {}), 1))
        start = time.perf_counter()
        await policy.decide("GuestDetailsRequest", {})
        awaited.append((time.perf_counter() - start) * 1000)
    base = statistics.median(direct)
    print(f"evaluation, direct on the caller's thread (baseline): {base:7.3f} ms")
    for label, values in (("evaluate (thread, bound)", bounded), ("decide (event loop)", awaited)):
        value = statistics.median(values)
        print(f"evaluation, {label:24}              : {value:7.3f} ms (+{value - base:.3f})")


STATEFUL = """
StateRequest := {"allowed": true, "ops": [{"op": "add", "path": "/pstate/last", "value": input.n}]}
StatelessRequest := true
"""


def state_changes(rounds: int) -> None:
    for label, text in (("small policy", POLICY), ("genpolicy-sized", large_policy())):
        policy = Policy(text + STATEFUL)
        changing: list[float] = []
        stateless: list[float] = []
        for n in range(rounds):
            change = functools.partial(policy.evaluate, "StateRequest", {"n": n})
            changing.append(median_ms(change, 1))
            stateless.append(
                median_ms(functools.partial(policy.evaluate, "StatelessRequest", {}), 1)
            )
        assert policy.state["pstate"]["last"] == rounds - 1
        print(
            f"{label:16}: a state-changing request {statistics.median(changing):7.2f} ms, "
            f"a stateless one (baseline) {statistics.median(stateless):7.3f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--evals", type=int, default=500)
    args = parser.parse_args()
    loads(args.rounds)
    asyncio.run(evals(args.evals))
    state_changes(args.rounds)


if __name__ == "__main__":
    main()
