"""PulledRootfs makes its puller once, in the background after prepare(), else at the
first pull; a factory failure surfaces at the pull and the next pull tries again."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from guest.agent.sandbox import PulledRootfs


class FakePuller:
    def __init__(self) -> None:
        self.pulled: list[tuple[str, Path]] = []

    def pull_into_bundle(self, image: str, bundle: Path) -> None:
        self.pulled.append((image, bundle))

    def remove_bundle(self, bundle: Path) -> None:
        pass


async def test_prepare_makes_the_puller_once_in_the_background(tmp_path: Path) -> None:
    made: list[FakePuller] = []
    release = threading.Event()

    def factory() -> FakePuller:
        release.wait(5)
        made.append(FakePuller())
        return made[-1]

    rootfs = PulledRootfs(factory)
    rootfs.prepare()
    rootfs.prepare()
    await asyncio.sleep(0.05)
    assert made == []  # still making it, the loop is free
    release.set()
    await rootfs.mount("img@sha256:x", tmp_path)
    await rootfs.mount("img@sha256:y", tmp_path)
    assert len(made) == 1
    assert [image for image, _ in made[0].pulled] == ["img@sha256:x", "img@sha256:y"]


async def test_without_prepare_the_first_pull_makes_it(tmp_path: Path) -> None:
    made: list[FakePuller] = []

    def factory() -> FakePuller:
        made.append(FakePuller())
        return made[-1]

    rootfs = PulledRootfs(factory)
    assert made == []
    await rootfs.mount("img@sha256:x", tmp_path)
    assert len(made) == 1 and made[0].pulled == [("img@sha256:x", tmp_path)]


async def test_a_failed_factory_fails_the_pull_and_is_tried_again(tmp_path: Path) -> None:
    calls = 0

    def factory() -> FakePuller:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("bad imagepull.toml")
        return FakePuller()

    rootfs = PulledRootfs(factory)
    rootfs.prepare()
    with pytest.raises(ValueError, match=r"bad imagepull\.toml"):
        await rootfs.mount("img@sha256:x", tmp_path)
    await rootfs.mount("img@sha256:x", tmp_path)
    assert calls == 2
