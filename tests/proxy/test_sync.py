"""The sync protocol's pure parts: target, report items, reply judgement, DND (SPEC §10)."""

from __future__ import annotations

import json
import math
import random
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy import sync
from proxy.store.records import EventRecord, TenantRecord, UnusableSecret


def tenant(**fields: object) -> TenantRecord:
    values: dict[str, object] = {
        "id": "acme",
        "name": None,
        "client_base_url": None,
        "client_sync_path": None,
        "client_attachment_path": None,
        "client_auth": None,
        "rate_limits": None,
        "large_file_config": None,
        "active": True,
        "suspended_batches": (),
        "dnd_until": None,
        "last_sync_ts": None,
        "last_call_ts": None,
        "next_sync_ts": None,
        "consecutive_failures": 0,
        "last_error": None,
        "last_error_ts": None,
        "created_ts": 0,
        "updated_ts": 0,
    }
    return TenantRecord(**(values | fields))  # type: ignore[arg-type]


def event(event_type: str, **fields: object) -> EventRecord:
    values: dict[str, object] = {
        "event_id": 7,
        "message_pk": "pk-1",
        "tenant_id": "acme",
        "message_id": "MSG-1",
        "event_type": event_type,
        "event_ts": 1000,
        "description": None,
        "metadata": {},
    }
    return EventRecord(**(values | fields))  # type: ignore[arg-type]


NO_GLOBAL = sync.GlobalSync()


@pytest.mark.parametrize(
    ("base", "path", "expected"),
    [
        ("https://api.acme.example", None, "https://api.acme.example/mail-proxy/sync"),
        ("https://api.acme.example/", "/hooks/sync", "https://api.acme.example/hooks/sync"),
        ("https://api.acme.example/app", "hooks", "https://api.acme.example/app/hooks"),
    ],
)
def test_target_joins_base_url_and_path(base: str, path: str | None, expected: str) -> None:
    target = sync.sync_target(tenant(client_base_url=base, client_sync_path=path), NO_GLOBAL)
    assert target == sync.SyncTarget(expected)


def test_target_carries_the_tenant_credentials() -> None:
    bearer = tenant(client_base_url="http://t", client_auth={"method": "bearer", "token": "tok"})
    basic = tenant(
        client_base_url="http://t", client_auth={"method": "basic", "user": "u", "password": "p"}
    )
    assert sync.sync_target(bearer, NO_GLOBAL).bearer_token == "tok"
    assert sync.sync_target(basic, NO_GLOBAL).basic_auth == ("u", "p")


def test_a_target_with_an_undecryptable_secret_is_not_called() -> None:
    locked = UnusableSecret("ENC:sealed-under-a-lost-key")
    assert sync.unusable_credentials(sync.SyncTarget("http://t", bearer_token="tok")) is None
    assert sync.unusable_credentials(sync.SyncTarget("http://t", basic_auth=("u", "p"))) is None
    for target in (
        sync.SyncTarget("http://t", bearer_token=locked),
        sync.SyncTarget("http://t", basic_auth=("u", locked)),
    ):
        failed = sync.unusable_credentials(target)
        assert failed is not None
        assert failed.reason == "connection"
        assert failed.detail.startswith("credential decryption failed")


def test_tenant_without_base_url_uses_the_global_target_or_none() -> None:
    fallback = sync.GlobalSync(url="http://global/sync", token="gt")
    assert sync.sync_target(tenant(), fallback) == sync.SyncTarget("http://global/sync", "gt")
    assert sync.sync_target(tenant(), sync.GlobalSync("http://g", user="u", password="p")) == (
        sync.SyncTarget("http://g", basic_auth=("u", "p"))
    )
    assert sync.sync_target(tenant(), NO_GLOBAL) is None


def test_report_items_carry_identity_and_event_fields() -> None:
    sent = event(
        "sent", metadata={"refused": [{"address": "b@x", "smtp_code": 550, "message": "no"}]}
    )
    error = event("error", description="SMTP 550: no such user", metadata={"smtp_code": 550})
    deferred = event(
        "deferred",
        description="SMTP 451: later",
        metadata={"next_attempt_ts": 1060, "retry_count": 1, "reason": "smtp"},
    )
    assert sync.report_item(sent) == {
        "tenant_id": "acme",
        "id": "MSG-1",
        "pk": "pk-1",
        "event": "sent",
        "event_id": 7,
        "sent_ts": 1000,
        "refused": [{"address": "b@x", "smtp_code": 550, "message": "no"}],
    }
    assert sync.report_item(error) == {
        "tenant_id": "acme",
        "id": "MSG-1",
        "pk": "pk-1",
        "event": "error",
        "event_id": 7,
        "error_ts": 1000,
        "error": "SMTP 550: no such user",
        "smtp_code": 550,
    }
    assert sync.report_item(deferred)["deferred_ts"] == 1060
    assert sync.report_item(deferred)["deferred_reason"] == "SMTP 451: later"
    assert sync.report_item(deferred)["retry_count"] == 1
    assert sync.build_report([]) == {"delivery_report": []}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, b"", sync.Ack()),
        (204, b"  ", sync.Ack()),
        (200, b'{"ok": true, "queued": 3}', sync.Ack(queued=3)),
        (200, b'{"ok": false}', sync.Ack(client_error=True)),
        (200, b'{"ok": true, "not_found": ["x"]}', sync.Ack(client_error=True)),
        (200, b'{"ok": true, "next_sync_after": 2000.5}', sync.Ack(next_sync_after=2000.5)),
        (200, b"<html>proxy error</html>", sync.Failed("invalid_response", "reply is not JSON")),
        (200, b"[1, 2]", sync.Failed("invalid_response", "reply is not a JSON object")),
        (503, b'{"ok": true}', sync.Failed("http_status", "HTTP 503")),
        (302, b"", sync.Failed("http_status", "HTTP 302")),
    ],
)
def test_only_a_2xx_with_empty_or_object_body_acknowledges(status, body, expected) -> None:
    assert sync.parse_reply(status, body) == expected


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    )
)
def test_parse_reply_never_raises_on_any_json(value: object) -> None:
    result = sync.parse_reply(200, json.dumps(value).encode())
    assert isinstance(result, sync.Ack | sync.Failed)
    assert isinstance(result, sync.Ack) == isinstance(value, dict)


