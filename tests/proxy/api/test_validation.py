"""Tests for proxy.api.validation: SPEC §3.7, §4, §9.1, §9.5 and §9.6 rule 1."""

from __future__ import annotations

import base64
import contextlib
import os
import re
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.api.addresses import is_valid_address, parse_address_list
from proxy.api.validation import (
    MAX_MESSAGES,
    Accepted,
    Batch,
    BodyError,
    ForeignTenant,
    Rejection,
    TooManyMessages,
    parse_batch,
    parse_priority,
)

TENANTS = {"acme", "globex"}
ACCOUNTS = {("acme", "main"), ("acme", "bulk"), ("globex", "main")}
DROP = object()  # marks a key to remove from the base message


def message(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "MSG-1",
        "tenant_id": "acme",
        "account_id": "main",
        "from": "ACME <hello@acme.example>",
        "to": "ann@example.org",
        "subject": "Hello",
    }
    for name, value in overrides.items():
        key = name.removesuffix("_")  # from_ → from
        if value is DROP:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def run(
    messages: list[Any],
    *,
    principal: str | None = None,
    allowed_dirs: tuple[str, ...] = (),
    instance_default_priority: int = 2,
    **body: Any,
) -> Batch:
    return parse_batch(
        {"messages": messages, **body},
        principal_tenant=principal,
        instance_default_priority=instance_default_priority,
        tenant_exists=lambda tenant: tenant in TENANTS,
        account_exists=lambda tenant, account: (tenant, account) in ACCOUNTS,
        allowed_dirs=allowed_dirs,
    )


def accept(entry: dict[str, Any], **kwargs: Any) -> Accepted:
    batch = run([entry], **kwargs)
    assert batch.rejected == (), batch.rejected
    (accepted,) = batch.accepted
    return accepted


def reject(entry: object, **kwargs: Any) -> Rejection:
    batch = run([entry], **kwargs)
    assert batch.accepted == ()
    (rejection,) = batch.rejected
    return rejection


def attachment_message(**attachment: Any) -> dict[str, Any]:
    return message(attachments=[{"filename": "a.pdf", "storage_path": "doc=1", **attachment}])


# --- §4.5: the example request ------------------------------------------------------


def test_spec_example_request_queues_two_and_rejects_bad_1() -> None:
    body = {
        "default_priority": "high",
        "messages": [
            {
                "id": "WELCOME-77",
                "tenant_id": "acme",
                "account_id": "main",
                "from": "ACME <hello@acme.example>",
                "to": "ann@example.org, bob@example.org",
                "subject": "Welcome aboard",
                "body": "Hi! Your account is ready.",
                "html": "<p>Hi! Your account is <b>ready</b>.</p>",
                "headers": {"List-Unsubscribe": "<mailto:unsub@acme.example>"},
            },
            {
                "id": "INV-2026-0042",
                "tenant_id": "acme",
                "account_id": "main",
                "from": "billing@acme.example",
                "to": ["carl@example.org"],
                "subject": "Invoice 42",
                "body": "See attachment.",
                "priority": "low",
                "batch_code": "INV-2026-01",
                "attachments": [
                    {
                        "filename": "invoice-42_{MD5:9e107d9d372bb6826bd81d3542a419d6}.pdf",
                        "storage_path": "doc_id=INV-42",
                    }
                ],
            },
            {
                "id": "BAD-1",
                "tenant_id": "acme",
                "account_id": "main",
                "from": "hello@acme.example",
                "to": "missing-domain@",
                "subject": "x",
            },
        ],
    }
    batch = parse_batch(
        body,
        principal_tenant=None,
        instance_default_priority=2,
        tenant_exists=lambda tenant: tenant in TENANTS,
        account_exists=lambda tenant, account: (tenant, account) in ACCOUNTS,
    )
    assert [item.id for item in batch.accepted] == ["WELCOME-77", "INV-2026-0042"]
    assert [r.as_dict() for r in batch.rejected] == [
        {"id": "BAD-1", "field": "to", "reason": "invalid address in to: 'missing-domain@'"}
    ]
    welcome, invoice = batch.accepted
    assert welcome.priority == 1  # default_priority "high"
    assert welcome.payload == {
        "id": "WELCOME-77",
        "tenant_id": "acme",
        "account_id": "main",
        "from": "ACME <hello@acme.example>",
        "to": ["ann@example.org", "bob@example.org"],
        "subject": "Welcome aboard",
        "body": "Hi! Your account is ready.",
        "content_type": "plain",
        "html": "<p>Hi! Your account is <b>ready</b>.</p>",
        "headers": {"List-Unsubscribe": "<mailto:unsub@acme.example>"},
        "priority": 1,
    }
    assert (invoice.priority, invoice.batch_code, invoice.deferred_ts) == (3, "INV-2026-01", None)
    assert invoice.payload["attachments"] == [
        {
            "filename": "invoice-42_{MD5:9e107d9d372bb6826bd81d3542a419d6}.pdf",
            "storage_path": "doc_id=INV-42",
            "fetch_mode": "endpoint",
        }
    ]


# --- §4.3: every per-message reason, exact field and wording -------------------------

