"""Scheduler: one thread that delivers messages to actors when they are due.

Actors never sleep. ``scheduler.after(delay_s, ref, message)`` returns a
``Cancel``; the timer arrives as an ordinary message. One thread serves every
actor, so a thousand tenants cost no timer threads. A timer whose target has
stopped is dropped (the Supervisor's store scan finds any work it stood for),
and no exception may kill the scheduler thread.

``ManualScheduler`` has the same interface plus ``advance(seconds)``, and is
also a ``Clock``: tests move timers and the wall clock together.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import pykka

logger = logging.getLogger(__name__)


class Target(Protocol):
    def tell(self, message: Any) -> None: ...


@dataclass(order=True, slots=True)
class _Entry:
    due: float
    seq: int
    target: Target = field(compare=False)
    message: Any = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class Cancel:
    """Handle returned by ``after``; calling it stops the timer if it has not fired."""

    __slots__ = ("_entry",)

    def __init__(self, entry: _Entry) -> None:
        self._entry = entry

    def __call__(self) -> None:
        self._entry.cancelled = True


class TimerService(Protocol):
    def after(self, delay_s: float, target: Target, message: Any) -> Cancel: ...


def _deliver(entry: _Entry) -> None:
    try:
        entry.target.tell(entry.message)
    except pykka.ActorDeadError:
        logger.debug("timer target stopped; dropped %r", entry.message)
    except Exception:  # a scheduler must survive anything a target does
        logger.exception("timer delivery failed for %r", entry.message)


class Scheduler:
    """The real scheduler thread, on the monotonic clock."""

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def after(self, delay_s: float, target: Target, message: Any) -> Cancel:
        entry = _Entry(time.monotonic() + max(0.0, delay_s), next(self._seq), target, message)
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:
                self._cond.notify()
        return Cancel(entry)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait = self._heap[0].due - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._stopped:
                    return
                entry = heapq.heappop(self._heap)
            if not entry.cancelled:
                _deliver(entry)


class ManualScheduler:
    """A scheduler and clock that move only when a test calls ``advance``."""

    def __init__(self, start_ts: float = 1_767_225_600.0) -> None:
        self._now = start_ts
        self._mono = 0.0
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def after(self, delay_s: float, target: Target, message: Any) -> Cancel:
        entry = _Entry(self._mono + max(0.0, delay_s), next(self._seq), target, message)
        with self._lock:
            heapq.heappush(self._heap, entry)
        return Cancel(entry)

    def pending(self) -> list[Any]:
        with self._lock:
            return [e.message for e in sorted(self._heap) if not e.cancelled]

    def advance(self, seconds: float) -> None:
        """Move both clocks forward, delivering due timers in order."""
        target = self._mono + seconds
        while True:
            with self._lock:
                if not self._heap or self._heap[0].due > target:
                    break
                entry = heapq.heappop(self._heap)
            self._now += entry.due - self._mono
            self._mono = entry.due
            if not entry.cancelled:
                _deliver(entry)
        self._now += target - self._mono
        self._mono = target

    def start(self) -> None:
        """Nothing to start; present for interface parity."""

    def stop(self, timeout_s: float = 0.0) -> None:
        """Nothing to stop; present for interface parity."""
