"""The IMAP client against a real Dovecot: listing, fetching, flags, moving, failures."""

from __future__ import annotations

import imaplib

import pytest

from proxy.bounce.disposition import IGNORED, PROCESSED, SEEN
from proxy.bounce.imap import (
    ImapAuthError,
    ImapConnectError,
    ImapEndpoint,
    ImapMailbox,
    ImapMailboxError,
)
from tests.fixtures.imap import IMAP_PASSWORD
from tests.fixtures.proxy import free_port

MAIL = (
    b"From: a@example.org\r\nTo: b@example.org\r\nSubject: %d\r\nMessage-ID: <%d@t>\r\n\r\nhi\r\n"
)


def _endpoint(user, *, tls: bool = False, **overrides) -> ImapEndpoint:
    server = user.server
    values = {
        "host": server.host,
        "port": server.imaps_port if tls else server.imap_port,
        "user": user.name,
        "password": user.password,
        "use_ssl": tls,
    }
    return ImapEndpoint(**(values | overrides))


@pytest.fixture
def mailbox(imap_user):
    box = ImapMailbox(_endpoint(imap_user), timeout_s=5)
    yield box
    box.close()


def test_lists_new_mail_above_the_cursor_in_uid_order(imap_user, mailbox) -> None:
    for n in range(3):
        imap_user.deliver(MAIL % (n, n))
    selected = mailbox.open()
    assert selected.exists == 3
    assert selected.uidvalidity > 0
    assert selected.keywords_allowed
    assert mailbox.unprocessed_uids(0) == [1, 2, 3]
    assert mailbox.unprocessed_uids(2) == [3]
    assert mailbox.unprocessed_uids(3) == []  # "4:*" still names UID 3: filtered out


def test_fetch_does_not_mark_seen_and_mark_sets_keywords(imap_user, mailbox) -> None:
    imap_user.deliver(MAIL % (1, 1))
    mailbox.open()
    raw = mailbox.fetch(1)
    assert raw is not None
    assert b"Message-ID: <1@t>" in raw
    assert imap_user.flags() == {1: set()}
    mailbox.mark(1, (SEEN, PROCESSED, IGNORED))
    assert imap_user.flags() == {1: {SEEN, PROCESSED, IGNORED}}
    assert mailbox.unprocessed_uids(0) == []  # flagged mail is never listed again


def test_fetching_a_vanished_uid_returns_none(imap_user, mailbox) -> None:
    mailbox.open()
    assert mailbox.fetch(42) is None


def test_move_creates_the_folder_and_removes_the_mail(imap_user, mailbox) -> None:
    imap_user.deliver(MAIL % (1, 1))
    imap_user.deliver(MAIL % (2, 2))
    mailbox.open()
    mailbox.mark(1, (SEEN, PROCESSED))
    mailbox.move(1, "Processed Bounces")
    mailbox.close()
    assert set(imap_user.flags()) == {2}
    assert imap_user.flags("Processed Bounces") == {1: {SEEN, PROCESSED}}


def test_implicit_tls_with_a_trusted_certificate(imap_user, trusted_tls_ca) -> None:
    imap_user.deliver(MAIL % (1, 1))
    box = ImapMailbox(_endpoint(imap_user, tls=True), timeout_s=5)
    try:
        assert box.open().exists == 1
    finally:
        box.close()


def test_untrusted_certificate_is_a_connect_error(imap_user, tmp_path, monkeypatch) -> None:
    other = tmp_path / "other-ca.pem"
    import trustme

    trustme.CA().cert_pem.write_to_path(str(other))
    monkeypatch.setenv("SSL_CERT_FILE", str(other))
    box = ImapMailbox(_endpoint(imap_user, tls=True), timeout_s=5)
    with pytest.raises(ImapConnectError, match="TLS"):
        box.open()
    box.close()


def test_tls_verify_false_accepts_a_self_signed_server(imap_user, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
    box = ImapMailbox(_endpoint(imap_user, tls=True, tls_verify=False), timeout_s=5)
    try:
        assert box.open().exists == 0
    finally:
        box.close()


def test_wrong_password_is_an_auth_error_without_the_password(imap_user) -> None:
    box = ImapMailbox(_endpoint(imap_user, password="wrong-password-xyz"), timeout_s=5)
    with pytest.raises(ImapAuthError) as caught:
        box.open()
    assert "wrong-password-xyz" not in str(caught.value)
    assert IMAP_PASSWORD not in str(caught.value)
    box.close()


def test_missing_folder_is_a_mailbox_error(imap_user) -> None:
    box = ImapMailbox(_endpoint(imap_user, folder="Nope"), timeout_s=5)
    with pytest.raises(ImapMailboxError, match="select Nope"):
        box.open()
    box.close()


def test_nothing_listening_is_a_connect_error() -> None:
    endpoint = ImapEndpoint(host="127.0.0.1", port=free_port(), user="u", password="p")
    box = ImapMailbox(endpoint, timeout_s=2)
    with pytest.raises(ImapConnectError):
        box.open()
    box.close()


def test_a_dropped_connection_is_a_connect_error(imap_user, mailbox) -> None:
    imap_user.deliver(MAIL % (1, 1))
    mailbox.open()
    mailbox._conn.shutdown()  # the server side is gone as far as the client can tell
    with pytest.raises(ImapConnectError):
        mailbox.fetch(1)


def test_fixture_serves_plain_and_tls_logins(imap_user, trusted_tls_ca) -> None:
    conn = imaplib.IMAP4_SSL(imap_user.server.host, imap_user.server.imaps_port, timeout=5)
    try:
        assert conn.login(imap_user.name, imap_user.password)[0] == "OK"
    finally:
        conn.logout()
