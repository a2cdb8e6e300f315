"""Add or remove our runtime handler in a containerd config, keeping everything else as is.

The config is edited with tomlkit, so comments, ordering, quoting and indentation of
every other line survive; our table copies the indentation and quoting style of its
sibling runtimes. After each edit the result is parsed again and compared, value by
value, with what we meant to produce: anything else is an error and nothing is written.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import tomlkit
import tomlkit.exceptions
from tomlkit.container import Container, OutOfOrderTableProxy
from tomlkit.items import InlineTable, Item, String, StringType, Table, Whitespace
from tomlkit.toml_document import TOMLDocument

from installer.errors import ConfigError

RUNTIME_TYPE = "io.containerd.contrast-cc.v2"
# Where the CRI plugin keeps its runtimes, by config version (containerd 1.x writes 2,
# 2.0-2.2 write 3, 2.3 writes 4; 4 moved grpc/ttrpc/debug/metrics, not the CRI runtimes).
CRI_RUNTIME_PLUGIN = {
    2: "io.containerd.grpc.v1.cri",
    3: "io.containerd.cri.v1.runtime",
    4: "io.containerd.cri.v1.runtime",
}
SUPPORTED_VERSIONS = tuple(sorted(CRI_RUNTIME_PLUGIN))
# containerd's built-in runtimes map, used only while the config names no runtime.
DEFAULT_RUNTIME = "runc"
DEFAULT_RUNTIME_TYPE = "io.containerd.runc.v2"

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
TableLike = Table | OutOfOrderTableProxy | Container


@dataclass(frozen=True)
class RuntimeEntry:
    """Our runtime table under ``…containerd.runtimes.<handler>``."""

    handler: str
    runtime_path: str
    config_path: str
    pod_annotations: tuple[str, ...] = field(default=("io.katacontainers.*",))

    def values(self) -> dict[str, Any]:
        """The table as plain values, in the order we write them."""
        return {
            "runtime_type": RUNTIME_TYPE,
            "runtime_path": self.runtime_path,
            "pod_annotations": list(self.pod_annotations),
            "privileged_without_host_devices": True,
            "options": {"ConfigPath": self.config_path},
        }


def runtimes_path(version: int) -> tuple[str, ...]:
    return ("plugins", CRI_RUNTIME_PLUGIN[version], "containerd", "runtimes")


def parse(text: str, source: str) -> TOMLDocument:
    """Parse a config; raises ConfigError naming ``source``, the line and the problem."""
    try:
        tomllib.loads(text)  # the strict parser: what containerd's own would also reject
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML: {err}") from err
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as err:
        raise ConfigError(f"{source}: not valid TOML: {err}") from err
    if doc.as_string() != text:
        raise ConfigError(f"{source}: cannot be edited without reformatting it; not touching it")
    return doc


def read_version(doc: Mapping[str, Any], source: str) -> int:
    """The config's ``version``; raises ConfigError unless it is one we patch."""
    if "version" not in doc:
        raise ConfigError(
            f"{source}: has no 'version' key (containerd reads that as version 1, which we "
            f"do not patch); supported versions: {', '.join(map(str, SUPPORTED_VERSIONS))}"
        )
    version = doc["version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise ConfigError(f"{source}: 'version' must be an integer, got {version!r}")
    if version not in CRI_RUNTIME_PLUGIN:
        raise ConfigError(
            f"{source}: unsupported config version {int(version)}; "
            f"supported: {', '.join(map(str, SUPPORTED_VERSIONS))}"
        )
    return int(version)


def set_runtime(doc: TOMLDocument, version: int, entry: RuntimeEntry, source: str) -> bool:
    """Make ``doc`` carry ``entry``; returns False when it already did (nothing changed).

    A config that names no runtime at all relies on containerd's built-in ``runc``
    entry. A runtimes table in the file replaces that built-in map (containerd 1.6's CRI
    plugin then refuses to load: "no corresponding runtime configured … for
    default_runtime_name"), so the ``runc`` entry is written out alongside ours.
    """
    wanted = entry.values()
    path = runtimes_path(version)
    existing = _lookup(doc, path, source)
    if (
        existing is not None
        and entry.handler in existing
        and plain(existing[entry.handler]) == wanted
    ):
        return False
    keep_default = (existing is None or not list(existing.keys())) and _default_runtime_is_runc(
        doc, version
    )
    before = plain(doc)
    runtimes = _ensure_tables(doc, path, source)
    style = _style_of(runtimes)
    expected = before
    if keep_default and entry.handler != DEFAULT_RUNTIME:
        default = {"runtime_type": DEFAULT_RUNTIME_TYPE}
        table = _build_table(default, style)
        runtimes[DEFAULT_RUNTIME] = table
        _indent_tables(table, style)
        expected = with_runtime(expected, version, DEFAULT_RUNTIME, default)
    if entry.handler in runtimes:
        del runtimes[entry.handler]
    table = _build_table(wanted, style)
    runtimes[entry.handler] = table
    _indent_tables(table, style)
    _verify(doc, with_runtime(expected, version, entry.handler, wanted), source)
    return True


def _default_runtime_is_runc(doc: TOMLDocument, version: int) -> bool:
    node: Any = plain(doc)
    for key in runtimes_path(version)[:-1]:
        node = node.get(key, {}) if isinstance(node, dict) else {}
    name = node.get("default_runtime_name", DEFAULT_RUNTIME) if isinstance(node, dict) else None
    return bool(name == DEFAULT_RUNTIME)


def remove_runtime(doc: TOMLDocument, version: int, handler: str, source: str) -> bool:
    """Drop the ``handler`` table from ``doc``; returns False when it was not there.

    Tables that existed only as the implicit parents of ours (no header of their own)
    go with it, so removing what we added gives back the file we started from.
    """
    path = runtimes_path(version)
    runtimes = _lookup(doc, path, source)
    if runtimes is None or handler not in runtimes:
        return False
    expected = plain(doc)
    chain: list[tuple[TableLike, dict[str, Any]]] = [(doc, expected)]
    for key in path:
        chain.append((chain[-1][0][key], chain[-1][1][key]))
    del runtimes[handler]
    del chain[-1][1][handler]
    for depth in range(len(path), 0, -1):
        node, values = chain[depth]
        if values or not (isinstance(node, Table) and node.is_super_table()):
            break
        del chain[depth - 1][0][path[depth - 1]]
        del chain[depth - 1][1][path[depth - 1]]
    _verify(doc, expected, source)
    return True


def get_runtime(
    doc: TOMLDocument, version: int, handler: str, source: str
) -> dict[str, Any] | None:
    """The ``handler`` runtime table as plain values, or None when there is none."""
    runtimes = _lookup(doc, runtimes_path(version), source)
    if runtimes is None or handler not in runtimes:
        return None
    values = plain(runtimes[handler])
    return values if isinstance(values, dict) else {}


def with_runtime(config: dict[str, Any], version: int, handler: str, values: Any) -> Any:
    """A copy of the plain ``config`` with ``values`` as the ``handler`` runtime."""
    expected = copy.deepcopy(config)
    node = expected
    for key in runtimes_path(version):
        node = node.setdefault(key, {})
    node[handler] = values
    return expected


def fragment(version: int, handler: str, values: dict[str, Any]) -> str:
    """Our runtime table as standalone TOML text (dotted headers from the top level)."""
    doc = tomlkit.document()
    runtimes = _ensure_tables(doc, runtimes_path(version), "<fragment>")
    style = _Style("", "", "", literal=False)
    table = _build_table(values, style)
    runtimes[handler] = table
    _indent_tables(table, style)
    return doc.as_string().rstrip("\n") + "\n"


def verify(text: str, expected: Any, source: str) -> None:
    """Raise ConfigError unless ``text`` parses to exactly ``expected``."""
    try:
        reparsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(
            f"{source}: editing produced invalid TOML ({err}); nothing written"
        ) from err
    if reparsed != expected:
        raise ConfigError(
            f"{source}: editing would change settings other than our runtime table; nothing written"
        )


def _lookup(doc: TOMLDocument, path: tuple[str, ...], source: str) -> TableLike | None:
    node: TableLike = doc
    for depth, key in enumerate(path):
        if key not in node:
            return None
        child = node[key]
        _require_table(child, path[: depth + 1], source)
        node = child
    return node


def _ensure_tables(doc: TOMLDocument, path: tuple[str, ...], source: str) -> TableLike:
    node: TableLike = doc
    for depth, key in enumerate(path):
        if key not in node:
            node[key] = tomlkit.table(is_super_table=True)
        child = node[key]
        _require_table(child, path[: depth + 1], source)
        node = child
    return node


def _require_table(value: object, path: tuple[str, ...], source: str) -> None:
    if isinstance(value, InlineTable) or not isinstance(value, (Table, OutOfOrderTableProxy)):
        dotted = ".".join(k if _BARE_KEY.fullmatch(k) else f'"{k}"' for k in path)
        raise ConfigError(f"{source}: {dotted} is not a [table]; cannot add a runtime under it")


@dataclass(frozen=True)
class _Style:
    header_indent: str
    key_indent: str
    step: str
    literal: bool


def _style_of(runtimes: TableLike) -> _Style:
    """Copy indentation and quoting from the first sibling runtime table, if any."""
    for value in runtimes.values():
        if isinstance(value, Table) and not value.is_super_table():
            header = value.trivia.indent.rsplit("\n", 1)[-1]
            items = [item for _, item in value.value.body if not isinstance(item, Whitespace)]
            first_key = next((i for i in items if not isinstance(i, Table)), None)
            key = first_key.trivia.indent if first_key is not None else header
            literal = any(isinstance(i, String) and i.type is StringType.SLL for i in items)
            step = key[len(header) :] if key.startswith(header) else ""
            return _Style(header, key, step, literal)
    return _Style("", "", "", False)


def _build_table(values: dict[str, Any], style: _Style) -> Table:
    """Our table, with no indentation of its own yet (see ``_indent_tables``).

    tomlkit prefixes a table's indentation to every item appended to it, so items get
    their final indentation and the headers are indented only once the table sits in
    the document.
    """
    table = tomlkit.table()
    for key, value in values.items():
        if not isinstance(value, dict):
            table.add(key, _styled(value, style.key_indent, style.literal))
    subtables = {k: v for k, v in values.items() if isinstance(v, dict)}
    for key, value in subtables.items():
        table.add(tomlkit.nl())
        nested = _Style(style.key_indent, style.key_indent + style.step, style.step, style.literal)
        table.add(key, _build_table(value, nested))
    if not subtables:
        table.add(tomlkit.nl())
    return table


def _indent_tables(table: Table, style: _Style) -> None:
    table.trivia.indent = style.header_indent
    nested = _Style(style.key_indent, style.key_indent + style.step, style.step, style.literal)
    for _, item in table.value.body:
        if isinstance(item, Table):
            _indent_tables(item, nested)


def _styled(value: Any, indent: str, literal: bool) -> Item:
    if isinstance(value, str):
        item: Item = tomlkit.string(value, literal=literal and "'" not in value)
    elif isinstance(value, list):
        array = tomlkit.array()
        for element in value:
            array.append(_styled(element, "", literal))
        item = array
    else:
        item = tomlkit.item(value)
    item.trivia.indent = indent
    return item


def plain(value: Any) -> Any:
    unwrap = getattr(value, "unwrap", None)
    return unwrap() if unwrap is not None else value


def _verify(doc: TOMLDocument, expected: Any, source: str) -> None:
    verify(doc.as_string(), expected, source)
