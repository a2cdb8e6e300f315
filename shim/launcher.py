"""The executable containerd runs as ``containerd-shim-contrast-cc-v2``, written for one
interpreter and one install::

    python -m shim.launcher --output PATH

``start`` runs twice per pod and ``delete`` once per task, each a fresh interpreter, so
its start-up is on every pod's path. A console script (pip's, or an editable install's)
starts with ``site``: it reads every ``.pth`` file of site-packages, and an editable
install's finder alone imports pathlib, re and more (about 20 ms here, 80 ms on a
loaded node). The launcher is a Python script that starts its interpreter isolated
and without ``site`` (``#!<python> -IS``: no ``PYTHON*`` variables, no user site, no
script directory, no ``.pth`` files) and puts on ``sys.path`` what the shim imports:
the directories holding our packages, then the interpreter's site directories (the
entry's long ways import protobuf and the daemon's modules from there).

Both are found by the interpreter writing the launcher, as it imports them: the
launcher is written where it will run (``packaging/node/image-setup.sh`` in the node
image, over pip's console script; ``devkit.node.shim_launcher`` for a dev tree), and
has to be written again when the install moves. The daemon and relay a ``start``
spawns are ordinary interpreters (``sys.executable -m ...``), with ``site``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import site
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from guest import fsatomic

# What the entry imports, on any of its ways (shim.main's long ways import the daemon's
# modules, api's generated classes and ttrpc).
PACKAGES = ("shim", "agent", "api", "ttrpc", "guest")
# Linux reads at most this much of a "#!" line before 5.1 (BINPRM_BUF_SIZE 128).
SHEBANG_MAX = 127
NAME = "containerd-shim-contrast-cc-v2"


class LauncherError(Exception):
    """The launcher cannot be written for this interpreter or install; says why."""


def search_path() -> list[str]:
    """Our packages' parent directories, then the interpreter's site directories that
    exist, each once; raises LauncherError when a package is not importable here."""
    dirs: list[str] = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise LauncherError(f"package {name!r} is not importable by {sys.executable}")
        dirs += [str(Path(p).absolute().parent) for p in spec.submodule_search_locations]
    dirs += [d for d in site.getsitepackages() if Path(d).is_dir()]
    return list(dict.fromkeys(dirs))


def script(python: str, paths: Sequence[str]) -> str:
    """The launcher's text: ``python`` started with ``-IS``, ``paths`` appended to its
    ``sys.path``; raises LauncherError for an interpreter path a ``#!`` line cannot hold."""
    shebang = f"#!{python} -IS"
    if not python.startswith("/") or any(c.isspace() for c in python):
        raise LauncherError(
            f"interpreter {python!r}: a #! line needs an absolute path without spaces"
        )
    if len(shebang) > SHEBANG_MAX:
        raise LauncherError(f"interpreter {python!r}: #! line longer than {SHEBANG_MAX} bytes")
    return (
        f"{shebang}\n"
        f"# {NAME}, written by `python -m shim.launcher` (shim/launcher.py) for this\n"
        "# interpreter and install: isolated, without site, on exactly these directories.\n"
        "import sys\n"
        f"PATHS = {list(paths)!r}\n"
        "sys.path += PATHS\n"
        "try:\n"
        "    from shim.main import main\n"
        "except ImportError as err:\n"
        f'    sys.exit(f"{NAME}: {{err}} (launcher {{sys.argv[0]}}, for {{PATHS}}): "\n'
        '             "rewrite it with python -m shim.launcher")\n'
        "sys.exit(main())\n"
    )


def write(path: Path, text: str) -> bool:
    """``text`` at ``path`` (mode 0755), replaced atomically when it differs; True when
    it was written. Raises OSError."""
    try:
        if path.read_text() == text and os.access(path, os.X_OK):
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fsatomic.write_file(path, text.encode(), prefix=f".{path.name}.", mode=0o755)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shim.launcher", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--output", type=Path, required=True, help="where to write the launcher")
    args = parser.parse_args(argv)
    try:
        write(args.output, script(sys.executable, search_path()))
    except (LauncherError, OSError) as err:
        print(f"shim.launcher: {err}", file=sys.stderr)
        return 1
    # It must start here: a launcher that cannot would fail every pod.
    check = subprocess.run(
        [str(args.output), "-v"], capture_output=True, text=True, timeout=60, check=False
    )
    if check.returncode != 0:
        print(f"shim.launcher: {args.output} -v: {check.stderr.strip()}", file=sys.stderr)
        return 1
    print(f"{args.output}: {check.stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