def test_dnd_starts_only_for_a_future_time() -> None:
    assert sync.dnd_until(sync.Ack(next_sync_after=2000.9), now=1000) == 2001
    assert sync.dnd_until(sync.Ack(next_sync_after=900), now=1000) is None
    assert sync.dnd_until(sync.Ack(), now=1000) is None
    assert sync.next_heartbeat_ts(1000, 300, dnd=2000) == 2000
    assert sync.next_heartbeat_ts(1000, 300, dnd=None) == 1300


def test_failure_backoff_doubles_from_five_seconds_to_five_minutes() -> None:
    rng = random.Random(3)
    for failures, base in [(1, 5), (2, 10), (3, 20), (7, 300), (30, 300)]:
        assert base * 0.9 <= sync.failure_backoff_s(failures, rng) <= base * 1.1


def test_a_fractional_dnd_end_is_rounded_up_to_the_next_second() -> None:
    # Truncating made DND end in the current second: the call was due again at once.
    assert sync.dnd_until(sync.Ack(next_sync_after=1000.5), now=1000) == 1001
    assert sync.dnd_until(sync.Ack(next_sync_after=1000.0001), now=1000) == 1001
    assert sync.dnd_until(sync.Ack(next_sync_after=1000.0), now=1000) is None  # not future
    assert sync.dnd_until(sync.Ack(next_sync_after=999.5), now=1000) is None


@given(
    now=st.integers(min_value=0, max_value=4_000_000_000),
    nsa=st.none() | st.floats() | st.integers(min_value=-(10**30), max_value=10**30),
    interval=st.integers(min_value=1, max_value=86_400),
)
def test_the_next_call_without_events_is_never_due_at_once(now, nsa, interval) -> None:
    """Whatever the tenant answers, a heartbeat is never due in the second of the call."""
    nsa = float(nsa) if isinstance(nsa, int) else nsa
    dnd = sync.dnd_until(sync.Ack(next_sync_after=nsa), now)
    assert dnd is None or now < dnd <= now + sync.MAX_DND_S
    assert sync.next_heartbeat_ts(now, interval, dnd) > now


def test_a_huge_next_sync_after_is_clamped_to_a_year_and_a_day() -> None:
    assert sync.MAX_DND_S == 366 * 86_400
    for huge in (1e20, 1e300, sys.float_info.max, 1000.0 + sync.MAX_DND_S + 0.5):
        assert sync.dnd_until(sync.Ack(next_sync_after=huge), now=1000) == 1000 + sync.MAX_DND_S
    reply = sync.parse_reply(200, b'{"ok": true, "next_sync_after": 1' + b"0" * 400 + b"}")
    assert isinstance(reply, sync.Ack)
    assert reply.ignored_next_sync_after is None
    assert sync.dnd_until(reply, now=1000) == 1000 + sync.MAX_DND_S
    negative = sync.parse_reply(200, b'{"next_sync_after": -1' + b"0" * 400 + b"}")
    assert isinstance(negative, sync.Ack)
    assert sync.dnd_until(negative, now=1000) is None


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"Infinity", "inf"),
        (b"-Infinity", "-inf"),
        (b"NaN", "nan"),
        (b"1e400", "inf"),  # Python's json reads an overflowing float as infinity
        (b'"1767225600"', "'1767225600'"),
        (b"true", "True"),
    ],
)
def test_an_unusable_next_sync_after_is_ignored_as_if_absent(raw: bytes, shown: str) -> None:
    reply = sync.parse_reply(200, b'{"ok": true, "next_sync_after": ' + raw + b"}")
    assert reply == sync.Ack(next_sync_after=None, ignored_next_sync_after=shown)
    assert sync.dnd_until(reply, now=1000) is None


def test_dnd_until_never_raises_on_a_non_finite_value() -> None:
    for value in (math.inf, -math.inf, math.nan):
        assert sync.dnd_until(sync.Ack(next_sync_after=value), now=1000) is None
