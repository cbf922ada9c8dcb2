"""Pure mapping from one attempt's outcome to the message columns and its event (SPEC §5.3, §6.5).

No database here: ``MessageStore.record_outcome`` writes what this returns in
one transaction. Rate-limit deferrals are outcomes too (§7.4): the message
waits for its window without counting as a retry.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from proxy import retry
from proxy.ratelimit import Defer
from proxy.smtp.errors import PermFailure, Sent, TempFailure
from proxy.store import models
from proxy.store.records import MessageToSend

Outcome = Sent | TempFailure | PermFailure | Defer
Columns = tuple[dict[str, Any], str, str | None, dict[str, Any]]


def outcome_columns(
    sending: MessageToSend,
    outcome: Outcome,
    *,
    now: int,
    max_retries: int,
    retry_delays: Sequence[int],
    rng: random.Random,
) -> Columns:
    """Columns, event type, description and metadata for one attempt's outcome."""
    metadata: dict[str, Any] = {"attempt": sending.attempt}
    match outcome:
        case Sent():
            metadata |= {"smtp_code": outcome.smtp_code, "smtp_response": outcome.smtp_response}
            if outcome.refused:
                metadata["refused"] = [
                    {"address": r.address, "smtp_code": r.smtp_code, "message": r.message}
                    for r in outcome.refused
                ]
            columns = {"status": models.SENT, "sent_ts": now, "smtp_ts": now, "deferred_ts": None}
            return columns, "sent", None, metadata
        case TempFailure() if sending.retry_count < max_retries:
            retry_count = sending.retry_count + 1
            next_ts = retry.next_attempt_ts(now, retry_count, retry_delays, rng)
            if outcome.smtp_code is not None:
                metadata["smtp_code"] = outcome.smtp_code
            metadata |= {
                "next_attempt_ts": next_ts,
                "retry_count": retry_count,
                "reason": outcome.reason,
            }
            columns = {"status": models.PENDING, "deferred_ts": next_ts, "retry_count": retry_count}
            return columns, "deferred", outcome.description, metadata
        case Defer():
            metadata |= {
                "next_attempt_ts": outcome.until_ts,
                "retry_count": sending.retry_count,  # a rate limit is not a failed attempt
                "reason": "rate_limit",
            }
            columns = {"status": models.PENDING, "deferred_ts": outcome.until_ts}
            return columns, "deferred", outcome.reason, metadata
        case TempFailure():
            text = f"Max retries ({max_retries}) exceeded: {outcome.description}"
            return _error_columns(now, text, outcome.smtp_code, metadata)
        case PermFailure():
            return _error_columns(now, outcome.description, outcome.smtp_code, metadata)
    raise TypeError(f"unknown outcome {outcome!r}")


def _error_columns(now: int, text: str, smtp_code: int | None, metadata: dict[str, Any]) -> Columns:
    if smtp_code is not None:
        metadata["smtp_code"] = smtp_code
    columns = {
        "status": models.ERROR,
        "error": text,
        "error_ts": now,
        "smtp_ts": now,
        "deferred_ts": None,
    }
    return columns, "error", text, metadata
