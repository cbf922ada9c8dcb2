"""One mailbox poll against Dovecot: cursor, flags, moving, UIDVALIDITY, failures half-way."""

from __future__ import annotations

import pytest

from proxy.bounce import disposition
from proxy.bounce.disposition import IGNORED, PROCESSED, SEEN, UNMATCHED
from proxy.bounce.imap import ImapConnectError, ImapEndpoint
from proxy.bounce.poll import MailboxPoll
from proxy.store.bounces import BOUNCE_MAILBOX, Cursor

MAIL = b"From: x@example.org\r\nSubject: %d\r\nMessage-ID: <%d@test>\r\n\r\nbody\r\n"


def _endpoint(user) -> ImapEndpoint:
    return ImapEndpoint(
        host=user.server.host,
        port=user.server.imap_port,
        user=user.name,
        password=user.password,
        use_ssl=False,
    )


class Recorder:
    """A handler answering a fixed disposition per Subject, recording what it saw."""

    def __init__(self, answers: dict[bytes, disposition.Disposition] | None = None) -> None:
        self.seen: list[bytes] = []
        self.answers = answers or {}

    def __call__(self, raw: bytes) -> disposition.Disposition:
        subject = raw.split(b"Subject: ")[1].split(b"\r\n")[0]
        self.seen.append(subject)
        return self.answers.get(subject, disposition.RECORDED)


def _poll(store, user, handler, **kw) -> MailboxPoll:
    return MailboxPoll(store.bounces, BOUNCE_MAILBOX, _endpoint(user), handler, timeout_s=5, **kw)


def _run(poll: MailboxPoll, batch: int = 2) -> None:
    poll.open()
    try:
        while poll.step(batch):
            pass
    finally:
        poll.close()


def test_handles_every_new_mail_flags_it_and_advances_the_cursor(store, imap_user) -> None:
    for n in (1, 2, 3):
        imap_user.deliver(MAIL % (n, n))
    handler = Recorder({b"2": disposition.IGNORED_MAIL, b"3": disposition.UNMATCHED_MAIL})
    _run(_poll(store, imap_user, handler))
    assert handler.seen == [b"1", b"2", b"3"]
    assert imap_user.flags() == {
        1: {SEEN, PROCESSED},
        2: {SEEN, PROCESSED, IGNORED},
        3: {SEEN, PROCESSED, UNMATCHED},
    }
    identity = _endpoint(imap_user).identity
    assert store.bounces.cursor(BOUNCE_MAILBOX, identity).last_uid == 3
    handler.seen.clear()
    imap_user.deliver(MAIL % (4, 4))
    _run(_poll(store, imap_user, handler))
    assert handler.seen == [b"4"]  # only mail above the cursor


def test_unparseable_mail_stays_unread_in_place(store, imap_user) -> None:
    imap_user.deliver(MAIL % (1, 1))
    handler = Recorder({b"1": disposition.UNPARSEABLE_MAIL})
    _run(_poll(store, imap_user, handler, processed_folder="Done"))
    assert imap_user.flags() == {1: {PROCESSED, IGNORED}}


def test_handled_mail_is_moved_to_the_processed_folder(store, imap_user) -> None:
    imap_user.deliver(MAIL % (1, 1))
    imap_user.deliver(MAIL % (2, 2))
    handler = Recorder({b"2": disposition.UNPARSEABLE_MAIL})
    _run(_poll(store, imap_user, handler, processed_folder="Done"))
    assert set(imap_user.flags()) == {2}
    assert imap_user.flags("Done") == {1: {SEEN, PROCESSED}}


def test_mail_already_flagged_processed_is_skipped_after_a_cursor_reset(store, imap_user) -> None:
    imap_user.deliver(MAIL % (1, 1))
    _run(_poll(store, imap_user, Recorder()))
    identity = _endpoint(imap_user).identity
    store.bounces.save_cursor(BOUNCE_MAILBOX, identity, Cursor(uidvalidity=None, last_uid=0))
    handler = Recorder()
    _run(_poll(store, imap_user, handler))
    assert handler.seen == []  # the keyword still prevents double counting


def test_uidvalidity_change_rereads_the_mailbox_from_the_start(store, imap_user) -> None:
    imap_user.deliver(MAIL % (1, 1))
    imap_user.deliver(MAIL % (2, 2))
    identity = _endpoint(imap_user).identity
    # A cursor far ahead, from a UIDVALIDITY the server no longer has (mailbox recreated).
    store.bounces.save_cursor(BOUNCE_MAILBOX, identity, Cursor(uidvalidity=1, last_uid=99))
    handler = Recorder()
    _run(_poll(store, imap_user, handler))
    assert handler.seen == [b"1", b"2"]
    cursor = store.bounces.cursor(BOUNCE_MAILBOX, identity)
    assert cursor.uidvalidity not in (None, 1)
    assert cursor.last_uid == 2


def test_a_failure_half_way_keeps_the_cursor_of_the_mail_handled(store, imap_user) -> None:
    for n in (1, 2, 3):
        imap_user.deliver(MAIL % (n, n))
    poll = _poll(store, imap_user, Recorder())

    def drop_after_first(raw: bytes) -> disposition.Disposition:
        if b"Subject: 2" in raw:
            poll._imap._conn.shutdown()  # the connection dies while handling mail 2
        return disposition.RECORDED

    poll.handle = drop_after_first
    poll.open()
    with pytest.raises(ImapConnectError):
        poll.step(10)
    poll.close()
    identity = _endpoint(imap_user).identity
    assert store.bounces.cursor(BOUNCE_MAILBOX, identity).last_uid == 1
    handler = Recorder()
    _run(_poll(store, imap_user, handler))
    assert handler.seen == [b"2", b"3"]  # mail 2 again: the store makes recording it idempotent
