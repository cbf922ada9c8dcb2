"""A small IMAP client over ``imaplib``: the one module that sees its exceptions.

Every socket operation has a timeout. Failures are translated here into one
tree, so the pollers never catch ``imaplib``, ``ssl`` or ``socket`` errors::

    ImapError
    ├── ImapConnectError   cannot connect, TLS failed, the connection dropped or timed out
    ├── ImapAuthError      the server refused the login
    └── ImapMailboxError   the folder cannot be selected, or a command was refused

Which flags a handled mail gets is ``proxy.bounce.disposition``'s decision. A
server that refuses custom keywords still gets the system flags; the store's
processed-mail table keeps the counting exact.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from proxy.bounce.disposition import PROCESSED

logger = logging.getLogger(__name__)

DELETED = "\\Deleted"
DEFAULT_TIMEOUT_S = 30.0
MAX_FETCH_BYTES = 10 << 20  # the headers and report come first; a huge returned copy is cut


class ImapError(Exception):
    """Something went wrong talking to the IMAP server."""


class ImapConnectError(ImapError):
    pass


class ImapAuthError(ImapError):
    pass


class ImapMailboxError(ImapError):
    pass


@dataclass(frozen=True, slots=True)
class ImapEndpoint:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    use_ssl: bool = True
    folder: str = "INBOX"
    tls_verify: bool = True

    @property
    def identity(self) -> str:
        """What a UID cursor belongs to: another server, user or folder starts from scratch."""
        return f"{self.host}:{self.port}/{self.user}/{self.folder}"


@dataclass(frozen=True, slots=True)
class Selected:
    uidvalidity: int
    exists: int
    keywords_allowed: bool


def quote(name: str) -> str:
    """An IMAP quoted string (folder names may hold spaces)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextlib.contextmanager
def _translated(what: str, refused: type[ImapError] = ImapMailboxError) -> Iterator[None]:
    try:
        yield
    except imaplib.IMAP4.abort as exc:
        raise ImapConnectError(f"{what}: connection lost ({exc})") from exc
    except imaplib.IMAP4.error as exc:
        raise refused(f"{what}: {exc}") from exc
    except TimeoutError as exc:
        raise ImapConnectError(f"{what}: timed out") from exc
    except ssl.SSLError as exc:
        raise ImapConnectError(f"{what}: TLS failed ({exc.reason or exc})") from exc
    except OSError as exc:
        raise ImapConnectError(f"{what}: {exc.strerror or exc}") from exc


def _ok(typ: str, data: list, what: str) -> list:
    if typ != "OK":
        detail = b" ".join(d for d in data if isinstance(d, bytes)).decode(errors="replace")
        raise ImapMailboxError(f"{what}: {typ} {detail}".strip())
    return data


