"""shim.launcher: the script containerd runs starts python -I -S on exactly its paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devkit.node import REPO
from shim import launcher

NAME = launcher.NAME
# A stand-in for our package: reports how the interpreter was started.
PROBE = """\
import json, sys
def main():
    print(json.dumps({"site": "site" in sys.modules, "isolated": sys.flags.isolated,
                      "no_site": sys.flags.no_site, "path": sys.path, "argv": sys.argv}))
    return 3
"""


def probe_tree(root: Path) -> Path:
    (root / "shim").mkdir(parents=True)
    (root / "shim/__init__.py").write_text("")
    (root / "shim/main.py").write_text(PROBE)
    return root


def run(
    path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(path), *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


@pytest.mark.allow_programs(NAME)
def test_launcher_starts_isolated_without_site_on_its_paths(tmp_path: Path) -> None:
    tree = probe_tree(tmp_path / "tree")
    other = tmp_path / "other"
    other.mkdir()
    path = tmp_path / NAME
    launcher.write(path, launcher.script(sys.executable, [str(tree), str(other)]))
    # PYTHONPATH naming another shim would win without -I.
    decoy = probe_tree(tmp_path / "decoy")
    (decoy / "shim/main.py").write_text("def main():\n    return 9\n")
    done = run(path, "-id", "x", "start", env={"PYTHONPATH": str(decoy)})
    assert done.returncode == 3, done.stderr  # the probe's main() is the exit status
    seen = json.loads(done.stdout)
    assert seen["site"] is False
    assert seen["isolated"] == 1 and seen["no_site"] == 1
    assert seen["path"][-2:] == [str(tree), str(other)]
    assert not any("site-packages" in entry for entry in seen["path"][:-2])
    assert seen["argv"] == [str(path), "-id", "x", "start"]


@pytest.mark.allow_programs(NAME)
def test_launcher_without_our_package_says_so(tmp_path: Path) -> None:
    path = tmp_path / NAME
    launcher.write(path, launcher.script(sys.executable, [str(tmp_path / "gone")]))
    done = run(path, "-v")
    assert done.returncode == 1
    assert f"{NAME}: No module named 'shim'" in done.stderr
    assert "gone" in done.stderr and "python -m shim.launcher" in done.stderr


@pytest.mark.allow_programs(NAME)
def test_launcher_for_this_checkout_runs_the_shim(tmp_path: Path) -> None:
    paths = launcher.search_path()
    assert paths[0] == str(REPO)  # shim, agent, api, ttrpc, guest: one checkout
    assert all("site-packages" in p or "dist-packages" in p for p in paths[1:])
    path = tmp_path / NAME
    launcher.write(path, launcher.script(sys.executable, paths))
    done = run(path, "-v")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("containerd-shim-contrast-cc-v2 (contrast-node ")


def test_search_path_names_a_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher, "PACKAGES", ("shim", "no_such_package_here"))
    with pytest.raises(launcher.LauncherError, match="'no_such_package_here' is not importable"):
        launcher.search_path()


@pytest.mark.parametrize(
    ("python", "message"),
    [
        ("python3", "absolute path"),
        ("/opt/my python/bin/python3", "without spaces"),
        ("/" + "x" * 130, "longer than 127"),
    ],
)
def test_script_refuses_what_a_shebang_cannot_hold(python: str, message: str) -> None:
    with pytest.raises(launcher.LauncherError, match=message):
        launcher.script(python, ["/x"])


def test_script_starts_python_isolated_without_site() -> None:
    text = launcher.script("/usr/bin/python3", ["/a", "/b"])
    assert text.splitlines()[0] == "#!/usr/bin/python3 -IS"
    assert "PATHS = ['/a', '/b']" in text


def test_write_only_when_it_differs(tmp_path: Path) -> None:
    path = tmp_path / "bin" / NAME
    assert launcher.write(path, "one\n") is True
    assert path.stat().st_mode & 0o777 == 0o755
    assert launcher.write(path, "one\n") is False
    assert launcher.write(path, "two\n") is True
    assert path.read_text() == "two\n"
    path.chmod(0o644)
    assert launcher.write(path, "two\n") is True  # not executable: written again
    assert path.stat().st_mode & 0o777 == 0o755


@pytest.mark.allow_programs(NAME)
def test_main_writes_and_checks_the_launcher(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / NAME
    assert launcher.main(["--output", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: containerd-shim-contrast-cc-v2 (")
    assert path.read_text().startswith(f"#!{sys.executable} -IS\n")


@pytest.mark.allow_programs(NAME)
def test_main_fails_when_the_launcher_does_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(launcher, "search_path", lambda: [str(tmp_path / "gone")])
    assert launcher.main(["--output", str(tmp_path / NAME)]) == 1
    assert "-v: containerd-shim-contrast-cc-v2: No module named 'shim'" in capsys.readouterr().err
