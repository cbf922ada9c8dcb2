"""Large-file rules per tenant ``large_file_config`` (SPEC §9.7), download blocks, cleanup (§9.8).

``LargeFileConfig`` and the block builders are pure. ``rewrite`` uploads (or,
on a retry, reuses an upload of the same message, attachment and content) and
returns the ``Link`` to put in the body; ``cleanup`` is the periodic deletion,
idempotent and run by one instance at a time under a database lease.
"""

from __future__ import annotations

import html
import logging
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from proxy.attachments import links, storage
from proxy.attachments.budget import Spool
from proxy.attachments.errors import MB, AttachmentFailure, UploadFailed
from proxy.store.large_files import DAY_S, LargeFileRecord, LargeFileStore

logger = logging.getLogger(__name__)

WARN, REJECT, REWRITE = "warn", "reject", "rewrite"
CLEANUP_LEASE_S = 900
CLEANUP_BATCH = 500
NO_LINK_BASE = "no public URL for download links (set public_base_url or GMP_PUBLIC_URL)"
# fsspec backends that can sign a URL themselves (SPEC §9.8 rule 2).
SIGNING_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class LargeFileConfig:
    enabled: bool = False
    max_size_mb: float = 10.0
    storage_url: str | None = None
    storage_options: Mapping[str, Any] | None = None
    public_base_url: str | None = None
    file_ttl_days: int = 30
    lifespan_after_download_days: int | None = None
    action: str = WARN

    @classmethod
    def of(cls, raw: Mapping[str, Any] | None) -> LargeFileConfig | None:
        """The tenant's configuration when enabled, else None (nothing happens, rule 5)."""
        if not raw or not raw.get("enabled"):
            return None
        known = {key: raw[key] for key in cls.__dataclass_fields__ if raw.get(key) is not None}
        return cls(**known)

    def triggers(self, size_bytes: int) -> bool:
        return size_bytes > self.max_size_mb * MB


def link_base_problem(raw: Mapping[str, Any] | None, public_url: str | None) -> str | None:
    """Why a ``rewrite`` config has nowhere to serve links from (SPEC §9.8 rule 2), else None.

    The one rule behind ``POST``/``PUT /tenant``, the config-file bootstrap and
    ``config check``: the problem belongs to ``large_file_config.public_base_url``.
    """
    if not raw or not raw.get("enabled") or raw.get("action") != REWRITE:
        return None
    if raw.get("public_base_url") or public_url:
        return None
    scheme = str(raw.get("storage_url") or "").partition("://")[0].lower()
    if scheme in SIGNING_SCHEMES:
        return None
    return "required for 'rewrite' on a storage that cannot sign links (or set GMP_PUBLIC_URL)"


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    size_bytes: int
    url: str
    expires_ts: int
    lifespan_after_download_days: int | None = None


@dataclass(frozen=True, slots=True)
class Upload:
    """One attachment to move to storage: what the message said and what was fetched."""

    tenant_id: str
    message_pk: str
    name: str  # cleaned filename
    content_type: str
    spool: Spool


def size_text(size_bytes: int) -> str:
    return f"{size_bytes / MB:.1f} MB"


def warning_text(name: str, size_bytes: int, config: LargeFileConfig) -> str:
    return (
        f"Attachment '{name}' ({size_text(size_bytes)}) exceeds the large-file limit "
        f"({config.max_size_mb:g} MB); sent attached"
    )


# -- rewrite -------------------------------------------------------------------


def rewrite(
    upload: Upload,
    config: LargeFileConfig,
    *,
    files: LargeFileStore,
    secret: Callable[[], bytes],
    public_url: str | None,
    now: int,
) -> Link:
    """Upload (once per message, attachment and content) and return the download link."""
    if not config.storage_url:  # refused on every write now; an older database may hold one
        raise UploadFailed(upload.name, "no storage_url configured")  # temporary, rule 3
    record = files.find_reusable(upload.message_pk, upload.name, upload.spool.md5)
    if record is None:
        file_id = str(uuid.uuid4())
        url = storage.file_url(config.storage_url, file_id, upload.name)
        try:
            storage.upload(url, config.storage_options, upload.spool)
        except Exception as exc:  # noqa: BLE001 (any backend's error: a temporary failure)
            logger.warning("large-file upload of %s failed: %r", upload.name, exc)
            raise UploadFailed(upload.name, type(exc).__name__) from None
        record = LargeFileRecord(
            file_id=file_id,
            tenant_id=upload.tenant_id,
            message_pk=upload.message_pk,
            content_md5=upload.spool.md5,
            filename=upload.name,
            content_type=upload.content_type,
            size_bytes=upload.spool.size_bytes,
            storage_url=url,
            storage_options=dict(config.storage_options) if config.storage_options else None,
            created_ts=now,
            expires_ts=now + config.file_ttl_days * DAY_S,
            lifespan_after_download_days=config.lifespan_after_download_days,
        )
        files.add(record)
    url, expires_ts = _link(record, config, secret, public_url, now)
    return Link(
        name=record.filename,
        size_bytes=record.size_bytes,
        url=url,
        expires_ts=expires_ts,
        lifespan_after_download_days=record.lifespan_after_download_days,
    )


