"""The pod's DNS settings, handed to the guest in CreateSandboxRequest.dns.

containerd's CRI writes the pod's resolv.conf on the host (from the sandbox config's
``dns_config``, else a copy of the host's) and bind-mounts it at /etc/resolv.conf in
every container's OCI spec. The guest cannot see host files, so, as Kata does, the
daemon reads the file named by the sandbox container's mount and sends its directives;
the guest agent writes the pod's resolv.conf and binds it wherever a container asks
for /etc/resolv.conf. Comments and blank lines are dropped; anything else that is not
a resolv.conf directive fails the sandbox, naming the file and the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.sandbox.errors import SandboxError

RESOLV_CONF = "/etc/resolv.conf"
# resolv.conf(5) holds a few lines; more than this is not a resolv.conf.
MAX_BYTES = 64 * 1024
DIRECTIVES = ("nameserver", "search", "domain", "options", "sortlist")


class ResolvConfError(SandboxError):
    """The pod's resolv.conf on the host is unreadable, too big or malformed."""


def resolv_conf_source(oci: dict[str, Any]) -> Path | None:
    """The host file the spec bind-mounts at /etc/resolv.conf (the last such mount
    wins, as mounts are applied in order); None when there is none."""
    source = None
    for mount in oci.get("mounts") or []:
        if isinstance(mount, dict) and mount.get("destination") == RESOLV_CONF:
            source = mount.get("source")
    if source is None:
        return None
    if not isinstance(source, str) or not source.startswith("/"):
        raise ResolvConfError(f"the {RESOLV_CONF} mount's source {source!r} is not a host path")
    return Path(source)


def pod_dns(oci: dict[str, Any]) -> tuple[str, ...]:
    """The directives of the pod's resolv.conf, for CreateSandboxRequest.dns; empty when
    the sandbox container mounts none (``ctr run``). Raises ResolvConfError."""
    path = resolv_conf_source(oci)
    if path is None:
        return ()
    try:
        with path.open("rb") as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as err:
        raise ResolvConfError(f"cannot read the pod's resolv.conf {path}: {err}") from err
    if len(data) > MAX_BYTES:
        raise ResolvConfError(f"the pod's resolv.conf {path} is larger than {MAX_BYTES} bytes")
    try:
        text = data.decode()
    except UnicodeDecodeError as err:
        raise ResolvConfError(f"the pod's resolv.conf {path} is not UTF-8: {err}") from err
    return parse(text, path)


def parse(text: str, path: Path) -> tuple[str, ...]:
    """The directive lines of resolv.conf ``text`` (``path`` is named in errors)."""
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if "\0" in line or line.split(maxsplit=1)[0] not in DIRECTIVES:
            raise ResolvConfError(
                f"the pod's resolv.conf {path}, line {number}: {line[:100]!r} is not one of "
                f"{', '.join(DIRECTIVES)}"
            )
        lines.append(line)
    return tuple(lines)
