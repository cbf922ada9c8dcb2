"""The one place the wall clock is read.

Pure modules take ``now`` as an argument; edges (actors, API handlers) call
``now_ts()``. Tests that need to move time inject a ``Clock`` instead of
patching this module.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Wall-clock seconds and a monotonic reading, injectable for tests."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()


def now_ts(clock: Clock = SYSTEM_CLOCK) -> int:
    """Current UTC epoch time in whole seconds."""
    return int(clock.time())


def iso_utc(ts: float | None) -> str | None:
    """Render epoch seconds as the contract's ISO form (``2026-01-20T10:00:00Z``)."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
