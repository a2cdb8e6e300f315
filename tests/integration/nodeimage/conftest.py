"""The node image, built once per input hash (nodeimage's cache), shared by this tier."""

from __future__ import annotations

import os

import pytest

from nodeimage.build import NodeImage, ensure_image
from tests.conftest import require_programs

PLATFORM = "qemu-insecure"


@pytest.fixture(scope="session")
def node_image() -> NodeImage:
    return built_node_image()


def built_node_image() -> NodeImage:
    """The node image for PLATFORM from nodeimage's cache (built when its inputs changed)."""
    require_programs("mmdebstrap", "chroot", "mkfs.erofs", "veritysetup")
    if os.geteuid() != 0:
        pytest.skip("building the node image needs root (mmdebstrap --mode=root, chroot)")
    image = ensure_image(PLATFORM)
    summary = image.summary
    print(
        f"\nnode image {image.reference}: layer {int(str(summary['layer_bytes'])) / 2**20:.1f} MiB"
        f" gzip ({int(str(summary['tree_bytes'])) / 2**20:.1f} MiB tar),"
        f" built in {summary['build_seconds']} s"
    )
    return image
