"""containerd's command line for the shim entry, read without argparse.

containerd writes Go-style flags (``-namespace NS -address A -publish-binary B -id ID
start``). Building an argparse parser costs the entry's fresh process more than its
calls (argparse and, for its help formatter, shutil with bz2 and lzma), so the usual
forms are read here: ``-flag value``, ``--flag value``, ``-flag=value``,
``--flag=value``, the switches alone, one action. :func:`parse` answers None for
anything else (``-h``, an unknown flag, a value that looks like a flag, a second
action, ``--``), and the caller hands the command line to argparse, whose answer and
usage errors are then the ones given; tests/unit/shim/test_flags.py checks that both
agree wherever this module answers.
"""

from __future__ import annotations

# Flags with a value (argparse dest: "-" becomes "_"), switches (flag -> dest), actions.
VALUES = ("namespace", "address", "publish-binary", "id", "bundle", "socket")
SWITCHES = {"debug": "debug", "v": "version", "info": "info"}
ACTIONS = ("start", "delete")


class Args:
    """The parsed command line, with argparse's attribute names and defaults."""

    def __init__(self) -> None:
        self.namespace = ""
        self.address = ""
        self.publish_binary = ""
        self.id = ""
        self.bundle = ""
        self.socket = ""
        self.debug = False
        self.version = False
        self.info = False
        self.action: str | None = None


def _switch(arg: str) -> str | None:
    """The dest of a switch spelled ``-x`` or ``--dest``."""
    for flag, dest in SWITCHES.items():
        if arg in (f"-{flag}", f"--{dest}"):
            return dest
    return None


def _value_flag(arg: str) -> str | None:
    name = arg[2:] if arg.startswith("--") else arg[1:]
    return name if name in VALUES else None


def parse(argv: list[str]) -> Args | None:
    """The command line, or None to leave it to argparse."""
    args = Args()
    action_seen = False
    position = 0
    while position < len(argv):
        arg = argv[position]
        position += 1
        if not arg.startswith("-"):
            if action_seen or arg not in ACTIONS:
                return None
            args.action, action_seen = arg, True
            continue
        dest = _switch(arg)
        if dest is not None:
            setattr(args, dest, True)
            continue
        flag, equals, value = arg.partition("=")
        name = _value_flag(flag)
        if name is None:
            return None
        if not equals:
            if position >= len(argv) or argv[position].startswith("-"):
                return None
            value = argv[position]
            position += 1
        setattr(args, name.replace("-", "_"), value)
    return args
