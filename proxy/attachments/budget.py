"""The process-wide attachment memory budget, and spools that respect it (SPEC §9.2 rule 3).

``MemoryBudget`` is a counting semaphore in bytes built on one condition
variable. Waiters are served in arrival order, so a large request at the head of
the queue is not starved by a stream of small ones; a request larger than the
whole budget is granted the whole budget once nobody else holds any (it waits
until it can have all of it, and never deadlocks). ``try_acquire`` never waits
and never jumps the queue.

A ``Spool`` holds one attachment's content while it is fetched: in memory up to
``SPOOL_THRESHOLD_BYTES`` and only while the budget grants those bytes, otherwise
in an anonymous temporary file. It also computes the size and MD5 on the way in.
No network and no database here.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO

SPOOL_THRESHOLD_BYTES = 1 << 20  # "content above 1 MB is spooled to a temporary file"
CHUNK_BYTES = 1 << 16
WAIT_SLICE_S = 0.25


class BudgetWaitCancelled(Exception):
    """``acquire`` gave up because its ``cancelled`` callback said so (shutdown)."""


class MemoryBudget:
    def __init__(self, total_bytes: int) -> None:
        self.total_bytes = max(1, total_bytes)
        self._used = 0
        self._queue: deque[object] = deque()
        self._cond = threading.Condition()
        self.peak_bytes = 0  # the most ever held at once; for tests and diagnostics

    @property
    def used_bytes(self) -> int:
        with self._cond:
            return self._used

    def try_acquire(self, size_bytes: int) -> bool:
        """Take ``size_bytes`` now if they are free and nobody is waiting; never blocks."""
        if size_bytes <= 0:
            return True
        with self._cond:
            if self._queue or self._used + size_bytes > self.total_bytes:
                return False
            self._take(size_bytes)
            return True

    def acquire(self, size_bytes: int, cancelled: Callable[[], bool] = lambda: False) -> int:
        """Wait in line for ``size_bytes`` (capped at the whole budget); return the grant.

        ``cancelled`` is polled while waiting; when it turns true the wait ends with
        ``BudgetWaitCancelled`` and nothing is held.
        """
        want = min(size_bytes, self.total_bytes)
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                while not (self._queue[0] is ticket and self._used + want <= self.total_bytes):
                    if cancelled():
                        raise BudgetWaitCancelled
                    self._cond.wait(WAIT_SLICE_S)
                self._take(want)
                return want
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()

    def release(self, size_bytes: int) -> None:
        if size_bytes <= 0:
            return
        with self._cond:
            self._used = max(0, self._used - size_bytes)
            self._cond.notify_all()

    def _take(self, size_bytes: int) -> None:
        self._used += size_bytes
        self.peak_bytes = max(self.peak_bytes, self._used)


class Spool:
    """One attachment's bytes: a budgeted memory buffer that rolls over to a temp file."""

    def __init__(
        self,
        budget: MemoryBudget | None = None,
        *,
        threshold_bytes: int = SPOOL_THRESHOLD_BYTES,
        temp_dir: str | None = None,
    ) -> None:
        self._budget = budget
        self._threshold = threshold_bytes
        self._temp_dir = temp_dir
        self._buffer: bytearray | None = bytearray()
        self._shared: bytes | None = None  # content owned elsewhere (a cache entry)
        self._file: IO[bytes] | None = None
        self._held = 0
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.size_bytes = 0

    @classmethod
    def of_bytes(cls, data: bytes) -> Spool:
        """Wrap bytes that already live in memory elsewhere (no copy, nothing budgeted)."""
        spool = cls(None)
        spool._buffer = None
        spool._shared = data
        spool._md5.update(data)
        spool.size_bytes = len(data)
        return spool

    @classmethod
    def of_file(cls, handle: IO[bytes]) -> Spool:
        """Adopt an open file (a disk cache entry); its content is read through, not copied."""
        spool = cls(None)
        spool._buffer = None
        spool._file = handle
        handle.seek(0)
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            spool._md5.update(chunk)
            spool.size_bytes += len(chunk)
        return spool

    # -- writing ---------------------------------------------------------------

    def write(self, chunk: bytes) -> None:
        self._md5.update(chunk)
        self.size_bytes += len(chunk)
        if self._buffer is not None:
            fits = self.size_bytes <= self._threshold
            if fits and (self._budget is None or self._budget.try_acquire(len(chunk))):
                self._held += len(chunk) if self._budget is not None else 0
                self._buffer += chunk
                return
            self.rollover()
        self._writer().write(chunk)

    def rollover(self) -> None:
        """Move buffered bytes to a temporary file and give their budget back."""
        if self._buffer is None:
            return
        self._file = tempfile.TemporaryFile(dir=self._temp_dir)  # noqa: SIM115 (kept open)
        self._file.write(self._buffer)
        self._buffer = None
        self._give_back()

    # -- reading ---------------------------------------------------------------

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()

    @property
    def in_memory(self) -> bool:
        return self._file is None

    @property
    def held_bytes(self) -> int:
        """Bytes of this spool counted against the budget."""
        return self._held

    def read_bytes(self) -> bytes:
        """The whole content as bytes (for small attachments; large ones are streamed)."""
        if self._shared is not None:
            return self._shared
        if self._buffer is not None:
            return bytes(self._buffer)
        handle = self._writer()
        handle.seek(0)
        return handle.read()

    def reader(self) -> IO[bytes]:
        """A file object positioned at the start; do not close it (``close`` does)."""
        if self._file is not None:
            self._file.seek(0)
            return self._file
        return io.BytesIO(self.read_bytes())

    def chunks(self, size: int = CHUNK_BYTES) -> Iterator[bytes]:
        handle = self.reader()
        yield from iter(lambda: handle.read(size), b"")

    def close(self) -> None:
        self._buffer = None
        self._shared = None
        if self._file is not None:
            self._file.close()
            self._file = None
        self._give_back()

    def _writer(self) -> IO[bytes]:
        if self._file is None:
            raise RuntimeError("spool has no file: closed, or still in memory")
        return self._file

    def _give_back(self) -> None:
        if self._held and self._budget is not None:
            self._budget.release(self._held)
        self._held = 0


def encoded_size(size_bytes: int) -> int:
    """Bytes of the base64 body mime writes for ``size_bytes`` (76-char lines, CRLF)."""
    b64 = 4 * ((size_bytes + 2) // 3)
    return b64 + 2 * ((b64 + 75) // 76)
