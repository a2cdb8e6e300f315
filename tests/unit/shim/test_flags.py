"""shim.flags, the entry's command line without argparse: where it answers, argparse
answers the same; containerd's command lines are all answered; the rest is left to
argparse (whose usage errors are then the ones given)."""

from __future__ import annotations

import itertools

import pytest

from shim import flags, main

BASE = ["-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock",
        "-publish-binary", "/usr/bin/containerd"]  # fmt: skip
# As containerd 1.6 - 2.3 run the entry.
CONTAINERD = [
    [*BASE, "-id", "c1", "start"],
    [*BASE, "-id", "c1", "-debug", "start"],
    [*BASE, "-id", "c1", "-bundle", "/run/containerd/io.containerd.runtime.v2.task/k8s.io/c1",
     "delete"],
    ["-namespace=k8s.io", "-id=c1", "start"],
    ["--namespace", "default", "--id", "c1", "--bundle", "/b", "delete"],
    ["-id", "", "start"],  # refused later, by main: -id is required
    ["-v"],
    ["--version"],
    ["-info"],
    ["start"],
    [],
]  # fmt: skip
LEFT_TO_ARGPARSE = [
    ["-h"],
    ["--help"],
    ["-id", "c1", "start", "delete"],
    ["-id", "c1", "stop"],
    ["-id"],
    ["-id", "-x", "start"],  # argparse: expected one argument
    ["-namespace", "-1", "start"],  # argparse takes a negative number as a value
    ["-unknown", "x", "start"],
    ["-debug=1", "start"],
    ["--", "start"],
    ["-id", "c1", "st"],
    ["-names", "x", "start"],  # no abbreviations
    ["---id", "c1", "start"],
    ["-id", "c1", ""],
]


def as_dict(args: object) -> dict[str, object]:
    return dict(vars(args))


@pytest.mark.parametrize("argv", CONTAINERD)
def test_containerd_command_lines_are_read_as_argparse_reads_them(argv: list[str]) -> None:
    fast = flags.parse(argv)
    assert fast is not None
    assert as_dict(fast) == as_dict(main.parse_args(argv))


@pytest.mark.parametrize("argv", LEFT_TO_ARGPARSE)
def test_unusual_command_lines_are_left_to_argparse(argv: list[str]) -> None:
    assert flags.parse(argv) is None


def test_every_combination_answered_agrees_with_argparse() -> None:
    """Orders, spellings and repeats of a few tokens: wherever flags.parse answers,
    argparse answers the same (and does not exit)."""
    tokens = ["-id", "c1", "--id=c2", "-namespace=", "start", "delete", "-debug", "-v", "x",
              "-bundle", "-info"]  # fmt: skip
    answered = 0
    for size in range(4):
        for argv in itertools.permutations(tokens, size):
            fast = flags.parse(list(argv))
            if fast is None:
                continue
            answered += 1
            assert as_dict(fast) == as_dict(main.parse_args(list(argv))), argv
    assert answered > 100


def test_argparse_still_gives_its_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main.main(["-id", "c1", "stop"])
    assert done.value.code == 2
    assert "invalid choice: 'stop'" in capsys.readouterr().err
