"""``python -m guest.initdata``: create, inspect and verify initdata; process it at boot.

    create --policy policy.rego [--data NAME=FILE ...] [--algorithm sha384]
           [--annotation] [--disk PATH] [-o FILE]
    inspect FILE|-              TOML, annotation value, gzip or disk image
    verify FILE (--digest HEX | --snp-report FILE | --tdx-quote FILE)
    process [--output DIR] [--disk PATH] [--dev-dir DIR]

Exit codes: 0 success; 1 refused (bad input, mismatch; for ``process``: deny-all was
published); 2 usage error or, for ``process``, nothing could be published at all.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from guest.initdata import codec, disk, document, snp, tdx, tee
from guest.initdata.binding import Platform, bind
from guest.initdata.errors import InitdataError
from guest.initdata.processor import OUTPUT_DIR, process, refuse, verify

log = logging.getLogger(__name__)

_BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args))
    except InitdataError as err:
        print(f"initdata: {err}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m guest.initdata", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    create = sub.add_parser("create", help="a new initdata document from a policy file")
    create.add_argument("--policy", type=Path, required=True, help="the agent policy (Rego)")
    create.add_argument("--data", action="append", default=[], metavar="NAME=FILE")
    create.add_argument("--algorithm", default="sha384", choices=document.ALGORITHMS)
    create.add_argument("--annotation", action="store_true", help="print the annotation value")
    create.add_argument("--disk", type=Path, help="also write the initdata disk image here")
    create.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    create.set_defaults(run=_create)

    inspect = sub.add_parser("inspect", help="decode a document and print its digests")
    inspect.add_argument("input", help="a file, or - for stdin")
    inspect.set_defaults(run=_inspect)

    verify = sub.add_parser("verify", help="check a document against a launch value")
    verify.add_argument("input", help="a file, or - for stdin")
    what = verify.add_mutually_exclusive_group(required=True)
    what.add_argument("--digest", help="expected digest (hex)")
    what.add_argument("--snp-report", type=Path, help="an SNP attestation report (binary)")
    what.add_argument("--tdx-quote", type=Path, help="a TDX quote v4 (binary)")
    verify.set_defaults(run=_verify)

    proc = sub.add_parser("process", help="boot-time processor (inside the pod-VM)")
    proc.add_argument("--output", type=Path, default=OUTPUT_DIR)
    proc.add_argument("--disk", type=Path, help="the initdata disk (default: probe --dev-dir)")
    proc.add_argument("--dev-dir", type=Path, default=Path("/dev"))
    proc.add_argument("--cmdline", type=Path, default=tee.CMDLINE, help=argparse.SUPPRESS)
    proc.set_defaults(run=_process)
    return parser


def _create(args: argparse.Namespace) -> int:
    data = {document.POLICY_NAME: _read_text(args.policy)}
    for spec in args.data:
        name, sep, path = spec.partition("=")
        if not sep or not path:
            raise InitdataError(f"--data wants NAME=FILE, got {spec!r}")
        if name in data:
            raise InitdataError(f"--data {name!r} given twice")
        data[name] = _read_text(Path(path))
    doc = document.create(data, args.algorithm)
    if args.disk:
        args.disk.write_bytes(disk.encode(doc.raw))
    out = (codec.encode_annotation(doc.raw) + "\n").encode() if args.annotation else doc.raw
    if args.output:
        args.output.write_bytes(out)
    else:
        sys.stdout.buffer.write(out)
        sys.stdout.flush()
    return 0


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InitdataError(f"cannot read {path}: {err}") from err


def load_any(blob: bytes) -> document.Initdata:
    """A document from a disk image, a gzip stream, an annotation value or plain TOML.

    A TOML document always holds characters outside the base64 alphabet (quotes, dots,
    spaces), so a blob made only of base64 characters is taken as an annotation value.
    """
    if blob.startswith(disk.MAGIC):
        return document.parse(disk.decode(blob))
    if blob.startswith(b"\x1f\x8b"):
        return document.parse(codec.decompress(blob))
    text = blob.strip()
    if text and _BASE64.fullmatch(text):
        return document.parse(codec.decode_annotation(text.decode("ascii")))
    return document.parse(blob)


def _load(arg: str) -> document.Initdata:
    try:
        blob = sys.stdin.buffer.read() if arg == "-" else Path(arg).read_bytes()
    except OSError as err:
        raise InitdataError(f"cannot read {arg}: {err}") from err
    return load_any(blob)


def _inspect(args: argparse.Namespace) -> int:
    doc = _load(args.input)
    snp_value = bind(doc.digest, Platform.SNP)
    tdx_value = bind(doc.digest, Platform.TDX)
    summary = {
        "version": doc.version,
        "algorithm": doc.algorithm,
        "digest": doc.digest.hex(),
        "snp_host_data": snp_value.hex(),
        "snp_host_data_base64": base64.b64encode(snp_value).decode(),
        "tdx_mrconfigid": tdx_value.hex(),
        "tdx_mrconfigid_base64": base64.b64encode(tdx_value).decode(),
        "data": {name: len(value.encode()) for name, value in sorted(doc.data.items())},
    }
    print(json.dumps(summary, indent=2))
    return 0


def _verify(args: argparse.Namespace) -> int:
    doc = _load(args.input)
    if args.digest:
        try:
            expected = bytes.fromhex(args.digest)
        except ValueError as err:
            raise InitdataError(f"--digest is not hex: {args.digest!r}") from err
        launch = tee.LaunchValue(Platform.INSECURE, expected, "--digest")
    elif args.snp_report:
        report = snp.parse_report(_read_bytes(args.snp_report))
        launch = tee.LaunchValue(Platform.SNP, report.host_data, str(args.snp_report))
    else:
        quote = tdx.parse_quote(_read_bytes(args.tdx_quote))
        launch = tee.LaunchValue(Platform.TDX, quote.body.mr_config_id, str(args.tdx_quote))
    verify(doc, launch)
    print(f"ok: {launch.platform.field} matches the document's {doc.algorithm} digest")
    return 0


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise InitdataError(f"cannot read {path}: {err}") from err


def _process(args: argparse.Namespace) -> int:
    try:
        try:
            disk_path = args.disk or disk.find(args.dev_dir)
        except InitdataError as err:
            outcome = refuse(str(err), args.output)
        else:
            outcome = process(disk_path, tee.detect(cmdline=args.cmdline), args.output)
    except InitdataError as err:
        print(f"initdata: nothing could be published: {err}", file=sys.stderr)
        return 2
    return 0 if outcome.trusted else 1
