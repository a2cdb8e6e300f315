"""The demo's step-by-step log on stdout."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

STEPS = (
    "guest image",
    "runtime installed by the installer",
    "CRI node: containerd, pod network, local registry",
    "initdata and policy",
    "confidential pod through CRI",
    "teardown",
)


@dataclass
class Report:
    """Numbered steps with indented details; remembers the step in progress."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    current: int = 0
    _started: float = field(default_factory=time.monotonic)

    def step(self, number: int) -> None:
        self.current = number
        self._print(f"[{number}/{len(STEPS)}] {STEPS[number - 1]}")

    def info(self, text: str) -> None:
        self._print(f"      {text}")

    def line(self, text: str) -> None:
        self._print(text)

    @property
    def step_name(self) -> str:
        return STEPS[self.current - 1] if self.current else "start"

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)