class ImapMailbox:
    """One connection to one folder; not thread-safe (it belongs to its poller's thread)."""

    def __init__(self, endpoint: ImapEndpoint, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._conn: imaplib.IMAP4 | None = None
        self._capabilities: frozenset[str] = frozenset()
        self._keywords_allowed = True
        self._created: set[str] = set()

    def open(self) -> Selected:
        """Connect, log in and select the folder."""
        e = self.endpoint
        with _translated(f"connect to {e.host}:{e.port}"):
            if e.use_ssl:
                context = ssl.create_default_context()
                if not e.tls_verify:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    e.host, e.port, ssl_context=context, timeout=self.timeout_s
                )
            else:
                conn = imaplib.IMAP4(e.host, e.port, timeout=self.timeout_s)
        self._conn = conn
        with _translated(f"login as {e.user}", refused=ImapAuthError):
            conn.login(e.user, e.password)
        with _translated("capability"):
            data = _ok(*conn.capability(), "capability")
        self._capabilities = frozenset(b" ".join(data).decode(errors="replace").upper().split())
        with _translated(f"select {e.folder}"):
            data = _ok(*conn.select(quote(e.folder)), f"select {e.folder}")
            uidvalidity = conn.response("UIDVALIDITY")[1]
            permanent = conn.response("PERMANENTFLAGS")[1]
        try:
            exists = int(data[0] or 0)
            validity = int(uidvalidity[0]) if uidvalidity and uidvalidity[0] else 0
        except (TypeError, ValueError) as exc:
            raise ImapMailboxError(f"select {e.folder}: malformed response") from exc
        flags = b" ".join(p for p in (permanent or []) if isinstance(p, bytes))
        # No PERMANENTFLAGS at all: assume keywords work and find out at STORE.
        self._keywords_allowed = not permanent or b"\\*" in flags
        return Selected(
            uidvalidity=validity, exists=exists, keywords_allowed=self._keywords_allowed
        )

    def unprocessed_uids(self, above_uid: int) -> list[int]:
        """UIDs above the cursor without ``$MailProxyProcessed``, ascending (SPEC §11.2 rule 1)."""
        conn = self._connection()
        criteria = ["UID", f"{above_uid + 1}:*"]
        if self._keywords_allowed:
            criteria += ["UNKEYWORD", PROCESSED]
        with _translated("search"):
            data = _ok(*conn.uid("SEARCH", *criteria), "search")
        words = b" ".join(d for d in data if isinstance(d, bytes)).split()
        # "n:*" always includes the highest UID, even below n: filter.
        return sorted(uid for uid in (int(w) for w in words if w.isdigit()) if uid > above_uid)

    def fetch(self, uid: int) -> bytes | None:
        """The mail's bytes without setting ``Seen``; None when it vanished meanwhile."""
        conn = self._connection()
        with _translated(f"fetch {uid}"):
            data = _ok(*conn.uid("FETCH", str(uid), f"(BODY.PEEK[]<0.{MAX_FETCH_BYTES}>)"), "fetch")
        for item in data:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
                return item[1]
        return None

    def mark(self, uid: int, flags: Sequence[str]) -> None:
        """Add flags; custom keywords are dropped when the server refuses them."""
        conn = self._connection()
        wanted = [f for f in flags if self._keywords_allowed or f.startswith("\\")]
        if not wanted:
            return
        with _translated(f"store {uid}"):
            typ, _ = conn.uid("STORE", str(uid), "+FLAGS.SILENT", f"({' '.join(wanted)})")
            if typ != "OK" and any(not f.startswith("\\") for f in wanted):
                self._keywords_allowed = False
                logger.warning("IMAP server refuses custom keywords; using system flags only")
                system = [f for f in wanted if f.startswith("\\")]
                if system:
                    typ, data = conn.uid(
                        "STORE", str(uid), "+FLAGS.SILENT", f"({' '.join(system)})"
                    )
                    _ok(typ, data, f"store {uid}")

    def move(self, uid: int, folder: str) -> None:
        """Move to ``folder`` (created when missing): MOVE, else COPY + ``Deleted``."""
        conn = self._connection()
        with _translated(f"move {uid} to {folder}"):
            if folder not in self._created:
                conn.create(quote(folder))  # NO when it exists: fine
                self._created.add(folder)
            if "MOVE" in self._capabilities:
                _ok(*conn.uid("MOVE", str(uid), quote(folder)), f"move {uid}")
                return
            _ok(*conn.uid("COPY", str(uid), quote(folder)), f"copy {uid}")
            _ok(*conn.uid("STORE", str(uid), "+FLAGS.SILENT", f"({DELETED})"), f"delete {uid}")
            if "UIDPLUS" in self._capabilities:
                _ok(*conn.uid("EXPUNGE", str(uid)), f"expunge {uid}")

    def close(self) -> None:
        """Log out; never raises (the connection may already be gone)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.logout()
        except (imaplib.IMAP4.error, OSError):
            with contextlib.suppress(OSError):
                conn.shutdown()

    def _connection(self) -> imaplib.IMAP4:
        if self._conn is None:
            raise ImapConnectError("not connected")
        return self._conn
