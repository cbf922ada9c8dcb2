"""Peewee table definitions, and nothing else.

Queries live in the per-aggregate modules (``tenants.py``, ``accounts.py``,
``messages.py``, ``events.py``) and return frozen dataclasses, never these live
rows. Every column type here exists on SQLite and PostgreSQL alike; JSON is
stored as text so both backends read it the same way. Times are integer UTC
epoch seconds (``*_ts``).
"""

from __future__ import annotations

import peewee

database_proxy = peewee.DatabaseProxy()

# Stored message states. "deferred" and "suspended" are derived when read
# (from deferred_ts and the tenant's suspension), so they can never go stale.
PENDING = "pending"
SENDING = "sending"
SENT = "sent"
ERROR = "error"
TERMINAL = (SENT, ERROR)

REPORTABLE_EVENTS = frozenset({"sent", "error", "deferred", "bounce"})


def is_reportable(event_type: str) -> bool:
    """Reportable events are posted to the tenant (SPEC §5.3)."""
    return event_type in REPORTABLE_EVENTS or event_type.startswith("pec_")


class BaseModel(peewee.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class SchemaMigration(BaseModel):
    version = peewee.IntegerField(primary_key=True)
    applied_ts = peewee.BigIntegerField()


class InstanceSetting(BaseModel):
    key = peewee.CharField(primary_key=True, max_length=64)
    value = peewee.TextField(null=True)


class Tenant(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=64)
    name = peewee.TextField(null=True)
    client_base_url = peewee.TextField(null=True)
    client_sync_path = peewee.TextField(null=True)
    client_attachment_path = peewee.TextField(null=True)
    client_auth = peewee.TextField(null=True)  # JSON object
    rate_limits = peewee.TextField(null=True)  # JSON object
    large_file_config = peewee.TextField(null=True)  # JSON object
    active = peewee.BooleanField(default=True)
    suspended_batches = peewee.TextField(default="[]")  # JSON list; ["*"] = all
    # Sync state (SPEC §10): persisted so it survives restarts.
    dnd_until = peewee.BigIntegerField(null=True)
    last_sync_ts = peewee.BigIntegerField(null=True)
    last_call_ts = peewee.BigIntegerField(null=True)
    next_sync_ts = peewee.BigIntegerField(null=True)
    consecutive_failures = peewee.IntegerField(default=0)
    last_error = peewee.TextField(null=True)
    last_error_ts = peewee.BigIntegerField(null=True)
    created_ts = peewee.BigIntegerField()
    updated_ts = peewee.BigIntegerField()


class TenantApiKey(BaseModel):
    tenant_id = peewee.CharField(primary_key=True, max_length=64)
    key_hash = peewee.CharField(unique=True, max_length=64)  # sha256 hex
    expires_at = peewee.BigIntegerField(null=True)
    created_ts = peewee.BigIntegerField()


class Account(BaseModel):
    seq = peewee.AutoField()
    tenant_id = peewee.CharField(max_length=64)
    id = peewee.CharField(max_length=128)
    host = peewee.TextField()
    port = peewee.IntegerField()
    user = peewee.TextField(null=True)
    password = peewee.TextField(null=True)
    use_tls = peewee.BooleanField(null=True)
    use_ssl = peewee.BooleanField(null=True)
    tls_verify = peewee.BooleanField(default=True)
    ttl = peewee.IntegerField(default=300)
    limit_per_minute = peewee.IntegerField(null=True)
    limit_per_hour = peewee.IntegerField(null=True)
    limit_per_day = peewee.IntegerField(null=True)
    limit_behavior = peewee.CharField(max_length=16, default="defer")
    batch_size = peewee.IntegerField(null=True)
    is_pec_account = peewee.BooleanField(default=False)
    imap_host = peewee.TextField(null=True)
    imap_port = peewee.IntegerField(null=True)
    imap_user = peewee.TextField(null=True)
    imap_password = peewee.TextField(null=True)
    imap_ssl = peewee.BooleanField(null=True)
    imap_folder = peewee.TextField(null=True)
    created_ts = peewee.BigIntegerField()
    updated_ts = peewee.BigIntegerField()

    class Meta:
        indexes = ((("tenant_id", "id"), True),)


class Message(BaseModel):
    # seq is the acceptance order: FIFO within a priority (SPEC §6.1 rule 2).
    seq = peewee.AutoField()
    pk = peewee.CharField(max_length=36, unique=True)
    tenant_id = peewee.CharField(max_length=64)
    id = peewee.CharField(max_length=255)
    account_id = peewee.CharField(max_length=128)
    priority = peewee.SmallIntegerField(default=2)
    batch_code = peewee.CharField(max_length=64, null=True)
    status = peewee.CharField(max_length=16, default=PENDING)
    payload = peewee.TextField()  # JSON, the normalized MessagePayload
    message_id = peewee.TextField(null=True)  # the Message-ID header actually sent
    deferred_ts = peewee.BigIntegerField(null=True)
    retry_count = peewee.IntegerField(default=0)
    created_ts = peewee.BigIntegerField()
    updated_ts = peewee.BigIntegerField()
    sent_ts = peewee.BigIntegerField(null=True)
    error_ts = peewee.BigIntegerField(null=True)
    smtp_ts = peewee.BigIntegerField(null=True)
    error = peewee.TextField(null=True)
    reported_ts = peewee.BigIntegerField(null=True)
    is_pec = peewee.BooleanField(default=False)
    # Claim with a lease (SPEC §18.3): reserved for one worker until it expires.
    claimed_by = peewee.CharField(max_length=128, null=True)
    lease_expires_ts = peewee.BigIntegerField(null=True)

    class Meta:
        indexes = (
            (("tenant_id", "id"), True),
            (("tenant_id", "account_id", "status", "priority", "seq"), False),
            (("status", "deferred_ts"), False),
        )


class MessageEvent(BaseModel):
    event_id = peewee.AutoField()
    message_pk = peewee.CharField(max_length=36, index=True)
    tenant_id = peewee.CharField(max_length=64)
    event_type = peewee.CharField(max_length=32)
    event_ts = peewee.BigIntegerField()
    description = peewee.TextField(null=True)
    metadata = peewee.TextField(null=True)  # JSON object
    reportable = peewee.BooleanField(default=False)
    reported_ts = peewee.BigIntegerField(null=True)

    class Meta:
        indexes = ((("tenant_id", "reportable", "reported_ts"), False),)


class CommandLogEntry(BaseModel):
    """Audit log of mutating commands (SPEC §3.13); payload secrets are masked before storing."""

    id = peewee.AutoField()
    command_ts = peewee.BigIntegerField(index=True)
    endpoint = peewee.CharField(max_length=64)
    tenant_id = peewee.CharField(max_length=64, null=True, index=True)
    actor = peewee.CharField(max_length=16)  # admin | tenant
    payload = peewee.TextField(null=True)  # JSON
    response_status = peewee.IntegerField()


class RateCounter(BaseModel):
    """Sends per window (SPEC §7.1): scope ``account:<tenant>:<id>`` or ``tenant:<tenant>``."""

    scope = peewee.CharField(max_length=200)
    window = peewee.CharField(max_length=8)  # minute | hour | day
    window_start = peewee.BigIntegerField()
    count = peewee.IntegerField(default=0)

    class Meta:
        indexes = ((("scope", "window", "window_start"), True),)


class InstanceHeartbeat(BaseModel):
    """One row per live instance sharing the database (SPEC §18.2)."""

    instance_id = peewee.CharField(primary_key=True, max_length=128)
    nonce = peewee.CharField(max_length=64)
    started_ts = peewee.BigIntegerField()
    last_heartbeat_ts = peewee.BigIntegerField()
    active = peewee.BooleanField(default=True)


class SyncLease(BaseModel):
    """Who may call a tenant's sync endpoint right now (SPEC §10.3 rule 5, §18.4)."""

    tenant_id = peewee.CharField(primary_key=True, max_length=64)
    holder = peewee.CharField(max_length=200)
    expires_ts = peewee.BigIntegerField()


class LargeFile(BaseModel):
    """An attachment moved to tenant storage (SPEC §9.7 rule 4, §9.8).

    Carries the storage URL and (sealed) options it needs, so the cleanup can
    delete the stored file even after its tenant was deleted (SPEC §3.11).
    """

    file_id = peewee.CharField(primary_key=True, max_length=36)
    tenant_id = peewee.CharField(max_length=64, index=True)
    message_pk = peewee.CharField(max_length=36)
    content_md5 = peewee.CharField(max_length=32)
    filename = peewee.TextField()
    content_type = peewee.TextField()
    size_bytes = peewee.BigIntegerField()
    storage_url = peewee.TextField()  # the stored file itself: {storage_url}/{file_id}/{name}
    storage_options = peewee.TextField(null=True)  # JSON; every string sealed like secrets
    created_ts = peewee.BigIntegerField()
    expires_ts = peewee.BigIntegerField(index=True)
    lifespan_after_download_days = peewee.IntegerField(null=True)
    first_download_ts = peewee.BigIntegerField(null=True)
    download_count = peewee.IntegerField(default=0)
    deleted_ts = peewee.BigIntegerField(null=True, index=True)

    class Meta:
        indexes = ((("message_pk", "content_md5"), False),)


ALL_MODELS: tuple[type[BaseModel], ...] = (
    SchemaMigration,
    InstanceSetting,
    Tenant,
    TenantApiKey,
    Account,
    Message,
    MessageEvent,
    CommandLogEntry,
    RateCounter,
    InstanceHeartbeat,
    SyncLease,
    LargeFile,
)


# -- bounces and PEC receipts (SPEC §11, §12) -------------------------------------------


class ProcessedMail(BaseModel):
    """A bounce or receipt already handled, per recipient: never counted twice (SPEC §11.2.4).

    ``mail_key`` is a SHA-256 of the mail's Message-ID (or of its bytes when it has
    none), so a crash before flagging, a UIDVALIDITY change or a server refusing
    keywords never records the same bounce again.
    """

    id = peewee.AutoField()
    mail_key = peewee.CharField(max_length=64)
    recipient = peewee.CharField(max_length=320, default="")
    outcome = peewee.CharField(max_length=16)  # event | unmatched | unparseable
    message_pk = peewee.CharField(max_length=36, null=True)
    processed_ts = peewee.BigIntegerField(index=True)

    class Meta:
        indexes = ((("mail_key", "recipient"), True),)


class MailboxState(BaseModel):
    """UID cursor and poll lease of one IMAP mailbox: ``bounce`` or ``pec:<tenant>:<account>``.

    ``identity`` (host:port/user/folder) ties the cursor to one mailbox: pointing the
    poller elsewhere starts from UID 0. The lease lets one instance poll at a time
    (SPEC §18.4); ``last_poll_ts`` is when the last successful poll began (§12 rule 6).
    """

    mailbox = peewee.CharField(primary_key=True, max_length=255)
    identity = peewee.TextField(null=True)
    uidvalidity = peewee.BigIntegerField(null=True)
    last_uid = peewee.BigIntegerField(default=0)
    holder = peewee.CharField(max_length=200, null=True)
    lease_expires_ts = peewee.BigIntegerField(null=True)
    last_poll_ts = peewee.BigIntegerField(null=True)


class WakeRequest(BaseModel):
    """A run-now made on one instance, for the others to act on (SPEC §18.5, §10.9 rule 3)."""

    id = peewee.AutoField()
    tenant_id = peewee.CharField(max_length=64, null=True)  # None: an admin run-now
    origin = peewee.CharField(max_length=128)  # the instance that received it
    # Who makes a tenant run-now's forced sync call: the origin when it is active,
    # else the first active instance to take it (one call, not one per instance).
    taken_by = peewee.CharField(max_length=128, null=True)
    created_ts = peewee.BigIntegerField(index=True)


# Bounces are correlated by the Message-ID actually sent (SPEC §11.4).
Message.add_index(Message.message_id)
ALL_MODELS = (*ALL_MODELS, ProcessedMail, MailboxState, WakeRequest)
