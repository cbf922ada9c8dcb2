"""Instance settings: a small key/value table shared by every instance on the database."""

from __future__ import annotations

import peewee

from proxy.store import models

S = models.InstanceSetting


class InstanceSettingsStore:
    def __init__(self, db: peewee.Database) -> None:
        self._db = db

    def get(self, key: str) -> str | None:
        row = S.get_or_none(S.key == key)
        return None if row is None else row.value

    def set(self, key: str, value: str | None) -> None:
        S.insert(key=key, value=value).on_conflict(
            conflict_target=[S.key], update={S.value: value}
        ).execute()

    def set_default(self, key: str, value: str) -> str:
        """Store ``value`` unless a value exists; return the one in force (idempotent seeding)."""
        S.insert(key=key, value=value).on_conflict_ignore().execute()
        return self.get(key) or value
