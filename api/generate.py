"""Regenerate the Python modules from our .proto files.

``python -m api.generate`` rewrites every ``*_pb2.py``/``*_pb2.pyi`` next to its
``.proto`` (under ``api/`` and ``ttrpc/``); ``python -m api.generate --check`` changes
nothing and exits 1 listing what is stale. Protos import each other by their path from
the repository root (``import "api/containerd/types/mount.proto";``), so the generated
modules live inside our packages and a proto folder named ``types`` can never shadow
the standard library.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIRS = ("api", "ttrpc")


class GenerateError(RuntimeError):
    """protoc rejected a .proto file."""


def proto_files(root: Path = ROOT) -> list[Path]:
    """Every .proto file we own, relative to ``root``, sorted."""
    found: list[Path] = []
    for folder in PROTO_DIRS:
        found.extend(p.relative_to(root) for p in (root / folder).rglob("*.proto"))
    return sorted(found)


def generate(out_dir: Path, root: Path = ROOT) -> list[Path]:
    """Run protoc over all our protos into ``out_dir``; return the files it wrote.

    Raises GenerateError when protoc fails.
    """
    from grpc_tools import protoc

    protos = proto_files(root)
    if not protos:
        return []
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "protoc",
        f"-I{root}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        *(str(p) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise GenerateError(f"protoc failed on {', '.join(map(str, protos))}")
    return sorted(
        proto.with_name(proto.stem + suffix)
        for proto in protos
        for suffix in ("_pb2.py", "_pb2.pyi")
    )


def stale_files(root: Path = ROOT) -> list[str]:
    """Generated files that differ from what the protos produce now, or are missing/extra."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = set(generate(Path(tmp), root))
        committed = {
            p.relative_to(root) for folder in PROTO_DIRS for p in (root / folder).rglob("*_pb2.py*")
        }
        stale = [f"{p}: missing" for p in sorted(fresh - committed)]
        stale += [f"{p}: no .proto produces it" for p in sorted(committed - fresh)]
        stale += [
            f"{p}: differs"
            for p in sorted(fresh & committed)
            if not filecmp.cmp(Path(tmp) / p, root / p, shallow=False)
        ]
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale files, write nothing")
    opts = parser.parse_args(argv)
    if opts.check:
        stale = stale_files()
        for line in stale:
            print(line, file=sys.stderr)
        return 1 if stale else 0
    # Generate aside first: a proto that fails to compile must not cost us the old modules.
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        for old in (p for folder in PROTO_DIRS for p in (ROOT / folder).rglob("*_pb2.py*")):
            if old.relative_to(ROOT) not in fresh:
                old.unlink()
        for rel in fresh:
            (ROOT / rel).write_bytes((Path(tmp) / rel).read_bytes())
            print(rel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
