"""Patching real containerd configs: our table appears, every other line stays put."""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path

import pytest

from installer import containerd_config as cc
from installer.errors import ConfigError
from tests.conftest import shared_vectors

DATA = Path(__file__).parents[2] / "data" / "containerd"
HANDLER = "contrast-cc-metal-qemu-snp-0123abcd"
ENTRY = cc.RuntimeEntry(
    handler=HANDLER,
    runtime_path=f"/opt/contrast/{HANDLER}/bin/containerd-shim-contrast-cc-v2",
    config_path=f"/opt/contrast/{HANDLER}/etc/runtime.toml",
)
DEFAULTS = {
    "containerd-1.6-default.toml": (2, "io.containerd.grpc.v1.cri"),
    "containerd-2.0.11-default.toml": (3, "io.containerd.cri.v1.runtime"),
    "containerd-2.2.7-default.toml": (3, "io.containerd.cri.v1.runtime"),
    "containerd-2.3.4-default.toml": (4, "io.containerd.cri.v1.runtime"),
}
CONTRAST = "containerd/contrast-testdata/nodeinstaller"


def patch(text: str, source: str = "config.toml") -> str:
    doc = cc.parse(text, source)
    assert cc.set_runtime(doc, cc.read_version(doc, source), ENTRY, source)
    return doc.as_string()


def only_added_lines(old: str, new: str) -> list[str]:
    """The lines ``new`` adds; fails if any line of ``old`` was changed or removed."""
    matcher = difflib.SequenceMatcher(a=old.splitlines(), b=new.splitlines(), autojunk=False)
    added = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        assert tag in ("equal", "insert"), (tag, old.splitlines()[i1:i2])
        if tag == "insert":
            added += new.splitlines()[j1:j2]
    return added


def runtime_of(text: str, plugin: str, handler: str = HANDLER) -> dict[str, object]:
    config = tomllib.loads(text)
    table = config["plugins"][plugin]["containerd"]["runtimes"][handler]
    assert isinstance(table, dict)
    return table


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_default_configs_gain_exactly_our_runtime(name: str) -> None:
    version, plugin = DEFAULTS[name]
    old = (DATA / name).read_text()
    doc = cc.parse(old, name)
    assert cc.read_version(doc, name) == version
    new = patch(old, name)

    assert runtime_of(new, plugin) == {
        "runtime_type": "io.containerd.contrast-cc.v2",
        "runtime_path": ENTRY.runtime_path,
        "pod_annotations": ["io.katacontainers.*"],
        "privileged_without_host_devices": True,
        "options": {"ConfigPath": ENTRY.config_path},
    }
    added = only_added_lines(old, new)
    assert any(HANDLER in line and line.strip().startswith("[") for line in added)
    assert len([line for line in added if line.strip()]) == 7  # 2 headers, 5 keys
    # The rest of the config means exactly what it meant before.
    before, after = tomllib.loads(old), tomllib.loads(new)
    del after["plugins"][plugin]["containerd"]["runtimes"][HANDLER]
    assert after == before


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_second_run_changes_nothing_and_removal_restores_the_file(name: str) -> None:
    version, _ = DEFAULTS[name]
    old = (DATA / name).read_text()
    new = patch(old, name)
    doc = cc.parse(new, name)
    assert not cc.set_runtime(doc, version, ENTRY, name)
    assert doc.as_string() == new
    assert cc.remove_runtime(doc, version, HANDLER, name)
    assert doc.as_string() == old
    assert not cc.remove_runtime(doc, version, HANDLER, name)


def test_new_table_copies_the_files_indentation_and_quoting() -> None:
    old = (DATA / "containerd-2.0.11-default.toml").read_text()
    added = only_added_lines(old, patch(old))
    header = next(line for line in added if line.lstrip().startswith("[") and HANDLER in line)
    sibling = next(
        line for line in old.splitlines() if line.strip().endswith("containerd.runtimes.runc]")
    )
    assert len(header) - len(header.lstrip()) == len(sibling) - len(sibling.lstrip())
    assert "runtime_type = 'io.containerd.contrast-cc.v2'" in "\n".join(added)


def test_changed_entry_is_replaced_in_place() -> None:
    old = (DATA / "containerd-1.6-default.toml").read_text()
    first = patch(old)
    other = cc.RuntimeEntry(HANDLER, "/elsewhere/shim", ENTRY.config_path)
    doc = cc.parse(first, "c")
    assert cc.set_runtime(doc, 2, other, "c")
    assert runtime_of(doc.as_string(), "io.containerd.grpc.v1.cri")["runtime_path"] == (
        "/elsewhere/shim"
    )
    assert doc.as_string().count(f"runtimes.{HANDLER}]") == 1


