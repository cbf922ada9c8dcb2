"""Backoff arithmetic: retry delays (SPEC §6.5) and capped exponentials (§10.6)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy import retry

DELAYS = (60, 300, 900, 3600, 7200)


@pytest.mark.parametrize(
    ("retry_count", "base"), [(1, 60), (2, 300), (3, 900), (5, 7200), (9, 7200)]
)
def test_retry_delay_follows_the_table_within_ten_percent(retry_count: int, base: int) -> None:
    delay = retry.retry_delay_s(retry_count, DELAYS, random.Random(retry_count))
    assert base * 0.9 <= delay <= base * 1.1


def test_next_attempt_is_in_the_future_by_the_delay() -> None:
    assert retry.next_attempt_ts(1000, 1, (60,), random.Random(1)) in range(1054, 1067)


@pytest.mark.parametrize("bad", [0, -1])
def test_retry_count_starts_at_one(bad: int) -> None:
    with pytest.raises(ValueError, match="starts at 1"):
        retry.retry_delay_s(bad, DELAYS, random.Random())


@given(st.integers(min_value=1, max_value=200), st.integers(min_value=0, max_value=2**32))
def test_exponential_backoff_is_monotonic_and_capped(failures: int, seed: int) -> None:
    plain = [retry.exponential_s(n, base_s=5, cap_s=300) for n in range(1, failures + 1)]
    assert plain == sorted(plain)
    assert plain[-1] <= 300
    jittered = retry.exponential_s(failures, base_s=5, cap_s=300, rng=random.Random(seed))
    assert plain[-1] * 0.9 <= jittered <= plain[-1] * 1.1


def test_no_failure_means_no_wait() -> None:
    assert retry.exponential_s(0, base_s=5, cap_s=300) == 0.0
    assert [retry.exponential_s(n, base_s=5, cap_s=300) for n in (1, 2, 3, 7, 8)] == [
        5,
        10,
        20,
        300,
        300,
    ]
