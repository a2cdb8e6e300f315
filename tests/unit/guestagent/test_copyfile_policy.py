"""CopyFileRequest as the policy sees it: Kata's PolicyCopyFileRequest (no ``data``,
``file_type`` and ``symlink_target`` added), so genpolicy-shaped rules on those keys
decide, and a MiB chunk costs the policy nothing more than an empty one."""

from __future__ import annotations

import stat
import time

from api.kata import agent_pb2
from guest.agent import policyinput
from guest.agent.policy import Policy

SHARED = "/run/kata-containers/shared/containers/"
CID = "a" * 64
# genpolicy's shape: the sfprefix for every type, symlinks below the top level only,
# relative and without "..".
POLICY = f"""package agent_policy

import rego.v1

default CopyFileRequest := false

prefix := "^{SHARED}{CID}-[a-z0-9]{{16}}-"

CopyFileRequest if {{
    input.file_type in ["Regular", "Directory"]
    regex.match(prefix, input.path)
}}

CopyFileRequest if {{
    input.file_type == "Symlink"
    regex.match(concat("", [prefix, ".*/.+"]), input.path)
    not startswith(input.symlink_target, "/")
    not regex.match(`(^|/)\\.\\.($|/)`, input.symlink_target)
}}
"""


def request(path: str, mode: int, data: bytes = b"") -> agent_pb2.CopyFileRequest:
    size = len(data) if stat.S_IFMT(mode) == stat.S_IFREG else 0
    return agent_pb2.CopyFileRequest(path=path, file_mode=mode, file_size=size, data=data)


def allowed(policy: Policy, req: agent_pb2.CopyFileRequest) -> bool:
    return policy.evaluate("CopyFileRequest", policyinput.to_input(req)).allowed


def test_input_is_katas_policy_copy_file_request() -> None:
    link = request(SHARED + "x/..data", stat.S_IFLNK | 0o777, b"..2026_12_01")
    found = policyinput.to_input(link)
    assert "data" not in found
    assert (found["file_type"], found["symlink_target"]) == ("Symlink", "..2026_12_01")
    big = policyinput.to_input(request(SHARED + "x/f", stat.S_IFREG | 0o644, b"x" * (1 << 20)))
    assert (big["file_type"], big["symlink_target"], big["file_size"]) == ("Regular", "", 1 << 20)


def test_genpolicy_shaped_rules_decide() -> None:
    policy = Policy(POLICY)
    volume = f"{SHARED}{CID}-0123456789abcdef-config"
    assert allowed(policy, request(volume, stat.S_IFDIR | 0o755))
    assert allowed(policy, request(volume + "/..data", stat.S_IFLNK | 0o777, b"..2026_12"))
    assert allowed(policy, request(volume + "/a", stat.S_IFLNK | 0o777, b"..data/a"))
    assert not allowed(policy, request(volume + "/a", stat.S_IFLNK | 0o777, b"/etc/passwd"))
    assert not allowed(policy, request(volume + "/a", stat.S_IFLNK | 0o777, b"../../x"))
    assert not allowed(policy, request(volume, stat.S_IFLNK | 0o777, b"..data"))  # top level
    assert not allowed(policy, request(f"{SHARED}{'b' * 64}-0123456789abcdef-c", 0o100644))
    # A MiB of data evaluates as fast as none (it is not in the input).
    chunk = request(volume + "/..2026_12/blob", stat.S_IFREG | 0o644, b"x" * (1 << 20))
    started = time.monotonic()
    assert allowed(policy, chunk)
    print(f"1 MiB chunk: {1000 * (time.monotonic() - started):.1f} ms")
