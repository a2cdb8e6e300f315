"""The CRI node's pieces that need no program: containerd's config (our handler and
runc, registry hosts, oom_score_adj), the registry's hosts.toml, the pause image's
config, the CNI plugin's address bookkeeping and the CRI log reader."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from devkit import cni_plugin, ocibuild
from devkit.cri import LogLine, read_log
from devkit.crinode import (
    HANDLER,
    containerd_config_with_handler,
    pause_image,
    write_registry_hosts,
)
from devkit.errors import DevkitError


def test_containerd_config_has_our_handler_runc_and_the_registry_hosts(tmp_path: Path) -> None:
    text = containerd_config_with_handler(
        tmp_path / "runtime.toml", sandbox_image="reg/pause:1", registry_hosts=tmp_path / "h"
    )
    cri = tomllib.loads(text)["plugins"]["io.containerd.grpc.v1.cri"]
    runtimes = cri["containerd"]["runtimes"]
    assert runtimes[HANDLER]["runtime_type"] == "io.containerd.contrast-cc.v2"
    assert runtimes[HANDLER]["options"] == {"ConfigPath": str(tmp_path / "runtime.toml")}
    assert runtimes["runc"]["runtime_type"] == "io.containerd.runc.v2"
    assert cri["sandbox_image"] == "reg/pause:1"
    assert cri["registry"] == {"config_path": str(tmp_path / "h")}
    assert cri["restrict_oom_score_adj"] is True


def test_registry_hosts_speak_plain_http(tmp_path: Path) -> None:
    folder = write_registry_hosts(tmp_path, "10.213.47.3:5000")
    hosts = tomllib.loads((folder / "10.213.47.3:5000" / "hosts.toml").read_text())
    assert hosts["server"] == "http://10.213.47.3:5000"
    assert hosts["host"]["http://10.213.47.3:5000"]["capabilities"] == ["pull", "resolve"]


def test_pause_image_runs_sleep_and_its_manifest_names_its_config() -> None:
    image = pause_image()
    manifest = json.loads(image.manifest)
    assert manifest["config"]["digest"] == ocibuild.sha256(image.config)
    assert manifest["config"]["size"] == len(image.config)
    assert json.loads(image.config)["config"]["Cmd"] == ["/bin/sleep", "2147483647"]
    assert set(image.blobs) == {
        ocibuild.sha256(image.config),
        image.manifest_digest,
        *(digest for digest, _ in image.layers),
    }


def test_cni_addresses_are_held_per_container_and_released(tmp_path: Path) -> None:
    config = {"data_dir": str(tmp_path / "ipam"), "subnet": "10.0.0", "first": 20, "last": 21}
    assert cni_plugin.allocate(config, "pod-a") == "10.0.0.20"
    assert cni_plugin.allocate(config, "pod-b") == "10.0.0.21"
    assert cni_plugin.allocate(config, "pod-a") == "10.0.0.20"  # ADD again: same address
    with pytest.raises(RuntimeError, match=r"no free address in 10\.0\.0\.20-21"):
        cni_plugin.allocate(config, "pod-c")
    cni_plugin.release(config, "pod-a")
    assert cni_plugin.allocate(config, "pod-c") == "10.0.0.20"
    cni_plugin.release(config, "pod-gone")  # DEL of an unknown container is fine
    assert sorted(p.name for p in (tmp_path / "ipam").iterdir()) == ["10.0.0.20", "10.0.0.21"]


T = "2026-11-22T15:00:00.000000001Z"


def test_cri_log_joins_partial_lines_per_stream(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_text(
        f"{T} stdout P hel\n{T} stderr F oops\n{T} stdout F lo world\n{T} stdout F \n"
        f"{T} stderr P cut off\n"
    )
    assert read_log(log) == [
        LogLine("stderr", "oops"),
        LogLine("stdout", "hello world"),
        LogLine("stdout", ""),
        LogLine("stderr", "cut off"),  # a partial line at the end is still output
    ]


def test_cri_log_refuses_what_is_no_cri_log(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_text("plain output\n")
    with pytest.raises(DevkitError, match=r"not a CRI log line: 'plain output'"):
        read_log(log)
