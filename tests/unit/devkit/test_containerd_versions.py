"""The CRI node's containerd config on each release's own ``containerd config default``
(1.6: version 2, 2.0.11: 3, 2.3.4: 4): our handler, the pause image, the native
snapshotter, registry hosts and CNI in the place each version keeps them, and nothing
host-wide left (sockets, drop-in imports, NRI)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from devkit.containerd import (
    ContainerdRelease,
    ReleaseMissing,
    release,
    sandboxed_config,
    unpack_platform,
    unpacked_peers,
)
from devkit.crinode import HANDLER, containerd_config_with_handler
from devkit.errors import DevkitError

DATA = Path(__file__).parents[2] / "data" / "containerd"
DEFAULTS = {
    "1.6": "containerd-1.6-default.toml",
    "2.0.11": "containerd-2.0.11-default.toml",
    "2.3.4": "containerd-2.3.4-default.toml",
}
PEER = ContainerdRelease("2.3.4", Path("/peers/v2.3.4/bin"))


def node_config(version: str, tmp: Path) -> dict[str, Any]:
    text = containerd_config_with_handler(
        tmp / "runtime.toml",
        sandbox_image="reg/pause:1",
        registry_hosts=tmp / "hosts",
        base=(DATA / DEFAULTS[version]).read_text(),
    )
    rel = ContainerdRelease(version, None if version == "1.6" else Path("/p"))
    return tomllib.loads(sandboxed_config(text, tmp / "work", socket=tmp / "c.sock", release=rel))


def test_version_2_keeps_everything_in_the_cri_plugin(tmp_path: Path) -> None:
    doc = node_config("1.6", tmp_path)
    assert doc["version"] == 2
    cri = doc["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["containerd"]["runtimes"][HANDLER]["options"] == {
        "ConfigPath": str(tmp_path / "runtime.toml")
    }
    assert cri["containerd"]["runtimes"]["runc"]["runtime_type"] == "io.containerd.runc.v2"
    assert cri["sandbox_image"] == "reg/pause:1"
    assert cri["containerd"]["snapshotter"] == "native"
    assert cri["registry"]["config_path"] == str(tmp_path / "hosts")
    assert cri["restrict_oom_score_adj"] is True
    assert cri["cni"]["conf_dir"] == str(tmp_path / "work/cni")
    assert cri["cni"]["bin_dir"] == str(tmp_path / "work/cni-bin")
    assert doc["ttrpc"]["address"] == f"{tmp_path / 'c.sock'}.ttrpc"
    assert "io.containerd.transfer.v1.local" not in doc["plugins"]  # 1.6 has no transfer


@pytest.mark.parametrize(("version", "config_version"), [("2.0.11", 3), ("2.3.4", 4)])
def test_versions_3_and_4_split_images_and_runtime(
    tmp_path: Path, version: str, config_version: int
) -> None:
    doc = node_config(version, tmp_path)
    assert doc["version"] == config_version
    plugins = doc["plugins"]
    runtime = plugins["io.containerd.cri.v1.runtime"]
    images = plugins["io.containerd.cri.v1.images"]
    ours = runtime["containerd"]["runtimes"][HANDLER]
    assert ours["runtime_type"] == "io.containerd.contrast-cc.v2"
    assert ours["options"] == {"ConfigPath": str(tmp_path / "runtime.toml")}
    assert "runc" in runtime["containerd"]["runtimes"]
    assert runtime["restrict_oom_score_adj"] is True
    assert images["snapshotter"] == "native"
    assert images["pinned_images"]["sandbox"] == "reg/pause:1"
    assert images["registry"]["config_path"] == str(tmp_path / "hosts")
    transfer = plugins["io.containerd.transfer.v1.local"]
    assert transfer["config_path"] == str(tmp_path / "hosts")  # 2.x's CRI pulls through it
    assert {"platform": unpack_platform(), "snapshotter": "native"} in transfer["unpack_config"]
    assert runtime["cni"]["conf_dir"] == str(tmp_path / "work/cni")
    bins = runtime["cni"].get("bin_dirs", [runtime["cni"]["bin_dir"]])
    assert bins == [str(tmp_path / "work/cni-bin")]
    assert plugins["io.containerd.nri.v1.nri"]["disable"] is True
    assert plugins["io.containerd.internal.v1.opt"]["path"] == str(tmp_path / "work/opt")
    assert doc.get("imports", []) == []  # 2.3 imports /etc/containerd/conf.d/*.toml
    ttrpc = f"{tmp_path / 'c.sock'}.ttrpc"
    if config_version == 4:
        assert plugins["io.containerd.server.v1.ttrpc"]["address"] == ttrpc
    else:
        assert doc["ttrpc"]["address"] == ttrpc


def test_a_version_2_config_on_containerd_2_gets_unpack_platforms_and_no_nri(
    tmp_path: Path,
) -> None:
    doc = tomllib.loads(sandboxed_config("version = 2\n", tmp_path, release=PEER))
    plugins = doc["plugins"]
    assert plugins["io.containerd.nri.v1.nri"]["disable"] is True
    assert plugins["io.containerd.transfer.v1.local"]["unpack_config"][0]["snapshotter"] == (
        "native"
    )


def test_a_handler_the_base_names_is_kept(tmp_path: Path) -> None:
    base = containerd_config_with_handler(
        Path("/installed/runtime.toml"),
        sandbox_image="p",
        base=(DATA / DEFAULTS["2.3.4"]).read_text(),
    )
    again = containerd_config_with_handler(tmp_path / "other.toml", sandbox_image="p", base=base)
    runtimes = tomllib.loads(again)["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]
    assert runtimes["runtimes"][HANDLER]["options"] == {"ConfigPath": "/installed/runtime.toml"}


def test_release_path_puts_its_programs_first() -> None:
    assert PEER.path("/usr/bin") == "/peers/v2.3.4/bin:/usr/bin"
    assert PEER.containerd == "/peers/v2.3.4/bin/containerd"
    assert ContainerdRelease("1.6").path("/usr/bin") == "/usr/bin"


def test_unknown_and_missing_releases_say_so(tmp_path: Path) -> None:
    with pytest.raises(DevkitError, match=r"unknown containerd version '1\.7'"):
        release("1.7", peers=tmp_path)
    with pytest.raises(ReleaseMissing, match=r"has no install\.sh"):
        release("2.3.4", peers=tmp_path)
    with pytest.raises(ReleaseMissing, match=r"has no install\.sh"):
        unpacked_peers(tmp_path, tmp_path / "cache")
