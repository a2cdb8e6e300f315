"""``python -m nodeimage build|containerfile``: the node image here, its Containerfile."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from guest.image.errors import ImageError
from nodeimage import containerfile, layout, oci
from nodeimage.build import default_cache, ensure_image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodeimage")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build (or reuse) the node image as an OCI layout")
    build.add_argument("--platform", default=layout.NO_FIRMWARE_PLATFORMS[0])
    build.add_argument("--cache", type=Path, default=None, help=f"default: {default_cache()}")
    build.add_argument("--archive", type=Path, default=None, help="also write the layout as a tar")
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    render = sub.add_parser("containerfile", help="print the Containerfile of nodeimage.layout")
    render.add_argument("--write", action="store_true", help="write it to the repository's root")
    args = parser.parse_args(argv)
    if args.command == "containerfile":
        text = containerfile.render()
        if args.write:
            (layout.REPO / "Containerfile").write_text(text)
        else:
            sys.stdout.write(text)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        image = ensure_image(args.platform, args.cache, force=args.force)
    except ImageError as err:
        print(f"node image build failed: {err}", file=sys.stderr)
        return 1
    if args.archive:
        oci.archive(image.layout, args.archive)
    summary = image.summary
    print(f"node image: {image.layout} ({image.reference})")
    print(f"manifest: {summary['manifest_digest']}")
    print(
        f"size: layer {int(str(summary['layer_bytes'])) / 2**20:.1f} MiB gzip"
        f" ({int(str(summary['tree_bytes'])) / 2**20:.1f} MiB tar),"
        f" built in {summary['build_seconds']} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
