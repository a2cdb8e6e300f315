"""Which containerd config file to patch, how to read its version, which unit to restart."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import PurePosixPath

from installer import containerd_config, template
from installer.errors import ConfigError
from installer.host import Host

CONTAINERD_CONFIG = PurePosixPath("/etc/containerd/config.toml")
RANCHER_DIRS = {
    "k3s": PurePosixPath("/var/lib/rancher/k3s/agent/etc/containerd"),
    "rke2": PurePosixPath("/var/lib/rancher/rke2/agent/etc/containerd"),
}
UNITS = {
    "containerd": ("containerd.service",),
    "k3s": ("k3s.service", "k3s-agent.service"),
    "rke2": ("rke2-server.service", "rke2-agent.service"),
}
V3_TEMPLATE = "config-v3.toml.tmpl"
V2_TEMPLATE = "config.toml.tmpl"


class Distribution(enum.Enum):
    """Who runs containerd: a plain systemd unit, or k3s/rke2 rendering a template."""

    CONTAINERD = "containerd"
    K3S = "k3s"
    RKE2 = "rke2"


@dataclass(frozen=True)
class ConfigTarget:
    """The file we patch, as a host path, and the units whose restart applies it."""

    path: PurePosixPath
    template: bool
    units: tuple[str, ...]

    @property
    def rendered(self) -> PurePosixPath:
        """For a template: the config k3s/rke2 rendered from it last time."""
        return self.path.with_name("config.toml")


def detect(host: Host) -> Distribution:
    """k3s or rke2 when their containerd directory exists on the host, else containerd."""
    for name, directory in RANCHER_DIRS.items():
        if host.path(directory).is_dir():
            return Distribution(name)
    return Distribution.CONTAINERD


def find_target(host: Host, distribution: Distribution, explicit: str | None) -> ConfigTarget:
    """Where the config (or template) lives; ``explicit`` is a host path that wins."""
    units = UNITS[distribution.value]
    if explicit is not None:
        path = PurePosixPath(explicit)
        if not path.is_absolute():
            raise ConfigError(f"config path {explicit!r} must be absolute (a path on the host)")
        return ConfigTarget(path, path.name.endswith(".tmpl"), units)
    if distribution is Distribution.CONTAINERD:
        return ConfigTarget(CONTAINERD_CONFIG, False, units)
    directory = RANCHER_DIRS[distribution.value]
    for name in (V3_TEMPLATE, V2_TEMPLATE):
        if host.path(directory / name).exists():
            return ConfigTarget(directory / name, True, units)
    # No template yet: k3s reads config-v3.toml.tmpl for version 3 configs (containerd 2).
    rendered = host.path(directory / "config.toml")
    name = V2_TEMPLATE
    if rendered.exists() and _version_of_file(host, directory / "config.toml") >= 3:
        name = V3_TEMPLATE
    return ConfigTarget(directory / name, True, units)


def template_version(host: Host, target: ConfigTarget, text: str | None) -> int:
    """The config version a template renders to; raises ConfigError when unknowable."""
    own = template.body_version(text, str(target.path))
    if own is not None:
        return own
    if target.path.name == V3_TEMPLATE:
        return 3
    if host.path(target.rendered).exists():
        return _version_of_file(host, target.rendered)
    raise ConfigError(
        f"{target.path}: cannot tell which containerd config version this template renders "
        f"to: {target.rendered} does not exist yet (start k3s/rke2 once, or pass "
        "--config-version)"
    )


def _version_of_file(host: Host, path: PurePosixPath) -> int:
    try:
        text = host.path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from err
    return containerd_config.read_version(containerd_config.parse(text, str(path)), str(path))
