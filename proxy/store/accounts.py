"""SMTP account queries. An account is identified by (tenant_id, id) everywhere.

``password`` and ``imap_password`` are sealed on write and opened on read by the
store's ``SecretCodec`` (SPEC §16): records carry plaintext, or an
``UnusableSecret`` when no configured key opens the stored value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import peewee

from proxy.store import models
from proxy.store.prepared import Prepared, Slot
from proxy.store.records import MASK, AccountRecord, SecretCodec, dumps

ACCOUNT_DEFAULTS: dict[str, Any] = {
    "user": None,
    "password": None,
    "use_tls": None,
    "use_ssl": None,
    "tls_verify": True,
    "ttl": 300,
    "limit_per_minute": None,
    "limit_per_hour": None,
    "limit_per_day": None,
    "limit_behavior": "defer",
    "batch_size": None,
    "is_pec_account": False,
    "imap_host": None,
    "imap_port": None,
    "imap_user": None,
    "imap_password": None,
    "imap_ssl": None,
    "imap_folder": None,
}
ACCOUNT_FIELDS = ("host", "port", *ACCOUNT_DEFAULTS)
SECRET_FIELDS = ("password", "imap_password")
ACCOUNT_DELETED = "account deleted"


def rate_scope(tenant_id: str, account_id: str) -> str:
    """The ``RateCounter.scope`` of an account's windows."""
    return f"account:{tenant_id}:{account_id}"


def _opened(codec: SecretCodec, row: models.Account) -> dict[str, Any]:
    """The row's field values with its secrets decrypted (or unusable)."""
    values = {name: getattr(row, name) for name in ACCOUNT_FIELDS}
    context = {"tenant_id": row.tenant_id, "account_id": row.id}
    for name in SECRET_FIELDS:
        if values[name] is not None:
            where = f"{name} of account {row.tenant_id}/{row.id}"
            values[name] = codec.open(values[name], where, context)
    return values


def _sealed(codec: SecretCodec, values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: (codec.seal(value) if name in SECRET_FIELDS and value is not None else value)
        for name, value in values.items()
    }


def _to_record(codec: SecretCodec, row: models.Account) -> AccountRecord:
    return AccountRecord(
        tenant_id=row.tenant_id,
        id=row.id,
        created_ts=row.created_ts,
        updated_ts=row.updated_ts,
        **_opened(codec, row),
    )


def _where(tenant_id: str, account_id: str) -> peewee.Expression:
    return (models.Account.tenant_id == tenant_id) & (models.Account.id == account_id)


_EXISTS = Prepared(  # per message of every add-messages: compiled once
    lambda tenant_id, account_id: models.Account.select(models.Account.id).where(
        _where(tenant_id, account_id)
    ),
    Slot.text(),
    Slot.text(),
)


