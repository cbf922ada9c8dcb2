"""ActorEngine: the ``proxy.engine.Engine`` protocol, implemented by telling the Supervisor."""

from __future__ import annotations

import logging
from collections.abc import Collection

import pykka

from actors.messages import (
    AccountChanged,
    AccountRemoved,
    MessagesAdded,
    ReloadBounce,
    RunNow,
    TenantChanged,
    TenantRemoved,
    WakeAccounts,
)

logger = logging.getLogger(__name__)


class ActorEngine:
    def __init__(self, supervisor: pykka.ActorRef, *, test_mode: bool = False) -> None:
        self._supervisor = supervisor
        self._test_mode = test_mode

    def _tell(self, message: object) -> None:
        try:
            self._supervisor.tell(message)
        except pykka.ActorDeadError:
            # Shutting down: the work is in the store and is picked up at next start.
            logger.debug("engine stopped; dropped %r", message)

    def messages_added(
        self, accounts: Collection[tuple[str, str]], immediate: Collection[tuple[str, str]]
    ) -> None:
        if accounts and not self._test_mode:  # test mode sends only on run-now (SPEC §6.6)
            self._tell(MessagesAdded(tuple(sorted(accounts)), tuple(sorted(immediate))))

    def run_now(self, tenant_id: str | None) -> None:
        self._tell(RunNow(tenant_id))

    def wake_accounts(self, tenant_id: str | None) -> None:
        if not self._test_mode:  # an activation: test mode sends only on run-now (SPEC §6.6)
            self._tell(WakeAccounts(tenant_id))

    def reload_bounce(self) -> None:
        """Restart the bounce poller from the stored settings (stops it when disabled)."""
        self._tell(ReloadBounce())

    def tenant_changed(self, tenant_id: str) -> None:
        self._tell(TenantChanged(tenant_id))

    def tenant_removed(self, tenant_id: str) -> None:
        self._tell(TenantRemoved(tenant_id))

    def account_changed(self, tenant_id: str, account_id: str) -> None:
        self._tell(AccountChanged(tenant_id, account_id))

    def account_removed(self, tenant_id: str, account_id: str) -> None:
        self._tell(AccountRemoved(tenant_id, account_id))
