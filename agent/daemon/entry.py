"""The command-line entry the node daemon and the relay share: flags, logging (journal,
stderr, or a size-capped file once the single-instance lock is held), settings from the
environment, one instance per run directory, then the program's ``serve``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.daemon import settings as daemon_settings
from agent.daemon.lifecycle import InstanceError, single_instance
from agent.daemon.logfile import log_to_file
from agent.daemon.systemd import Notifier, SystemdError, setup_logging

log = logging.getLogger(__name__)

Serve = Callable[[daemon_settings.Settings, Notifier], Coroutine[Any, Any, int]]


@dataclass(frozen=True)
class Program:
    name: str  # the command's name, also its journal identifier
    description: str
    lock_file: str  # in the run directory
    what: str  # "node daemon", "node relay": for the lock's error
    errors: tuple[type[Exception], ...]  # the program's own start-up errors


def run(program: Program, serve: Serve, argv: list[str] | None = None) -> int:
    """Parse ``argv``, set up logging and run ``serve``; 1 (with the reason on stderr and
    in the log) when start-up fails."""
    parser = argparse.ArgumentParser(prog=program.name, description=program.description)
    parser.add_argument("--debug", action="store_true", help="log at debug level")
    parser.add_argument(
        "--log-file",
        type=Path,
        help="log to this size-capped, rotated file (stdout and stderr too) instead of "
        "stderr (set by the shim or relay that starts us detached)",
    )
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.INFO
    errors: tuple[type[Exception], ...] = (
        *program.errors,
        InstanceError,
        SystemdError,
        daemon_settings.SettingsError,
        OSError,
    )
    try:
        setup_logging(level, identifier=program.name)
        notifier = Notifier()
        config = daemon_settings.from_env()
        with single_instance(config.run_dir, program.lock_file, program.what):
            if args.log_file is not None:  # only the holder of the lock rotates it
                log_to_file(args.log_file, level, config.log_limits)
            return asyncio.run(serve(config, notifier))
    except errors as err:
        print(f"{program.name}: {err}", file=sys.stderr)
        log.error("start-up failed: %s", err)  # noqa: TRY400 (the message says it all)
        return 1
