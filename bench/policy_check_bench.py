"""What isolating untrusted Rego costs: the forked check, the evaluation thread.

    .venv/bin/python -m bench.policy_check_bench [--rounds 20] [--evals 500] [--gap 0.1]

1. Loading a policy from outside (``policy.untrusted``: compile in a forked child,
   then here) next to compiling it here only (``Policy(text)``, what the agent did
   before), for a small policy and a genpolicy-sized one (about 1500 lines).
2. One request's evaluation through the policy's thread with its time bound
   (``Policy.evaluate``) next to the same evaluation called directly on the caller's
   thread (the baseline), and the event-loop form (``Policy.decide``).
3. A state-changing request (its rule returns ops, as genpolicy's CreateContainerRequest
   does for every container): regopy's bundles hold their data, so each state change
   compiles the whole policy again. Its decision, then ``--gap`` seconds of the agent's
   own work on the request (a sleep standing in for the image pull and the container's
   creation), then the next request's decision: with the compile after the decision
   (the agent's way), and within it (``compile_state_at_once``, the baseline).

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


def state_changes(rounds: int, gap: float) -> None:
    for label, text in (("small policy", POLICY), ("genpolicy-sized", large_policy())):
        figures: dict[bool, list[float]] = {False: [], True: []}
        decisions: dict[bool, list[float]] = {False: [], True: []}
        policies = {
            at_once: Policy(text + STATEFUL, compile_state_at_once=at_once) for at_once in figures
        }
        for n in range(rounds):
            for at_once, policy in policies.items():  # alternating
                start = time.perf_counter()
                assert policy.evaluate("StateRequest", {"n": n}).allowed
                decisions[at_once].append(time.perf_counter() - start)
                time.sleep(gap)  # the agent's work on the request (GIL released)
                assert policy.evaluate("StatelessRequest", {}).allowed
                figures[at_once].append(time.perf_counter() - start)
        for policy in policies.values():
            assert policy.state["pstate"]["last"] == rounds - 1

        def med(values: list[float]) -> float:
            return statistics.median(values) * 1000

        print(
            f"{label:16}: state-changing decision {med(decisions[False]):7.2f} ms (compiled at "
            f"once, baseline: {med(decisions[True]):7.2f}); it, {gap * 1000:.0f} ms of work, and "
            f"the next decision {med(figures[False]):7.2f} ms (baseline {med(figures[True]):7.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--evals", type=int, default=500)
    parser.add_argument(
        "--gap",
        type=float,
        default=0.1,
        help="seconds of the agent's own work between a state-changing request's decision "
        "and the next request (a container's image pull and creation)",
    )
    args = parser.parse_args()
    loads(args.rounds)
    asyncio.run(evals(args.evals))
    state_changes(args.rounds, args.gap)


if __name__ == "__main__":
    main()