REJECTIONS = [
    # (case name, entry, field, reason)
    ("not an object", "just a string", "payload", "invalid payload"),
    ("list entry", ["a"], "payload", "invalid payload"),
    ("no id", message(id=DROP), "id", "missing id"),
    ("empty id", message(id=""), "id", "missing id"),
    ("no tenant_id (admin)", message(tenant_id=DROP), "tenant_id", "missing tenant_id"),
    ("null tenant_id", message(tenant_id=None), "tenant_id", "missing tenant_id"),
    ("no account_id", message(account_id=DROP), "account_id", "missing account_id"),
    ("no from", message(from_=DROP), "from", "missing from"),
    ("empty from", message(from_=""), "from", "missing from"),
    ("no to", message(to=DROP), "to", "missing to"),
    ("empty to list", message(to=[]), "to", "missing to"),
    ("only separators in to", message(to=" , ; "), "to", "missing to"),
    ("list of empty to", message(to=[""]), "to", "missing to"),
    ("no subject", message(subject=DROP), "subject", "missing subject"),
    ("empty subject", message(subject=""), "subject", "missing subject"),
    ("missing fields in table order", message(id=DROP, to=DROP), "id", "missing id"),
    ("unknown tenant", message(tenant_id="ghost"), "tenant_id", "tenant not found"),
    (
        "account of another tenant",
        message(account_id="bulk", tenant_id="globex"),
        "account_id",
        "account not found for tenant",
    ),
    ("unknown account", message(account_id="nope"), "account_id", "account not found for tenant"),
    (
        "from without @",
        message(from_="invalid-no-at"),
        "from",
        "invalid address in from: 'invalid-no-at'",
    ),
    (
        "two senders",
        message(from_="a@example.org, b@example.org"),
        "from",
        "invalid address in from: 'a@example.org, b@example.org'",
    ),
    (
        "to missing domain",
        message(to="missing-domain@"),
        "to",
        "invalid address in to: 'missing-domain@'",
    ),
    (
        "second to entry bad",
        message(to="ann@example.org; @no-local-part.com"),
        "to",
        "invalid address in to: '@no-local-part.com'",
    ),
    (
        "to list entry bad",
        message(to=["ann@example.org", "Bob <bob@>"]),
        "to",
        "invalid address in to: 'Bob <bob@>'",
    ),
    (
        "ambiguous address",
        message(to="ann@example.org <bob@example.org>"),
        "to",
        "invalid address in to: 'ann@example.org <bob@example.org>'",
    ),
    ("bad cc", message(cc="invalid-no-at"), "cc", "invalid address in cc: 'invalid-no-at'"),
    ("bad bcc", message(bcc=["x@"]), "bcc", "invalid address in bcc: 'x@'"),
    ("bad reply_to", message(reply_to="nope"), "reply_to", "invalid address in reply_to: 'nope'"),
    (
        "bad return_path",
        message(return_path="@x.org"),
        "return_path",
        "invalid address in return_path: '@x.org'",
    ),
    ("to of wrong type", message(to=42), "to", "invalid to"),
    ("to list with a number", message(to=["a@example.org", 7]), "to", "invalid to"),
    (
        "CRLF in subject",
        message(subject="Hi\r\nBcc: x@evil.example"),
        "subject",
        "header injection in subject",
    ),
    ("LF in subject", message(subject="Hi\nthere"), "subject", "header injection in subject"),
    ("NUL in subject", message(subject="Hi\x00"), "subject", "header injection in subject"),
    ("CR in from", message(from_="a@example.org\r"), "from", "header injection in from"),
    ("LF in to", message(to="a@example.org\nBcc: b@example.org"), "to", "header injection in to"),
    (
        "LF in a to list",
        message(to=["a@example.org", "b@example.org\n"]),
        "to",
        "header injection in to",
    ),
    ("LF in cc", message(cc="a@example.org\n"), "cc", "header injection in cc"),
    (
        "LF in from_name",
        message(from_name="ACME\nX: y"),
        "from_name",
        "header injection in from_name",
    ),
    (
        "LF in message_id",
        message(message_id="a@b\n"),
        "message_id",
        "header injection in message_id",
    ),
    (
        "LF in batch_code",
        message(batch_code="B\n1"),
        "batch_code",
        "header injection in batch_code",
    ),
    ("LF in id", message(id="MSG\n1"), "id", "header injection in id"),
    (
        "CRLF in header value",
        message(headers={"X-Tag": "a\r\nBcc: x@evil.example"}),
        "headers.X-Tag",
        "header injection in headers.X-Tag",
    ),
    ("space in header name", message(headers={"X Y": "1"}), "headers", "invalid header name 'X Y'"),
    ("colon in header name", message(headers={"X:Y": "1"}), "headers", "invalid header name 'X:Y'"),
    ("empty header name", message(headers={"": "1"}), "headers", "invalid header name ''"),
    (
        "non-ASCII header name",
        message(headers={"X-Ü": "1"}),
        "headers",
        "invalid header name 'X-Ü'",
    ),
    (
        "list as header value",
        message(headers={"X-List": ["a"]}),
        "headers.X-List",
        "invalid headers.X-List",
    ),
    ("headers not an object", message(headers=["X-A: 1"]), "headers", "invalid headers"),
    ("bad priority name", message(priority="urgent"), "priority", "invalid priority"),
    ("negative priority", message(priority=-1), "priority", "invalid priority"),
    ("bool priority", message(priority=True), "priority", "invalid priority"),
    ("float priority", message(priority=1.5), "priority", "invalid priority"),
    ("bad content_type", message(content_type="text/xml"), "content_type", "invalid content_type"),
    ("numeric content_type", message(content_type=1), "content_type", "invalid content_type"),
    ("html of wrong type", message(html=1), "html", "invalid html"),
    ("body of wrong type", message(body={"text": "x"}), "body", "invalid body"),
    ("id of wrong type", message(id=12), "id", "invalid id"),
    ("id too long", message(id="x" * 256), "id", "invalid id"),
    ("subject of wrong type", message(subject=["Hi"]), "subject", "invalid subject"),
    ("account_id of wrong type", message(account_id=1), "account_id", "invalid account_id"),
    ("batch_code too long", message(batch_code="b" * 65), "batch_code", "invalid batch_code"),
    ("message_id without @", message(message_id="<abc>"), "message_id", "invalid message_id"),
    ("deferred_ts as text", message(deferred_ts="soon"), "deferred_ts", "invalid deferred_ts"),
    ("deferred_ts as bool", message(deferred_ts=True), "deferred_ts", "invalid deferred_ts"),
    (
        "deferred_ts infinite",
        message(deferred_ts=float("inf")),
        "deferred_ts",
        "invalid deferred_ts",
    ),
    ("deferred_ts beyond int64", message(deferred_ts=2**63), "deferred_ts", "invalid deferred_ts"),
    ("deferred_ts huge float", message(deferred_ts=1e300), "deferred_ts", "invalid deferred_ts"),
    (
        "attachments not a list",
        message(attachments={"filename": "a"}),
        "attachments",
        "invalid attachments",
    ),
    (
        "attachment not an object",
        message(attachments=["a.pdf"]),
        "attachments[0]",
        "attachments[0]: invalid attachment",
    ),
    (
        "attachment without filename",
        message(attachments=[{"storage_path": "doc=1"}]),
        "attachments[0].filename",
        "attachments[0].filename: missing filename",
    ),
    (
        "second attachment without storage_path",
        message(attachments=[{"filename": "a", "storage_path": "x"}, {"filename": "b"}]),
        "attachments[1].storage_path",
        "attachments[1].storage_path: missing storage_path",
    ),
    (
        "filename too long",
        attachment_message(filename="f" * 256),
        "attachments[0].filename",
        "attachments[0].filename: filename too long",
    ),
    (
        "LF in filename",
        attachment_message(filename="a\n.pdf"),
        "attachments[0].filename",
        "header injection in attachments[0].filename",
    ),
    (
        "unknown attachment field",
        attachment_message(size=10),
        "attachments[0].size",
        "attachments[0].size: unknown field",
    ),
    (
        "unknown fetch_mode",
        attachment_message(fetch_mode="ftp"),
        "attachments[0].fetch_mode",
        "attachments[0].fetch_mode: unknown fetch_mode",
    ),
    (
        "invalid base64 character",
        attachment_message(storage_path="base64:SGVsbG8$"),
        "attachments[0].storage_path",
        "attachments[0].storage_path: invalid base64",
    ),
    (
        "base64 of impossible length",
        attachment_message(storage_path="QUJDR", fetch_mode="base64"),
        "attachments[0].storage_path",
        "attachments[0].storage_path: invalid base64",
    ),
    (
        "empty base64",
        attachment_message(storage_path="base64:"),
        "attachments[0].storage_path",
        "attachments[0].storage_path: invalid base64",
    ),
    (
        "filesystem disabled",
        attachment_message(storage_path="/srv/files/a.pdf"),
        "attachments[0].storage_path",
        "attachments[0].storage_path: filesystem attachments are disabled",
    ),
    (
        "http_url that is not http",
        attachment_message(storage_path="ftp://files.example/a.pdf", fetch_mode="http_url"),
        "attachments[0].storage_path",
        "attachments[0].storage_path: invalid url",
    ),
    (
        "bad mime_type",
        attachment_message(mime_type="pdf"),
        "attachments[0].mime_type",
        "attachments[0].mime_type: invalid mime_type",
    ),
    (
        "bad content_md5",
        attachment_message(content_md5="abc123"),
        "attachments[0].content_md5",
        "attachments[0].content_md5: invalid content_md5",
    ),
    (
        "unknown auth field",
        attachment_message(auth={"method": "none", "scope": "x"}),
        "attachments[0].auth.scope",
        "attachments[0].auth.scope: unknown field",
    ),
    (
        "unknown auth method",
        attachment_message(auth={"method": "digest"}),
        "attachments[0].auth.method",
        "attachments[0].auth.method: unknown method",
    ),
    (
        "auth without method",
        attachment_message(auth={"token": "t"}),
        "attachments[0].auth.method",
        "attachments[0].auth.method: missing method",
    ),
    (
        "bearer without token",
        attachment_message(auth={"method": "bearer"}),
        "attachments[0].auth.token",
        "attachments[0].auth.token: missing token",
    ),
    (
        "basic without password",
        attachment_message(auth={"method": "basic", "user": "u"}),
        "attachments[0].auth.password",
        "attachments[0].auth.password: missing password",
    ),
    (
        "CRLF in bearer token",
        attachment_message(auth={"method": "bearer", "token": "t\r\nX: y"}),
        "attachments[0].auth.token",
        "attachments[0].auth.token: invalid token",
    ),
    ("NUL in body", message(body="a\x00b"), "body", "NUL character in body"),
    ("NUL in html", message(html="<p>\x00</p>"), "html", "NUL character in html"),
    ("NUL in tenant_id", message(tenant_id="ac\x00me"), "tenant_id", "NUL character in tenant_id"),
    (
        "NUL in account_id",
        message(account_id="main\x00"),
        "account_id",
        "NUL character in account_id",
    ),
    (
        "NUL in an endpoint storage_path",
        attachment_message(storage_path="doc=\x00"),
        "attachments[0].storage_path",
        "attachments[0].storage_path: NUL character",
    ),
    (
        "NUL in an http_url",
        attachment_message(storage_path="https://files.example/\x00"),
        "attachments[0].storage_path",
        "attachments[0].storage_path: invalid url",
    ),
    (
        "NUL in auth user",
        attachment_message(auth={"method": "basic", "user": "u\x00", "password": "p"}),
        "attachments[0].auth.user",
        "attachments[0].auth.user: NUL character",
    ),
    (
        "NUL in auth password",
        attachment_message(auth={"method": "basic", "user": "u", "password": "\x00"}),
        "attachments[0].auth.password",
        "attachments[0].auth.password: NUL character",
    ),
]


