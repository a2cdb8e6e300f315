"""Per-registry settings, read from a TOML file.

```toml
[registries."registry.example.com:5000"]
username = "puller"          # basic auth, also sent to a Bearer token server
password = "secret"
ca_files = ["/etc/contrast/registry-ca.pem"]   # extra CAs, added to the system ones
skip_verify = false          # TLS without certificate verification (debugging only)
insecure = false             # plain HTTP: only for registries named here
mirror = "mirror.internal:5000"  # tried first; content is digest-verified either way
```

A registry not named in the file gets HTTPS with the system CAs and anonymous auth.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guest.imagepull.errors import ConfigError

_KEYS = {"username", "password", "ca_files", "skip_verify", "insecure", "mirror"}


@dataclass(frozen=True)
class RegistrySettings:
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_files: tuple[Path, ...] = ()
    skip_verify: bool = False
    insecure: bool = False
    mirror: str | None = None


@dataclass(frozen=True)
class PullerConfig:
    registries: Mapping[str, RegistrySettings] = field(default_factory=dict)

    def for_registry(self, host: str) -> RegistrySettings:
        return self.registries.get(host, RegistrySettings())


def _registry(host: str, raw: Any, where: str) -> RegistrySettings:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: registries.{host!r} must be a table")
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: registries.{host!r}: unknown keys {sorted(unknown)}")

    def text(key: str) -> str | None:
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where}: registries.{host!r}.{key} must be a string")
        return value

    def flag(key: str) -> bool:
        value = raw.get(key, False)
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: registries.{host!r}.{key} must be true or false")
        return value

    ca_files = raw.get("ca_files", [])
    if not isinstance(ca_files, list) or not all(isinstance(c, str) for c in ca_files):
        raise ConfigError(f"{where}: registries.{host!r}.ca_files must be a list of paths")
    username, password = text("username"), text("password")
    if (username is None) != (password is None):
        raise ConfigError(f"{where}: registries.{host!r}: username and password go together")
    return RegistrySettings(
        username=username,
        password=password,
        ca_files=tuple(Path(c) for c in ca_files),
        skip_verify=flag("skip_verify"),
        insecure=flag("insecure"),
        mirror=text("mirror"),
    )


def parse(text: str, where: str = "<registry config>") -> PullerConfig:
    """Parse the settings TOML. Raises ConfigError naming the offending key."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{where}: not valid TOML: {err}") from err
    unknown = set(doc) - {"registries"}
    if unknown:
        raise ConfigError(f"{where}: unknown top-level keys {sorted(unknown)}")
    raw = doc.get("registries", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: registries must be a table")
    return PullerConfig({host: _registry(host, value, where) for host, value in raw.items()})


def load(path: Path | None) -> PullerConfig:
    """Read the settings file; ``None`` means defaults. Raises ConfigError."""
    if path is None:
        return PullerConfig()
    try:
        return parse(path.read_text(), str(path))
    except OSError as err:
        raise ConfigError(f"cannot read registry config {path}: {err}") from err
