r"""Pure: what happens to a mail in the mailbox once it was handled (SPEC §11.2 rule 2).

Every handled mail gets ``$MailProxyProcessed``; bounces and receipts also get
``\Seen`` and are moved to the processed folder when one is set. Mails that are
not bounces get ``$MailProxyIgnored``; bounces matching no message
``$MailProxyUnmatched``. Unparseable mails stay where they are, unread, so an
operator sees them. In a PEC mailbox, mail that is no receipt is a person's
certified mail: it is only tagged, never marked read or moved.
"""

from __future__ import annotations

from dataclasses import dataclass

SEEN = "\\Seen"
PROCESSED = "$MailProxyProcessed"
IGNORED = "$MailProxyIgnored"
UNMATCHED = "$MailProxyUnmatched"


@dataclass(frozen=True, slots=True)
class Disposition:
    outcome: str  # for logs: recorded | ignored | unmatched | unparseable | not-a-receipt
    flags: tuple[str, ...]
    move: bool  # to the processed folder, when one is configured


RECORDED = Disposition("recorded", (SEEN, PROCESSED), move=True)
IGNORED_MAIL = Disposition("ignored", (SEEN, PROCESSED, IGNORED), move=True)
UNMATCHED_MAIL = Disposition("unmatched", (SEEN, PROCESSED, UNMATCHED), move=True)
UNPARSEABLE_MAIL = Disposition("unparseable", (PROCESSED, IGNORED), move=False)
NOT_A_RECEIPT = Disposition("not-a-receipt", (PROCESSED, IGNORED), move=False)


def after_recording(matched: bool) -> Disposition:
    """A bounce or receipt was handed to the store: matched (or seen before) or not."""
    return RECORDED if matched else UNMATCHED_MAIL
