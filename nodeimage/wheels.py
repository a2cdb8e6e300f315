"""Our wheel from the checkout and our dependencies' wheels, pinned to this venv's versions."""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import sys
from pathlib import Path

from guest.image import command
from nodeimage import containerfile

log = logging.getLogger(__name__)

OUR_DISTRIBUTION = "contrast-node"
_TOP_FILES = ("pyproject.toml", "README.md")


def constraints() -> str:
    """``name==version`` for every distribution of this environment but ours, sorted.

    The image gets exactly the versions the tests here ran with (a constraint on a
    distribution nothing needs installs nothing), and the text is part of the cache key.
    """
    pins = {
        dist.metadata["Name"].lower(): dist.version
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"] and dist.metadata["Name"].lower() != OUR_DISTRIBUTION
    }
    return "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def source_files(repo: Path) -> list[Path]:
    """The checkout's files that go into our wheel, relative to the repository."""
    files = [Path(name) for name in _TOP_FILES]
    for package in containerfile.packages(repo):
        for path in sorted((repo / package).rglob("*")):
            rel = path.relative_to(repo)
            if path.is_file() and "__pycache__" not in rel.parts:
                files.append(rel)
    return files


def build(repo: Path, work: Path) -> Path:
    """Wheels of ``REQUIREMENT`` and its dependencies into ``work/wheels``.

    Our sources are copied to ``work/src`` first, so the build writes nothing into the
    checkout. Dependencies come from pip's cache or PyPI. Raises CommandError.
    """
    src = work / "src"
    for rel in source_files(repo):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, src / rel)
    pins = work / "constraints.txt"
    pins.write_text(constraints())
    wheels = work / "wheels"
    extras = containerfile.extras()
    log.info("building wheels of %s[%s] into %s", OUR_DISTRIBUTION, extras, wheels)
    command.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--quiet",
         "--disable-pip-version-check", "--wheel-dir", wheels, "--constraint", pins,
         f"{src}[{extras}]"],
        timeout=1800,
    )  # fmt: skip
    return wheels


def pip_package() -> Path:
    """This environment's pip package directory: the image's python3 runs it from /tmp."""
    dist = importlib.metadata.distribution("pip")
    return Path(str(dist.locate_file("pip")))
