"""QEMU's key=value option syntax, done safely.

In ``-chardev file,id=x,path=...`` a comma ends the value and starts a new option, so
a path with ``,server=on`` in it would add one. QEMU's escape for a literal comma
is a doubled comma; every value that reaches such an option goes through
:func:`value`. Identifiers are never escaped: they must match a strict pattern.
"""

from __future__ import annotations

import re

from agent.vm.errors import ConfigError

_ID = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,62}\Z")


def value(text: str, what: str) -> str:
    """``text`` as one option value: commas doubled; control characters refused."""
    if not text:
        raise ConfigError(f"{what}: empty value")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ConfigError(f"{what}: control character in {text!r}")
    return text.replace(",", ",,")


def ident(text: str, what: str) -> str:
    """A QEMU object/device/node id: a letter, then letters, digits, ``_.-``."""
    if not _ID.match(text):
        raise ConfigError(f"{what}: {text!r} is not a valid id (letters, digits, _ . -)")
    return text


def opts(head: str, **fields: str | int | bool) -> str:
    """``head,key=value,...``; keys use ``_`` for ``-``; values must be pre-escaped strings,
    ints or bools (rendered on/off)."""
    parts = [head]
    for key, raw in fields.items():
        if isinstance(raw, bool):
            rendered = "on" if raw else "off"
        elif isinstance(raw, int):
            rendered = str(raw)
        else:
            rendered = raw
        parts.append(f"{key.replace('_', '-')}={rendered}")
    return ",".join(parts)


def split(option: str) -> list[tuple[str, str]]:
    """Parse a key=value option string the way QEMU does (for tests and checks).

    The first element may be a bare value (the implied key ``""``).
    """
    items: list[tuple[str, str]] = []
    i = 0
    while i <= len(option):
        buf = []
        while i < len(option):
            if option[i] == ",":
                if i + 1 < len(option) and option[i + 1] == ",":
                    buf.append(",")
                    i += 2
                    continue
                break
            buf.append(option[i])
            i += 1
        i += 1
        text = "".join(buf)
        key, sep, val = text.partition("=")
        items.append((key, val) if sep else ("", text))
    return items
