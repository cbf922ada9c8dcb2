"""Large-file records (SPEC §9.7 rule 4, §9.8): uploads, downloads and the cleanup's queue.

A record outlives its message and its tenant: it is the cleanup's only way to
find the stored file (tenant deletion keeps it, SPEC §3.11), so it carries the
file's storage URL and options. Every string of the options is sealed with the
store's secret codec, as the tenant's own ``storage_options`` are.

The large-file ``warning`` event (§5.3) is written here too: it belongs to no
outcome transaction, and only large-file rules write it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import peewee

from proxy.store import models
from proxy.store.db import locked
from proxy.store.records import dumps, loads

LF = models.LargeFile
S = models.InstanceSetting
DAY_S = 86400
CLEANUP_LEASE_KEY = "large_file_cleanup_lease"
OPTIONS_WHERE = "large file storage_options"


class Codec(Protocol):
    """What the store's ``SecretCodec`` offers: seal for storage, open on read."""

    def seal(self, value: str) -> str: ...

    def open(self, value: str, where: str, context: Any = None) -> str: ...


class _Plain:
    def seal(self, value: str) -> str:
        return value

    def open(self, value: str, where: str, context: Any = None) -> str:
        return value


@dataclass(frozen=True, slots=True)
class LargeFileRecord:
    file_id: str
    tenant_id: str
    message_pk: str
    content_md5: str
    filename: str
    content_type: str
    size_bytes: int
    storage_url: str
    storage_options: dict[str, Any] | None
    created_ts: int
    expires_ts: int
    lifespan_after_download_days: int | None = None
    first_download_ts: int | None = None
    download_count: int = 0
    deleted_ts: int | None = None

    def lifespan_end_ts(self) -> int | None:
        """When the after-download lifespan ends, if it applies and has started."""
        if self.first_download_ts is None or self.lifespan_after_download_days is None:
            return None
        return self.first_download_ts + self.lifespan_after_download_days * DAY_S

    def is_expired(self, now: int) -> bool:
        end = self.lifespan_end_ts()
        return now >= self.expires_ts or (end is not None and now >= end)


def _map_strings(value: Any, leaf: Callable[[str], str]) -> Any:
    if isinstance(value, dict):
        return {key: _map_strings(item, leaf) for key, item in value.items()}
    if isinstance(value, list):
        return [_map_strings(item, leaf) for item in value]
    return leaf(value) if isinstance(value, str) else value


class LargeFileStore:
    def __init__(self, db: peewee.Database, codec: Codec | None = None) -> None:
        self._db = db
        self._codec: Codec = codec if codec is not None else _Plain()

    def _record(self, row: LF) -> LargeFileRecord:
        options = loads(row.storage_options)
        if options is not None:
            opener = lambda value: self._codec.open(value, OPTIONS_WHERE)  # noqa: E731
            options = _map_strings(options, opener)
        fields = {name: getattr(row, name) for name in LargeFileRecord.__dataclass_fields__}
        return LargeFileRecord(**(fields | {"storage_options": options}))

    def add(self, record: LargeFileRecord) -> None:
        fields = {name: getattr(record, name) for name in LargeFileRecord.__dataclass_fields__}
        options = record.storage_options
        fields["storage_options"] = (
            None if options is None else dumps(_map_strings(options, self._codec.seal))
        )
        with self._db.atomic():
            LF.insert(**fields).execute()

    def get(self, file_id: str) -> LargeFileRecord | None:
        row = LF.get_or_none(LF.file_id == file_id)
        return None if row is None else self._record(row)

    def find_reusable(
        self, message_pk: str, filename: str, content_md5: str
    ) -> LargeFileRecord | None:
        """An upload already made for this message, attachment and content (a retry)."""
        row = (
            LF.select()
            .where(
                (LF.message_pk == message_pk)
                & (LF.content_md5 == content_md5)
                & (LF.filename == filename)
                & LF.deleted_ts.is_null()
            )
            .order_by(LF.created_ts.desc())
            .first()
        )
        return None if row is None else self._record(row)

    def count_download(self, file_id: str, now: int) -> None:
        """One more download; the first sets ``first_download_ts`` (SPEC §9.8 rule 3)."""
        with self._db.atomic():
            LF.update(
                download_count=LF.download_count + 1,
                first_download_ts=peewee.fn.COALESCE(LF.first_download_ts, now),
            ).where(LF.file_id == file_id).execute()

    def due_for_cleanup(self, now: int, limit: int = 500) -> list[LargeFileRecord]:
        """Live records past their TTL or after-download lifespan, or of a deleted tenant."""
        lifespan_over = (
            LF.first_download_ts.is_null(False)
            & LF.lifespan_after_download_days.is_null(False)
            & (LF.first_download_ts + LF.lifespan_after_download_days * DAY_S <= now)
        )
        orphaned = LF.tenant_id.not_in(models.Tenant.select(models.Tenant.id))
        query = (
            LF.select()
            .where(LF.deleted_ts.is_null() & ((LF.expires_ts <= now) | lifespan_over | orphaned))
            .order_by(LF.expires_ts)
            .limit(limit)
        )
        return [self._record(row) for row in query]

    def mark_deleted(self, file_id: str, now: int) -> bool:
        with self._db.atomic():
            changed = (
                LF.update(deleted_ts=now)
                .where((LF.file_id == file_id) & LF.deleted_ts.is_null())
                .execute()
            )
        return bool(changed)

    def take_cleanup_lease(self, holder: str, now: int, ttl_s: int) -> bool:
        """Whether ``holder`` may run the cleanup now (one instance at a time, SPEC §18.4)."""
        with self._db.atomic():
            S.insert(key=CLEANUP_LEASE_KEY, value="").on_conflict_ignore().execute()
            row = locked(S.select().where(S.key == CLEANUP_LEASE_KEY), self._db).get()
            owner, _, expires = (row.value or "").rpartition(" ")
            if owner != holder and expires.isdigit() and int(expires) > now:
                return False
            S.update(value=f"{holder} {now + ttl_s}").where(S.key == CLEANUP_LEASE_KEY).execute()
        return True

    def record_warning(
        self, pk: str, tenant_id: str, text: str, metadata: dict[str, Any], now: int
    ) -> None:
        """A ``warning`` event (not reportable): a large attachment sent as is (``warn``)."""
        with self._db.atomic():
            models.MessageEvent.insert(
                message_pk=pk,
                tenant_id=tenant_id,
                event_type="warning",
                event_ts=now,
                description=text,
                metadata=dumps(metadata),
                reportable=False,
            ).execute()
