"""How much the fuzzers try: a few derandomized examples per test in the unit tier (the
same ones every run, so CI cannot go red by chance), many random ones with
``CONTRAST_FUZZ=long`` (``CONTRAST_FUZZ_EXAMPLES=N`` sets the count either way).

    CONTRAST_FUZZ=long .venv/bin/pytest tests/unit/fuzz
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

# Hypothesis keeps caches in ./.hypothesis by default: keep the checkout clean.
set_hypothesis_home_dir(str(Path(tempfile.gettempdir()) / "contrast-hypothesis"))

LONG = os.environ.get("CONTRAST_FUZZ", "") == "long"
EXAMPLES = int(os.environ.get("CONTRAST_FUZZ_EXAMPLES", "2000" if LONG else "40"))

# Applied to each fuzz test explicitly: other modules load global profiles.
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=not LONG,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# For the slow ones (a fork and a compile per case): fewer in the unit tier.
fuzz_slow = settings(
    fuzz,
    max_examples=EXAMPLES if LONG or "CONTRAST_FUZZ_EXAMPLES" in os.environ else 15,
)

T = TypeVar("T")


def run(make: Callable[[], Awaitable[T]]) -> T:
    """Run one example's coroutine on a fresh loop; fails if anything reached the
    loop's exception handler (a task died with an exception nobody awaited)."""
    failures: list[dict[str, Any]] = []

    async def main() -> T:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: failures.append(ctx))
        return await make()

    result = asyncio.run(main())
    assert not failures, f"unhandled in the event loop: {failures}"
    return result


class Tracebacks(logging.Handler):
    """Collects every log record that carries a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.stack_info:
            self.records.append(record)


@contextmanager
def no_tracebacks_logged() -> Iterator[None]:
    """Fails when anything logged a traceback meanwhile (an error we did not expect)."""
    handler = Tracebacks()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
    assert not handler.records, [
        f"{r.name}: {r.getMessage()}\n{handler.format(r)}" for r in handler.records
    ]
