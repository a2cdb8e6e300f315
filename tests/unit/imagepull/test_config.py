"""The registry settings file."""

from __future__ import annotations

from pathlib import Path

import pytest

from guest.imagepull import config
from guest.imagepull.errors import ConfigError


def test_full_entry() -> None:
    cfg = config.parse(
        '[registries."r.example:5000"]\n'
        'username = "u"\npassword = "s3cret"\nca_files = ["/ca.pem"]\n'
        'skip_verify = true\ninsecure = true\nmirror = "m.example"\n'
    )
    r = cfg.for_registry("r.example:5000")
    assert (r.username, r.password, r.ca_files) == ("u", "s3cret", (Path("/ca.pem"),))
    assert r.skip_verify and r.insecure and r.mirror == "m.example"
    assert "s3cret" not in repr(r)
    assert cfg.for_registry("other") == config.RegistrySettings()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("registries = 1", "must be a table"),
        ("[registries.x]\nuser = 'a'", r"unknown keys \['user'\]"),
        ("[registries.x]\nusername = 'a'", "username and password go together"),
        ("[registries.x]\ninsecure = 'yes'", "insecure must be true or false"),
        ("[registries.x]\nca_files = '/a'", "ca_files must be a list"),
        ("[other]", "unknown top-level keys"),
        ("[registries", "not valid TOML"),
    ],
)
def test_malformed(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.parse(text)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read registry config"):
        config.load(tmp_path / "nope.toml")
