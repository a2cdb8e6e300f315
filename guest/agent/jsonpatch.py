"""JSON Patch (RFC 6902) for the policy state: the ``ops`` a Kata policy returns.

Pure function over JSON values: the input is never modified, a failing patch changes
nothing. Operations: add, remove, replace, move, copy, test.
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    """An op that is malformed or does not apply (names the op and the path)."""


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"bad JSON pointer {path!r}")
    if path == "":
        return []
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(container: list[Any], token: str, allow_end: bool) -> int:
    if allow_end and token == "-":  # noqa: S105 - the RFC's append index
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise PatchError(f"bad array index {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise PatchError(f"array index {index} out of range")
    return index


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"no member {token!r}")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, allow_end=False)]
        else:
            raise PatchError(f"cannot descend into {type(node).__name__} at {token!r}")
    return node


def _get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"no member {last!r}")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, allow_end=False)]
    raise PatchError(f"cannot read {last!r} from {type(parent).__name__}")


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise PatchError(f"cannot add {last!r} to {type(parent).__name__}")
    return doc


def _remove(doc: Any, tokens: list[str]) -> tuple[Any, Any]:
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"no member {last!r}")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, allow_end=False))
    raise PatchError(f"cannot remove {last!r} from {type(parent).__name__}")


def apply(doc: Any, ops: Any) -> Any:
    """The result of applying ``ops`` (a list of op objects) to a copy of ``doc``.

    Raises PatchError naming the first op that fails.
    """
    if not isinstance(ops, list):
        raise PatchError("ops must be a list")
    result = copy.deepcopy(doc)
    for n, op in enumerate(ops):
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise PatchError(f"op {n}: not an object with an 'op' string")
        try:
            result = _apply_one(result, op)
        except PatchError as err:
            raise PatchError(f"op {n} ({op['op']} {op.get('path')!r}): {err}") from err
    return result


def _apply_one(result: Any, op: dict[str, Any]) -> Any:
    name = op["op"]
    tokens = _pointer(op.get("path"))
    if name in ("add", "replace", "test") and "value" not in op:
        raise PatchError("missing 'value'")
    if name == "add":
        return _add(result, tokens, copy.deepcopy(op["value"]))
    if name == "remove":
        return _remove(result, tokens)[0]
    if name == "replace":
        _get(result, tokens)
        if tokens:
            result, _ = _remove(result, tokens)
        return _add(result, tokens, copy.deepcopy(op["value"]))
    if name == "move":
        result, value = _remove(result, _pointer(op.get("from")))
        return _add(result, tokens, value)
    if name == "copy":
        return _add(result, tokens, copy.deepcopy(_get(result, _pointer(op.get("from")))))
    if name == "test":
        if _get(result, tokens) != op["value"]:
            raise PatchError("value differs")
        return result
    raise PatchError("unknown op")