def _link(
    record: LargeFileRecord,
    config: LargeFileConfig,
    secret: Callable[[], bytes],
    public_url: str | None,
    now: int,
) -> tuple[str, int]:
    """The proxy's signed link under public_base_url, else the backend's, else GMP_PUBLIC_URL.

    With the link's own expiry: a backend may grant less than ``file_ttl_days`` (S3 signs
    for 7 days at most, SPEC §9.8 rule 2), and the mail must not promise more.
    """
    base = config.public_base_url
    if not base:
        try:
            signed = storage.sign(
                record.storage_url, record.storage_options, record.expires_ts - now
            )
        except Exception as exc:  # noqa: BLE001 (any backend's error: a temporary failure)
            raise UploadFailed(record.filename, f"cannot sign URL ({type(exc).__name__})") from None
        if signed is not None:
            return signed.url, now + signed.expires_in_s
        base = public_url
    if not base:
        raise AttachmentFailure(NO_LINK_BASE, permanent=True)
    url = links.url(base, secret(), record.file_id, record.filename, record.expires_ts)
    return url, record.expires_ts


# -- download block (rule 3) -----------------------------------------------------


def with_download_block(payload: Mapping[str, Any], found: Sequence[Link]) -> dict[str, Any]:
    """The payload with the download block appended to every body part (no part added)."""
    result = dict(payload)
    if not found:
        return result
    is_html = result.get("content_type", "plain") in ("html", "text/html")
    body = result.get("body") or ""
    result["body"] = html_block(body, found) if is_html else plain_block(body, found)
    if isinstance(result.get("html"), str):
        result["html"] = html_block(result["html"], found)
    return result


def plain_block(text: str, found: Sequence[Link]) -> str:
    lines = ["Large attachments are available for download:"]
    lines += [f"- {link.name} ({size_text(link.size_bytes)}): {link.url}" for link in found]
    lines.append(_expiry_sentence(found))
    if text and not text.endswith("\n\n"):
        text += "\n" if text.endswith("\n") else "\n\n"
    return text + "\n".join(lines) + "\n"


def html_block(text: str, found: Sequence[Link]) -> str:
    items = "".join(
        f'<li><a href="{html.escape(link.url)}">{html.escape(link.name)}</a> '
        f"({size_text(link.size_bytes)})</li>"
        for link in found
    )
    block = (
        '<div class="mail-proxy-downloads"><p>Large attachments are available for download:</p>'
        f"<ul>{items}</ul><p>{html.escape(_expiry_sentence(found))}</p></div>"
    )
    ends = list(_BODY_END.finditer(text))
    if not ends:
        return text + block
    cut = ends[-1].start()
    return text[:cut] + block + text[cut:]


def _expiry_sentence(found: Sequence[Link]) -> str:
    first = min(link.expires_ts for link in found)
    when = datetime.fromtimestamp(first, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    days = [d for d in (link.lifespan_after_download_days for link in found) if d is not None]
    extra = f", or {min(days)} days after the first download" if days else ""
    return f"Links expire on {when}{extra}."


# -- cleanup (§9.8 rule 4) ----------------------------------------------------------


def cleanup(files: LargeFileStore, *, now: int, holder: str) -> int:
    """Delete expired files and mark their records; returns how many were removed.

    Idempotent: a file already gone counts as deleted; a storage error leaves the
    record for the next run.
    """
    if not files.take_cleanup_lease(holder, now, CLEANUP_LEASE_S):
        return 0
    removed = 0
    for record in files.due_for_cleanup(now, CLEANUP_BATCH):
        try:
            storage.delete(record.storage_url, record.storage_options)
        except Exception as exc:  # noqa: BLE001 (any backend's error: retried next run)
            logger.warning("large-file cleanup of %s failed: %r", record.file_id, exc)
            continue
        if files.mark_deleted(record.file_id, now):
            removed += 1
    if removed:
        logger.info("large-file cleanup removed %s files", removed)
    return removed
