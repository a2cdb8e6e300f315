"""Command line for debugging: pull a reference into a bundle, remove it, or serve.

    python -m guest.imagepull pull REGISTRY/REPO@sha256:HEX BUNDLE [--store DIR] [--config TOML]
    python -m guest.imagepull remove BUNDLE [--store DIR]
    python -m guest.imagepull serve --socket PATH [--store DIR] [--config TOML]

``pull`` mounts the image at ``BUNDLE/rootfs`` (``--no-mount`` only fills the store and
prints the layer stack). Errors print one line to stderr and exit 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from guest.imagepull import config as cfg
from guest.imagepull import reference
from guest.imagepull.errors import ImagePullError
from guest.imagepull.puller import ImagePuller, PullerOptions
from guest.imagepull.store import LayerStore

DEFAULT_STORE = Path("/var/lib/contrast/imagepull")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m guest.imagepull", description=__doc__)
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="layer store root")
    parser.add_argument("--config", type=Path, help="registry settings TOML")
    parser.add_argument("--workers", type=int, default=4, help="parallel layer downloads")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    pull = sub.add_parser("pull", help="pull an image and mount it at BUNDLE/rootfs")
    pull.add_argument("image")
    pull.add_argument("bundle", type=Path)
    pull.add_argument("--no-mount", action="store_true", help="only fill the store")
    remove = sub.add_parser("remove", help="unmount BUNDLE/rootfs and drop its upper layer")
    remove.add_argument("bundle", type=Path)
    serve = sub.add_parser("serve", help="serve the ttrpc ImagePullService on a unix socket")
    serve.add_argument("--socket", type=Path, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        if args.command == "pull":
            reference.parse(args.image).pinned()  # refuse bad input before touching disk
        store = LayerStore(args.store)
        puller = ImagePuller(store, cfg.load(args.config), PullerOptions(workers=args.workers))
        if args.command == "pull":
            started = time.monotonic()
            image = puller.pull(args.image)
            if not args.no_mount:
                args.bundle.mkdir(parents=True, exist_ok=True)
                puller.mount_rootfs(image, args.bundle)
            print(
                f"{image.manifest_digest} {len(image.layers)} layers, "
                f"{image.fetched} fetched, {time.monotonic() - started:.3f}s"
            )
            for layer in image.layers:
                print(f"  {layer}")
        elif args.command == "remove":
            puller.remove_bundle(args.bundle)
        else:
            import asyncio

            from guest.imagepull.service import serve

            store.clean_staging()  # leftovers of pulls a previous instance did not finish
            asyncio.run(serve(puller, args.socket))
    except ImagePullError as err:
        print(f"imagepull: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
