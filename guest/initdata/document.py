"""The initdata document: a TOML file whose hash is bound to the launch measurement.

Format (confidential-containers initdata spec, version 0.1.0)::

    version = "0.1.0"
    algorithm = "sha384"          # sha256 | sha384 | sha512
    [data]
    "policy.rego" = '''...'''     # file name -> content, strings only

The digest is the named hash over the raw TOML bytes exactly as delivered, never over
a re-serialisation, so host and guest agree byte for byte. This module is shared by the
host (``agent.initdata``) and the guest processor; it lives under ``guest/`` because the
guest image ships ``guest/`` alone.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from guest.initdata.errors import InitdataError

log = logging.getLogger(__name__)

VERSION = "0.1.0"
ALGORITHMS = ("sha256", "sha384", "sha512")
POLICY_NAME = "policy.rego"

# A Kubernetes annotation is at most 256 KiB, so a larger decompressed document than a
# few MiB can only be a gzip bomb; the disk path uses the same ceilings.
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
MAX_NAME_BYTES = 255
MAX_ENTRIES = 256
MAX_DOTS_PER_LINE = 32

# Strings (multi-line first), comments, newlines and dots: enough of TOML's lexical
# structure to find the dots that are not inside a string or a comment.
_TOKENS = re.compile(
    r'"""(?:\\.|[^\\])*?"""'
    r"|'''.*?'''"
    r'|"(?:\\.|[^"\\\n])*"'
    r"|'[^'\n]*'"
    r"|#[^\n]*"
    r"|[.\n]",
    re.DOTALL,
)


@dataclass(frozen=True)
class Initdata:
    """A validated initdata document together with the raw bytes it was parsed from."""

    raw: bytes
    version: str
    algorithm: str
    data: Mapping[str, str]

    @property
    def digest(self) -> bytes:
        """The hash named by ``algorithm`` over the raw document bytes."""
        return digest(self.raw, self.algorithm)


def digest(raw: bytes, algorithm: str) -> bytes:
    """Hash ``raw`` with one of :data:`ALGORITHMS`; raises InitdataError for any other."""
    if algorithm not in ALGORITHMS:
        raise InitdataError(
            f"unknown initdata algorithm {algorithm!r} (supported: {', '.join(ALGORITHMS)})"
        )
    return hashlib.new(algorithm, raw).digest()


def parse(raw: bytes) -> Initdata:
    """Parse and validate a raw TOML initdata document.

    Raises InitdataError naming the problem: size, encoding, TOML syntax, version,
    algorithm, the ``[data]`` table or an entry name that is not a plain relative path.
    """
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise InitdataError(
            f"initdata document is {len(raw)} bytes, more than the limit of {MAX_DOCUMENT_BYTES}"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InitdataError(f"initdata document is not UTF-8: {err}") from err
    _check_dotted_depth(text)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise InitdataError(f"initdata document is not valid TOML: {err}") from err
    except RecursionError as err:
        raise InitdataError("initdata document nests arrays or tables too deeply") from err
    version = doc.get("version")
    if version != VERSION:
        raise InitdataError(f"unsupported initdata version {version!r} (supported: {VERSION!r})")
    algorithm = doc.get("algorithm")
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise InitdataError(
            f"unknown initdata algorithm {algorithm!r} (supported: {', '.join(ALGORITHMS)})"
        )
    extra = sorted(set(doc) - {"version", "algorithm", "data"})
    if extra:
        # Upstream parsers ignore unknown keys; so do we, but say so.
        log.warning("initdata document has unknown top-level keys, ignored: %s", extra)
    table = doc.get("data", {})
    if not isinstance(table, dict):
        raise InitdataError(f"initdata 'data' must be a table, not {type(table).__name__}")
    return Initdata(
        raw=raw, version=version, algorithm=algorithm, data=MappingProxyType(_entries(table))
    )


def _check_dotted_depth(text: str) -> None:
    """Refuse lines with many unquoted dots before tomllib sees them.

    tomllib's cost grows with the square of a dotted key's depth (``a.a.a...`` of 10k
    parts takes ~400 MiB), so a tiny gzip could exhaust the host or the guest. Valid
    initdata keys are at most two levels deep; outside strings and comments a dot only
    appears in keys, table headers and numbers, so a line with more than
    :data:`MAX_DOTS_PER_LINE` of them is refused.
    """
    dots = 0
    line = 1
    for match in _TOKENS.finditer(text):
        lexeme = match.group()
        if lexeme == ".":
            dots += 1
            if dots > MAX_DOTS_PER_LINE:
                raise InitdataError(
                    f"initdata document line {line} has more than {MAX_DOTS_PER_LINE} "
                    "unquoted dots (deeply dotted keys are refused)"
                )
        elif lexeme == "\n":
            dots = 0
            line += 1
        else:
            line += lexeme.count("\n")


def _entries(table: dict[str, object]) -> dict[str, str]:
    if len(table) > MAX_ENTRIES:
        raise InitdataError(f"initdata [data] has {len(table)} entries, more than {MAX_ENTRIES}")
    entries: dict[str, str] = {}
    for name, value in table.items():
        check_name(name)
        if not isinstance(value, str):
            raise InitdataError(
                f"initdata [data] entry {name!r} must be a string, not {type(value).__name__}"
            )
        entries[name] = value
    return entries


def require_policy(document: Initdata) -> str:
    """The document's agent policy; raises InitdataError when it has none."""
    policy = document.data.get(POLICY_NAME)
    if policy is None:
        raise InitdataError(f"initdata [data] has no {POLICY_NAME!r} entry: no policy to enforce")
    return policy


