"""QEMU option values cannot smuggle extra options."""

import pytest

from agent.vm.errors import ConfigError
from agent.vm.qemuopts import ident, opts, split, value


def test_comma_is_doubled_and_parses_back_as_one_value() -> None:
    evil = "/tmp/log,server=on,path=/etc/passwd"
    option = opts("file", id="console", path=value(evil, "console log"))
    assert split(option) == [("", "file"), ("id", "console"), ("path", evil)]


def test_value_without_escaping_would_have_added_options() -> None:
    # The parser model itself must see the attack, or the test above proves nothing.
    raw = "file,id=console,path=/tmp/log,server=on"
    assert ("server", "on") in split(raw)


@pytest.mark.parametrize("bad", ["", "a\nb", "a\x00b", "x\x7f"])
def test_value_refuses_empty_and_control_characters(bad: str) -> None:
    with pytest.raises(ConfigError):
        value(bad, "field")


@pytest.mark.parametrize("bad", ["", "1abc", "a,b", "a=b", "a b", "x" * 64])
def test_ident_refuses_non_ids(bad: str) -> None:
    with pytest.raises(ConfigError, match="not a valid id"):
        ident(bad, "disk id")


def test_opts_renders_bools_ints_and_dashes() -> None:
    assert opts("socket", id="q", fd=5, server=True, wait=False, reduced_phys_bits=1) == (
        "socket,id=q,fd=5,server=on,wait=off,reduced-phys-bits=1"
    )
