"""The installer's exceptions: one root, translated to an exit code only in ``cli``."""

from __future__ import annotations

from collections.abc import Sequence


class InstallerError(Exception):
    """Root of every error the installer reports to its user."""


class ManifestError(InstallerError):
    """The asset manifest is missing, malformed, or names an asset we refuse to install."""


class IntegrityError(InstallerError):
    """An asset's content does not match its declared SRI integrity value."""


class FetchError(InstallerError):
    """An asset source could not be read or downloaded."""


class ConfigError(InstallerError):
    """The containerd config (or template) cannot be read, parsed or patched safely."""


class WriteError(InstallerError):
    """Writing a file failed part-way; the file on disk is still the old one."""


class CommandError(InstallerError):
    """An external program failed, could not be started, or timed out."""

    def __init__(
        self,
        argv: Sequence[str],
        message: str,
        returncode: int | None = None,
        output: str = "",
    ) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.output = output
        detail = f": {output.strip()}" if output.strip() else ""
        super().__init__(f"{' '.join(self.argv)}: {message}{detail}")
