"""The send path's attachment step: fetch, large-file rules, memory budget (SPEC §9).

``prepare(ctx, sending, now=...)`` runs in the AccountActor's thread just before
``mime.build`` and returns a ``Prepared`` (a context manager) or raises an
``AttachmentFailure`` whose ``outcome`` is the attempt's ``TempFailure``
(reason ``attachment``) or ``PermFailure``. Inside the ``with`` block the
message's memory reservation is held; leaving it closes the spools and gives the
budget back, whatever happened::

    with pipeline.prepare(ctx, sending, now=now) as prepared:
        built = prepared.complete(mime.build(prepared.payload, ...,
                                             attachments=prepared.take_contents()))
        outcome = conn.send(built)

Per message: each attachment is fetched (in parallel, at most
``GMP_ATTACHMENT_CONCURRENCY`` fetches per process) through the tenant's cache
into a spool; the large-file rules run on the fetched sizes; then the memory the
build and the transmission need is reserved, waiting in line when the budget is
spent. Spooled attachments are spliced into the built message as streamed
base64 (``splice``), so their raw bytes are never in memory whole. A message
without attachments costs nothing here: no tenant read, no budget.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from proxy.attachments import large, splice
from proxy.attachments.budget import BudgetWaitCancelled, MemoryBudget, encoded_size
from proxy.attachments.collect import (
    SHUTTING_DOWN,
    Fetched,
    Runtime,
    fetch_all,
    http_of,
    runtime_for,
)
from proxy.attachments.errors import Interrupted, LargeFileRejected
from proxy.smtp.mime import AttachmentContent, BuiltMessage
from proxy.store.records import MessageToSend

# The built message is held twice at its peak: while it is assembled (pieces and the
# joined bytes) and while it is transmitted (ours and the SMTP client's working copy).
MESSAGE_COPIES = 2


class SendContext(Protocol):
    """What the send path needs from its caller (``actors._context.ActorContext`` has it)."""

    @property
    def store(self) -> Any: ...

    @property
    def settings(self) -> Any: ...

    @property
    def metrics(self) -> Any: ...

    @property
    def stopping(self) -> threading.Event: ...


@dataclass(slots=True)
class Prepared:
    """A message's attachments, ready for ``mime.build``; holds its memory until exit."""

    payload: Mapping[str, Any]
    fetched: list[Fetched] = field(default_factory=list)
    budget: MemoryBudget | None = None
    granted_bytes: int = 0
    _streamed: list[splice.Streamed] = field(default_factory=list)
    _taken: bool = False

    def take_contents(self) -> list[AttachmentContent]:
        """The attachments for ``mime.build`` (once): bytes when small, placeholders when spooled.

        The caller passes the list straight to ``mime.build`` and keeps no reference,
        so the raw bytes are freed as soon as the build returns.
        """
        if self._taken:
            raise RuntimeError("take_contents() called twice")
        self._taken = True
        contents = []
        for item in self.fetched:
            if item.spool.in_memory:
                data = item.spool.read_bytes()
            else:
                data = splice.placeholder()
                self._streamed.append(splice.Streamed(data, item.spool))
            contents.append(AttachmentContent(item.name, item.mime_type, data))
        return contents

    def complete(self, built: BuiltMessage) -> BuiltMessage:
        """``built`` with the spooled attachments' base64 streamed in place of placeholders."""
        if not self._streamed:
            return built
        return dataclasses.replace(built, data=splice.splice(built.data, self._streamed))

    def __enter__(self) -> Prepared:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        for item in self.fetched:
            item.spool.close()
        self.fetched = []
        self._streamed = []
        if self.budget is not None and self.granted_bytes:
            self.budget.release(self.granted_bytes)
        self.granted_bytes = 0


def prepare(ctx: SendContext, sending: MessageToSend, *, now: int) -> Prepared:
    """Fetch, apply large-file rules and reserve memory; see the module docstring."""
    items = sending.payload.get("attachments") or []
    if not items:
        return Prepared(sending.payload)
    runtime = runtime_for(ctx)
    tenant = ctx.store.tenants.get(sending.tenant_id)
    cancelled = ctx.stopping.is_set
    http = http_of(tenant, ctx.settings)
    fetched = fetch_all(runtime, items, sending.tenant_id, http, cancelled)
    prepared = Prepared(sending.payload, fetched, runtime.budget)
    try:
        config = large.LargeFileConfig.of(tenant.large_file_config if tenant else None)
        if config is not None:
            prepared.payload = _apply_large_rules(
                prepared, config, ctx=ctx, runtime=runtime, sending=sending, now=now
            )
        prepared.granted_bytes = _reserve(runtime.budget, prepared.fetched, cancelled)
    except BaseException:
        prepared.close()
        raise
    return prepared


# -- large files and memory ------------------------------------------------------------


def _apply_large_rules(
    prepared: Prepared,
    config: large.LargeFileConfig,
    *,
    ctx: SendContext,
    runtime: Runtime,
    sending: MessageToSend,
    now: int,
) -> Mapping[str, Any]:
    """Warn, reject or rewrite each attachment over the threshold (SPEC §9.7)."""
    kept: list[Fetched] = []
    found: list[large.Link] = []
    for item in prepared.fetched:
        size = item.spool.size_bytes
        if not config.triggers(size):
            kept.append(item)
        elif config.action == large.REJECT:
            raise LargeFileRejected(item.name, size, config.max_size_mb)
        elif config.action == large.REWRITE:
            upload = large.Upload(
                sending.tenant_id, sending.pk, item.name, item.mime_type, item.spool
            )
            found.append(
                large.rewrite(
                    upload,
                    config,
                    files=ctx.store.large_files,
                    secret=runtime.secret,
                    public_url=ctx.settings.public_url,
                    now=now,
                )
            )
            item.spool.close()
        else:
            text = large.warning_text(item.name, size, config)
            meta = {"filename": item.name, "size_bytes": size}
            ctx.store.large_files.record_warning(sending.pk, sending.tenant_id, text, meta, now)
            kept.append(item)
    prepared.fetched = kept
    return large.with_download_block(prepared.payload, found)


def _reserve(
    budget: MemoryBudget, fetched: Sequence[Fetched], cancelled: Callable[[], bool]
) -> int:
    """Take the memory the build and the transmission need, waiting in line if need be.

    Small spools already hold their bytes under the budget; when more must be
    waited for, they move to disk first, so a waiting message holds nothing (no
    deadlock between two half-served messages).
    """
    if not fetched:
        return 0
    in_memory = sum(item.spool.size_bytes for item in fetched if item.spool.in_memory)
    encoded = sum(encoded_size(item.spool.size_bytes) for item in fetched)
    need = in_memory + MESSAGE_COPIES * encoded
    held = sum(item.spool.held_bytes for item in fetched)
    if budget.try_acquire(max(0, need - held)):
        return max(0, need - held)
    for item in fetched:
        item.spool.rollover()
    need -= in_memory  # they are on disk now: only the message itself is held in memory
    try:
        return budget.acquire(need, cancelled)
    except BudgetWaitCancelled:
        raise Interrupted(SHUTTING_DOWN) from None
