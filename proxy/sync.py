"""Pure sync-protocol logic (SPEC §10): where to call, what to send, how to read the reply.

No HTTP and no database here: the TenantActor does the I/O and hands the
results to these functions, which are tested directly.
"""

from __future__ import annotations

import json
import math
import random
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from proxy import retry
from proxy.store.records import DECRYPTION_FAILED, EventRecord, TenantRecord, is_unusable

DEFAULT_SYNC_PATH = "/mail-proxy/sync"
FAILURE_BASE_S = 5.0
FAILURE_CAP_S = 300.0
# The longest Do-Not-Disturb a reply can ask for: a year and a day. SPEC §10.4 sets no
# bound, but a stored timestamp must fit a 64-bit integer (``1e20`` does not), and a
# quiet period longer than a year is a tenant's bug, not a plan; a tenant-token
# run-now ends DND at any time (§10.9 rule 2).
MAX_DND_S = 366 * 86_400


@dataclass(frozen=True, slots=True)
class SyncTarget:
    url: str
    bearer_token: str | None = None
    basic_auth: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class GlobalSync:
    """The instance-wide fallback target (``GMP_CLIENT_SYNC_*``)."""

    url: str | None = None
    token: str | None = None
    user: str | None = None
    password: str | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    """A 2xx reply with an empty body or a JSON object: every item of the call is acknowledged."""

    queued: int = 0
    next_sync_after: float | None = None  # finite, or None
    client_error: bool = False  # ok: false, or ids listed in error / not_found
    # A next_sync_after that was present but unusable (not a number, or not finite),
    # shown for the log; the reply is read as if it were absent.
    ignored_next_sync_after: str | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str  # http_status | timeout | connection | invalid_response
    detail: str


def sync_target(tenant: TenantRecord, fallback: GlobalSync) -> SyncTarget | None:
    """The tenant's own endpoint, else the global one, else None (no sync target, §10.1)."""
    if tenant.client_base_url:
        path = tenant.client_sync_path or DEFAULT_SYNC_PATH
        url = tenant.client_base_url.rstrip("/") + ("" if path.startswith("/") else "/") + path
        auth = tenant.client_auth or {}
        method = auth.get("method")
        token = auth.get("token") if method == "bearer" else None
        user = auth.get("user", "") if method == "basic" else None
        password = auth.get("password", "")
    elif fallback.url:
        url, token, user, password = fallback.url, fallback.token, fallback.user, fallback.password
    else:
        return None
    if token:
        return SyncTarget(url, bearer_token=token)
    if user is not None:
        return SyncTarget(url, basic_auth=(user, password or ""))
    return SyncTarget(url)


def unusable_credentials(target: SyncTarget) -> Failed | None:
    """A target whose token or password no configured key decrypts is not called (SPEC §16).

    Calling would send the mask in place of the secret; the call fails instead,
    as a connection failure naming the cause (and the tenant backs off).
    """
    secrets = [target.bearer_token, *(target.basic_auth or ())]
    if any(is_unusable(value) for value in secrets):
        return Failed("connection", f"{DECRYPTION_FAILED}: the tenant's client_auth")
    return None


def report_item(event: EventRecord) -> dict[str, Any]:
    """One ``delivery_report`` item (SPEC §10.2); null fields are omitted."""
    item: dict[str, Any] = {
        "tenant_id": event.tenant_id,
        "id": event.message_id,
        "pk": event.message_pk,
        "event": event.event_type,
        "event_id": event.event_id,
    }
    meta = event.metadata
    match event.event_type:
        case "sent":
            item["sent_ts"] = event.event_ts
            if meta.get("refused"):
                item["refused"] = meta["refused"]
        case "error":
            item |= {"error_ts": event.event_ts, "error": event.description or ""}
            if meta.get("smtp_code") is not None:
                item["smtp_code"] = meta["smtp_code"]
        case "deferred":
            item |= {
                "deferred_ts": meta.get("next_attempt_ts"),
                "deferred_reason": event.description,
                "retry_count": meta.get("retry_count"),
            }
        case "bounce":
            item |= {"bounce_ts": event.event_ts, "bounce_reason": event.description}
            for key in ("bounce_type", "bounce_code", "bounce_smtp_code"):
                item[key] = meta.get(key)
            item["bounce_recipient"] = meta.get("recipient")
        case pec if pec.startswith("pec_"):
            item |= {
                "pec_event": pec,
                "pec_ts": event.event_ts,
                "pec_details": event.description,
                "pec_receipt": meta.get("receipt"),
                "pec_recipient": meta.get("recipient"),
            }
    return {k: v for k, v in item.items() if v is not None}


