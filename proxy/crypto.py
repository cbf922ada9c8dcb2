"""Secrets at rest (SPEC §16): AES-256-GCM values ``"ENC:" + base64(nonce ‖ ciphertext ‖ tag)``.

This module holds the keys and the cipher, nothing else: it does not know which
fields are secret (``proxy.store.records.SecretCodec`` does) and never logs a
value. ``cipher_from_settings`` turns the configured key sources into a
``Cipher``, or a ``NullCipher`` when no key is configured (plaintext stored);
a key of the wrong length, or two sources naming different keys, is a
``ConfigError`` (exit 2 at start-up).

Decryption tries the current key, then each previous one (rotation, §16 rule 5).
A value that none of them opens raises ``DecryptionError``; callers treat the
secret as unusable and never fall back to its stored text.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from proxy.config import ConfigError

PREFIX = "ENC:"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_ENV = "GMP_ENCRYPTION_KEY"
KEY_FILE_ENV = "GMP_ENCRYPTION_KEY_FILE"
PREVIOUS_KEYS_ENV = "GMP_ENCRYPTION_PREVIOUS_KEYS"


class DecryptionError(Exception):
    """No configured key opens the value (wrong key, damaged text, or no key at all)."""


class SecretCipher(Protocol):
    """What the store needs: ``Cipher`` with a key, ``NullCipher`` without one."""

    @property
    def enabled(self) -> bool: ...

    def encrypt(self, text: str) -> str: ...

    def decrypt(self, value: str) -> str: ...

    def is_current(self, value: str) -> bool: ...


def is_encrypted(value: object) -> bool:
    """Whether a stored value carries the ``ENC:`` prefix (anything else is plaintext)."""
    return isinstance(value, str) and value.startswith(PREFIX)


def generate_key() -> str:
    """A new random key as the base64 text ``GMP_ENCRYPTION_KEY`` takes (``mail-proxy keygen``)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def key_from_text(text: str, source: str) -> bytes:
    """Decode base64 (standard or URL-safe, padding optional) of exactly 32 bytes.

    ``source`` names the setting in the error; the key itself is never shown.
    """
    cleaned = "".join(text.split())
    padded = (cleaned + "=" * (-len(cleaned) % 4)).encode("ascii", errors="replace")
    for altchars in (None, b"-_"):
        try:
            key = base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(key) != KEY_BYTES:
            raise ConfigError(
                f"{source}: the key must be base64 of exactly {KEY_BYTES} bytes (got {len(key)})"
            )
        return key
    raise ConfigError(f"{source}: the key is not valid base64 (generate one: mail-proxy keygen)")


def key_from_file(
    path: str, source: str = f"security.encryption_key_file ({KEY_FILE_ENV})"
) -> bytes:
    """Read a key file: 32 raw bytes, or the base64 text ``mail-proxy keygen`` prints."""
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read {path}: {exc.strerror or exc}") from None
    if len(data) == KEY_BYTES:
        return data
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(
            f"{source}: {path} must hold {KEY_BYTES} raw bytes or their base64 text"
        ) from None
    return key_from_text(text, f"{source} {path}")


class Cipher:
    """AES-256-GCM with a current key (encrypts) and previous keys (still decrypt)."""

    enabled = True

    def __init__(self, current: bytes, previous: Iterable[bytes] = ()) -> None:
        if len(current) != KEY_BYTES or any(len(k) != KEY_BYTES for k in previous):
            raise ValueError(f"keys must be {KEY_BYTES} bytes")
        self._current = AESGCM(current)
        self._previous = tuple(AESGCM(k) for k in previous if k != current)

    def encrypt(self, text: str) -> str:
        """Encrypt with the current key and a fresh random nonce (never reused)."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._current.encrypt(nonce, text.encode("utf-8"), None)  # ciphertext ‖ tag
        return PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def decrypt(self, value: str) -> str:
        """The plaintext of an ``ENC:`` value; a value without the prefix is returned as is.

        Raises ``DecryptionError`` when no key opens it; never returns the stored text
        of an ``ENC:`` value.
        """
        if not is_encrypted(value):
            return value
        nonce, sealed = _split(value)
        for key in (self._current, *self._previous):
            try:
                return key.decrypt(nonce, sealed, None).decode("utf-8")
            except (InvalidTag, UnicodeDecodeError):
                continue
        raise DecryptionError("no configured key decrypts this value")

    def is_current(self, value: str) -> bool:
        """Whether the value is already encrypted with the current key (nothing to rewrite).

        Plaintext and values under a previous key are not; nor is an unusable value,
        but the caller must leave that one alone (it cannot be re-encrypted).
        """
        if not is_encrypted(value):
            return False
        try:
            nonce, sealed = _split(value)
            self._current.decrypt(nonce, sealed, None)
        except (DecryptionError, InvalidTag):
            return False
        return True


class NullCipher:
    """No key configured: secrets are stored as they are (SPEC §16 rule 6).

    An ``ENC:`` value written while a key was configured cannot be opened and
    raises ``DecryptionError`` like a wrong key would.
    """

    enabled = False

    def encrypt(self, text: str) -> str:
        return text

    def decrypt(self, value: str) -> str:
        if is_encrypted(value):
            raise DecryptionError("no encryption key configured")
        return value

    def is_current(self, value: str) -> bool:
        return True  # nothing can be re-encrypted without a key


def _split(value: str) -> tuple[bytes, bytes]:
    try:
        raw = base64.b64decode(value[len(PREFIX) :].encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise DecryptionError("stored value is not valid base64") from None
    if len(raw) < NONCE_BYTES + TAG_BYTES:
        raise DecryptionError("stored value is too short")
    return raw[:NONCE_BYTES], raw[NONCE_BYTES:]


def cipher_from_settings(settings: object) -> Cipher | NullCipher:
    """The cipher for the configured keys (SPEC §16 rule 3); ``ConfigError`` on a bad key.

    Reads ``encryption_key``, ``encryption_key_file`` and ``encryption_previous_keys``
    from ``settings`` (a ``proxy.config.Settings``). Both key sources may be set only
    if they name the same key.
    """
    text = getattr(settings, "encryption_key", None)
    path = getattr(settings, "encryption_key_file", None)
    previous_texts = getattr(settings, "encryption_previous_keys", ()) or ()
    # Name where each value came from ("[security] encryption_key in FILE", "GMP_… (environment)").
    sources: Mapping[str, str] = getattr(settings, "sources", None) or {}
    key_source = sources.get("encryption_key", f"security.encryption_key ({KEY_ENV})")
    file_source = sources.get(
        "encryption_key_file", f"security.encryption_key_file ({KEY_FILE_ENV})"
    )
    previous_source = sources.get(
        "encryption_previous_keys", f"security.previous_keys ({PREVIOUS_KEYS_ENV})"
    )
    from_text = key_from_text(text, key_source) if text else None
    from_file = key_from_file(path, file_source) if path else None
    if from_text is not None and from_file is not None and from_text != from_file:
        raise ConfigError(f"{key_source} and {file_source} name different keys; set one of them")
    current = from_text or from_file
    previous = [
        key_from_text(item, f"{previous_source} item {n}")
        for n, item in enumerate(previous_texts, start=1)
        if item.strip()
    ]
    if current is None:
        if previous:
            raise ConfigError(
                f"{previous_source} is set but no current key is: set {KEY_ENV} or {KEY_FILE_ENV}"
            )
        return NullCipher()
    return Cipher(current, previous)