class AccountStore:
    def __init__(self, db: peewee.Database, codec: SecretCodec | None = None) -> None:
        self._db = db
        self._codec = codec if codec is not None else SecretCodec()

    def get(self, tenant_id: str, account_id: str) -> AccountRecord | None:
        row = models.Account.get_or_none(_where(tenant_id, account_id))
        return None if row is None else _to_record(self._codec, row)

    def exists(self, tenant_id: str, account_id: str) -> bool:
        return bool(_EXISTS.values(self._db, tenant_id, account_id))

    def list(self, tenant_id: str | None = None) -> list[AccountRecord]:
        """Ordered by id (SPEC §3.8); accounts of several tenants sharing an id, by tenant."""
        query = models.Account.select().order_by(models.Account.id, models.Account.tenant_id)
        if tenant_id is not None:
            query = query.where(models.Account.tenant_id == tenant_id)
        return [_to_record(self._codec, row) for row in query]

    def tenants_with_account(self, account_id: str) -> list[str]:
        query = models.Account.select(models.Account.tenant_id).where(
            models.Account.id == account_id
        )
        return sorted(row.tenant_id for row in query)

    def upsert(self, tenant_id: str, account_id: str, fields: Mapping[str, Any], now: int) -> bool:
        """Create or fully replace the account; omitted fields return to defaults.

        A secret equal to the mask keeps the stored value. Returns True when created.
        An identical replacement changes nothing (bootstrap re-runs are no-ops) except
        that stored secrets not yet under the current key are re-encrypted.
        """
        unknown = set(fields) - set(ACCOUNT_FIELDS)
        if unknown:
            raise ValueError(f"unknown account fields: {sorted(unknown)}")
        values = ACCOUNT_DEFAULTS | dict(fields)
        with self._db.atomic():
            row = models.Account.get_or_none(_where(tenant_id, account_id))
            if row is None:
                for name in SECRET_FIELDS:
                    if values[name] == MASK:
                        values[name] = None
                models.Account.insert(
                    tenant_id=tenant_id,
                    id=account_id,
                    created_ts=now,
                    updated_ts=now,
                    **_sealed(self._codec, values),
                ).execute()
                return True
            current = _opened(self._codec, row)
            for name in SECRET_FIELDS:
                if values[name] == MASK:
                    values[name] = current[name]
            if any(current[name] != value for name, value in values.items()):
                models.Account.update(updated_ts=now, **_sealed(self._codec, values)).where(
                    _where(tenant_id, account_id)
                ).execute()
            else:
                self._reseal_row(row)
            return False

    def reseal_secrets(self) -> int:
        """Re-encrypt every stored secret not yet under the current key; the rows changed.

        Start-up rotation (SPEC §16 rule 5). Each row is rewritten only if its stored
        text is still what was read, so a concurrent write is never undone.
        """
        query = models.Account.select().where(
            models.Account.password.is_null(False) | models.Account.imap_password.is_null(False)
        )
        return sum(self._reseal_row(row) for row in list(query))

    def _reseal_row(self, row: models.Account) -> bool:
        changes = {
            name: self._codec.reseal(getattr(row, name))
            for name in SECRET_FIELDS
            if getattr(row, name) is not None and self._codec.needs_reseal(getattr(row, name))
        }
        changes = {name: value for name, value in changes.items() if value != getattr(row, name)}
        if not changes:
            return False
        unchanged = _where(row.tenant_id, row.id)
        for name in changes:
            unchanged &= getattr(models.Account, name) == getattr(row, name)
        return bool(models.Account.update(**changes).where(unchanged).execute())

    def delete(self, tenant_id: str, account_id: str, now: int) -> int | None:
        """Delete the account; its unsent messages end as errors (reported like any error).

        Its rate-limit counters go too (SPEC §3.8). A message being sent at that
        moment becomes an error as well; its outcome is then discarded
        (``record_outcome`` only writes over a row still ``sending``). Returns
        the number of messages failed, or None when the account did not exist.
        """
        with self._db.atomic():
            if not models.Account.delete().where(_where(tenant_id, account_id)).execute():
                return None
            models.RateCounter.delete().where(
                models.RateCounter.scope == rate_scope(tenant_id, account_id)
            ).execute()
            open_rows = list(
                models.Message.select(models.Message.pk).where(
                    (models.Message.tenant_id == tenant_id)
                    & (models.Message.account_id == account_id)
                    & (models.Message.status.not_in(models.TERMINAL))
                )
            )
            pks = [row.pk for row in open_rows]
            if not pks:
                return 0
            models.Message.update(
                status=models.ERROR,
                error=ACCOUNT_DELETED,
                error_ts=now,
                smtp_ts=now,
                deferred_ts=None,
                claimed_by=None,
                lease_expires_ts=None,
                updated_ts=now,
                reported_ts=None,  # the error event is not acknowledged yet (§5.1)
            ).where(models.Message.pk.in_(pks)).execute()
            models.MessageEvent.insert_many(
                [
                    {
                        "message_pk": pk,
                        "tenant_id": tenant_id,
                        "event_type": "error",
                        "event_ts": now,
                        "description": ACCOUNT_DELETED,
                        "metadata": dumps({}),
                        "reportable": True,
                    }
                    for pk in pks
                ]
            ).execute()
            return len(pks)
