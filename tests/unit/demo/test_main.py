"""The demo's boundary: a failing step ends it with exit 1 and a line naming the step;
a machine that cannot run it gets exit 2 and the reason."""

from __future__ import annotations

import pytest

from agent.demo import main as demo
from agent.demo.report import Report
from devkit.containerd import ReleaseMissing
from guest.image.errors import ImageError
from guest.image.manifest import GuestImage


def test_a_failing_step_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken_image(report: Report) -> GuestImage:
        report.step(1)
        raise ImageError("mmdebstrap exited 1: no mirror")

    monkeypatch.setattr("agent.demo.main.os.geteuid", lambda: 0)
    monkeypatch.setattr("agent.demo.main.shutil.which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(demo, "guest_image", broken_image)
    assert demo.main([]) == 1
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last == ("contrast demo: FAILED at step 1 (guest image): mmdebstrap exited 1: no mirror")


def test_missing_programs_are_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("agent.demo.main.os.geteuid", lambda: 0)
    monkeypatch.setattr(
        "agent.demo.main.shutil.which",
        lambda name: None if name == "containerd" else f"/usr/bin/{name}",
    )
    assert demo.main([]) == 2
    assert (
        "missing programs (scripts/dev.sh setup installs them): ['containerd']"
        in capsys.readouterr().out
    )


def test_an_unknown_containerd_is_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--containerd", "1.7"]) == 2
    assert "invalid choice: '1.7'" in capsys.readouterr().err


def test_a_missing_peer_containerd_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing(version: str) -> object:
        raise ReleaseMissing(f"../shared/peers has no install.sh (asked for {version})")

    monkeypatch.setattr("agent.demo.main.os.geteuid", lambda: 0)
    monkeypatch.setattr("agent.demo.main.shutil.which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(demo, "release", missing)
    assert demo.main(["--containerd", "2.3.4"]) == 2
    out = capsys.readouterr().out
    assert "CRI -> containerd\n               2.3.4 -> our shim" in out
    assert out.rstrip().endswith(
        "contrast demo: containerd 2.3.4 is not available: "
        "../shared/peers has no install.sh (asked for 2.3.4)"
    )
