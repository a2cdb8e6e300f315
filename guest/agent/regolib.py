"""regopy's shared library, loaded without holding the GIL.

``import regopy`` loads ``librego_shared.so`` (14 MiB of C++ with its own libssl and
libcrypto) with ``ctypes.cdll.LoadLibrary``, which keeps the GIL for the whole
``dlopen``: symbol relocation, static constructors and, on a cold boot, every page read
through erofs and dm-verity under TCG. The agent imports it on its build thread while
the event loop should answer Health; a GIL held that long left Health unanswered for
over 10 s. A ctypes *call* of libc's own ``dlopen`` releases the GIL for its duration;
afterwards regopy's ``dlopen`` of the same file finds it loaded and only takes a
reference.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from pathlib import Path

from guest.agent.errors import PolicyError

LIBRARY = "librego_shared.so"


def library_path() -> Path:
    """Where regopy's shared library is, found without importing regopy.

    Raises PolicyError when regopy is not installed or has no such library.
    """
    spec = importlib.util.find_spec("regopy")
    if spec is None or not spec.submodule_search_locations:
        raise PolicyError("regopy is not installed: no Rego policy can be loaded")
    path = Path(next(iter(spec.submodule_search_locations))) / LIBRARY
    if not path.is_file():
        raise PolicyError(f"regopy has no {LIBRARY} at {path}")
    return path


def preload() -> Path:
    """Load regopy's shared library with the GIL released; returns its path.

    Call it before the first ``import regopy``. The library stays loaded for the life
    of the process, as regopy keeps it anyway. Raises PolicyError (see :func:`load`).
    """
    path = library_path()
    load(path)
    return path


def load(path: Path) -> None:
    """``dlopen`` the library at ``path`` with the GIL released, other threads running.

    Raises PolicyError naming the library and dlopen's reason when it cannot load.
    """
    libc = ctypes.CDLL(None)  # the symbols already loaded: libc's dlopen among them
    dlopen = libc.dlopen
    dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    dlopen.restype = ctypes.c_void_p
    # Looked up first: the lookup (dlsym) would clear the error dlopen leaves.
    dlerror = libc.dlerror
    dlerror.restype = ctypes.c_char_p
    # The same flags as ctypes.cdll.LoadLibrary, so regopy's load matches this one.
    if not dlopen(os.fsencode(path), os.RTLD_NOW | ctypes.DEFAULT_MODE):
        reason = dlerror() or b"unknown error"
        raise PolicyError(f"cannot load {path}: {reason.decode(errors='replace')}")
