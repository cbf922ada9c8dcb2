"""One poll of one IMAP mailbox: open, list new mail, handle it in batches, close (SPEC §11.2).

Not an actor and not thread-safe: a poller actor drives one ``MailboxPoll`` one
batch per handled message, so a ``Stop`` never waits behind a whole mailbox.
Each mail is fetched, handed to ``handle`` (which parses it and records what
it means, returning a ``Disposition``), then flagged and moved. The UID cursor
is saved after every batch; a mail recorded but not yet flagged when the
connection drops is fetched again next time and recorded nothing twice (the
store remembers processed mails).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from proxy.bounce.disposition import Disposition
from proxy.bounce.imap import ImapEndpoint, ImapMailbox
from proxy.store.bounces import BounceStore, Cursor

logger = logging.getLogger(__name__)

Handler = Callable[[bytes], Disposition]


class MailboxPoll:
    def __init__(
        self,
        store: BounceStore,
        mailbox: str,
        endpoint: ImapEndpoint,
        handle: Handler,
        *,
        processed_folder: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.store = store
        self.mailbox = mailbox
        self.endpoint = endpoint
        self.handle = handle
        self.processed_folder = processed_folder or None
        self._imap = ImapMailbox(endpoint, timeout_s=timeout_s)
        self._pending: deque[int] = deque()
        self._cursor = Cursor(uidvalidity=None, last_uid=0)
        self.handled = 0

    def open(self) -> int:
        """Connect and list the mail to handle; the count. Raises ``ImapError``."""
        selected = self._imap.open()
        cursor = self.store.cursor(self.mailbox, self.endpoint.identity)
        if cursor.uidvalidity != selected.uidvalidity:
            if cursor.uidvalidity is not None:
                logger.info(
                    "mailbox %s: UIDVALIDITY changed (%s → %s); reading it from the start",
                    self.mailbox,
                    cursor.uidvalidity,
                    selected.uidvalidity,
                )
            cursor = Cursor(uidvalidity=selected.uidvalidity, last_uid=0)
            self.store.save_cursor(self.mailbox, self.endpoint.identity, cursor)
        self._cursor = cursor
        self._pending = deque(self._imap.unprocessed_uids(cursor.last_uid))
        return len(self._pending)

    def step(self, batch: int) -> bool:
        """Handle up to ``batch`` mails; True while more remain. Raises ``ImapError``.

        The cursor is saved even when the connection fails half-way, up to the
        last mail fully handled.
        """
        last = self._cursor.last_uid
        try:
            for _ in range(batch):
                if not self._pending:
                    break
                uid = self._pending[0]
                raw = self._imap.fetch(uid)
                if raw is not None:
                    self._dispose(uid, self.handle(raw))
                    self.handled += 1
                self._pending.popleft()
                last = max(last, uid)
        finally:
            if last != self._cursor.last_uid:
                self._cursor = Cursor(uidvalidity=self._cursor.uidvalidity, last_uid=last)
                self.store.save_cursor(self.mailbox, self.endpoint.identity, self._cursor)
        return bool(self._pending)

    def close(self) -> None:
        self._imap.close()

    def _dispose(self, uid: int, disposition: Disposition) -> None:
        self._imap.mark(uid, disposition.flags)
        if disposition.move and self.processed_folder:
            self._imap.move(uid, self.processed_folder)
