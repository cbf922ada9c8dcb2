"""Frozen snapshots of stored rows, handed out by the query modules, and how secrets are stored.

Live peewee rows never leave ``proxy/store``: they are mutable and bound to a
thread's connection. These dataclasses are safe to pass between threads and
actors.

Secrets (SPEC §16 rule 1) are sealed on write and opened on read by
``SecretCodec``; the ``map_*`` functions are the one list of where secrets sit
inside the stored JSON. A secret no key opens is read as an ``UnusableSecret``:
it shows as the mask, counts as set, and keeps its stored text when written back.
Without a key a value is stored as given, so a plaintext secret that happens to
start with ``ENC:`` would read back as unusable: an accepted edge of §16 rule 4.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.crypto import DecryptionError, NullCipher, SecretCipher

logger = logging.getLogger(__name__)

MASK = "********"
AUTH_SECRET_KEYS = ("token", "password")  # in client_auth and attachment auth objects
DECRYPTION_FAILED = "credential decryption failed"
_MAX_REPORTED = 10_000
Leaf = Callable[[str], str]


class UnusableSecret(str):
    """A stored secret that no configured key decrypts (SPEC §16 rule 4).

    Its text is the mask, so it can never show more than ``"********"``; it is not
    None, so ``password_set`` stays true; ``stored`` keeps the stored text, which
    ``SecretCodec.seal`` writes back unchanged. Code about to use a secret checks
    ``is_unusable`` and fails that operation instead.
    """

    stored: str

    def __new__(cls, stored: str) -> UnusableSecret:
        obj = super().__new__(cls, MASK)
        obj.stored = stored
        return obj


def is_unusable(value: object) -> bool:
    return isinstance(value, UnusableSecret)


def map_auth(auth: Any, leaf: Leaf) -> Any:
    """``client_auth`` or an attachment ``auth`` with ``leaf`` applied to its secrets."""
    if not isinstance(auth, dict):
        return auth
    return {
        k: (leaf(v) if k in AUTH_SECRET_KEYS and isinstance(v, str) else v) for k, v in auth.items()
    }


def map_tree(value: Any, leaf: Leaf) -> Any:
    """Every string inside ``value``, nested too, through ``leaf`` (storage options)."""
    if isinstance(value, dict):
        return {k: map_tree(v, leaf) for k, v in value.items()}
    if isinstance(value, list):
        return [map_tree(v, leaf) for v in value]
    return leaf(value) if isinstance(value, str) else value


def map_large_file_config(config: Any, leaf: Leaf) -> Any:
    """``large_file_config`` with ``leaf`` applied to every string of ``storage_options``."""
    if not isinstance(config, dict) or config.get("storage_options") is None:
        return config
    return config | {"storage_options": map_tree(config["storage_options"], leaf)}


def map_payload(payload: Any, leaf: Leaf) -> Any:
    """A message payload with ``leaf`` applied to each attachment's ``auth`` secrets."""
    if not isinstance(payload, dict) or not isinstance(payload.get("attachments"), list):
        return payload
    attachments = [
        item | {"auth": map_auth(item["auth"], leaf)}
        if isinstance(item, dict) and isinstance(item.get("auth"), dict)
        else item
        for item in payload["attachments"]
    ]
    return payload | {"attachments": attachments}


class SecretCodec:
    """Seals secrets for storage and opens them on read, with the configured cipher.

    ``seal`` encrypts (plaintext with ``NullCipher``); ``open`` decrypts, and a value
    no key opens becomes an ``UnusableSecret`` and is logged once, as an error, by
    where it sits (never by value); ``reseal`` is the start-up rotation step.
    """

    def __init__(self, cipher: SecretCipher | None = None) -> None:
        self.cipher: SecretCipher = cipher if cipher is not None else NullCipher()
        self._reported: set[str] = set()  # each place is logged once per process

    def seal(self, value: str) -> str:
        if isinstance(value, UnusableSecret):
            return value.stored
        return self.cipher.encrypt(value)

    def open(self, value: str, where: str, context: Mapping[str, Any] | None = None) -> str:
        try:
            return self.cipher.decrypt(value)
        except DecryptionError:
            self._report(where, context or {})
            return UnusableSecret(value)

    def opener(self, where: str, context: Mapping[str, Any] | None = None) -> Leaf:
        """``open`` bound to a place, for the ``map_*`` functions."""
        return lambda value: self.open(value, where, context)

    def reseal(self, value: str) -> str:
        """The value encrypted with the current key; unchanged if it is or cannot be.

        Plaintext is encrypted when a key is configured; a value under a previous key
        is re-encrypted; an unusable one is left as it is (re-encrypting needs its text).
        """
        if not self.cipher.enabled or self.cipher.is_current(value):
            return value
        try:
            plain = self.cipher.decrypt(value)
        except DecryptionError:
            return value
        return self.cipher.encrypt(plain)

    def needs_reseal(self, value: str) -> bool:
        """Plaintext or not under the current key (unusable values included), with a key."""
        return self.cipher.enabled and not self.cipher.is_current(value)

    def _report(self, where: str, context: Mapping[str, Any]) -> None:
        if where in self._reported:
            return
        if len(self._reported) >= _MAX_REPORTED:
            self._reported.clear()
        self._reported.add(where)
        logger.error(
            "%s: the stored %s cannot be decrypted with the current or a previous key; "
            "operations needing it fail until it is set again",
            DECRYPTION_FAILED,
            where,
            extra=dict(context),
        )


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

    @property
    def password_unusable(self) -> bool:
        """The SMTP password is stored but no configured key decrypts it (SPEC §16 rule 4)."""
        return is_unusable(self.password)


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
