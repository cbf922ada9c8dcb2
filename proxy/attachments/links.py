"""Signed download links for large files (SPEC §9.8 rules 1 and 3).

A link is ``{public_base_url}/download/{file_id}-{expires_ts}-{sig}/{filename}``
where ``sig`` is the first 32 hex characters of HMAC-SHA256(download secret,
``"{file_id}:{filename}:{expires_ts}"``). The filename in the path is cosmetic:
the signature covers the stored name, so renaming the link changes nothing.

Pure except ``download_secret``, which reads (and creates once) the instance's
stored secret when ``GMP_DOWNLOAD_SECRET`` is not set.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

SECRET_SETTING = "download_secret"  # noqa: S105 (a setting name) instance setting shared by every instance on the database
SIG_CHARS = 32
_TOKEN = re.compile(
    r"(?P<file_id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r"-(?P<expires_ts>[0-9]{1,15})-(?P<sig>[0-9a-f]{32})"
)


@dataclass(frozen=True, slots=True)
class Token:
    file_id: str
    expires_ts: int
    sig: str


def signature(secret: bytes, file_id: str, filename: str, expires_ts: int) -> str:
    message = f"{file_id}:{filename}:{expires_ts}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:SIG_CHARS]


def token(secret: bytes, file_id: str, filename: str, expires_ts: int) -> str:
    return f"{file_id}-{expires_ts}-{signature(secret, file_id, filename, expires_ts)}"


def url(public_base_url: str, secret: bytes, file_id: str, filename: str, expires_ts: int) -> str:
    base = public_base_url.rstrip("/")
    signed = token(secret, file_id, filename, expires_ts)
    return f"{base}/download/{signed}/{quote(filename, safe='')}"


def parse(text: str) -> Token | None:
    """The parts of a token, or None when it is not one (a 404 without any lookup)."""
    found = _TOKEN.fullmatch(text)
    if found is None:
        return None
    return Token(found["file_id"], int(found["expires_ts"]), found["sig"])


def is_authentic(secret: bytes, parsed: Token, filename: str) -> bool:
    expected = signature(secret, parsed.file_id, filename, parsed.expires_ts)
    return hmac.compare_digest(expected, parsed.sig)


def download_secret(configured: str | None, stored_or_created: Callable[[str, str], str]) -> bytes:
    """``GMP_DOWNLOAD_SECRET``, else the stored secret (created once, shared by instances).

    ``stored_or_created(key, candidate)`` stores ``candidate`` unless a value exists and
    returns the value in force (``InstanceSettingsStore.set_default``), so racing
    instances agree on one secret.
    """
    if configured:
        return configured.encode()
    return stored_or_created(SECRET_SETTING, secrets.token_urlsafe(32)).encode()
