"""Pure backoff arithmetic: message retries (SPEC §6.5), sync failures (§10.6), actor restarts.

No clock reads and no global randomness: ``now`` and ``rng`` are arguments, so
every schedule is testable to the second.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

JITTER = 0.1


def jittered(seconds: float, rng: random.Random, jitter: float = JITTER) -> float:
    """Multiply by a uniform factor in [1 - jitter, 1 + jitter] to avoid synchronised retries."""
    return seconds * rng.uniform(1.0 - jitter, 1.0 + jitter)


def retry_delay_s(retry_count: int, delays: Sequence[int], rng: random.Random) -> float:
    """Delay after the ``retry_count``-th temporary failure (1-based); the last delay repeats."""
    if retry_count < 1:
        raise ValueError("retry_count starts at 1")
    if not delays:
        raise ValueError("retry delays must not be empty")
    return jittered(float(delays[min(retry_count, len(delays)) - 1]), rng)


def next_attempt_ts(now: int, retry_count: int, delays: Sequence[int], rng: random.Random) -> int:
    """When a message deferred after its ``retry_count``-th failure becomes due again."""
    return now + max(1, round(retry_delay_s(retry_count, delays, rng)))


def exponential_s(
    failures: int, *, base_s: float, cap_s: float, rng: random.Random | None = None
) -> float:
    """``min(cap, base * 2^(failures-1))``, optionally jittered ±10 %; 0 for no failure."""
    if failures < 1:
        return 0.0
    delay = min(cap_s, base_s * 2.0 ** min(failures - 1, 62))
    return jittered(delay, rng) if rng is not None else delay