def check_name(name: str) -> None:
    """Refuse a ``[data]`` name that is not a plain relative path below the output dir."""
    if not name:
        raise InitdataError("initdata [data] has an entry with an empty name")
    if "\0" in name:
        raise InitdataError(f"initdata [data] name {name!r} contains a NUL byte")
    if name.startswith("/"):
        raise InitdataError(f"initdata [data] name {name!r} is an absolute path")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InitdataError(f"initdata [data] name {name[:40]!r}... is longer than 255 bytes")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise InitdataError(
                f"initdata [data] name {name!r} is not a plain relative path (component {part!r})"
            )
        if any(ord(c) < 0x20 or c == "\x7f" for c in part):
            raise InitdataError(f"initdata [data] name {name!r} contains a control character")


def create(data: Mapping[str, str], algorithm: str = "sha384") -> Initdata:
    """Render a new document from ``data`` and return it parsed (so it is valid by proof).

    Values become TOML multi-line literal strings where that round-trips exactly
    (readable policies), otherwise escaped basic strings. Raises InitdataError for a bad
    name or algorithm.
    """
    if algorithm not in ALGORITHMS:
        raise InitdataError(
            f"unknown initdata algorithm {algorithm!r} (supported: {', '.join(ALGORITHMS)})"
        )
    for name in data:
        check_name(name)
    lines = [f'version = "{VERSION}"', f'algorithm = "{algorithm}"', "", "[data]"]
    lines += [
        f"{_basic_string(name)} = {_toml_string(value)}" for name, value in sorted(data.items())
    ]
    try:
        raw = ("\n".join(lines) + "\n").encode("utf-8")
    except UnicodeEncodeError as err:
        raise InitdataError(f"initdata [data] is not encodable as UTF-8: {err}") from err
    document = parse(raw)
    if dict(document.data) != dict(data):
        raise InitdataError("rendered initdata document does not round-trip (internal error)")
    return document


def _toml_string(value: str) -> str:
    literal_ok = (
        "'''" not in value
        and not value.endswith("'")
        and all(c in "\n\t" or (ord(c) >= 0x20 and c != "\x7f") for c in value)
    )
    if literal_ok:
        candidate = "'''\n" + value + "'''"
        try:
            if tomllib.loads("v = " + candidate)["v"] == value:
                return candidate
        except tomllib.TOMLDecodeError:
            pass  # fall back to a basic string below
    return _basic_string(value)


def _basic_string(value: str) -> str:
    out = ['"']
    for c in value:
        if c in ('"', "\\"):
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif ord(c) < 0x20 or c == "\x7f":
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)