@pytest.mark.parametrize(
    ("entry", "field", "reason"),
    [pytest.param(entry, field, reason, id=name) for name, entry, field, reason in REJECTIONS],
)
def test_bad_message_is_rejected_with_specs_field_and_reason(
    entry: object, field: str, reason: str
) -> None:
    rejection = reject(entry)
    assert (rejection.field, rejection.reason) == (field, reason)


@pytest.mark.parametrize(
    "name", ["Content-Type", "content-transfer-encoding", "MIME-Version", "BCC", "X-Genro-Mail-ID"]
)
def test_reserved_header_is_rejected_under_its_own_name(name: str) -> None:
    rejection = reject(message(headers={name: "x"}))
    assert rejection.field == f"headers.{name}"
    assert rejection.reason == f"headers.{name}: reserved header"


def test_rejection_carries_the_id_or_null() -> None:
    batch = run([message(id="A", to="bad"), message(id=DROP), "nope", message(id=5, to="x")])
    assert [r.id for r in batch.rejected] == ["A", None, None, None]
    assert batch.rejected[0].as_dict() == {
        "id": "A",
        "field": "to",
        "reason": "invalid address in to: 'bad'",
    }


def test_only_the_first_problem_is_reported() -> None:
    rejection = reject(message(to="bad", subject="a\nb", priority="urgent"))
    assert rejection.reason == "invalid address in to: 'bad'"


