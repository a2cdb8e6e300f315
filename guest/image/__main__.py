"""``python -m guest.image build [--cache DIR] [--out DIR] [--force]``."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from guest.image.build import default_cache, ensure_image
from guest.image.errors import ImageError
from guest.image.manifest import INITRD, KERNEL, MANIFEST, ROOT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m guest.image")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build (or reuse) the guest image")
    build.add_argument("--cache", type=Path, default=None, help=f"default: {default_cache()}")
    build.add_argument("--out", type=Path, default=None, help="also copy the artifacts here")
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        image = ensure_image(args.cache, force=args.force)
    except ImageError as err:
        print(f"guest image build failed: {err}", file=sys.stderr)
        return 1
    directory = image.directory
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for name in (KERNEL, INITRD, ROOT, MANIFEST):
            shutil.copyfile(image.directory / name, args.out / name)
        directory = args.out
    sizes = image.manifest.sizes
    print(f"guest image: {directory}")
    print(f"root hash: {image.manifest.root_hash}")
    print(
        f"root image: {sizes['root_image_bytes'] / 2**20:.1f} MiB"
        f" (tree {sizes['root_tree_bytes'] / 2**20:.1f} MiB),"
        f" initrd {sizes['initrd_bytes'] / 2**20:.1f} MiB,"
        f" kernel {sizes['kernel_bytes'] / 2**20:.1f} MiB,"
        f" built in {image.manifest.build_seconds} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
