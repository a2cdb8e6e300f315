"""The installer's containerd config patcher on arbitrary TOML.

Whatever the file: a ConfigError naming it (nothing to write), or a patched text that
parses, carries exactly our runtime table, changes nothing else (the patcher's own
check), is left alone by a second run, and loses our table again on removal.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomlkit
from hypothesis import event, given
from hypothesis import strategies as st

from installer import containerd_config as cc
from installer.errors import ConfigError
from tests.unit.fuzz.settings import fuzz

DATA = Path(__file__).parents[2] / "data" / "containerd"
DEFAULTS = sorted(p.read_text() for p in DATA.glob("*.toml"))
HANDLER = "contrast-cc-metal-qemu-snp-0123abcd"
ENTRY = cc.RuntimeEntry(
    handler=HANDLER,
    runtime_path=f"/opt/contrast/{HANDLER}/bin/containerd-shim-contrast-cc-v2",
    config_path=f"/opt/contrast/{HANDLER}/etc/runtime.toml",
)
KEYS = st.one_of(
    st.sampled_from(
        ["plugins", *cc.CRI_RUNTIME_PLUGIN.values(), "containerd", "runtimes", "runc",
         HANDLER, "default_runtime_name", "runtime_type", "options", "version"]
    ),
    st.text(max_size=10),
)  # fmt: skip
LEAVES = st.one_of(
    st.text(max_size=20), st.integers(-(2**63), 2**63 - 1), st.booleans(), st.floats()
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=15,
)


@st.composite
def configs(draw: st.DrawFn) -> str:
    """A config: a real default with things added along our path, one built from
    scratch with parts of that path, or any text."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.text(max_size=200))
    version = draw(st.one_of(st.sampled_from(list(cc.CRI_RUNTIME_PLUGIN)), st.integers(), LEAVES))
    if kind <= 4 and DEFAULTS:
        doc = tomlkit.parse(draw(st.sampled_from(DEFAULTS)))
    else:
        doc = tomlkit.document()
        if draw(st.integers(0, 9)) > 0:
            doc["version"] = version
    # Something at a random depth of our runtimes path: a table, or a value in its way.
    plugin = cc.CRI_RUNTIME_PLUGIN.get(version if isinstance(version, int) else 2, "x")
    path = ["plugins", plugin, "containerd", "runtimes", draw(st.sampled_from([HANDLER, "runc"]))]
    depth = draw(st.integers(1, len(path)))
    node: Any = doc
    try:
        for key in path[: depth - 1]:
            if key not in node:
                node[key] = tomlkit.table(is_super_table=draw(st.booleans()))
            node = node[key]
        node[path[depth - 1]] = draw(st.one_of(st.dictionaries(KEYS, VALUES, max_size=3), VALUES))
    except (TypeError, ValueError, KeyError, AttributeError, tomlkit.exceptions.TOMLKitError):
        event("generator: a value is in the way")
    try:
        return doc.as_string()
    except (TypeError, ValueError, tomlkit.exceptions.TOMLKitError):
        return draw(st.sampled_from(DEFAULTS)) if DEFAULTS else ""


@fuzz
@given(configs())
def test_the_patcher_patches_exactly_our_table_or_names_the_problem(text: str) -> None:
    try:
        doc = cc.parse(text, "config.toml")
        version = cc.read_version(doc, "config.toml")
        cc.set_runtime(doc, version, ENTRY, "config.toml")
    except ConfigError as err:
        assert str(err).startswith("config.toml: "), err
        event(f"refused: {str(err)[13:40]}")
        return
    event("patched")
    patched = doc.as_string()
    tomllib.loads(patched)
    again = cc.parse(patched, "config.toml")
    assert cc.get_runtime(again, version, HANDLER, "config.toml") == ENTRY.values()
    assert not cc.set_runtime(again, version, ENTRY, "config.toml")  # nothing to do twice
    assert cc.remove_runtime(again, version, HANDLER, "config.toml")
    assert cc.get_runtime(cc.parse(again.as_string(), "x"), version, HANDLER, "x") is None
