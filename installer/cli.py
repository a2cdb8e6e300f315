"""``contrast-node-installer`` / ``python -m installer``: the command line, and the one
place where errors become messages and exit codes (0 done, 1 failed, 2 bad usage)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from installer import assets, targets
from installer.containerd_config import SUPPORTED_VERSIONS
from installer.errors import InstallerError
from installer.host import Host
from installer.install import Options, install, uninstall
from installer.manifest import load_manifest
from installer.targets import Distribution

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contrast-node-installer",
        description="Install the Contrast runtime on a node and register it with containerd.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--host-root",
        type=Path,
        default=Path("/"),
        help="where the host's filesystem is mounted (/host in the DaemonSet; default /)",
    )
    common.add_argument(
        "--distribution",
        choices=["auto", *(d.value for d in Distribution)],
        default="auto",
        help="who runs containerd; auto looks for k3s/rke2 directories (default auto)",
    )
    common.add_argument(
        "--containerd-config",
        metavar="HOST_PATH",
        help="config (or .tmpl template) to patch, as a path on the host",
    )
    common.add_argument(
        "--config-version",
        type=int,
        choices=SUPPORTED_VERSIONS,
        help="config version a k3s/rke2 template renders to, when it cannot be read",
    )
    common.add_argument("--restart-unit", metavar="UNIT", help="systemd unit to restart")
    common.add_argument("--no-restart", action="store_true", help="never restart anything")
    common.add_argument(
        "--host-namespaces",
        choices=["auto", "nsenter", "direct"],
        default="auto",
        help="run systemctl/containerd via nsenter into PID 1's namespaces "
        "(auto: when --host-root is not /)",
    )
    common.add_argument(
        "--dry-run", action="store_true", help="change nothing; print the config diff instead"
    )

    p_install = sub.add_parser("install", parents=[common], help="install assets and runtime")
    p_install.add_argument("--manifest", type=Path, required=True, help="asset manifest (TOML)")

    p_uninstall = sub.add_parser("uninstall", parents=[common], help="remove a runtime handler")
    which = p_uninstall.add_mutually_exclusive_group(required=True)
    which.add_argument("--manifest", type=Path, help="remove the handler of this manifest")
    which.add_argument("--handler", help="remove this handler (contrast-cc-…)")
    p_uninstall.add_argument(
        "--force",
        action="store_true",
        help="uninstall even while Contrast pods of the handler run (they are left "
        "without a runtime)",
    )

    p_handler = sub.add_parser("handler", help="print the handler name of a manifest")
    p_handler.add_argument("--manifest", type=Path, required=True)
    return parser


def _options(args: argparse.Namespace) -> Options:
    root = args.host_root.resolve()
    enter = {"auto": root != Path("/"), "nsenter": True, "direct": False}[args.host_namespaces]
    host = Host(root, enter)
    if not root.is_dir():
        raise InstallerError(f"host root {root} is not a directory")
    distribution = (
        targets.detect(host) if args.distribution == "auto" else Distribution(args.distribution)
    )
    target = targets.find_target(host, distribution, args.containerd_config)
    return Options(
        host=host,
        target=target,
        config_version=args.config_version,
        restart=not args.no_restart,
        restart_unit=args.restart_unit,
        dry_run=args.dry_run,
        force=getattr(args, "force", False),
    )


def _handler(args: argparse.Namespace) -> str:
    if args.handler is None:
        return assets.resolve(load_manifest(args.manifest)).handler
    if not assets.HANDLER_RE.match(args.handler):
        raise InstallerError(f"{args.handler!r} is not a Contrast runtime handler name")
    return str(args.handler)


def _run(args: argparse.Namespace, out: TextIO) -> None:
    if args.command == "handler":
        print(assets.resolve(load_manifest(args.manifest)).handler, file=out)
    elif args.command == "install":
        install(assets.resolve(load_manifest(args.manifest)), _options(args), out)
    else:
        uninstall(_handler(args), _options(args), out)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the installer; returns the process exit code."""
    args = _parser().parse_args(argv)
    stream = sys.stdout if out is None else out
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        _run(args, stream)
    except InstallerError as err:
        print(f"contrast-node-installer: error: {err}", file=sys.stderr)
        return 1
    return 0
