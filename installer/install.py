"""install and uninstall: assets, then the containerd config, then a restart if needed."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TextIO

from installer import assets, configfile, lock, pods, shimlink, systemd
from installer.assets import Action, Bundle
from installer.containerd_config import RuntimeEntry
from installer.errors import ConfigError, InstallerError
from installer.host import Host
from installer.manifest import Role
from installer.targets import ConfigTarget

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    """How to install: where, which config, whether and what to restart."""

    host: Host
    target: ConfigTarget
    config_version: int | None = None
    restart: bool = True
    restart_unit: str | None = None  # None: the target's usual unit (k3s vs k3s-agent…)
    dry_run: bool = False
    force: bool = False  # uninstall under running Contrast pods


def runtime_entry(bundle: Bundle) -> RuntimeEntry:
    """Our containerd runtime table for an installed bundle."""
    return RuntimeEntry(
        handler=bundle.handler,
        runtime_path=str(bundle.role_path(Role.SHIM)),
        config_path=str(bundle.role_path(Role.RUNTIME_CONFIG)),
    )


def _locked(opts: Options) -> contextlib.AbstractContextManager[None]:
    if opts.dry_run:
        return contextlib.nullcontext()
    return lock.exclusive(opts.host.path(assets.INSTALL_ROOT))


def install(bundle: Bundle, opts: Options, out: TextIO) -> None:
    """Install ``bundle`` on the host; reports each step on ``out``.

    Raises InstallerError (and subclasses); a failure leaves every file either as it
    was or completely replaced, and a rerun picks up where this one stopped.
    """
    with _locked(opts):
        _install(bundle, opts, out)


def _install(bundle: Bundle, opts: Options, out: TextIO) -> None:
    would = "would " if opts.dry_run else ""
    print(f"handler {bundle.handler}", file=out)
    # Planned first: a config we cannot patch stops us before anything is written.
    change = configfile.plan_add(opts.host, opts.target, runtime_entry(bundle), opts.config_version)
    for done in assets.install_assets(bundle, opts.host.root, dry_run=opts.dry_run):
        verb = "unchanged" if done.action is Action.UNCHANGED else would + done.action.value
        print(f"asset {done.path}: {verb}", file=out)
    # containerd 1.6 finds the shim on its PATH only (installer/shimlink.py).
    shim = bundle.role_path(Role.SHIM)
    linked = shimlink.link(opts.host, shim, dry_run=opts.dry_run)
    print(f"link {shimlink.LINK} -> {shim}: {_link_verb(linked, would)}", file=out)
    _apply_config(change, opts, out)


def _link_verb(action: shimlink.LinkAction, would: str) -> str:
    changes = (shimlink.LinkAction.CREATE, shimlink.LinkAction.UPDATE, shimlink.LinkAction.REMOVE)
    return would + action.value if action in changes else action.value


class PodsRunning(InstallerError):
    """Uninstall refused: Contrast pods of the handler still run on the node."""


def uninstall(handler: str, opts: Options, out: TextIO) -> None:
    """Remove ``handler`` from the containerd config, restart if needed, delete its assets.

    Raises PodsRunning, changing nothing, while the node daemon keeps state for a pod of
    ``handler`` (:mod:`installer.pods`), unless ``opts.force``; InstallerError."""
    with _locked(opts):
        _uninstall(handler, opts, out)


def _uninstall(handler: str, opts: Options, out: TextIO) -> None:
    would = "would " if opts.dry_run else ""
    print(f"handler {handler}", file=out)
    running = pods.running(opts.host, handler)
    if running and not opts.force:
        raise PodsRunning(
            f"{len(running)} Contrast pod(s) of {handler} still run on this node: "
            + "; ".join(map(str, running))
            + ". Delete them first (their pod-VMs would be left without a runtime), "
            "or pass --force"
        )
    for pod in running:
        print(f"{pod}: {would}left running (--force)", file=out)
    change = configfile.plan_remove(opts.host, opts.target, handler, opts.config_version)
    _apply_config(change, opts, out)
    unlinked = shimlink.unlink(opts.host, handler, dry_run=opts.dry_run)
    print(f"link {shimlink.LINK}: {_link_verb(unlinked, would)}", file=out)
    removed = assets.remove_assets(handler, opts.host.root, dry_run=opts.dry_run)
    directory = assets.INSTALL_ROOT / handler
    print(f"assets {directory}: {would + 'remove' if removed else 'absent'}", file=out)


def _apply_config(change: configfile.ConfigChange, opts: Options, out: TextIO) -> None:
    path = change.path
    if opts.dry_run:
        print(f"config {path}: {'would change' if change.changed else 'unchanged'}", file=out)
        out.write(change.diff())
        if change.changed:
            _report_restart(opts, out, "would restart")
        return
    if change.changed:
        backup = configfile.apply(opts.host, change)
        note = f" (backup {backup.name})" if backup is not None else " (created)"
        print(f"config {path}: written{note}", file=out)
    else:
        print(f"config {path}: unchanged", file=out)
    if change.old is None and change.new is None:
        return  # no config at all: nothing for containerd to reload
    _restart_if_needed(opts, path, changed=change.changed, out=out)


def _unit(opts: Options) -> str:
    if opts.restart_unit is not None:
        return opts.restart_unit
    return systemd.pick_unit(opts.host, opts.target.units)


def _report_restart(opts: Options, out: TextIO, verb: str) -> None:
    if not opts.restart:
        print("restart: disabled", file=out)
        return
    unit = opts.restart_unit or " or ".join(opts.target.units)
    print(f"restart {unit}: {verb}", file=out)


def _restart_if_needed(opts: Options, path: PurePosixPath, *, changed: bool, out: TextIO) -> None:
    if not opts.restart:
        print("restart: disabled", file=out)
        return
    unit = _unit(opts)
    if not changed:
        try:
            mtime = opts.host.path(path).stat().st_mtime
        except OSError as err:
            raise ConfigError(f"{path}: cannot stat: {err}") from err
        if not systemd.needs_restart(opts.host, unit, mtime):
            print(f"restart {unit}: not needed (started after the config was written)", file=out)
            return
    systemd.restart(opts.host, unit)
    print(f"restart {unit}: done", file=out)
