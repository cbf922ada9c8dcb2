"""Frozen snapshots of stored rows, handed out by the query modules.

Live peewee rows never leave ``proxy/store``: they are mutable and bound to a
thread's connection. These dataclasses are safe to pass between threads and
actors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MASK = "********"


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass(frozen=True, slots=True)
class TenantRecord:
    id: str
    name: str | None
    client_base_url: str | None
    client_sync_path: str | None
    client_attachment_path: str | None
    client_auth: dict[str, Any] | None
    rate_limits: dict[str, Any] | None
    large_file_config: dict[str, Any] | None
    active: bool
    suspended_batches: tuple[str, ...]
    dnd_until: int | None
    last_sync_ts: int | None
    last_call_ts: int | None
    next_sync_ts: int | None
    consecutive_failures: int
    last_error: str | None
    last_error_ts: int | None
    created_ts: int
    updated_ts: int
    api_key_set: bool = False
    api_key_expires_at: int | None = None

    @property
    def display_name(self) -> str:
        return self.name or self.id

    def is_suspended(self, batch_code: str | None) -> bool:
        """Whether a message with this batch code is held (SPEC §8 rule 2, §6.1 rule 6)."""
        if not self.active or "*" in self.suspended_batches:
            return True
        return batch_code is not None and batch_code in self.suspended_batches


@dataclass(frozen=True, slots=True)
class AccountRecord:
    tenant_id: str
    id: str
    host: str
    port: int
    user: str | None
    password: str | None
    use_tls: bool | None
    use_ssl: bool | None
    tls_verify: bool
    ttl: int
    limit_per_minute: int | None
    limit_per_hour: int | None
    limit_per_day: int | None
    limit_behavior: str
    batch_size: int | None
    is_pec_account: bool
    imap_host: str | None
    imap_port: int | None
    imap_user: str | None
    imap_password: str | None
    imap_ssl: bool | None
    imap_folder: str | None
    created_ts: int
    updated_ts: int


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    """A row reserved for one worker; re-read by ``begin_attempt`` before sending."""

    pk: str
    priority: int
    seq: int


@dataclass(frozen=True, slots=True)
class MessageToSend:
    pk: str
    tenant_id: str
    id: str
    account_id: str
    payload: dict[str, Any]
    attempt: int
    retry_count: int


@dataclass(frozen=True, slots=True)
class RecordedOutcome:
    """What ``record_outcome`` wrote: the status and the event type, for metrics and wake-ups."""

    pk: str
    tenant_id: str
    account_id: str
    status: str
    event_type: str
    deferred_ts: int | None = None


@dataclass(frozen=True, slots=True)
class EventRecord:
    event_id: int
    message_pk: str
    tenant_id: str
    message_id: str  # the client's id
    event_type: str
    event_ts: int
    description: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    reported_ts: int | None = None
