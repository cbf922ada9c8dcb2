"""Test mode's run-now: a tenant's sync waits for its accounts' dispatch pass (SPEC §6.6).

"Each ``POST /commands/run-now`` performs one complete dispatch pass (every due
message of the woken accounts is attempted once), then one sync cycle." The
Supervisor wakes accounts and tenants at once and they run in parallel, so in
test mode it holds a tenant's ``SyncDue`` (and the ``ReportsReady`` its accounts
announce meanwhile) until every account woken for that tenant has finished its
pass (``PassDone``), crashed or been stopped. Normal mode does not use this:
reports go out as they are written. Used only in the Supervisor's thread.
"""

from __future__ import annotations

from actors.messages import SyncDue


class Passes:
    """Accounts whose pass is running, per tenant, and the sync each tenant waits to make."""

    def __init__(self) -> None:
        self._running: dict[str, set[str]] = {}
        self._held: dict[str, SyncDue] = {}

    def started(self, tenant_id: str, account_id: str) -> None:
        self._running.setdefault(tenant_id, set()).add(account_id)

    def hold(self, tenant_id: str, sync: SyncDue) -> bool:
        """Whether ``sync`` must wait (a pass is running); two held syncs merge into one."""
        if not self._running.get(tenant_id):
            return False
        held = self._held.get(tenant_id)
        self._held[tenant_id] = SyncDue(force=sync.force or (held is not None and held.force))
        return True

    def holds_reports(self, tenant_id: str) -> bool:
        return bool(self._running.get(tenant_id))

    def finished(self, tenant_id: str, account_id: str) -> SyncDue | None:
        """The tenant's held sync, once this was the last of its running passes."""
        running = self._running.get(tenant_id)
        if running is None:
            return None
        running.discard(account_id)
        if running:
            return None
        del self._running[tenant_id]
        return self._held.pop(tenant_id, None)
