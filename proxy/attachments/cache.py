"""The tiered attachment cache (SPEC §9.3): memory (LRU, TTL, size cap) over optional disk.

Keys are built by ``cache_key(tenant_id, md5)`` only, so one tenant can never
obtain another's file by naming its MD5. Items below the disk threshold live in
memory (and on disk when the disk tier is on); larger ones only on disk. A disk
hit below the threshold is promoted to memory. Expired entries are never served.
Every lookup is counted per tier through ``on_lookup(tier, result)`` (the
``gmp_attachment_cache_requests_total`` metric).

Thread-safe (one lock); disk files are written to a temporary name and renamed,
so a reader never sees half a file, and an entry evicted while someone reads it
stays readable through the open handle. No network, no database.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from proxy.attachments.budget import CHUNK_BYTES, Spool

logger = logging.getLogger(__name__)

MEMORY, DISK = "memory", "disk"
HIT, MISS = "hit", "miss"
SUFFIX = ".bin"


def cache_key(tenant_id: str, md5_hex: str) -> str:
    return f"{tenant_id}:{md5_hex.lower()}"


@dataclass(frozen=True, slots=True)
class CacheConfig:
    memory_max_bytes: int = 50 << 20
    memory_ttl_s: float = 300.0
    threshold_bytes: int = 100 << 10
    disk_dir: str | None = None
    disk_max_bytes: int = 500 << 20
    disk_ttl_s: float = 3600.0


@dataclass(slots=True)
class _Entry:
    data: bytes
    stored_at: float


class TieredCache:
    def __init__(
        self,
        config: CacheConfig,
        *,
        on_lookup: Callable[[str, str], None] = lambda tier, result: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._on_lookup = on_lookup
        self._clock = clock
        self._lock = threading.Lock()
        self._memory: OrderedDict[str, _Entry] = OrderedDict()
        self._memory_bytes = 0
        self._disk: dict[str, tuple[int, float]] = {}  # file path → (size, stored_at)
        self._disk_bytes = 0
        if config.disk_dir:
            os.makedirs(config.disk_dir, exist_ok=True)
            self._index_disk(config.disk_dir)

    @property
    def has_memory(self) -> bool:
        return self.config.memory_max_bytes > 0

    @property
    def has_disk(self) -> bool:
        return bool(self.config.disk_dir)

    # -- lookup ----------------------------------------------------------------

    def get(self, key: str) -> Spool | None:
        """The cached content as a spool, or None; counts one lookup per tier asked."""
        if self.has_memory:
            data = self._memory_get(key)
            self._on_lookup(MEMORY, HIT if data is not None else MISS)
            if data is not None:
                return Spool.of_bytes(data)
        if self.has_disk:
            handle = self._disk_open(key)
            self._on_lookup(DISK, HIT if handle is not None else MISS)
            if handle is not None:
                spool = Spool.of_file(handle)
                if spool.size_bytes < self.config.threshold_bytes:
                    self._memory_put(key, spool.read_bytes())
                return spool
        return None

    def _memory_get(self, key: str) -> bytes | None:
        now = self._clock()
        with self._lock:
            entry = self._memory.get(key)
            if entry is None:
                return None
            if now - entry.stored_at >= self.config.memory_ttl_s:
                self._memory_drop(key)
                return None
            self._memory.move_to_end(key)
            return entry.data

    def _disk_open(self, key: str) -> IO[bytes] | None:
        path = self._path(key)
        now = self._clock()
        with self._lock:
            known = self._disk.get(path)
            if known is None:
                return None
            if now - known[1] >= self.config.disk_ttl_s:
                self._disk_drop(path)
                return None
            try:
                return open(path, "rb")  # handed to a Spool, which closes it
            except OSError:
                self._disk_forget(path)
                return None

    # -- store -----------------------------------------------------------------

    def put(self, key: str, spool: Spool) -> None:
        """Keep ``spool``'s content under ``key`` in every tier it fits."""
        if self.has_memory and spool.size_bytes < self.config.threshold_bytes:
            self._memory_put(key, spool.read_bytes())
        if self.has_disk and spool.size_bytes <= self.config.disk_max_bytes:
            try:
                self._disk_put(key, spool)
            except OSError as exc:
                logger.warning("attachment disk cache write failed: %s", exc)

    def _memory_put(self, key: str, data: bytes) -> None:
        if not self.has_memory or len(data) > self.config.memory_max_bytes:
            return
        with self._lock:
            if key in self._memory:
                self._memory_drop(key)
            self._memory[key] = _Entry(data, self._clock())
            self._memory_bytes += len(data)
            while self._memory_bytes > self.config.memory_max_bytes:
                self._memory_drop(next(iter(self._memory)))

    def _memory_drop(self, key: str) -> None:
        entry = self._memory.pop(key)
        self._memory_bytes -= len(entry.data)

    def _disk_put(self, key: str, spool: Spool) -> None:
        path = self._path(key)
        directory = os.path.dirname(path)
        fd, temp = tempfile.mkstemp(dir=directory, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in spool.chunks(CHUNK_BYTES):
                    out.write(chunk)
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        with self._lock:
            self._disk_forget(path)
            self._disk[path] = (spool.size_bytes, self._clock())
            self._disk_bytes += spool.size_bytes
            self._evict_disk()

    def _evict_disk(self) -> None:
        """Drop the oldest entries until the disk tier fits its cap (lock held)."""
        if self._disk_bytes <= self.config.disk_max_bytes:
            return
        for path, _ in sorted(self._disk.items(), key=lambda item: item[1][1]):
            if self._disk_bytes <= self.config.disk_max_bytes:
                break
            self._disk_drop(path)

    def _disk_drop(self, path: str) -> None:
        self._disk_forget(path)
        with contextlib.suppress(OSError):
            os.unlink(path)

    def _disk_forget(self, path: str) -> None:
        known = self._disk.pop(path, None)
        if known is not None:
            self._disk_bytes -= known[0]

    def _index_disk(self, directory: str) -> None:
        """Adopt entries left by a previous run (expired ones are dropped on lookup)."""
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if not name.endswith(SUFFIX):
                continue
            with contextlib.suppress(OSError):
                stat = os.stat(path)
                self._disk[path] = (stat.st_size, stat.st_mtime)
                self._disk_bytes += stat.st_size
        self._evict_disk()

    def _path(self, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return os.path.join(self.config.disk_dir or "", digest + SUFFIX)
