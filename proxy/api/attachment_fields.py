"""Judge a message's ``attachments`` objects (SPEC §9.1, §9.5, §9.6 rule 1).

Separate from ``validation.py`` because attachments have rules of their own: strict
keys, a fetch mode inferred from ``storage_path``, base64 made canonical, filesystem
paths confined to the allowed directories, URLs and fetch ``auth`` checked. It raises
``Reject`` like the rest of validation, mostly as ``attachments[i].<key>: <problem>``.
Pure but for ``os.path.realpath`` (through ``safety.confined_path``; files need not
exist).
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from typing import Any

from proxy.api.field_checks import CONTROL, Reject, header_text, is_blank
from proxy.attachments import safety

MAX_FILENAME_CHARS = 255
NUL_PROBLEM = "NUL character"  # in stored text; no mail or database text may hold one

_FETCH_MODES = frozenset({"endpoint", "http_url", "base64", "filesystem"})
_ATTACHMENT_KEYS = frozenset(
    {"filename", "storage_path", "fetch_mode", "mime_type", "content_md5", "auth"}
)
_AUTH_REQUIRED = {"none": (), "bearer": ("token",), "basic": ("user", "password")}
_AUTH_KEYS = frozenset({"method", "token", "user", "password"})
_MIME_TYPE = re.compile(r"[A-Za-z0-9][\w!#$&^.+-]*/[A-Za-z0-9][\w!#$&^.+-]*", re.ASCII)
_MD5 = re.compile(r"[a-fA-F0-9]{32}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_ASCII_SPACE = re.compile(r"[ \t\r\n\f\v]")


def parse_attachments(raw: object, allowed_dirs: tuple[str, ...]) -> list[dict[str, Any]] | None:
    """Return the normalized attachment objects (None when absent), or raise Reject."""
    if is_blank(raw):
        return None
    if not isinstance(raw, list):
        raise Reject("attachments", "invalid attachments")
    return [_attachment(f"attachments[{i}]", item, allowed_dirs) for i, item in enumerate(raw)]


def _strict_object(raw: object, where: str, allowed: frozenset[str], what: str) -> dict[str, Any]:
    """``raw`` as an object with only ``allowed`` fields (SPEC §4.2: unknown ones are rejected)."""
    if not isinstance(raw, dict):
        raise Reject.nested(where, f"invalid {what}")
    for key in raw:
        if key not in allowed:
            raise Reject.nested(f"{where}.{key}", "unknown field")
    return raw


def _attachment(where: str, raw: object, allowed_dirs: tuple[str, ...]) -> dict[str, Any]:
    raw = _strict_object(raw, where, _ATTACHMENT_KEYS, "attachment")
    filename = raw.get("filename")
    if is_blank(filename):
        raise Reject.nested(f"{where}.filename", "missing filename")
    filename = header_text(filename, f"{where}.filename")
    if len(filename) > MAX_FILENAME_CHARS:
        raise Reject.nested(f"{where}.filename", "filename too long")
    storage_path, fetch_mode = _fetch_source(where, raw, allowed_dirs)
    mime_type = raw.get("mime_type")
    if mime_type is not None and not (
        isinstance(mime_type, str) and _MIME_TYPE.fullmatch(mime_type)
    ):
        raise Reject.nested(f"{where}.mime_type", "invalid mime_type")
    md5 = raw.get("content_md5")
    if md5 is not None and not (isinstance(md5, str) and _MD5.fullmatch(md5)):
        raise Reject.nested(f"{where}.content_md5", "invalid content_md5")
    attachment = {
        "filename": filename,
        "storage_path": storage_path,
        "fetch_mode": fetch_mode,
        "mime_type": mime_type,
        "content_md5": md5.lower() if md5 else None,  # one spelling for the cache key
        "auth": _auth(f"{where}.auth", raw.get("auth")),
    }
    return {key: value for key, value in attachment.items() if value is not None}


def _fetch_source(
    where: str, raw: dict[str, Any], allowed_dirs: tuple[str, ...]
) -> tuple[str, str]:
    path, mode = raw.get("storage_path"), raw.get("fetch_mode")
    if is_blank(path):
        raise Reject.nested(f"{where}.storage_path", "missing storage_path")
    if not isinstance(path, str):
        raise Reject.nested(f"{where}.storage_path", "invalid storage_path")
    if mode is None:
        mode = _inferred_fetch_mode(path)
    elif not isinstance(mode, str) or mode not in _FETCH_MODES:
        raise Reject.nested(f"{where}.fetch_mode", "unknown fetch_mode")
    if mode == "base64":
        return _canonical_base64(f"{where}.storage_path", path), mode
    if mode == "filesystem":
        return _confined_path(f"{where}.storage_path", path, allowed_dirs), mode
    if mode == "http_url":
        _check_url(f"{where}.storage_path", path)
    elif "\x00" in path:  # an endpoint's document key: any text, but stored
        raise Reject.nested(f"{where}.storage_path", NUL_PROBLEM)
    return path, mode


def _inferred_fetch_mode(path: str) -> str:
    if path.startswith("base64:"):
        return "base64"
    if path.lower().startswith(("http://", "https://")):
        return "http_url"
    return "filesystem" if path.startswith("/") else "endpoint"


def _canonical_base64(field: str, path: str) -> str:
    """Return the content without whitespace and with its padding, or reject it."""
    compact = _ASCII_SPACE.sub("", path.removeprefix("base64:"))
    data = compact.rstrip("=")
    if not data or not _BASE64.fullmatch(compact) or len(data) % 4 == 1:
        raise Reject.nested(field, "invalid base64")
    padded = data + "=" * (-len(data) % 4)
    try:
        base64.b64decode(padded, validate=True)
    except binascii.Error:
        raise Reject.nested(field, "invalid base64") from None
    return padded


def _confined_path(field: str, path: str, allowed_dirs: tuple[str, ...]) -> str:
    """Resolve ``..`` and symlinks now; what is stored is the path that was checked."""
    try:
        return safety.confined_path(path, allowed_dirs)
    except safety.PathRefused as refused:
        raise Reject.nested(field, refused.reason) from None


def _check_url(field: str, url: str) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        raise Reject.nested(field, "invalid url") from None
    if parts.scheme.lower() not in {"http", "https"} or not parts.netloc:
        raise Reject.nested(field, "invalid url")
    if CONTROL.search(url) or " " in url:
        raise Reject.nested(field, "invalid url")


def _auth(path: str, raw: object) -> dict[str, Any] | None:
    if raw is None:
        return None
    raw = _strict_object(raw, path, _AUTH_KEYS, "auth")
    method = raw.get("method")
    if is_blank(method):
        raise Reject.nested(f"{path}.method", "missing method")
    if not isinstance(method, str) or method not in _AUTH_REQUIRED:
        raise Reject.nested(f"{path}.method", "unknown method")
    for key in ("token", "user", "password"):
        value = raw.get(key)
        if is_blank(value) and key in _AUTH_REQUIRED[method]:
            raise Reject.nested(f"{path}.{key}", f"missing {key}")
        if value is not None and not isinstance(value, str):
            raise Reject.nested(f"{path}.{key}", f"invalid {key}")
        if value is not None and "\x00" in value:
            raise Reject.nested(f"{path}.{key}", NUL_PROBLEM)
    if CONTROL.search(raw.get("token") or ""):  # the token is sent as a raw HTTP header
        raise Reject.nested(f"{path}.token", "invalid token")
    return {key: value for key, value in raw.items() if value is not None}
