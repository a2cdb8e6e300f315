"""The generated modules under api/: importable by package path only, and the ``types``
proto package must not shadow the standard library. Schema facts: test_wire.py.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import pkgutil
import sys
import sysconfig
from pathlib import Path

import api
from api.kata import types_pb2

API_ROOT = Path(api.__file__).parent


def _api_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages([str(API_ROOT)], prefix="api.")]


def test_importing_every_api_module_keeps_stdlib_types() -> None:
    modules = _api_modules()
    assert "api.kata.types_pb2" in modules
    assert "api.containerd.types.mount_pb2" in modules
    for name in modules:
        if name != "api.generate":
            importlib.import_module(name)
    # Search sys.path afresh (not the module cache): a folder or module named `types`
    # reachable from the path, e.g. a proto folder at the repo root, would win here.
    spec = importlib.machinery.PathFinder.find_spec("types", sys.path)
    assert spec is not None
    assert spec.origin is not None
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(spec.origin).resolve().parent == stdlib
    assert types_pb2.DESCRIPTOR.package == "types"


def test_generated_modules_import_only_by_package_path() -> None:
    # A generated module that imported a sibling as `import types_pb2` or
    # `from types import ...` would only work with a proto folder on sys.path.
    generated = sorted(API_ROOT.rglob("*_pb2.py"))
    assert len(generated) >= 10
    for path in generated:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert name.startswith(("google.protobuf", "api.")), f"{path}: imports {name}"