def test_later_duplicate_id_is_rejected_and_earlier_kept() -> None:
    batch = run([message(subject="first"), message(subject="second")])
    assert [a.payload["subject"] for a in batch.accepted] == ["first"]
    assert [r.as_dict() for r in batch.rejected] == [
        {"id": "MSG-1", "field": "id", "reason": "duplicate id in request"}
    ]


def test_duplicate_of_a_rejected_message_is_not_a_duplicate() -> None:
    batch = run([message(to="bad"), message()])
    assert [a.id for a in batch.accepted] == ["MSG-1"]
    assert [r.reason for r in batch.rejected] == ["invalid address in to: 'bad'"]


def test_same_id_in_two_tenants_is_two_messages() -> None:
    batch = run([message(), message(tenant_id="globex")])
    assert [(a.tenant_id, a.id) for a in batch.accepted] == [("acme", "MSG-1"), ("globex", "MSG-1")]


def test_good_and_bad_messages_are_judged_independently() -> None:
    batch = run([message(id="A"), message(id="B", to="x"), message(id="C")])
    assert [a.id for a in batch.accepted] == ["A", "C"]
    assert [r.id for r in batch.rejected] == ["B"]


# --- normalized payload --------------------------------------------------------------


def test_payload_keeps_known_fields_normalized_and_drops_the_rest() -> None:
    accepted = accept(
        message(
            from_="  ACME <hello@acme.example>  ",
            from_name="ACME Billing",
            to='"Lee, Ann" <ann@example.org>; bob@example.org',
            cc=["carl@example.org", "Dee <dee@example.org>"],
            bcc="",
            reply_to=None,
            return_path="Bounces <bounce@acme.example>",
            body=None,
            tracking={"open": True},
            message_id="abc@acme.example",
            deferred_ts=1_700_000_000.9,
            batch_code="",
        )
    )
    assert accepted.payload == {
        "id": "MSG-1",
        "tenant_id": "acme",
        "account_id": "main",
        "from": "ACME <hello@acme.example>",
        "from_name": "ACME Billing",
        "to": ['"Lee, Ann" <ann@example.org>', "bob@example.org"],
        "cc": ["carl@example.org", "Dee <dee@example.org>"],
        "return_path": "bounce@acme.example",
        "subject": "Hello",
        "body": "",
        "content_type": "plain",
        "message_id": "<abc@acme.example>",
        "priority": 2,
        "deferred_ts": 1_700_000_000,
    }
    assert (accepted.deferred_ts, accepted.batch_code) == (1_700_000_000, None)


@pytest.mark.parametrize(
    ("fields", "content_type", "html"),
    [
        ({}, "plain", None),
        ({"content_type": "text/plain"}, "plain", None),
        ({"content_type": "HTML"}, "html", None),
        ({"content_type": "text/html"}, "html", None),
        ({"html": True}, "html", None),
        ({"html": True, "content_type": "plain"}, "html", None),
        ({"html": False}, "plain", None),
        ({"html": "<p>x</p>"}, "plain", "<p>x</p>"),
    ],
)
def test_content_type_is_normalized(
    fields: dict[str, Any], content_type: str, html: str | None
) -> None:
    payload = accept(message(**fields)).payload
    assert payload["content_type"] == content_type
    assert payload.get("html") == html