def build_report(events: Iterable[EventRecord]) -> dict[str, Any]:
    return {"delivery_report": [report_item(event) for event in events]}


def parse_reply(status: int, body: bytes) -> Ack | Failed:
    """Judge a reply by SPEC §10.5: only a 2xx with an empty body or a JSON object acks."""
    if not 200 <= status < 300:
        return Failed("http_status", f"HTTP {status}")
    if not body.strip():
        return Ack()
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return Failed("invalid_response", "reply is not JSON")
    if not isinstance(data, dict):
        return Failed("invalid_response", "reply is not a JSON object")
    queued = data.get("queued")
    queued = (
        queued if isinstance(queued, int) and not isinstance(queued, bool) and queued > 0 else 0
    )
    raw = data.get("next_sync_after")
    nsa = _finite_number(raw)
    ignored = None if raw is None or nsa is not None else repr(raw)[:40]
    client_error = data.get("ok") is False or bool(data.get("error")) or bool(data.get("not_found"))
    return Ack(
        queued=queued,
        next_sync_after=nsa,
        client_error=client_error,
        ignored_next_sync_after=ignored,
    )


def _finite_number(value: object) -> float | None:
    """A JSON number as a finite float; None for anything else.

    Python's json reads ``Infinity``, ``-Infinity`` and ``NaN`` (and ``1e400`` as
    infinity): those are not times. An integer too large for a float is a time far
    ahead (or behind), kept as the largest float of its sign for ``dnd_until`` to clamp.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range
        return sys.float_info.max if value > 0 else -sys.float_info.max
    return number if math.isfinite(number) else None


def failure_backoff_s(failures: int, rng: random.Random) -> float:
    """``min(300, 5 × 2^(n−1))`` × [0.9, 1.1] after the n-th consecutive failure (§10.6)."""
    return retry.exponential_s(failures, base_s=FAILURE_BASE_S, cap_s=FAILURE_CAP_S, rng=rng)


def dnd_until(ack: Ack, now: int) -> int | None:
    """A future ``next_sync_after`` starts Do-Not-Disturb; anything else clears it (§10.7.3).

    A fractional time is rounded *up* to the whole second: truncated, DND would end
    in the current second and the heartbeat due at its end would be due at once,
    call after call. So the result is always later than ``now`` (and at most
    ``MAX_DND_S`` after it); a non-finite value counts as absent.
    """
    nsa = ack.next_sync_after
    if nsa is None or not math.isfinite(nsa) or nsa <= now:
        return None
    if nsa >= now + MAX_DND_S:
        return now + MAX_DND_S
    return math.ceil(nsa)


ACCELERATED_IDLE_DELAYS_S = (1, 2, 4, 8, 16)


def accelerated_delay_s(idle_recalls: int) -> int | None:
    """Delay before the next accelerated re-call (§10.7 rule 5), or None to fall back.

    0 while the tenant keeps submitting; after 1..5 consecutive idle re-calls
    1, 2, 4, 8, 16 s; after the fifth, back to the heartbeat schedule.
    """
    if idle_recalls <= 0:
        return 0
    if idle_recalls > len(ACCELERATED_IDLE_DELAYS_S):
        return None
    return ACCELERATED_IDLE_DELAYS_S[idle_recalls - 1]


def next_heartbeat_ts(now: int, interval_s: int, dnd: int | None) -> int:
    """The first heartbeat after a successful call: at DND end, else after the interval.

    Never ``now`` or earlier: ``dnd`` comes from ``dnd_until``, which is in the future.
    """
    return dnd if dnd is not None and dnd > now else now + interval_s
