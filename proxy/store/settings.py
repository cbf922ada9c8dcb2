"""Instance settings: a small key/value table shared by every instance on the database.

Values are text: strings as they are, booleans as ``"true"``/``"false"``,
integers in decimal (``typed``/``write_typed`` convert for the fields they know).
Other modules read single keys directly (``get("bounce_return_path")``).

The admin token set through ``PUT /instance`` is stored only as its SHA-256 digest
under ``API_TOKEN_SHA256``. Authentication reads it on every request, so
``cached`` serves it from memory for a few seconds; a write through this object
drops the cached value at once, and other instances see a change within
``CACHE_TTL_S``.

Secret values (``SECRET_SETTINGS``: the bounce IMAP password) are sealed on every
write path and opened on every read path by the store's ``SecretCodec`` (SPEC §16).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import peewee

from proxy.store import models
from proxy.store.records import SecretCodec

S = models.InstanceSetting

API_TOKEN_SHA256 = "api_token_sha256"  # noqa: S105 (a setting name, not a secret)
BOUNCE_SEEDED = "bounce_seeded"  # marker: the [bounce]/GMP_BOUNCE_* seed was applied once
CACHE_TTL_S = 5.0

# The typed instance fields (SPEC §3.12, §11): name → Python type of the value.
INSTANCE_FIELDS: dict[str, type] = {
    "name": str,
    "bounce_enabled": bool,
    "bounce_imap_host": str,
    "bounce_imap_port": int,
    "bounce_imap_user": str,
    "bounce_imap_password": str,
    "bounce_imap_folder": str,
    "bounce_imap_ssl": bool,
    "bounce_poll_interval": int,
    "bounce_return_path": str,
    "bounce_processed_folder": str,
    "bounce_last_uid": int,
    "bounce_uidvalidity": int,
}
SECRET_SETTINGS = frozenset({"bounce_imap_password"})
# Seeded once from ``[bounce]``/``GMP_BOUNCE_*`` (SPEC §15.5 rule 5); the cursors are the poller's.
BOUNCE_SETTINGS = tuple(
    name
    for name in INSTANCE_FIELDS
    if name.startswith("bounce_") and name not in {"bounce_last_uid", "bounce_uidvalidity"}
)


def encode(value: Any) -> str | None:
    """The stored text of a typed value (None stays None)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def decode(kind: type, text: str | None) -> Any:
    """The typed value of stored text; unreadable text reads as None (never raises)."""
    if text is None:
        return None
    if kind is bool:
        return text.strip().lower() in {"true", "1", "yes", "on"}
    if kind is int:
        try:
            return int(text)
        except ValueError:
            return None
    return text


class InstanceSettingsStore:
    def __init__(self, db: peewee.Database, codec: SecretCodec | None = None) -> None:
        self._db = db
        self._codec = codec if codec is not None else SecretCodec()
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._generation = 0  # bumped by every write: a read that raced one is not cached

    def _sealed(self, key: str, value: str | None) -> str | None:
        return self._codec.seal(value) if key in SECRET_SETTINGS and value is not None else value

    def _opened(self, key: str, value: str | None) -> str | None:
        if key not in SECRET_SETTINGS or value is None:
            return value
        return self._codec.open(value, f"instance setting {key}")

    def get(self, key: str) -> str | None:
        row = S.get_or_none(S.key == key)
        return None if row is None else self._opened(key, row.value)

    def get_many(self, keys: Iterable[str]) -> dict[str, str | None]:
        """The stored values of ``keys``; missing keys are absent from the result."""
        return {
            row.key: self._opened(row.key, row.value)
            for row in S.select().where(S.key.in_(list(keys)))
        }

    def set(self, key: str, value: str | None) -> None:
        value = self._sealed(key, value)
        S.insert(key=key, value=value).on_conflict(
            conflict_target=[S.key], update={S.value: value}
        ).execute()
        self._forget(key)

    def set_many(self, values: Mapping[str, str | None]) -> None:
        """Store several values in one transaction; a None value deletes its key."""
        with self._db.atomic():
            for key, value in values.items():
                if value is None:
                    S.delete().where(S.key == key).execute()
                else:
                    sealed = self._sealed(key, value)
                    S.insert(key=key, value=sealed).on_conflict(
                        conflict_target=[S.key], update={S.value: sealed}
                    ).execute()
        for key in values:
            self._forget(key)

    def set_default(self, key: str, value: str) -> str:
        """Store ``value`` unless a value exists; return the one in force (idempotent seeding)."""
        S.insert(key=key, value=self._sealed(key, value)).on_conflict_ignore().execute()
        self._forget(key)
        return self.get(key) or value

    def seed_once(self, marker: str, values: Mapping[str, str | None]) -> None:
        """Apply ``values`` (as defaults) the first time only: later changes are the operator's.

        ``marker`` records that the seed ran, so a value an operator cleared is not
        seeded again at the next start. Idempotent across racing instances.
        """
        if self.get(marker) is not None:
            return
        with self._db.atomic():
            for key, value in values.items():
                if value is not None:
                    S.insert(key=key, value=self._sealed(key, value)).on_conflict_ignore().execute()
            S.insert(key=marker, value="true").on_conflict_ignore().execute()

    def seed_bounce(self, source: object) -> None:
        """Seed the bounce settings from ``source``'s same-named attributes (``Settings``), once."""
        self.seed_once(
            BOUNCE_SEEDED, {name: encode(getattr(source, name, None)) for name in BOUNCE_SETTINGS}
        )

    def typed(self, names: Iterable[str]) -> dict[str, Any]:
        """The ``INSTANCE_FIELDS`` named, decoded; unset ones are None."""
        wanted = list(names)
        stored = self.get_many(wanted)
        return {name: decode(INSTANCE_FIELDS[name], stored.get(name)) for name in wanted}

    def write_typed(self, values: Mapping[str, Any]) -> None:
        """Store typed values in one transaction (None deletes the key)."""
        self.set_many({name: encode(value) for name, value in values.items()})

    def reseal_secrets(self) -> int:
        """Re-encrypt stored secrets not yet under the current key (SPEC §16 rule 5)."""
        changed = 0
        for row in list(S.select().where(S.key.in_(sorted(SECRET_SETTINGS)))):
            if row.value is None or not self._codec.needs_reseal(row.value):
                continue
            resealed = self._codec.reseal(row.value)
            if resealed != row.value:
                changed += (
                    S.update(value=resealed)
                    .where((S.key == row.key) & (S.value == row.value))
                    .execute()
                )
                self._forget(row.key)
        return changed

    def cached(self, key: str, max_age_s: float = CACHE_TTL_S) -> str | None:
        """``get(key)``, served from memory while younger than ``max_age_s``."""
        now = time.monotonic()
        with self._lock:
            hit, generation = self._cache.get(key), self._generation
        if hit is not None and now - hit[0] < max_age_s:
            return hit[1]
        value = self.get(key)
        with self._lock:
            if generation == self._generation:
                self._cache[key] = (now, value)
        return value

    def _forget(self, key: str) -> None:
        with self._lock:
            self._cache.pop(key, None)
            self._generation += 1