def test_header_values_are_stringified_and_nulls_skipped() -> None:
    payload = accept(
        message(headers={"X-Int": 7, "X-Float": 1.5, "X-Yes": True, "X-No": False, "X-Null": None})
    ).payload
    assert payload["headers"] == {"X-Int": "7", "X-Float": "1.5", "X-Yes": "true", "X-No": "false"}


def test_headers_that_are_all_null_are_omitted() -> None:
    assert "headers" not in accept(message(headers={"X-A": None, "Content-Type": None})).payload


@pytest.mark.parametrize(
    ("given", "stored"),
    [("a@b.example", "<a@b.example>"), ("<a@b.example>", "<a@b.example>"), (" <a@b> ", "<a@b>")],
)
def test_message_id_gets_angle_brackets(given: str, stored: str) -> None:
    assert accept(message(message_id=given)).payload["message_id"] == stored


@pytest.mark.parametrize(("given", "stored"), [(5, 5), (-10, -10), (9.99, 9), (0.0, 0)])
def test_deferred_ts_is_floored_and_past_values_kept(given: float, stored: int) -> None:
    accepted = accept(message(deferred_ts=given))
    assert accepted.deferred_ts == accepted.payload["deferred_ts"] == stored
    assert type(accepted.deferred_ts) is int


def test_limits_at_their_edges_are_accepted() -> None:
    accepted = accept(message(id="i" * 255, batch_code="b" * 64, subject=" "))
    assert (len(accepted.id), len(accepted.batch_code or "")) == (255, 64)


def test_special_use_and_international_addresses_are_accepted() -> None:
    payload = accept(
        message(to="ops@mail.local, dev@localhost, qa@ci.test", cc="用户@例子.广告")
    ).payload
    assert payload["to"] == ["ops@mail.local", "dev@localhost", "qa@ci.test"]
    assert payload["cc"] == ["用户@例子.广告"]


# --- priority (§4.4) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (1, 1),
        (3, 3),
        (4, 3),
        (10**30, 3),
        ("0", 0),
        ("2", 2),
        (" 3 ", 3),
        ("4", 3),
        ("0001", 1),
        ("9" * 5000, 3),
        ("immediate", 0),
        ("HIGH", 1),
        ("Medium", 2),
        ("low", 3),
    ],
)
def test_parse_priority_accepts(value: object, expected: int) -> None:
    assert parse_priority(value) == expected


@pytest.mark.parametrize(
    "value", [-1, "-1", True, False, "urgent", "", "1.0", 1.0, None, [1], "²", "+1"]
)
def test_parse_priority_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="invalid priority"):
        parse_priority(value)


@pytest.mark.parametrize(
    ("message_priority", "default_priority", "expected"),
    [(None, None, 2), (None, "low", 3), (0, "low", 0), ("high", 3, 1), (None, "0", 0)],
)
def test_priority_precedence(
    message_priority: object, default_priority: object, expected: int
) -> None:
    entry = message() if message_priority is None else message(priority=message_priority)
    extra = {} if default_priority is None else {"default_priority": default_priority}
    accepted = accept(entry, **extra)
    assert accepted.priority == accepted.payload["priority"] == expected


def test_instance_default_priority_applies_last() -> None:
    assert accept(message(), instance_default_priority=0).priority == 0


# --- address lists (§4.1, §4.3 rule 4) ------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ann@example.org", ["ann@example.org"]),
        ("ann@example.org, bob@example.org", ["ann@example.org", "bob@example.org"]),
        ("ann@example.org;bob@example.org", ["ann@example.org", "bob@example.org"]),
        ("ann@example.org,,bob@example.org,", ["ann@example.org", "bob@example.org"]),
        ("Ann Lee <ann@example.org>", ["Ann Lee <ann@example.org>"]),
        ('"Lee, Ann" <ann@example.org>', ['"Lee, Ann" <ann@example.org>']),
        (
            '"Lee; Ann" <ann@example.org>; "Roe, Bob; Jr." <bob@example.org>',
            ['"Lee; Ann" <ann@example.org>', '"Roe, Bob; Jr." <bob@example.org>'],
        ),
        ('"A \\"Q\\" B" <a@example.org>', ['"A \\"Q\\" B" <a@example.org>']),
        ("ann@example.org (Ann, Sales)", ['"Ann, Sales" <ann@example.org>']),
        (
            ["ann@example.org", "Bob <bob@example.org>"],
            ["ann@example.org", "Bob <bob@example.org>"],
        ),
        (["a@example.org, b@example.org"], ["a@example.org", "b@example.org"]),
        ("Jöhn Dœ <john@example.org>", ["Jöhn Dœ <john@example.org>"]),
        ("", []),
    ],
)
def test_parse_address_list_splits_outside_quotes(
    value: str | list[str], expected: list[str]
) -> None:
    assert parse_address_list(value) == expected


