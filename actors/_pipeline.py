"""The AccountActor's two hand-overs between consecutive sends of one account.

The account overlaps its own work with the SMTP server's: while the server
answers one message's final dot, the next message is re-read, marked sending
and built (``Ready``); the message just sent is held as ``Attempted`` and its
outcome written while the next send's MAIL FROM is answered, so still before
any byte of the next message's data goes out (SPEC §18.3 rule 2: a crash
re-sends at most the one message that was being transmitted).
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.smtp.mime import BuiltMessage
from proxy.store.outcomes import Outcome
from proxy.store.records import ClaimedMessage, MessageToSend, TenantRecord


@dataclass(slots=True)
class Ready:
    """A claimed row re-read and marked ``sending``; ``built`` unless it has attachments."""

    claimed: ClaimedMessage
    sending: MessageToSend
    tenant: TenantRecord | None
    built: BuiltMessage | None = None

    @property
    def tenant_name(self) -> str:
        return self.tenant.display_name if self.tenant else self.sending.tenant_id


@dataclass(frozen=True, slots=True)
class Attempted:
    """A finished attempt whose outcome is not written yet."""

    sending: MessageToSend
    outcome: Outcome
    message_id: str | None
    rate_limited: bool
    tenant_name: str
