"""What the scenarios measure with: the result row, bounded waits, delivery progress.

``Progress`` samples a counter (the sink's) from a daemon thread, so the rate of
delivery can be read per tenth of the run afterwards: a run that slows down as the
database grows shows falling deciles, a run limited by something constant does not.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

PROGRESS_INTERVAL_S = 0.05


@dataclass
class Row:
    scenario: str
    n: int
    tenants: int
    msg_s: float | None = None
    ratio: float | None = None
    ingest_msg_s: float | None = None
    add_p50_ms: float | None = None
    add_p99_ms: float | None = None
    peak_rss_mb: float | None = None
    idle_rss_mb: float | None = None
    cpu_s: float | None = None
    notes: list[str] = field(default_factory=list)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> bool:
    """Poll ``condition`` every 20 ms; on a deadline print it clearly and return False."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            print(f"  ! DEADLINE: {what} not reached within {timeout_s:.0f}s")
            return False
        time.sleep(0.02)
    return True


class Progress:
    """(time, count) samples of ``read()`` every 50 ms until ``stop()``."""

    def __init__(self, read: Callable[[], int]) -> None:
        self._read = read
        self.started = time.monotonic()
        self.samples: list[tuple[float, int]] = [(self.started, read())]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(PROGRESS_INTERVAL_S):
            self.samples.append((time.monotonic(), self._read()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.samples.append((time.monotonic(), self._read()))

    def decile_rates(self, n: int) -> list[float]:
        """msg/s within each tenth of ``n`` (from the first sample reaching each mark)."""
        counts = [count for _, count in self.samples]
        marks = []
        for k in range(11):
            i = bisect.bisect_left(counts, k * n // 10)
            if i == len(counts):
                break
            marks.append(self.samples[i][0])
        return [(n / 10) / max(b - a, 1e-9) for a, b in itertools.pairwise(marks)]
