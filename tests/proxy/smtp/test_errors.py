import dataclasses

import pytest

from proxy.smtp.errors import (
    Outcome,
    PermFailure,
    Refusal,
    Sent,
    TempFailure,
    all_refused,
    connection_failure,
    describe_reply,
    is_permanent_code,
    reply_failure,
)


@pytest.mark.parametrize("code", [421, 450, 451, 452, 454])
def test_4xx_reply_is_temporary_with_its_code(code):
    failure = reply_failure(code, "4.7.1 Try again later")
    assert failure == TempFailure(
        f"SMTP {code}: 4.7.1 Try again later", reason="smtp", smtp_code=code
    )


@pytest.mark.parametrize("code", [500, 535, 550, 552, 554])
def test_5xx_reply_is_permanent_with_its_code(code):
    failure = reply_failure(code, "5.1.1 <ann@example.org>: Recipient address rejected")
    assert failure == PermFailure(
        f"SMTP {code}: 5.1.1 <ann@example.org>: Recipient address rejected", smtp_code=code
    )


@pytest.mark.parametrize("code", [250, 354, -1, 600])
def test_odd_reply_codes_are_retried_not_dropped(code):
    assert isinstance(reply_failure(code, "weird"), TempFailure)


def test_multiline_reply_text_is_flattened_to_one_line():
    assert describe_reply(550, "5.7.1 first line\n5.7.1 second  line") == (
        "SMTP 550: 5.7.1 first line 5.7.1 second line"
    )


def test_is_permanent_code_only_for_5xx():
    assert [c for c in (199, 250, 421, 499, 500, 554, 599, 600) if is_permanent_code(c)] == [
        500,
        554,
        599,
    ]


def test_connection_failure_is_temporary_without_code():
    failure = connection_failure("connection refused")
    assert failure == TempFailure("connection refused", reason="connection", smtp_code=None)


def test_all_refused_with_only_5xx_is_permanent():
    failure = all_refused(
        [Refusal("a@x.org", 550, "5.1.1 no such user"), Refusal("b@x.org", 553, "bad")]
    )
    assert isinstance(failure, PermFailure)
    assert failure.smtp_code == 550
    assert failure.description == (
        "all recipients refused: a@x.org: SMTP 550: 5.1.1 no such user; b@x.org: SMTP 553: bad"
    )


def test_all_refused_with_any_4xx_is_temporary_and_reports_the_4xx():
    failure = all_refused(
        [Refusal("a@x.org", 550, "no such user"), Refusal("b@x.org", 452, "mailbox full")]
    )
    assert isinstance(failure, TempFailure)
    assert failure.reason == "smtp"
    assert failure.smtp_code == 452


def test_single_refusal_reads_like_the_server_reply():
    failure = all_refused([Refusal("ann@example.org", 550, "5.1.1 <ann@example.org>: rejected")])
    assert failure == PermFailure("SMTP 550: 5.1.1 <ann@example.org>: rejected", smtp_code=550)


def test_all_refused_needs_refusals():
    with pytest.raises(ValueError, match="at least one"):
        all_refused([])


@pytest.mark.parametrize(
    "value",
    [
        Refusal("a@x.org", 550, "no"),
        Sent(250, "OK"),
        TempFailure("x"),
        PermFailure("x"),
    ],
)
def test_outcomes_are_frozen_and_slotted(value):
    field = dataclasses.fields(value)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, field, None)
    assert not hasattr(value, "__dict__")


def test_sent_defaults_to_no_refusals():
    assert Sent(250, "OK").refused == ()


def _label(outcome: Outcome) -> str:
    match outcome:
        case Sent(refused=()):
            return "sent"
        case Sent():
            return "partly sent"
        case TempFailure(reason="connection"):
            return "retry: connection"
        case TempFailure():
            return "retry: smtp"
        case PermFailure():
            return "error"


def test_outcomes_dispatch_with_match():
    assert [
        _label(o)
        for o in (
            Sent(250, "OK"),
            Sent(250, "OK", (Refusal("a@x.org", 550, "no"),)),
            connection_failure("reset"),
            reply_failure(451, "later"),
            reply_failure(550, "no"),
        )
    ] == ["sent", "partly sent", "retry: connection", "retry: smtp", "error"]
