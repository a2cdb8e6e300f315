"""The pod's resolv.conf, read on the host for the guest (agent.sandbox.resolv)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from agent.sandbox.resolv import MAX_BYTES, ResolvConfError, pod_dns


def spec(*mounts: dict[str, Any]) -> dict[str, Any]:
    return {"ociVersion": "1.0.2", "mounts": list(mounts)}


def bind(source: str, destination: str = "/etc/resolv.conf") -> dict[str, Any]:
    return {"destination": destination, "type": "bind", "source": source, "options": ["rbind"]}


def test_directives_of_the_mounted_file(tmp_path: Path) -> None:
    # What containerd's CRI writes from a PodSandboxConfig.dns_config, plus comments.
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(
        "# written by containerd\n\nsearch default.svc.cluster.local svc.cluster.local\n"
        "nameserver 10.96.0.10\n  options ndots:5  \n; old style comment\n"
    )
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    oci = spec(bind(str(hosts), "/etc/hosts"), bind(str(resolv)))
    assert pod_dns(oci) == (
        "search default.svc.cluster.local svc.cluster.local",
        "nameserver 10.96.0.10",
        "options ndots:5",
    )


def test_no_mount_no_dns() -> None:
    assert pod_dns(spec()) == ()
    assert pod_dns({"ociVersion": "1.0.2"}) == ()


def test_last_mount_wins(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_text("nameserver 192.0.2.1\n")
    second.write_text("nameserver 192.0.2.2\n")
    assert pod_dns(spec(bind(str(first)), bind(str(second)))) == ("nameserver 192.0.2.2",)


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "sandboxes" / "abc" / "resolv.conf"
    with pytest.raises(
        ResolvConfError, match=re.escape(f"cannot read the pod's resolv.conf {missing}")
    ):
        pod_dns(spec(bind(str(missing))))


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "resolv.conf"
    big.write_text("nameserver 192.0.2.1\n" + "#" * MAX_BYTES)
    with pytest.raises(ResolvConfError, match=re.escape(f"{big} is larger than {MAX_BYTES} bytes")):
        pod_dns(spec(bind(str(big))))


def test_unknown_directive_names_file_and_line(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.1\nlookup file bind\n")
    with pytest.raises(ResolvConfError, match=re.escape(f"{resolv}, line 2: 'lookup file bind'")):
        pod_dns(spec(bind(str(resolv))))


def test_relative_source_is_refused() -> None:
    with pytest.raises(ResolvConfError, match=r"'resolv\.conf' is not a host path"):
        pod_dns(spec(bind("resolv.conf")))