@pytest.mark.parametrize(
    ("value", "offending"),
    [
        ("invalid-no-at", "invalid-no-at"),
        ("missing-domain@", "missing-domain@"),
        ("@no-local-part.com", "@no-local-part.com"),
        ("ok@example.org, Ann Lee", "Ann Lee"),
        ("Ann <>", "Ann <>"),
        ("a@b.example\r\nBcc: c@d.example", "a@b.example\r\nBcc: c@d.example"),
        (["ok@example.org", "a@@b.example"], "a@@b.example"),
    ],
)
def test_parse_address_list_names_the_offending_entry(
    value: str | list[str], offending: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(offending)) as excinfo:
        parse_address_list(value)
    assert excinfo.value.args == (offending,)


@pytest.mark.parametrize(
    ("addr", "valid"),
    [
        ("ann@example.org", True),
        ("a.b+tag@sub.example.co.uk", True),
        ("x@localhost", True),
        ("x@intranet", True),
        ("x@host.local", True),
        ("x@HOST.LOCAL", True),
        ("x@test", True),
        ("x@service.onion", True),
        ("用户@例子.广告", True),
        ("invalid-no-at", False),
        ("missing-domain@", False),
        ("@no-local-part.com", False),
        ("Ann <ann@example.org>", False),
        ("a b@example.org", False),
        ("a@-bad-.local", False),
        ("", False),
    ],
)
def test_is_valid_address(addr: str, *, valid: bool) -> None:
    assert is_valid_address(addr) is valid


# --- structural problems, size, tenant scoping ---------------------------------------


@pytest.mark.parametrize("body", [None, [], "messages", 3])
def test_body_that_is_not_an_object_is_a_body_error(body: object) -> None:
    with pytest.raises(BodyError) as excinfo:
        parse_batch(
            body,
            principal_tenant=None,
            instance_default_priority=2,
            tenant_exists=lambda _t: True,
            account_exists=lambda _t, _a: True,
        )
    assert [p["loc"] for p in excinfo.value.problems] == [["body"]]


@pytest.mark.parametrize(
    ("body", "problems"),
    [
        ({}, [{"loc": ["body", "messages"], "msg": "field required", "type": "missing"}]),
        (
            {"messages": None},
            [{"loc": ["body", "messages"], "msg": "field required", "type": "missing"}],
        ),
        (
            {"messages": {"id": "x"}},
            [{"loc": ["body", "messages"], "msg": "must be a list", "type": "list_type"}],
        ),
        (
            {"default_priority": "urgent"},
            [
                {"loc": ["body", "messages"], "msg": "field required", "type": "missing"},
                {
                    "loc": ["body", "default_priority"],
                    "msg": "invalid priority",
                    "type": "value_error",
                },
            ],
        ),
        (
            {"messages": [], "default_priority": -1},
            [
                {
                    "loc": ["body", "default_priority"],
                    "msg": "invalid priority",
                    "type": "value_error",
                }
            ],
        ),
    ],
)
def test_body_error_lists_every_structural_problem(
    body: dict[str, Any], problems: list[dict[str, Any]]
) -> None:
    with pytest.raises(BodyError) as excinfo:
        parse_batch(
            body,
            principal_tenant=None,
            instance_default_priority=2,
            tenant_exists=lambda _t: True,
            account_exists=lambda _t, _a: True,
        )
    assert excinfo.value.problems == problems
    assert str(excinfo.value).startswith(f"{'.'.join(problems[0]['loc'])}: {problems[0]['msg']}")


def test_empty_messages_is_an_empty_batch() -> None:
    assert run([]) == Batch(accepted=(), rejected=())


def test_more_than_max_messages_is_refused_before_judging_any() -> None:
    calls: list[str] = []

    def tenant_exists(tenant: str) -> bool:
        calls.append(tenant)
        return True

    with pytest.raises(TooManyMessages, match="Cannot enqueue more than 1000 messages at once"):
        parse_batch(
            {"messages": ["garbage"] + [message(id=str(i)) for i in range(MAX_MESSAGES)]},
            principal_tenant=None,
            instance_default_priority=2,
            tenant_exists=tenant_exists,
            account_exists=lambda _t, _a: True,
        )
    assert calls == []


def test_exactly_max_messages_is_allowed() -> None:
    batch = run([message(id=str(i)) for i in range(MAX_MESSAGES)])
    assert len(batch.accepted) == MAX_MESSAGES


@pytest.mark.parametrize("omitted", [DROP, None, ""])
def test_tenant_token_defaults_a_missing_tenant_id(omitted: object) -> None:
    accepted = accept(message(tenant_id=omitted), principal="globex")
    assert accepted.tenant_id == accepted.payload["tenant_id"] == "globex"


def test_tenant_token_may_name_its_own_tenant() -> None:
    assert accept(message(tenant_id="acme"), principal="acme").tenant_id == "acme"


@pytest.mark.parametrize("foreign", ["globex", "ghost", 7])
def test_tenant_token_naming_another_tenant_refuses_the_whole_request(foreign: object) -> None:
    looked_up: list[object] = []
    with pytest.raises(ForeignTenant, match="Token not authorized for this tenant"):
        parse_batch(
            {"messages": [message(tenant_id=DROP), "junk", message(id="2", tenant_id=foreign)]},
            principal_tenant="acme",
            instance_default_priority=2,
            tenant_exists=looked_up.append,  # type: ignore[arg-type]
            account_exists=lambda _t, _a: True,
        )
    assert looked_up == []


def test_admin_token_may_enqueue_for_several_tenants() -> None:
    batch = run([message(id="a"), message(id="b", tenant_id="globex")])
    assert [a.tenant_id for a in batch.accepted] == ["acme", "globex"]


