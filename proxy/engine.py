"""The Engine protocol: everything the API may tell the delivery engine.

Handlers persist first, then call one of these; every method returns at once
(no request thread ever waits on sending or syncing). ``actors.engine``
implements it over the actor system; tests pass a recording fake.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol


class Engine(Protocol):
    def messages_added(
        self, accounts: Collection[tuple[str, str]], immediate: Collection[tuple[str, str]]
    ) -> None: ...

    def run_now(self, tenant_id: str | None) -> None: ...

    def wake_accounts(self, tenant_id: str | None) -> None:
        """Sending may resume (activation): look for due work now, without forcing a sync."""
        ...

    def reload_bounce(self) -> None: ...

    def tenant_changed(self, tenant_id: str) -> None: ...

    def tenant_removed(self, tenant_id: str) -> None: ...

    def account_changed(self, tenant_id: str, account_id: str) -> None: ...

    def account_removed(self, tenant_id: str, account_id: str) -> None: ...


class NullEngine:
    """An engine that does nothing: API-only instances (``start_active = false``)."""

    def messages_added(
        self, accounts: Collection[tuple[str, str]], immediate: Collection[tuple[str, str]]
    ) -> None:
        return None

    def run_now(self, tenant_id: str | None) -> None:
        return None

    def wake_accounts(self, tenant_id: str | None) -> None:
        return None

    def reload_bounce(self) -> None:
        return None

    def tenant_changed(self, tenant_id: str) -> None:
        return None

    def tenant_removed(self, tenant_id: str) -> None:
        return None

    def account_changed(self, tenant_id: str, account_id: str) -> None:
        return None

    def account_removed(self, tenant_id: str, account_id: str) -> None:
        return None
