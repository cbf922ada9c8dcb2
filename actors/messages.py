"""Every message the actors exchange, grouped by receiver.

Messages are frozen, slotted dataclasses carrying ids and small values only:
never peewee rows, connections or mutable containers, which would be shared
across threads.
"""

from __future__ import annotations

from dataclasses import dataclass

# -- to any actor ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Flush:
    """Asked, never told: answered once everything told before it has been handled.

    A synchronisation point for tests and shutdown, never used between actors.
    """


# -- to the Supervisor ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessagesAdded:
    """The API committed messages; wake these accounts (and their immediate lanes)."""

    accounts: tuple[tuple[str, str], ...]
    immediate: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RunNow:
    """Wake sending and syncing: every tenant (admin) or one tenant (tenant token)."""

    tenant_id: str | None = None


@dataclass(frozen=True, slots=True)
class WakeAccounts:
    """Sending may resume (activation, scheduler resumed): wake accounts, no forced sync."""

    tenant_id: str | None = None


@dataclass(frozen=True, slots=True)
class TenantChanged:
    """A tenant was created or updated: (re)load its actor's configuration."""

    tenant_id: str


@dataclass(frozen=True, slots=True)
class TenantRemoved:
    tenant_id: str


@dataclass(frozen=True, slots=True)
class AccountChanged:
    """An account was created or replaced: its connection must be re-opened before the next send."""

    tenant_id: str
    account_id: str


@dataclass(frozen=True, slots=True)
class AccountRemoved:
    tenant_id: str
    account_id: str


@dataclass(frozen=True, slots=True)
class ReportsPending:
    """An account wrote reportable events for this tenant; forwarded as ``SyncDue``."""

    tenant_id: str


@dataclass(frozen=True, slots=True)
class PassDone:
    """Test mode: an account attempted everything due after a run-now woke it (SPEC §6.6)."""

    tenant_id: str
    account_id: str


@dataclass(frozen=True, slots=True)
class ChildFailed:
    """Sent by a child's ``on_failure``: restart it with backoff."""

    kind: str  # "account" | "tenant" | "reporter"
    key: tuple[str, ...]
    error: str


@dataclass(frozen=True, slots=True)
class Idle:
    """A child has had nothing to do for its idle period: the Supervisor may stop it."""

    kind: str
    key: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Restart:
    """Timer: respawn a failed child now that its backoff has elapsed."""

    kind: str
    key: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ListChildren:
    """Asked (never told) by ``proxy.server`` at shutdown: the live children, accounts first."""


@dataclass(frozen=True, slots=True)
class ScanStore:
    """Timer: look in the store for due work of actors that are not running."""


# -- to an AccountActor -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkAvailable:
    """Due messages may exist; ``immediate`` asks to look for priority-0 rows first."""

    immediate: bool = False


@dataclass(frozen=True, slots=True)
class SendNext:
    """Self-message: attempt the next claimed message (one send per handled message)."""


@dataclass(frozen=True, slots=True)
class ReloadAccount:
    """The account's settings changed: reconnect with the new ones before the next send."""


@dataclass(frozen=True, slots=True)
class IdleCheck:
    """Timer: close an expired connection, and report idleness to the Supervisor."""


# -- to a TenantActor -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncDue:
    """Post pending reports (or a heartbeat when ``force``) to the tenant's sync endpoint."""

    force: bool = False


@dataclass(frozen=True, slots=True)
class ReportsReady:
    """New reportable events exist: post them soon, coalescing bursts into one call."""


@dataclass(frozen=True, slots=True)
class ReloadTenant:
    """The tenant's settings changed."""


# -- to the ReporterActor ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunRetention:
    """Timer, or an admin run-now: apply the retention policy (SPEC §14.1)."""


@dataclass(frozen=True, slots=True)
class RefreshGauges:
    """Timer: refresh process-wide gauges read from the store."""


# -- bounce and PEC pollers (SPEC §11, §12) -------------------------------------------


@dataclass(frozen=True, slots=True)
class ReloadBounce:
    """To the Supervisor: the bounce settings changed; restart (or stop) the BounceActor."""


@dataclass(frozen=True, slots=True)
class PollMailbox:
    """To a BounceActor or PecActor: timer, or an admin run-now: poll the mailbox now."""


@dataclass(frozen=True, slots=True)
class PollNext:
    """Self-message of a poller: handle the next batch of the poll in progress."""
