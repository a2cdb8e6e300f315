"""k3s/rke2 templates: the base line stays first, our table is appended as TOML text."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from installer import containerd_config as cc
from installer import template
from installer.errors import ConfigError
from tests.conftest import shared_vectors
from tests.unit.installer.test_containerd_config import ENTRY, HANDLER, only_added_lines

CONTRAST = "containerd/contrast-testdata/nodeinstaller/testdata"


def as_toml(text: str) -> dict[str, Any]:
    return tomllib.loads("\n".join("" if "{{" in ln else ln for ln in text.splitlines()))


@pytest.mark.parametrize(
    ("version", "plugin"), [(2, "io.containerd.grpc.v1.cri"), (3, "io.containerd.cri.v1.runtime")]
)
def test_new_template_renders_the_base_then_our_table(version: int, plugin: str) -> None:
    text = template.add_runtime(None, version, ENTRY, "config.toml.tmpl")
    assert text.splitlines()[0] == '{{ template "base" . }}'
    runtime = as_toml(text)["plugins"][plugin]["containerd"]["runtimes"][HANDLER]
    assert runtime["runtime_type"] == "io.containerd.contrast-cc.v2"
    assert runtime["options"] == {"ConfigPath": ENTRY.config_path}
    assert template.add_runtime(text, version, ENTRY, "t") == text
    assert template.remove_runtime(text, version, HANDLER, "t") == template.new_template()


@pytest.mark.parametrize("platform", ["snp", "tdx"])
def test_contrast_template_keeps_every_line_and_gains_ours(platform: str) -> None:
    path = shared_vectors(CONTRAST, f"expected-bare-metal-qemu-{platform}.toml.tmpl")
    old = path.read_text()
    new = template.add_runtime(old, 2, ENTRY, str(path))
    assert new.splitlines()[0] == '{{ template "base" . }}'
    added = only_added_lines(old, new)
    assert new.startswith(old) and len([ln for ln in added if ln.strip()]) == 7
    assert template.add_runtime(new, 2, ENTRY, str(path)) == new
    assert template.remove_runtime(new, 2, HANDLER, str(path)) == old


@pytest.mark.parametrize("platform", ["snp", "tdx"])
def test_same_runtime_keys_as_contrasts_template(platform: str) -> None:
    path = shared_vectors(CONTRAST, f"expected-bare-metal-qemu-{platform}.toml.tmpl")
    theirs = as_toml(path.read_text())["plugins"]["io.containerd.grpc.v1.cri"]["containerd"][
        "runtimes"
    ]["my-runtime"]
    ours = as_toml(template.add_runtime(None, 2, ENTRY, "t"))["plugins"][
        "io.containerd.grpc.v1.cri"
    ]["containerd"]["runtimes"][HANDLER]
    theirs.pop("snapshotter")  # Contrast's nydus snapshotter; we pull images in the guest
    assert set(ours) == set(theirs)
    assert ours["pod_annotations"] == theirs["pod_annotations"]
    assert ours["privileged_without_host_devices"] is theirs["privileged_without_host_devices"]


def test_table_goes_after_conditional_blocks() -> None:
    old = (
        '{{ template "base" . }}\n'
        "{{ if .NodeConfig.AgentConfig.Snapshotter }}\n"
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
        '  snapshotter = "{{ .NodeConfig.AgentConfig.Snapshotter }}"\n'
        "{{ end }}\n"
    )
    new = template.add_runtime(old, 2, ENTRY, "t")
    assert new.startswith(old)
    assert new.index(f"runtimes.{HANDLER}]") > new.index("{{ end }}")
    assert template.remove_runtime(new, 2, HANDLER, "t") == old


def test_action_inside_a_toml_line_is_refused() -> None:
    text = '{{ template "base" . }}\nenable_selinux = {{ .NodeConfig.SELinux }}\n'
    with pytest.raises(ConfigError, match=r"^/x/config\.toml\.tmpl: not valid TOML.*line 2"):
        template.add_runtime(text, 2, ENTRY, "/x/config.toml.tmpl")


def test_hand_edited_runtime_is_not_removed_blindly() -> None:
    text = template.add_runtime(None, 2, ENTRY, "t") + "\n# a note\n"
    with pytest.raises(ConfigError, match="edited after we added it"):
        template.remove_runtime(text, 2, HANDLER, "t")


def test_version_in_template_body() -> None:
    assert template.body_version('{{ template "base" . }}\n', "t") is None
    assert template.body_version("version = 3\n", "t") == 3
    with pytest.raises(ConfigError, match="unsupported config version 9"):
        template.body_version("version = 9\n", "t")
    assert cc.SUPPORTED_VERSIONS == (2, 3, 4)