def test_lookups_are_memoized_per_distinct_key() -> None:
    tenant_calls: Counter[str] = Counter()
    account_calls: Counter[tuple[str, str]] = Counter()

    def tenant_exists(tenant: str) -> bool:
        tenant_calls[tenant] += 1
        return tenant in TENANTS

    def account_exists(tenant: str, account: str) -> bool:
        account_calls[(tenant, account)] += 1
        return (tenant, account) in ACCOUNTS

    entries = [message(id=str(i)) for i in range(5)]
    entries += [message(id=f"b{i}", account_id="bulk") for i in range(3)]
    entries += [message(id=f"g{i}", tenant_id="ghost") for i in range(3)]
    entries += [message(id=f"n{i}", account_id="nope") for i in range(3)]
    batch = parse_batch(
        {"messages": entries},
        principal_tenant=None,
        instance_default_priority=2,
        tenant_exists=tenant_exists,
        account_exists=account_exists,
    )
    assert len(batch.accepted) == 8
    assert len(batch.rejected) == 6
    assert tenant_calls == {"acme": 1, "ghost": 1}
    assert account_calls == {("acme", "main"): 1, ("acme", "bulk"): 1, ("acme", "nope"): 1}


# --- attachments (§4.2, §9.1, §9.5, §9.6 rule 1) --------------------------------------


@pytest.mark.parametrize(
    ("storage_path", "fetch_mode", "stored_path", "stored_mode"),
    [
        ("doc_id=42", None, "doc_id=42", "endpoint"),
        ("https://files.example/a.pdf", None, "https://files.example/a.pdf", "http_url"),
        ("HTTP://files.example/a.pdf", None, "HTTP://files.example/a.pdf", "http_url"),
        ("base64:SGVsbG8=", None, "SGVsbG8=", "base64"),
        ("base64:SGVsbG8", None, "SGVsbG8=", "base64"),
        ("base64:SGVs\nbG8g d29y\tbGQ", None, "SGVsbG8gd29ybGQ=", "base64"),
        ("SGVsbG8=", "base64", "SGVsbG8=", "base64"),
        ("base64:SGk", "base64", "SGk=", "base64"),
        ("/not/inferred/for/endpoint", "endpoint", "/not/inferred/for/endpoint", "endpoint"),
        ("https://x.example/base64:no", "http_url", "https://x.example/base64:no", "http_url"),
    ],
)
def test_fetch_mode_is_inferred_and_stored(
    storage_path: str, fetch_mode: str | None, stored_path: str, stored_mode: str
) -> None:
    extra = {} if fetch_mode is None else {"fetch_mode": fetch_mode}
    payload = accept(attachment_message(storage_path=storage_path, **extra)).payload
    (attachment,) = payload["attachments"]
    assert (attachment["storage_path"], attachment["fetch_mode"]) == (stored_path, stored_mode)
    if stored_mode == "base64":
        base64.b64decode(attachment["storage_path"], validate=True)


def test_attachment_optional_fields_are_kept() -> None:
    payload = accept(
        attachment_message(
            mime_type="application/vnd.ms-excel",
            content_md5="9E107D9D372BB6826BD81D3542A419D6",
            auth={"method": "basic", "user": "u", "password": "p"},
        )
    ).payload
    assert payload["attachments"] == [
        {
            "filename": "a.pdf",
            "storage_path": "doc=1",
            "fetch_mode": "endpoint",
            "mime_type": "application/vnd.ms-excel",
            "content_md5": "9e107d9d372bb6826bd81d3542a419d6",
            "auth": {"method": "basic", "user": "u", "password": "p"},
        }
    ]


@pytest.fixture
def dirs(tmp_path: Any) -> dict[str, str]:
    allowed = tmp_path / "allowed"
    (allowed / "reports").mkdir(parents=True)
    (allowed / "reports" / "q1.pdf").write_bytes(b"%PDF")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (tmp_path / "allowed-evil").mkdir()
    second = tmp_path / "second"
    second.mkdir()
    os.symlink(outside, allowed / "escape")
    os.symlink(allowed / "reports", allowed / "inner")
    return {
        "allowed": str(allowed),
        "outside": str(outside),
        "second": str(second),
        "tmp": str(tmp_path),
    }


def fs_attachment(path: str, dirs: dict[str, str], **attachment: Any) -> Batch:
    return run(
        [attachment_message(storage_path=path, **attachment)],
        allowed_dirs=(dirs["allowed"], dirs["second"]),
    )


@pytest.mark.parametrize(
    ("path", "fetch_mode", "stored"),
    [
        ("{allowed}/reports/q1.pdf", None, "{allowed}/reports/q1.pdf"),
        ("{allowed}/reports/not-yet-there.pdf", None, "{allowed}/reports/not-yet-there.pdf"),
        ("reports/q1.pdf", "filesystem", "{allowed}/reports/q1.pdf"),
        ("{allowed}/inner/q1.pdf", None, "{allowed}/reports/q1.pdf"),
        ("{allowed}/reports/../reports/q1.pdf", None, "{allowed}/reports/q1.pdf"),
        ("{second}/x.bin", None, "{second}/x.bin"),
    ],
)
def test_filesystem_path_inside_an_allowed_dir_is_stored_resolved(
    dirs: dict[str, str], path: str, fetch_mode: str | None, stored: str
) -> None:
    real = {key: os.path.realpath(value) for key, value in dirs.items()}
    extra = {} if fetch_mode is None else {"fetch_mode": fetch_mode}
    batch = fs_attachment(path.format(**dirs), dirs, **extra)
    assert batch.rejected == ()
    (attachment,) = batch.accepted[0].payload["attachments"]
    assert attachment["fetch_mode"] == "filesystem"
    assert attachment["storage_path"] == stored.format(**real)


