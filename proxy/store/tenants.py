"""Tenant queries: create-or-merge, partial update, read, delete, API keys and sync state.

Field values arrive already validated (``proxy.api.schemas``); this module only
decides what changes in the database, and in one transaction each. Secrets sent
back as the mask (``client_auth`` secrets, every string of
``large_file_config.storage_options``) keep the stored value. The same secrets
are sealed on write and opened on read by the store's ``SecretCodec`` (SPEC §16).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import peewee

from proxy.store import models
from proxy.store.prepared import Prepared, Slot
from proxy.store.records import (
    MASK,
    Leaf,
    SecretCodec,
    TenantRecord,
    dumps,
    loads,
    map_auth,
    map_large_file_config,
)

JSON_FIELDS = ("client_auth", "rate_limits", "large_file_config")
# Fields a client may set through POST/PUT /tenant (and [[tenants]] in the config file).
TENANT_FIELDS = (
    "name",
    "client_base_url",
    "client_sync_path",
    "client_attachment_path",
    "client_auth",
    "rate_limits",
    "large_file_config",
    "active",
)
DEFAULTS: dict[str, Any] = dict.fromkeys(TENANT_FIELDS) | {"active": True}
SECRET_AUTH_KEYS = ("token", "password")
Normalizer = Callable[[str, Any], Any]
# The JSON fields holding secrets, and how to reach them (proxy.store.records).
SECRET_MAPS: dict[str, Callable[[Any, Leaf], Any]] = {
    "client_auth": map_auth,
    "large_file_config": map_large_file_config,
}


def _opened(codec: SecretCodec, row: models.Tenant | SimpleNamespace, name: str) -> Any:
    """A JSON field of the row, decoded, with its secrets decrypted (or unusable)."""
    value = loads(getattr(row, name))
    if name not in SECRET_MAPS:
        return value
    where = f"{name} secret of tenant {row.id}"
    return SECRET_MAPS[name](value, codec.opener(where, {"tenant_id": row.id}))


def _to_record(
    codec: SecretCodec, row: models.Tenant | SimpleNamespace, key: models.TenantApiKey | None
) -> TenantRecord:
    return TenantRecord(
        id=row.id,
        name=row.name,
        client_base_url=row.client_base_url,
        client_sync_path=row.client_sync_path,
        client_attachment_path=row.client_attachment_path,
        client_auth=_opened(codec, row, "client_auth"),
        rate_limits=loads(row.rate_limits),
        large_file_config=_opened(codec, row, "large_file_config"),
        active=bool(row.active),
        suspended_batches=tuple(loads(row.suspended_batches) or ()),
        dnd_until=row.dnd_until,
        last_sync_ts=row.last_sync_ts,
        last_call_ts=row.last_call_ts,
        next_sync_ts=row.next_sync_ts,
        consecutive_failures=row.consecutive_failures,
        last_error=row.last_error,
        last_error_ts=row.last_error_ts,
        created_ts=row.created_ts,
        updated_ts=row.updated_ts,
        api_key_set=key is not None,
        api_key_expires_at=key.expires_at if key is not None else None,
    )


def mask_strings(value: Any) -> Any:
    """Every string inside ``value`` (nested too) replaced by the mask: storage options."""
    if isinstance(value, dict):
        return {k: mask_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_strings(v) for v in value]
    return MASK if isinstance(value, str) else value


def restore_masked(new: Any, old: Any) -> Any:
    """``new`` with every mask that stands where ``old`` has a value put back to that value."""
    if new == MASK and old is not None:
        return old
    if isinstance(new, dict) and isinstance(old, dict):
        return {k: restore_masked(v, old.get(k)) for k, v in new.items()}
    return new


def _keep_masked_secrets(name: str, new: Any, old: Any) -> Any:
    """A secret sent back as the mask keeps the stored value (SPEC §3.8 rule 1, §9.7)."""
    if not isinstance(new, dict) or not isinstance(old, dict):
        return new
    merged = dict(new)
    if name == "client_auth":
        for key in SECRET_AUTH_KEYS:
            if merged.get(key) == MASK and key in old:
                merged[key] = old[key]
    elif name == "large_file_config" and isinstance(merged.get("storage_options"), dict):
        merged["storage_options"] = restore_masked(
            merged["storage_options"], old.get("storage_options")
        )
    return merged


def _current(codec: SecretCodec, row: models.Tenant, name: str) -> Any:
    return _opened(codec, row, name) if name in JSON_FIELDS else getattr(row, name)


def _as_is(name: str, value: Any) -> Any:
    return value


def _changes(
    codec: SecretCodec,
    row: models.Tenant,
    fields: Mapping[str, Any],
    normalize: Normalizer = _as_is,
) -> dict[str, Any]:
    """The fields whose value would change, mapped to their new (decoded) value.

    ``None`` means the field's default; masked secrets keep the stored value.
    Values are compared after ``normalize(name, value)``.
    """
    changes: dict[str, Any] = {}
    for name, value in fields.items():
        old = _current(codec, row, name)
        new = DEFAULTS[name] if value is None else value
        if name in JSON_FIELDS:
            new = _keep_masked_secrets(name, new, old)
        if normalize(name, new) != normalize(name, old):
            changes[name] = new
    return changes


class AdminFieldChange(Exception):
    """An update tried to change a field only the admin token may change (SPEC §2.3 rule 4)."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


