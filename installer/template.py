"""k3s/rke2 ``config.toml.tmpl`` templates: our runtime table appended as TOML text.

A template is Go text/template source that k3s renders into containerd's config; the
usual one is ``{{ template "base" . }}`` (k3s's own config) followed by TOML to add. We
append our table at the very end, outside any ``{{ if }}`` block, and never touch the
lines before it. To tell whether the table is already there (or to remove it) the
template is read as TOML with every whole-line ``{{ … }}`` action set aside; a template
with actions inside TOML lines cannot be read that way, which is an error.
"""

from __future__ import annotations

import re
from typing import Any

from installer import containerd_config
from installer.containerd_config import RuntimeEntry
from installer.errors import ConfigError

BASE_LINE = '{{ template "base" . }}'
_ACTION_LINE = re.compile(r"^[ \t]*\{\{.*\}\}[ \t]*$")


def new_template() -> str:
    """A template that renders k3s's own config, before our table is added."""
    return BASE_LINE + "\n"


def _as_toml(text: str) -> str:
    """``text`` with each whole-line template action turned into an empty comment."""
    return "\n".join("#" if _ACTION_LINE.match(line) else line for line in text.split("\n"))


def _plain(text: str, source: str) -> dict[str, Any]:
    try:
        doc = containerd_config.parse(_as_toml(text), source)
    except ConfigError as err:
        raise ConfigError(
            f"{err} (whole-line {{{{ … }}}} actions are set aside; actions inside TOML "
            "lines are not supported)"
        ) from err
    values = containerd_config.plain(doc)
    return values if isinstance(values, dict) else {}


def _runtime(values: dict[str, Any], version: int, handler: str) -> Any:
    node: Any = values
    for key in (*containerd_config.runtimes_path(version), handler):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def add_runtime(text: str | None, version: int, entry: RuntimeEntry, source: str) -> str:
    """The template ``text`` (None: there is none yet) with our runtime table at its end."""
    wanted = entry.values()
    base = new_template() if text is None else text
    current = _runtime(_plain(base, source), version, entry.handler)
    if current == wanted and text is not None:
        return text
    if current is not None:
        base = remove_runtime(base, version, entry.handler, source)
    before = _plain(base, source)
    if not base.endswith("\n"):
        base += "\n"
    result = base + "\n" + containerd_config.fragment(version, entry.handler, wanted)
    expected = containerd_config.with_runtime(before, version, entry.handler, wanted)
    containerd_config.verify(_as_toml(result), expected, source)
    return result


def remove_runtime(text: str, version: int, handler: str, source: str) -> str:
    """The template ``text`` without our runtime table (unchanged when it has none)."""
    current = _runtime(_plain(text, source), version, handler)
    if current is None:
        return text
    if not isinstance(current, dict):
        raise ConfigError(f"{source}: runtime {handler} is not a table; not touching it")
    appended = "\n" + containerd_config.fragment(version, handler, current)
    if text.endswith(appended):  # what add_runtime wrote: take exactly that back out
        return text[: -len(appended)]
    raise ConfigError(
        f"{source}: runtime {handler} was edited after we added it (or moved); remove it by "
        "hand, nothing written"
    )


def body_version(text: str | None, source: str) -> int | None:
    """The ``version`` a template sets itself, if any (most leave it to the base)."""
    if text is None:
        return None
    values = _plain(text, source)
    if "version" not in values:
        return None
    return containerd_config.read_version(values, source)