@pytest.mark.parametrize(
    ("text", "plugin"),
    [
        ("version = 2\n", "io.containerd.grpc.v1.cri"),
        ("version = 3\n[plugins.'io.containerd.cri.v1.runtime']\n", "io.containerd.cri.v1.runtime"),
        (
            "version = 4\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes]\n",
            "io.containerd.cri.v1.runtime",
        ),
    ],
)
def test_config_without_runtimes_keeps_containerds_runc(text: str, plugin: str) -> None:
    new = patch(text)
    only_added_lines(text, new)
    assert runtime_of(new, plugin)["runtime_type"] == "io.containerd.contrast-cc.v2"
    assert runtime_of(new, plugin, "runc") == {"runtime_type": "io.containerd.runc.v2"}


def test_no_runc_added_when_another_default_runtime_is_named() -> None:
    text = (
        "version = 2\n[plugins.'io.containerd.grpc.v1.cri'.containerd]\n"
        "default_runtime_name = 'crun'\n"
    )
    new = patch(text)
    runtimes = tomllib.loads(new)["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
    assert list(runtimes) == [HANDLER]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("version = 1\n", "unsupported config version 1"),
        ("version = 5\n[plugins]\n", "unsupported config version 5"),
        ("root = '/var/lib/containerd'\n", "has no 'version' key"),
        ("version = 'two'\n", "'version' must be an integer"),
        ("version = 2\n[plugins\n", "not valid TOML"),
        ("version = 2\na = 1\na = 2\n", "not valid TOML"),
        ("version = 2\nplugins = {}\n", "plugins is not a [table]"),
    ],
)
def test_bad_configs_are_rejected_with_file_and_problem(text: str, problem: str) -> None:
    source = "/etc/containerd/config.toml"
    with pytest.raises(ConfigError) as err:
        doc = cc.parse(text, source)
        cc.set_runtime(doc, cc.read_version(doc, source), ENTRY, source)
    assert str(err.value).startswith(f"{source}: ")
    assert problem in str(err.value)


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(ConfigError, match=r"cfg\.toml: not valid TOML: .*line 3"):
        cc.parse("version = 2\n[a]\nb = = 1\n", "cfg.toml")


def test_contrast_input_config_diff_is_only_our_lines() -> None:
    path = shared_vectors(CONTRAST, "internal/constants/containerd-config.toml")
    old = path.read_text()
    new = patch(old, str(path))
    added = only_added_lines(old, new)
    assert len([line for line in added if line.strip()]) == 7
    # Out-of-order runtime tables (kata-cc after [metrics]) are left where they were.
    assert new.index("[metrics]") < new.index("containerd.runtimes.kata-cc]")


@pytest.mark.parametrize("platform", ["snp", "tdx"])
def test_matches_what_contrast_writes_for_the_same_input(platform: str) -> None:
    """Contrast's golden output for the same input: same settings, same runtime keys.

    Contrast re-marshals the whole file (dropping comments, adding empty defaults) and
    adds a nydus snapshotter we do not use; we compare meaning, not bytes.
    """
    source = shared_vectors(CONTRAST, "internal/constants/containerd-config.toml")
    expected = tomllib.loads(
        shared_vectors(CONTRAST, f"testdata/expected-bare-metal-qemu-{platform}.toml").read_text()
    )
    ours = tomllib.loads(patch(source.read_text()))
    theirs_runtimes = expected["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
    theirs = theirs_runtimes.pop("my-runtime")
    mine = ours["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"].pop(HANDLER)
    assert theirs.pop("snapshotter") == "nydus-my-runtime"
    assert set(mine) == set(theirs)
    for key in ("runtime_type", "pod_annotations", "privileged_without_host_devices"):
        assert mine[key] == theirs[key]
    assert set(mine["options"]) == set(theirs["options"]) == {"ConfigPath"}
    assert theirs["runtime_path"].endswith("/bin/containerd-shim-contrast-cc-v2")
    assert mine["runtime_path"].endswith("/bin/containerd-shim-contrast-cc-v2")
    # Every other setting of the input survives in both outputs alike.
    for key in ("oom_score", "metrics", "version"):
        assert ours[key] == expected[key]
    ours_cri = ours["plugins"]["io.containerd.grpc.v1.cri"]
    theirs_cri = expected["plugins"]["io.containerd.grpc.v1.cri"]
    assert ours_cri["containerd"]["runtimes"] == theirs_cri["containerd"]["runtimes"]
    assert ours_cri["registry"] == theirs_cri["registry"]
    assert ours_cri["cni"] == theirs_cri["cni"]
