"""The durable store: one ``Store`` per process, with one query object per aggregate.

``open_store(url)`` opens the database (taking the SQLite instance lock),
applies migrations and attaches ``tenants``, ``accounts``, ``messages``,
``events`` and ``settings``. ``cipher`` (``proxy.crypto``) seals the stored
secrets; without one they are stored in plaintext (SPEC §16 rule 6).
"""

from __future__ import annotations

from proxy.crypto import SecretCipher
from proxy.store.accounts import AccountStore
from proxy.store.bounces import BounceStore
from proxy.store.db import Store, StoreError, StoreLocked
from proxy.store.events import EventStore
from proxy.store.instances import InstanceStore
from proxy.store.large_files import LargeFileStore
from proxy.store.messages import MessageStore
from proxy.store.ratelimits import RateLimitStore
from proxy.store.records import SecretCodec
from proxy.store.settings import InstanceSettingsStore
from proxy.store.sync_state import SyncStateStore
from proxy.store.tenants import TenantStore
from proxy.store.wakeups import WakeupStore

__all__ = ["Database", "Store", "StoreError", "StoreLocked", "open_store"]


class Database(Store):
    """A ``Store`` with its query objects attached."""

    tenants: TenantStore
    accounts: AccountStore
    messages: MessageStore
    ratelimits: RateLimitStore
    events: EventStore
    instances: InstanceStore
    settings: InstanceSettingsStore
    sync_state: SyncStateStore
    large_files: LargeFileStore
    bounces: BounceStore
    wakeups: WakeupStore
    codec: SecretCodec


def open_store(url: str, *, pool_size: int = 10, cipher: SecretCipher | None = None) -> Database:
    store = Database.open(url, pool_size=pool_size)
    try:
        store.bind()
    except Exception:
        store.close()
        raise
    store.codec = SecretCodec(cipher)
    store.tenants = TenantStore(store.db, store.codec)
    store.accounts = AccountStore(store.db, store.codec)
    store.messages = MessageStore(store.db, is_sqlite=store.is_sqlite, codec=store.codec)
    store.ratelimits = RateLimitStore(store.db, is_sqlite=store.is_sqlite)
    store.events = EventStore(store.db)
    store.instances = InstanceStore(store.db)
    store.settings = InstanceSettingsStore(store.db, store.codec)
    store.sync_state = SyncStateStore(store.db)
    store.large_files = LargeFileStore(store.db, store.codec)
    store.bounces = BounceStore(store.db)
    store.wakeups = WakeupStore(store.db)
    return store