_COLUMNS = tuple(field.name for field in models.Tenant._meta.sorted_fields)
_TENANT = Prepared(  # read per message: compiled once, its row read as raw values
    lambda tenant_id: models.Tenant.select(*models.Tenant._meta.sorted_fields).where(
        models.Tenant.id == tenant_id
    ),
    Slot.text(),
)


_TENANT_EXISTS = Prepared(  # per message of every add-messages: compiled once
    lambda tenant_id: models.Tenant.select(models.Tenant.id).where(models.Tenant.id == tenant_id),
    Slot.text(),
)
_SYNC_SUCCESS = Prepared(  # after every successful sync call: compiled once
    lambda synced, called, dnd, next_ts, tenant_id: models.Tenant.update(
        last_sync_ts=synced,
        last_call_ts=called,
        dnd_until=dnd,
        next_sync_ts=next_ts,
        consecutive_failures=0,
        last_error=None,
        last_error_ts=None,
    ).where(models.Tenant.id == tenant_id),
    Slot.number(),
    Slot.number(),
    Slot.number(),
    Slot.number(),
    Slot.text(),
)


class TenantStore:
    def __init__(self, db: peewee.Database, codec: SecretCodec | None = None) -> None:
        self._db = db
        self._codec = codec if codec is not None else SecretCodec()

    def get(self, tenant_id: str, *, with_key: bool = True) -> TenantRecord | None:
        """One tenant; ``with_key=False`` skips the API-key lookup (the send and sync paths)."""
        found = _TENANT.values(self._db, tenant_id)
        if not found:
            return None
        # Every column is text or a number, and _to_record converts the rest (JSON,
        # the boolean): a plain namespace is enough, and cheaper than a model instance.
        row = SimpleNamespace(**dict(zip(_COLUMNS, found[0], strict=True)))
        key = None
        if with_key:
            key = models.TenantApiKey.get_or_none(models.TenantApiKey.tenant_id == tenant_id)
        return _to_record(self._codec, row, key)

    def exists(self, tenant_id: str) -> bool:
        return bool(_TENANT_EXISTS.values(self._db, tenant_id))

    def list(self, *, active_only: bool = False) -> list[TenantRecord]:
        query = models.Tenant.select().order_by(models.Tenant.id)
        if active_only:
            query = query.where(models.Tenant.active == True)  # noqa: E712 (peewee expression)
        keys = {k.tenant_id: k for k in models.TenantApiKey.select()}
        return [_to_record(self._codec, row, keys.get(row.id)) for row in query]

    def upsert(self, tenant_id: str, fields: Mapping[str, Any], now: int) -> bool:
        """Create the tenant, or merge ``fields`` into it; ``None`` resets a field to its default.

        Returns True when the tenant was created. An update that changes no
        value leaves ``updated_ts`` alone, so re-applying a config file is a no-op.
        """
        unknown = set(fields) - set(TENANT_FIELDS)
        if unknown:
            raise ValueError(f"unknown tenant fields: {sorted(unknown)}")
        with self._db.atomic():
            row = models.Tenant.get_or_none(models.Tenant.id == tenant_id)
            if row is None:
                values = DEFAULTS | {k: v for k, v in fields.items() if v is not None}
                models.Tenant.insert(
                    id=tenant_id, created_ts=now, updated_ts=now, **self._encode(values)
                ).execute()
                return True
            changes = _changes(self._codec, row, fields)
            self._write(row, changes, now)
            return False

    def update(
        self,
        tenant_id: str,
        fields: Mapping[str, Any],
        now: int,
        *,
        admin_only: Collection[str] = (),
        normalize: Normalizer = _as_is,
    ) -> set[str] | None:
        """Merge ``fields`` into an existing tenant; None when it does not exist.

        Returns the names of the fields that changed. If a field named in
        ``admin_only`` would change, nothing is written and ``AdminFieldChange``
        is raised: checked inside the transaction, so sending back the value
        just read can never undo an admin's concurrent change. ``normalize``
        makes equivalent forms equal (e.g. a stored value without a later default).
        """
        unknown = set(fields) - set(TENANT_FIELDS)
        if unknown:
            raise ValueError(f"unknown tenant fields: {sorted(unknown)}")
        with self._db.atomic():
            row = models.Tenant.get_or_none(models.Tenant.id == tenant_id)
            if row is None:
                return None
            changes = _changes(self._codec, row, fields, normalize)
            for name in TENANT_FIELDS:
                if name in changes and name in admin_only:
                    raise AdminFieldChange(name)
            self._write(row, changes, now)
            return set(changes)

    def delete(self, tenant_id: str) -> list[str] | None:
        """Delete the tenant and everything it owns, in one transaction.

        Returns the ids of the accounts that went with it, or None when the
        tenant did not exist.
        """
        with self._db.atomic():
            deleted = models.Tenant.delete().where(models.Tenant.id == tenant_id).execute()
            if not deleted:
                return None
            accounts = models.Account.select(models.Account.id).where(
                models.Account.tenant_id == tenant_id
            )
            account_ids = sorted(row.id for row in accounts)
            models.TenantApiKey.delete().where(models.TenantApiKey.tenant_id == tenant_id).execute()
            models.Account.delete().where(models.Account.tenant_id == tenant_id).execute()
            models.MessageEvent.delete().where(models.MessageEvent.tenant_id == tenant_id).execute()
            models.Message.delete().where(models.Message.tenant_id == tenant_id).execute()
            models.SyncLease.delete().where(models.SyncLease.tenant_id == tenant_id).execute()
            models.RateCounter.delete().where(_counter_of(tenant_id)).execute()
            return account_ids

    # -- secrets at rest (SPEC §16) ---------------------------------------------

    def reseal_secrets(self) -> int:
        """Re-encrypt every stored secret not yet under the current key; the rows changed.

        Start-up rotation (SPEC §16 rule 5); a row is rewritten only if its stored
        text is still what was read, so a concurrent write is never undone.
        """
        query = models.Tenant.select().where(
            models.Tenant.client_auth.is_null(False)
            | models.Tenant.large_file_config.is_null(False)
        )
        return sum(self._reseal_row(row) for row in list(query))

    def _reseal_row(self, row: models.Tenant, skip: Collection[str] = ()) -> bool:
        changes: dict[str, str] = {}
        for name, mapper in SECRET_MAPS.items():
            stored = getattr(row, name)
            if name in skip or stored is None:
                continue
            value = loads(stored)
            resealed = mapper(value, self._codec.reseal)
            if resealed != value:
                changes[name] = dumps(resealed)
        if not changes:
            return False
        unchanged = models.Tenant.id == row.id
        for name in changes:
            unchanged &= getattr(models.Tenant, name) == getattr(row, name)
        return bool(models.Tenant.update(**changes).where(unchanged).execute())

    def _encode(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Column values: JSON fields dumped, their secrets sealed."""
        encoded = {}
        for name, value in values.items():
            if name not in JSON_FIELDS or value is None:
                encoded[name] = value
            elif name in SECRET_MAPS:
                encoded[name] = dumps(SECRET_MAPS[name](value, self._codec.seal))
            else:
                encoded[name] = dumps(value)
        return encoded

    def _write(self, row: models.Tenant, changes: Mapping[str, Any], now: int) -> None:
        """Store changed fields; no change leaves ``updated_ts`` alone.

        Secrets of the fields not changed are re-encrypted if they are still in
        plaintext or under a previous key (migrated on the next write, §16 rule 4).
        """
        if changes:
            models.Tenant.update(updated_ts=now, **self._encode(changes)).where(
                models.Tenant.id == row.id
            ).execute()
        self._reseal_row(row, skip=changes)

    # -- suspension (SPEC §8) ---------------------------------------------------

    def set_suspended_batches(self, tenant_id: str, batches: Sequence[str], now: int) -> None:
        """Store the suspension list: empty, ``["*"]``, or sorted batch codes."""
        models.Tenant.update(suspended_batches=dumps(sorted(set(batches))), updated_ts=now).where(
            models.Tenant.id == tenant_id
        ).execute()

    # -- API keys --------------------------------------------------------------

    def set_api_key(self, tenant_id: str, key_hash: str, expires_at: int | None, now: int) -> bool:
        """Store the digest of a new key; the previous key stops working in the same transaction.

        Returns False, storing nothing, when the tenant does not exist.
        """
        with self._db.atomic():
            if not self.exists(tenant_id):
                return False
            models.TenantApiKey.delete().where(models.TenantApiKey.tenant_id == tenant_id).execute()
            models.TenantApiKey.insert(
                tenant_id=tenant_id, key_hash=key_hash, expires_at=expires_at, created_ts=now
            ).execute()
            return True

    def has_api_key_hash(self, tenant_id: str, key_hash: str) -> bool:
        return (
            models.TenantApiKey.select()
            .where(
                (models.TenantApiKey.tenant_id == tenant_id)
                & (models.TenantApiKey.key_hash == key_hash)
            )
            .exists()
        )

    def revoke_api_key(self, tenant_id: str) -> bool:
        """Delete the tenant's key (it then has none); False when the tenant does not exist."""
        with self._db.atomic():
            if not self.exists(tenant_id):
                return False
            models.TenantApiKey.delete().where(models.TenantApiKey.tenant_id == tenant_id).execute()
            return True

    def tenant_for_key_hash(self, key_hash: str, now: int) -> tuple[str, str] | None:
        """Return (tenant_id, stored digest) for an unexpired key, else None."""
        row = models.TenantApiKey.get_or_none(models.TenantApiKey.key_hash == key_hash)
        if row is None or (row.expires_at is not None and row.expires_at <= now):
            return None
        return row.tenant_id, row.key_hash

    # -- sync state (SPEC §10) -------------------------------------------------

    def record_sync_success(
        self, tenant_id: str, now: int, *, dnd_until: int | None, next_sync_ts: int
    ) -> None:
        _SYNC_SUCCESS.execute(self._db, now, now, dnd_until, next_sync_ts, tenant_id)

    def clear_dnd_and_backoff(self, tenant_id: str) -> None:
        models.Tenant.update(dnd_until=None, consecutive_failures=0, next_sync_ts=None).where(
            models.Tenant.id == tenant_id
        ).execute()

    def record_sync_failure(
        self, tenant_id: str, now: int, *, error: str, next_sync_ts: int
    ) -> int:
        """Count a failed call and return the number of consecutive failures."""
        with self._db.atomic():
            models.Tenant.update(
                last_call_ts=now,
                consecutive_failures=models.Tenant.consecutive_failures + 1,
                last_error=error,
                last_error_ts=now,
                next_sync_ts=next_sync_ts,
            ).where(models.Tenant.id == tenant_id).execute()
            row = models.Tenant.get_or_none(models.Tenant.id == tenant_id)
            return row.consecutive_failures if row is not None else 0


def _counter_of(tenant_id: str) -> peewee.Expression:
    """Rate counters of the tenant and its accounts (scopes of ``proxy.store.ratelimits``)."""
    scope = models.RateCounter.scope
    prefix = f"account:{tenant_id}:"
    return (scope == f"tenant:{tenant_id}") | (peewee.fn.SUBSTR(scope, 1, len(prefix)) == prefix)
