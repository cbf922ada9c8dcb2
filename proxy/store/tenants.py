"""Tenant queries: create-or-merge, read, delete, API keys and sync state.

Field values arrive already validated (``proxy.api.schemas``); this module only
decides what changes in the database, and in one transaction each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import peewee

from proxy.store import models
from proxy.store.records import MASK, TenantRecord, dumps, loads

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


def _to_record(row: models.Tenant, key: models.TenantApiKey | None) -> TenantRecord:
    return TenantRecord(
        id=row.id,
        name=row.name,
        client_base_url=row.client_base_url,
        client_sync_path=row.client_sync_path,
        client_attachment_path=row.client_attachment_path,
        client_auth=loads(row.client_auth),
        rate_limits=loads(row.rate_limits),
        large_file_config=loads(row.large_file_config),
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


def _keep_masked_secrets(new: Any, old: Any) -> Any:
    """A secret sent back as the mask keeps the stored value (SPEC §3.11 rule 2)."""
    if not isinstance(new, dict) or not isinstance(old, dict):
        return new
    merged = dict(new)
    for key in SECRET_AUTH_KEYS:
        if merged.get(key) == MASK and key in old:
            merged[key] = old[key]
    return merged


class TenantStore:
    def __init__(self, db: peewee.Database) -> None:
        self._db = db

    def get(self, tenant_id: str) -> TenantRecord | None:
        row = models.Tenant.get_or_none(models.Tenant.id == tenant_id)
        if row is None:
            return None
        return _to_record(
            row, models.TenantApiKey.get_or_none(models.TenantApiKey.tenant_id == tenant_id)
        )

    def exists(self, tenant_id: str) -> bool:
        return models.Tenant.select().where(models.Tenant.id == tenant_id).exists()

    def list(self, *, active_only: bool = False) -> list[TenantRecord]:
        query = models.Tenant.select().order_by(models.Tenant.id)
        if active_only:
            query = query.where(models.Tenant.active == True)  # noqa: E712 (peewee expression)
        keys = {k.tenant_id: k for k in models.TenantApiKey.select()}
        return [_to_record(row, keys.get(row.id)) for row in query]

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
                    id=tenant_id, created_ts=now, updated_ts=now, **_encode(values)
                ).execute()
                return True
            changes: dict[str, Any] = {}
            for name, value in fields.items():
                new = DEFAULTS[name] if value is None else value
                if name == "client_auth":
                    new = _keep_masked_secrets(new, loads(row.client_auth))
                encoded = _encode({name: new})[name]
                if encoded != getattr(row, name):
                    changes[name] = encoded
            if changes:
                changes["updated_ts"] = now
                models.Tenant.update(**changes).where(models.Tenant.id == tenant_id).execute()
            return False

    def delete(self, tenant_id: str) -> bool:
        """Delete the tenant and everything it owns, in one transaction."""
        with self._db.atomic():
            deleted = models.Tenant.delete().where(models.Tenant.id == tenant_id).execute()
            if not deleted:
                return False
            models.TenantApiKey.delete().where(models.TenantApiKey.tenant_id == tenant_id).execute()
            models.Account.delete().where(models.Account.tenant_id == tenant_id).execute()
            models.MessageEvent.delete().where(models.MessageEvent.tenant_id == tenant_id).execute()
            models.Message.delete().where(models.Message.tenant_id == tenant_id).execute()
            return True

    # -- suspension (SPEC §8) ---------------------------------------------------

    def set_suspended_batches(self, tenant_id: str, batches: Sequence[str], now: int) -> None:
        """Store the suspension list: empty, ``["*"]``, or sorted batch codes."""
        models.Tenant.update(suspended_batches=dumps(sorted(set(batches))), updated_ts=now).where(
            models.Tenant.id == tenant_id
        ).execute()

    # -- API keys --------------------------------------------------------------

    def set_api_key(self, tenant_id: str, key_hash: str, expires_at: int | None, now: int) -> None:
        """Store the digest of a new key; the previous key stops working in the same transaction."""
        with self._db.atomic():
            models.TenantApiKey.delete().where(models.TenantApiKey.tenant_id == tenant_id).execute()
            models.TenantApiKey.insert(
                tenant_id=tenant_id, key_hash=key_hash, expires_at=expires_at, created_ts=now
            ).execute()

    def has_api_key_hash(self, tenant_id: str, key_hash: str) -> bool:
        return (
            models.TenantApiKey.select()
            .where(
                (models.TenantApiKey.tenant_id == tenant_id)
                & (models.TenantApiKey.key_hash == key_hash)
            )
            .exists()
        )

    def revoke_api_key(self, tenant_id: str) -> None:
        models.TenantApiKey.delete().where(models.TenantApiKey.tenant_id == tenant_id).execute()

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
        models.Tenant.update(
            last_sync_ts=now,
            last_call_ts=now,
            dnd_until=dnd_until,
            next_sync_ts=next_sync_ts,
            consecutive_failures=0,
            last_error=None,
            last_error_ts=None,
        ).where(models.Tenant.id == tenant_id).execute()

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


def _encode(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (dumps(v) if k in JSON_FIELDS and v is not None else v) for k, v in values.items()}
