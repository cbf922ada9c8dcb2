"""Supervisor: the only actor that spawns, stops and routes to the others.

Receives:
  MessagesAdded, RunNow,
  WakeAccounts                   from the API (via ``ActorEngine``): wake accounts and syncs
  TenantChanged, TenantRemoved   spawn, reload or stop a TenantActor (and its accounts)
  AccountChanged, AccountRemoved reload or stop an AccountActor
  ReportsPending(tenant_id)      from an AccountActor: forward ``SyncDue`` to the tenant
  PassDone(tenant_id, account_id) test mode: an account's run-now pass ended (``_passes``)
  ChildFailed(kind, key, error)  a child crashed: restart it after a backoff
  Restart(kind, key)             timer: the backoff elapsed
  Idle(kind, key)                a child has nothing to do: stop it (respawned on demand)
  ListChildren                   asked by ``proxy.server`` at shutdown (returns the refs)
  ScanStore                      timer (every ``send_loop_interval``): wake accounts whose
                                 work is due in the store, spawn missing tenant actors, act
                                 on run-nows other instances received (PostgreSQL)
  ReloadBounce                   from the API: restart (or stop) the BounceActor
Sends:
  WorkAvailable, ReloadAccount   to AccountActors
  SyncDue, ReportsReady,
  ReloadTenant                   to TenantActors
  PollMailbox                    to the bounce and PEC pollers on an admin run-now

Nothing here blocks on a child: messages are told. Wake-ups of stopped actors
come from the store, so a lost nudge is harmless.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pykka

from actors._context import ActorContext
from actors._passes import Passes
from actors._timer import Cancel
from actors.account import AccountActor
from actors.bounce import BounceActor
from actors.messages import (
    AccountChanged,
    AccountRemoved,
    ChildFailed,
    Idle,
    ListChildren,
    MessagesAdded,
    PassDone,
    ReloadAccount,
    ReloadBounce,
    ReloadTenant,
    ReportsPending,
    ReportsReady,
    Restart,
    RunNow,
    RunRetention,
    ScanStore,
    SyncDue,
    TenantChanged,
    TenantRemoved,
    WakeAccounts,
    WorkAvailable,
)
from actors.pec import POLLER_KINDS, PecActor, Pollers
from actors.reporter import ReporterActor
from actors.tenant import TenantActor
from proxy import retry

logger = logging.getLogger(__name__)

RESTART_BASE_S = 1.0
RESTART_CAP_S = 60.0
HEALTHY_RESET_S = 300.0
FAULTED_AFTER = 5


@dataclass(frozen=True)
class ChildKinds:
    """The classes the Supervisor spawns; tests substitute their own subclasses."""

    account: type[AccountActor] = AccountActor
    tenant: type[TenantActor] = TenantActor
    reporter: type[ReporterActor] = ReporterActor
    bounce: type[BounceActor] = BounceActor
    pec: type[PecActor] = PecActor


@dataclass(slots=True)
class _Failures:
    count: int = 0
    last_mono: float = 0.0


class Supervisor(pykka.ThreadingActor):
    use_daemon_thread = True  # a stuck child must never keep the process alive past shutdown

    def __init__(self, ctx: ActorContext, kinds: ChildKinds | None = None) -> None:
        super().__init__()
        self.ctx = ctx
        self.kinds = kinds or ChildKinds()
        self.accounts: dict[tuple[str, str], pykka.ActorRef] = {}
        self.tenants: dict[str, pykka.ActorRef] = {}
        self.reporter: pykka.ActorRef | None = None
        self._failures: dict[tuple[str, tuple[str, ...]], _Failures] = {}
        self._scan_timer: Cancel | None = None
        # Run-nows made before this instance started are not its to act on.
        self._wake_seen = 0 if ctx.store.is_sqlite else ctx.store.wakeups.latest_id()
        self.pollers = Pollers(
            ctx, self.actor_ref, bounce_kind=self.kinds.bounce, pec_kind=self.kinds.pec
        )
        self._passes = Passes()  # test mode: syncs wait for their accounts' pass

    # -- lifecycle -----------------------------------------------------------------

    def on_start(self) -> None:
        self.reporter = self.kinds.reporter.start(self.ctx, self.actor_ref)
        self.pollers.start_all()
        # Tenant and account actors are spawned on demand: by the store scan below
        # (due work, due syncs), by the API, or by run-now.
        if self.ctx.timers_enabled:
            self._scan()

    def on_stop(self) -> None:
        if self._scan_timer is not None:
            self._scan_timer()
        self.ctx.store.release_thread_connection()

    def children(self) -> list[pykka.ActorRef]:
        """Every live child, accounts first (the shutdown order); for ``server.py`` via ask."""
        refs = self.pollers.refs() + list(self.accounts.values()) + list(self.tenants.values())
        if self.reporter is not None:
            refs.append(self.reporter)
        return refs

    # -- dispatch ---------------------------------------------------------------------

    def on_receive(self, message: object) -> Any:  # noqa: PLR0912 (one case per message)
        match message:
            case MessagesAdded(accounts=accounts, immediate=immediate):
                for key in accounts:
                    self._tell_account(key, WorkAvailable(immediate=key in immediate))
            case RunNow(tenant_id=tenant_id):
                self._run_now(tenant_id)
            case WakeAccounts(tenant_id=tenant_id):
                self._wake_accounts(tenant_id)
            case ReportsPending(tenant_id=tenant_id):
                if not self._passes.holds_reports(tenant_id):
                    self._tell_tenant(tenant_id, ReportsReady())
            case PassDone(tenant_id=tenant_id, account_id=account_id):
                self._pass_finished(tenant_id, account_id)
            case TenantChanged(tenant_id=tenant_id):
                self._tell_tenant(tenant_id, ReloadTenant())
            case TenantRemoved(tenant_id=tenant_id):
                self._remove_tenant(tenant_id)
            case AccountChanged(tenant_id=tenant_id, account_id=account_id):
                self._account_changed((tenant_id, account_id))
            case AccountRemoved(tenant_id=tenant_id, account_id=account_id):
                self._stop_child("account", (tenant_id, account_id))
                self.pollers.stop("pec", (tenant_id, account_id))
            case ReloadBounce():
                self.pollers.reload_bounce()
            case ChildFailed(kind=kind, key=key, error=error):
                self._child_failed(kind, key, error)
            case Restart(kind=kind, key=key):
                self._restart(kind, key)
            case Idle(kind=kind, key=key):
                self._stop_child(kind, key)
            case ScanStore():
                self._scan()
            case ListChildren():
                return self.children()
            case _:
                logger.warning("supervisor got unknown message %r", message)
        return None

    # -- routing -------------------------------------------------------------------------

    def _tell_account(self, key: tuple[str, str], message: object) -> None:
        ref = self._account(key)
        if ref is not None:
            ref.tell(message)

    def _tell_tenant(self, tenant_id: str, message: object) -> None:
        ref = self._tenant(tenant_id)
        if ref is not None:
            ref.tell(message)

    def _account(self, key: tuple[str, str]) -> pykka.ActorRef | None:
        ref = self.accounts.get(key)
        if ref is not None and ref.is_alive():
            return ref
        if self._in_backoff("account", key) or not self.ctx.store.accounts.exists(*key):
            return None
        ref = self.kinds.account.start(self.ctx, self.actor_ref, *key)
        self.accounts[key] = ref
        return ref

    def _tenant(self, tenant_id: str) -> pykka.ActorRef | None:
        ref = self.tenants.get(tenant_id)
        if ref is not None and ref.is_alive():
            return ref
        if self._in_backoff("tenant", (tenant_id,)) or not self.ctx.store.tenants.exists(tenant_id):
            return None
        ref = self.kinds.tenant.start(self.ctx, self.actor_ref, tenant_id)
        self.tenants[tenant_id] = ref
        return ref

    def _wake_accounts(self, tenant_id: str | None) -> list[tuple[str, str]]:
        """Tell every account (of one tenant) to send; the keys of those told."""
        woken = []
        for account in self.ctx.store.accounts.list(tenant_id):
            key = (account.tenant_id, account.id)
            ref = self._account(key)
            if ref is not None:
                ref.tell(WorkAvailable())
                woken.append(key)
        return woken

    def _run_now(self, tenant_id: str | None, *, force_sync: bool = True) -> None:
        """Wake accounts and syncs (SPEC §10.9).

        ``force_sync`` is False for another instance's run-now whose forced sync
        call is made elsewhere.
        """
        woken = self._wake_accounts(tenant_id)
        if not self.ctx.timers_enabled:  # test mode: one pass, then one sync (SPEC §6.6)
            for key in woken:
                self._passes.started(*key)
        if tenant_id is None and self.reporter is not None:
            self.reporter.tell(RunRetention())  # an admin run-now also applies retention
        if tenant_id is None:
            self.pollers.poll_all()  # and polls the bounce and PEC mailboxes (SPEC §6.6)
        tenant_ids = [tenant_id] if tenant_id else [t.id for t in self.ctx.store.tenants.list()]
        for tid in tenant_ids:
            # Only a tenant token's run-now forces a call and clears DND (SPEC §10.9).
            sync = SyncDue(force=force_sync and tenant_id is not None)
            if not self._passes.hold(tid, sync):
                self._tell_tenant(tid, sync)

    def _pass_finished(self, tenant_id: str, account_id: str) -> None:
        held = self._passes.finished(tenant_id, account_id)
        if held is not None:
            self._tell_tenant(tenant_id, held)

    def _forwarded_run_nows(self) -> None:
        """Run-nows received by other instances sharing the database (SPEC §18.5)."""
        me = self.ctx.instance_id
        self._wake_seen, wakeups = self.ctx.store.wakeups.after(self._wake_seen, exclude_origin=me)
        for wake in wakeups:
            forced = wake.tenant_id is not None and self.ctx.store.wakeups.take(wake.id, me)
            self._run_now(wake.tenant_id, force_sync=forced)

    def _account_changed(self, key: tuple[str, str]) -> None:
        ref = self.accounts.get(key)
        if ref is not None and ref.is_alive():
            ref.tell(ReloadAccount())
            if self.ctx.timers_enabled:  # test mode sends only on run-now (SPEC §6.6)
                ref.tell(WorkAvailable())
        self.pollers.account_changed(key)

    def _remove_tenant(self, tenant_id: str) -> None:
        for key in [k for k in self.accounts if k[0] == tenant_id]:
            self._stop_child("account", key)
        self._stop_child("tenant", (tenant_id,))
        self.pollers.tenant_removed(tenant_id)

    def _stop_child(self, kind: str, key: tuple[str, ...]) -> None:
        if kind == "account":
            self._pass_finished(key[0], key[1])  # a stopped account's pass is over
        table: dict[Any, pykka.ActorRef] = self.accounts if kind == "account" else self.tenants
        lookup: Any = key if kind == "account" else key[0]
        ref = table.pop(lookup, None)
        if ref is not None:
            ref.stop(block=False)

    # -- failures ------------------------------------------------------------------------

    def _in_backoff(self, kind: str, key: tuple[str, ...]) -> bool:
        failures = self._failures.get((kind, key))
        return failures is not None and failures.count > 0 and failures.last_mono < 0

    def _child_failed(self, kind: str, key: tuple[str, ...], error: str) -> None:
        self.ctx.metrics.actor_restarts.labels(kind).inc()
        if kind == "account":
            self.accounts.pop(key, None)  # type: ignore[call-overload]
            self._pass_finished(key[0], key[1])  # a crashed account's pass is over
        elif kind == "tenant":
            self.tenants.pop(key[0], None)
        elif kind == "reporter":
            self.reporter = None
        elif kind in POLLER_KINDS:
            self.pollers.forget(kind, key)
        now = self.ctx.clock.monotonic()
        failures = self._failures.setdefault((kind, key), _Failures())
        if failures.count and now - abs(failures.last_mono) > HEALTHY_RESET_S:
            failures.count = 0
        failures.count += 1
        failures.last_mono = -now  # negative: a restart is pending
        delay = retry.exponential_s(failures.count, base_s=RESTART_BASE_S, cap_s=RESTART_CAP_S)
        if failures.count >= FAULTED_AFTER:
            logger.error(
                "%s %s keeps failing (%s times; last: %s); still retrying every %.0f s",
                kind,
                "/".join(key),
                failures.count,
                error,
                delay,
            )
        else:
            logger.warning(
                "restarting %s %s in %.1f s after: %s", kind, "/".join(key), delay, error
            )
        self.ctx.timers.after(delay, self.actor_ref, Restart(kind, key))

    def _restart(self, kind: str, key: tuple[str, ...]) -> None:
        failures = self._failures.get((kind, key))
        if failures is not None:
            failures.last_mono = self.ctx.clock.monotonic()
        if kind in ("account", "tenant") and not self.ctx.timers_enabled:
            return  # test mode: sends and syncs only on run-now, which respawns them
        if kind == "account":
            self._tell_account((key[0], key[1]), WorkAvailable())
        elif kind == "tenant":
            self._tell_tenant(key[0], SyncDue())
        elif kind == "reporter" and self.reporter is None:
            self.reporter = self.kinds.reporter.start(self.ctx, self.actor_ref)
        elif kind in POLLER_KINDS:
            self.pollers.restart(kind, key)

    # -- store scan ------------------------------------------------------------------------

    def _scan(self) -> None:
        now = int(self.ctx.clock.time())
        store = self.ctx.store
        if not store.is_sqlite:
            self._forwarded_run_nows()
        for key in store.messages.due_accounts(now):
            self._tell_account(key, WorkAvailable())
        has_global = bool(self.ctx.settings.client_sync_url)
        for tenant_id in store.sync_state.tenants_needing_sync(now, has_global_target=has_global):
            if tenant_id not in self.tenants or not self.tenants[tenant_id].is_alive():
                self._tell_tenant(tenant_id, SyncDue())
        if self.ctx.timers_enabled:
            self._scan_timer = self.ctx.timers.after(
                self.ctx.settings.send_loop_interval, self.actor_ref, ScanStore()
            )