@pytest.mark.parametrize(
    ("path", "fetch_mode"),
    [
        ("../../etc/passwd", "filesystem"),
        ("/etc/passwd", None),
        ("{allowed}/../outside/secret.txt", None),
        ("{allowed}/escape/secret.txt", None),  # symlink leading out
        ("escape/secret.txt", "filesystem"),
        ("{tmp}/allowed-evil/x", None),  # shares the prefix, not the directory
    ],
)
def test_filesystem_path_outside_allowed_dirs_is_rejected(
    dirs: dict[str, str], path: str, fetch_mode: str | None
) -> None:
    extra = {} if fetch_mode is None else {"fetch_mode": fetch_mode}
    (rejection,) = fs_attachment(path.format(**dirs), dirs, **extra).rejected
    assert rejection.field == "attachments[0].storage_path"
    assert rejection.reason == "attachments[0].storage_path: path outside allowed directories"


def test_filesystem_path_with_nul_is_rejected(dirs: dict[str, str]) -> None:
    (rejection,) = fs_attachment(f"{dirs['allowed']}/a\x00b", dirs).rejected
    assert rejection.reason == "attachments[0].storage_path: invalid path"


# --- properties ----------------------------------------------------------------------

line_break = st.sampled_from(["\r", "\n", "\r\n"])
with_line_break = st.tuples(st.text(max_size=20), line_break, st.text(max_size=20)).map("".join)


@given(with_line_break)
def test_line_break_in_subject_is_header_injection(subject: str) -> None:
    rejection = reject(message(subject=subject))
    assert (rejection.field, rejection.reason) == ("subject", "header injection in subject")


@given(with_line_break)
def test_line_break_in_header_value_is_header_injection(value: str) -> None:
    rejection = reject(message(headers={"X-Custom": value}))
    assert rejection.field == "headers.X-Custom"
    assert rejection.reason == "header injection in headers.X-Custom"


@given(with_line_break)
def test_line_break_in_filename_is_header_injection(filename: str) -> None:
    rejection = reject(attachment_message(filename=filename))
    assert rejection.field == "attachments[0].filename"
    assert rejection.reason == "header injection in attachments[0].filename"


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=5,
)


@given(st.one_of(json_like, st.sampled_from(["0", "3", "HIGH", " low ", "007"])))
def test_parse_priority_returns_0_to_3_or_raises_value_error(value: object) -> None:
    try:
        priority = parse_priority(value)
    except ValueError:
        return
    assert priority in {0, 1, 2, 3}


atext = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~",
    min_size=1,
    max_size=10,
)
local_part = st.lists(atext, min_size=1, max_size=3).map(".".join)
label = st.from_regex(r"[a-z0-9]{1,6}(-[a-z0-9]{1,6})?", fullmatch=True)  # no "--": IDNA
domain = st.tuples(
    st.lists(label, min_size=1, max_size=3), st.from_regex(r"[a-z]{2,6}", fullmatch=True)
).map(lambda parts: ".".join([*parts[0], parts[1]]))
name_word = st.text(
    alphabet=st.characters(categories=["L", "N"]) | st.sampled_from(list(',;."()<>@:[]\\')),
    min_size=1,
    max_size=8,
)
display_name = st.lists(name_word, max_size=3).map(" ".join)


@st.composite
def formatted_address(draw: st.DrawFn) -> str:
    addr = f"{draw(local_part)}@{draw(domain)}"
    assert is_valid_address(addr), addr
    (formatted,) = parse_address_list(addr)
    name = draw(display_name)
    if not name:
        return formatted
    # a name goes through parse_address_list too: its formatting is what we round-trip
    (with_name,) = parse_address_list([f'"{_escaped(name)}" <{addr}>'])
    return with_name


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


@given(st.lists(formatted_address(), min_size=1, max_size=4), st.sampled_from([", ", ";", " ; "]))
def test_parse_address_list_round_trips_valid_addresses(addresses: list[str], sep: str) -> None:
    assert parse_address_list(sep.join(addresses)) == addresses
    assert parse_address_list(addresses) == addresses


@given(st.text(max_size=60))
def test_address_parsing_never_raises_anything_but_value_error(text: str) -> None:
    is_valid_address(text)
    with contextlib.suppress(ValueError):
        parse_address_list(text)


@given(json_like)
def test_parse_batch_survives_any_json_message(entry: object) -> None:
    batch = run([entry])
    assert len(batch.accepted) + len(batch.rejected) == 1


def test_nul_in_an_unknown_field_is_ignored_with_the_field() -> None:
    item = accept(message(note="a\x00b", **{"x\x00": 1}))
    assert not {"note", "x\x00"} & set(item.payload)


@given(st.text(max_size=10), st.text(max_size=10))
def test_no_accepted_payload_holds_a_nul(before: str, after: str) -> None:
    for field in ("id", "subject", "body", "html", "from_name", "batch_code", "message_id"):
        text = f"{before}\x00{after}@x"
        batch = run([message(**{field: text})])
        assert batch.accepted == (), field
