"""The ttrpc ImagePullService and the CLI, end to end against the loopback registry."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import ttrpc
from api.guest import imagepull_pb2
from devkit import ocibuild as ob
from devkit.command import run
from devkit.registry import Registry, registry_settings_toml
from guest.imagepull import config
from guest.imagepull.puller import ImagePuller
from guest.imagepull.service import SERVICE, serve
from guest.imagepull.store import LayerStore

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def pushed(registry: Registry) -> str:
    image = ob.build_image(
        [
            ob.Layer(ob.layer_tar([ob.directory("etc"), ob.file("etc/os-release", b"ID=test\n")])),
            ob.Layer(ob.layer_tar([ob.directory("etc"), ob.whiteout("etc/os-release")]), "zstd"),
            ob.Layer(ob.layer_tar([ob.file("hello", b"hello from layer 3\n", 0o755)])),
        ]
    )
    digest = registry.upload(image.blobs, image.manifest, "service/app", "v1")
    return f"{registry.host}/service/app@{digest}"


async def test_pull_image_rpc(registry: Registry, pushed: str, tmp_path: Path) -> None:
    store = LayerStore(tmp_path / "store")
    puller = ImagePuller(store, config.parse(registry_settings_toml(registry)))
    socket = tmp_path / "imagepull.sock"
    server = asyncio.create_task(serve(puller, socket))
    try:
        for _ in range(100):
            if socket.exists():
                break
            await asyncio.sleep(0.02)
        client = await ttrpc.Client.connect_unix(socket)
        stub = ttrpc.ServiceStub(client, SERVICE)
        bundles = [tmp_path / "c1", tmp_path / "c2"]
        for bundle in bundles:
            bundle.mkdir()
            reply = await stub.PullImage(
                imagepull_pb2.ImagePullRequest(image_url=pushed, bundle_path=str(bundle))
            )
            assert isinstance(reply, imagepull_pb2.ImagePullResponse)
            assert pushed.endswith(reply.manifest_digest)
            rootfs = bundle / "rootfs"
            assert os.path.ismount(rootfs)
            assert (rootfs / "hello").read_bytes() == b"hello from layer 3\n"
            assert not (rootfs / "etc/os-release").exists()

        # Containers write to their own upper layer, never into the shared layers.
        (bundles[0] / "rootfs" / "hello").write_text("changed")
        assert (bundles[1] / "rootfs" / "hello").read_bytes() == b"hello from layer 3\n"
        assert (store.container_dir(bundles[0]) / "upper" / "hello").read_text() == "changed"

        with pytest.raises(ttrpc.InvalidArgument, match="not pinned by digest"):
            await stub.PullImage(
                imagepull_pb2.ImagePullRequest(
                    image_url=pushed.partition("@")[0] + ":v1", bundle_path=str(tmp_path / "c3")
                )
            )
        with pytest.raises(ttrpc.InvalidArgument, match="must be an absolute path"):
            await stub.PullImage(
                imagepull_pb2.ImagePullRequest(image_url=pushed, bundle_path="relative")
            )
        missing = pushed.partition("@")[0] + "@sha256:" + "0" * 64
        with pytest.raises(ttrpc.Unavailable, match="MANIFEST_UNKNOWN"):
            await stub.PullImage(
                imagepull_pb2.ImagePullRequest(image_url=missing, bundle_path=str(tmp_path / "c4"))
            )
        await client.close()
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
        for bundle in (tmp_path / "c1", tmp_path / "c2"):
            puller.remove_bundle(bundle)
    assert not socket.exists()
    assert list((store.root / "containers").iterdir()) == []


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guest.imagepull", *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_pull_and_remove(registry: Registry, pushed: str, tmp_path: Path) -> None:
    settings = tmp_path / "registries.toml"
    settings.write_text(registry_settings_toml(registry))
    common = ["--store", str(tmp_path / "store"), "--config", str(settings)]
    bundle = tmp_path / "bundle"
    done = cli(*common, "pull", pushed, str(bundle))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(pushed.split("@")[1] + " 3 layers, 3 fetched")
    assert (bundle / "rootfs" / "hello").exists()
    done = cli(*common, "remove", str(bundle))
    assert done.returncode == 0, done.stderr
    assert not (bundle / "rootfs").exists()

    done = cli(*common, "pull", pushed.partition("@")[0] + ":v1", str(bundle))
    assert done.returncode == 1
    assert "not pinned by digest" in done.stderr


def test_stale_upper_layers_are_swept(registry: Registry, pushed: str, tmp_path: Path) -> None:
    store = LayerStore(tmp_path / "store")
    puller = ImagePuller(store, config.parse(registry_settings_toml(registry)))
    first, second = tmp_path / "first", tmp_path / "second"
    puller.pull_into_bundle(pushed, first)
    # The agent unmounts the rootfs itself when a container goes away.
    run(["umount", str(first / "rootfs")])
    puller.pull_into_bundle(pushed, second)
    assert not store.container_dir(first).exists()
    assert store.container_dir(second).exists()
    puller.remove_bundle(second)


def test_many_layers_fit_one_mount(registry: Registry) -> None:
    layers = [
        ob.Layer(ob.layer_tar([ob.file(f"from-{i:03d}", str(i).encode())])) for i in range(90)
    ]
    image = ob.build_image(layers)
    digest = registry.upload(image.blobs, image.manifest, "service/many", "v1")
    # A store path as short as the guest's; pytest's own temp paths are much longer.
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="ip") as short:
        puller = ImagePuller(
            LayerStore(Path(short) / "s"), config.parse(registry_settings_toml(registry))
        )
        bundle = Path(short) / "b"
        puller.pull_into_bundle(f"{registry.host}/service/many@{digest}", bundle)
        try:
            names = sorted(p.name for p in (bundle / "rootfs").iterdir())
            assert names == [f"from-{i:03d}" for i in range(90)]
        finally:
            puller.remove_bundle(bundle)
