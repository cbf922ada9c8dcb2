"""Judge an add-messages request (SPEC §3.7, §4, §9.1, §9.5, §9.6 rule 1).

Pure: no database, network, falcon or actor code. The two lookups that need the
database arrive as callables, and the filesystem is touched only by
``os.path.realpath`` (to see where ``..`` and symlinks lead; files need not exist).

A request fails as a whole only for a broken body (``BodyError`` → 422, naming every
problem), more than ``MAX_MESSAGES`` entries (``TooManyMessages`` → 400) or a tenant
token naming another tenant (``ForeignTenant`` → 403). Everything else is judged per
message: a bad one becomes a ``Rejection`` carrying its first problem in SPEC §4.3's
words, a good one an ``Accepted`` holding the normalized payload that is stored and
later rebuilt into MIME, so nothing downstream has to validate again.

Choices where SPEC is silent: a JSON value of the wrong type is ``invalid <field>``;
"control character" means C0, DEL, C1 and U+2028/U+2029 (TAB included), and is
reported as ``header injection in <field>`` for every value that reaches a header,
``id`` included (it becomes ``X-Genro-Mail-ID``); header values ``true``/``false``
are written in JSON's spelling; empty strings of optional fields count as absent.
A NUL (U+0000) in any other stored text (``tenant_id``, ``account_id``, ``body``,
``html``, an endpoint ``storage_path``, ``auth.user``/``password``) rejects the
message as ``NUL character in <field>`` (``<path>: NUL character`` inside an
attachment): no mail or database text may hold one. Unknown fields are not
stored, so a NUL in one is harmless.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import re
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import getaddresses, quote
from typing import Any

import email_validator

from proxy.attachments import safety

MAX_MESSAGES = 1000
MAX_ID_CHARS = 255
MAX_BATCH_CODE_CHARS = 64
MAX_FILENAME_CHARS = 255
LOWEST_PRIORITY = 3
_MAX_TS = 2**63 - 1  # a database integer column; beyond it the upsert would fail with a 500
NUL_PROBLEM = "NUL character"  # in stored text; no mail or database text may hold one

_PRIORITY_NAMES = {"immediate": 0, "high": 1, "medium": 2, "low": 3}
_CONTENT_TYPES = {"plain": "plain", "text/plain": "plain", "html": "html", "text/html": "html"}
_RESERVED_HEADERS = frozenset(
    {"content-type", "content-transfer-encoding", "mime-version", "bcc", "x-genro-mail-id"}
)
_FETCH_MODES = frozenset({"endpoint", "http_url", "base64", "filesystem"})
_ATTACHMENT_KEYS = frozenset(
    {"filename", "storage_path", "fetch_mode", "mime_type", "content_md5", "auth"}
)
_AUTH_REQUIRED = {"none": (), "bearer": ("token",), "basic": ("user", "password")}
_AUTH_KEYS = frozenset({"method", "token", "user", "password"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")  # printable ASCII, no ':' or space
_MIME_TYPE = re.compile(r"[A-Za-z0-9][\w!#$&^.+-]*/[A-Za-z0-9][\w!#$&^.+-]*", re.ASCII)
_MD5 = re.compile(r"[a-fA-F0-9]{32}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_ASCII_SPACE = re.compile(r"[ \t\r\n\f\v]")
_NAME_SPECIALS = re.compile(r'[][\\()<>@,:;".]')  # the set email.utils.formataddr quotes


@dataclass(frozen=True, slots=True)
class Rejection:
    """One refused message: its id (None when unusable), the field and SPEC's reason."""

    id: str | None
    field: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """Return the ``rejected`` item of the response; ``id`` stays even when null."""
        return {"id": self.id, "field": self.field, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Accepted:
    """A message ready for the upsert; ``payload`` is what the store keeps."""

    tenant_id: str
    id: str
    account_id: str
    priority: int
    batch_code: str | None
    deferred_ts: int | None  # kept even when past: "past means now" is the sender's business
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Batch:
    """The verdict on a request: queue ``accepted``, report ``rejected``."""

    accepted: tuple[Accepted, ...]
    rejected: tuple[Rejection, ...]


class BodyError(Exception):
    """The body is not a request at all (422); ``problems`` names every fault at once."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(p['loc'])}: {p['msg']}" for p in problems))
        self.problems = problems


class TooManyMessages(Exception):
    """More than ``MAX_MESSAGES`` entries: refused before any message is judged."""

    def __init__(self) -> None:
        super().__init__(f"Cannot enqueue more than {MAX_MESSAGES} messages at once")


class ForeignTenant(Exception):
    """A tenant token named another tenant in some message: nothing may be queued."""

    def __init__(self) -> None:
        super().__init__("Token not authorized for this tenant")


class _Reject(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason

    @classmethod
    def nested(cls, path: str, problem: str) -> _Reject:
        """Build the ``attachments[i].x: problem`` form, whose reason repeats its path."""
        return cls(path, f"{path}: {problem}")


@dataclass(frozen=True, slots=True)
class _Context:
    principal_tenant: str | None
    default_priority: int
    tenant_known: Callable[[str], bool]
    account_known: Callable[[str, str], bool]
    allowed_dirs: tuple[str, ...]


def parse_priority(value: object) -> int:
    """Resolve a priority to 0..3 (SPEC §4.4); ValueError for anything else.

    Integers and digit strings above 3 become 3, for clients written to the old "1-4"
    wording. Bools are refused although Python counts them as ints.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return min(value, LOWEST_PRIORITY)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _PRIORITY_NAMES:
            return _PRIORITY_NAMES[text]
        if text.isascii() and text.isdigit():
            digits = text.lstrip("0") or "0"  # no int() of a huge string
            return LOWEST_PRIORITY if len(digits) > 1 else min(int(digits), LOWEST_PRIORITY)
    raise ValueError("invalid priority")


@functools.lru_cache(maxsize=8192)  # senders and many recipients repeat: checking is costly
def is_valid_address(addr: str) -> bool:
    """Check a bare address (no display name) with email-validator's syntax rules only.

    No DNS; non-global domains are fine. email-validator always refuses special-use
    names (``.local``, ``.test``, ``localhost`` …), so their labels are swapped for
    same-length letters before the check: SPEC §4.3 rule 4 accepts them.
    """
    local, at, domain = addr.rpartition("@")
    for name in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        tail = domain[-len(name) :]
        if tail.lower() == name and (len(domain) == len(name) or domain[-len(name) - 1] == "."):
            domain = domain[: -len(name)] + "x" * len(name)
            break
    try:
        email_validator.validate_email(
            f"{local}{at}{domain}",
            check_deliverability=False,
            globally_deliverable=False,
            allow_smtputf8=True,
        )
    except email_validator.EmailNotValidError:
        return False
    return True


def parse_address_list(value: str | list[str]) -> list[str]:
    """Split and validate an address list, returning each entry formatted back.

    Separators are ``,`` and ``;`` outside quoted names, comments and angle brackets
    (SPEC §4.1); a list's items are split the same way. ValueError carries the raw
    entry that failed, since the rejection reason quotes it.
    """
    return [_format_address(name, addr) for name, addr in _address_pairs(value)]


def parse_batch(
    body: object,
    *,
    principal_tenant: str | None,
    instance_default_priority: int,
    tenant_exists: Callable[[str], bool],
    account_exists: Callable[[str, str], bool],
    allowed_dirs: Sequence[str] = (),
) -> Batch:
    """Judge a whole add-messages body.

    ``principal_tenant`` is the tenant token's owner, None for the admin token. The
    lookups hit the database, so each distinct key is asked once per request. Raises
    BodyError, TooManyMessages or ForeignTenant for whole-request refusals.
    """
    messages, default_priority = _parse_structure(body)
    if len(messages) > MAX_MESSAGES:
        raise TooManyMessages
    if principal_tenant is not None:
        _refuse_foreign_tenants(messages, principal_tenant)
    ctx = _Context(
        principal_tenant=principal_tenant,
        default_priority=instance_default_priority
        if default_priority is None
        else default_priority,
        tenant_known=functools.cache(tenant_exists),
        account_known=functools.cache(account_exists),
        allowed_dirs=tuple(allowed_dirs),
    )
    accepted: list[Accepted] = []
    rejected: list[Rejection] = []
    seen: set[tuple[str, str]] = set()
    for entry in messages:
        try:
            item = _parse_message(entry, ctx)
        except _Reject as problem:
            rejected.append(Rejection(_id_of(entry), problem.field, problem.reason))
            continue
        if (item.tenant_id, item.id) in seen:  # a later copy would silently win the upsert
            rejected.append(Rejection(item.id, "id", "duplicate id in request"))
            continue
        seen.add((item.tenant_id, item.id))
        accepted.append(item)
    return Batch(tuple(accepted), tuple(rejected))


def _parse_structure(body: object) -> tuple[list[Any], int | None]:
    if not isinstance(body, dict):
        raise BodyError([{"loc": ["body"], "msg": "must be a JSON object", "type": "dict_type"}])
    problems: list[dict[str, Any]] = []
    messages = body.get("messages")
    if messages is None:
        problems.append({"loc": ["body", "messages"], "msg": "field required", "type": "missing"})
    elif not isinstance(messages, list):
        problems.append({"loc": ["body", "messages"], "msg": "must be a list", "type": "list_type"})
    default_priority = None
    if body.get("default_priority") is not None:
        try:
            default_priority = parse_priority(body["default_priority"])
        except ValueError:
            loc = ["body", "default_priority"]
            problems.append({"loc": loc, "msg": "invalid priority", "type": "value_error"})
    if problems:
        raise BodyError(problems)
    return messages, default_priority  # type: ignore[return-value]  # a list, checked above


def _refuse_foreign_tenants(messages: list[Any], owner: str) -> None:
    for entry in messages:
        named = entry.get("tenant_id") if isinstance(entry, dict) else None
        if not _is_blank(named) and named != owner:
            raise ForeignTenant


def _parse_message(entry: object, ctx: _Context) -> Accepted:
    if not isinstance(entry, dict):
        raise _Reject("payload", "invalid payload")
    fields = dict(entry)
    if _is_blank(fields.get("tenant_id")) and ctx.principal_tenant is not None:
        fields["tenant_id"] = ctx.principal_tenant
    for name in ("id", "tenant_id", "account_id", "from", "to", "subject"):
        if _is_blank(fields.get(name)):
            raise _Reject(name, f"missing {name}")
    message_id = _header_text(fields["id"], "id", max_chars=MAX_ID_CHARS)
    tenant_id = _stored_text(fields["tenant_id"], "tenant_id")  # checked before the lookups
    account_id = _stored_text(fields["account_id"], "account_id")
    if not ctx.tenant_known(tenant_id):
        raise _Reject("tenant_id", "tenant not found")
    if not ctx.account_known(tenant_id, account_id):
        raise _Reject("account_id", "account not found for tenant")
    payload: dict[str, Any] = {"id": message_id, "tenant_id": tenant_id, "account_id": account_id}
    payload.update(_addresses(fields))
    payload["subject"] = _header_text(fields["subject"], "subject")
    payload.update(_content(fields))
    payload["headers"] = _headers(fields.get("headers"))
    payload["message_id"] = _message_id(fields.get("message_id"))
    payload["attachments"] = _attachments(fields.get("attachments"), ctx.allowed_dirs)
    payload["priority"] = _priority(fields.get("priority"), ctx.default_priority)
    payload["deferred_ts"] = _deferred_ts(fields.get("deferred_ts"))
    payload["batch_code"] = _optional_header_text(fields, "batch_code", MAX_BATCH_CODE_CHARS)
    payload = {key: value for key, value in payload.items() if value is not None}
    return Accepted(
        tenant_id=tenant_id,
        id=message_id,
        account_id=account_id,
        priority=payload["priority"],
        batch_code=payload.get("batch_code"),
        deferred_ts=payload.get("deferred_ts"),
        payload=payload,
    )


def _addresses(fields: dict[str, Any]) -> dict[str, Any]:
    sender = _header_text(fields["from"], "from")
    if len(_rejecting_bad_addresses(sender, "from")) != 1:
        raise _Reject("from", f"invalid address in from: '{sender}'")
    found: dict[str, Any] = {"from": sender.strip()}
    found["from_name"] = _optional_header_text(fields, "from_name")
    for name in ("to", "cc", "bcc", "reply_to"):
        found[name] = _address_list(fields.get(name), name)
    if found["to"] is None:  # present but only separators, e.g. " , "
        raise _Reject("to", "missing to")
    if not _is_blank(fields.get("return_path")):
        raw = _header_text(fields["return_path"], "return_path")
        pairs = _rejecting_bad_addresses(raw, "return_path")
        if len(pairs) != 1:
            raise _Reject("return_path", f"invalid address in return_path: '{raw}'")
        found["return_path"] = pairs[0][1]  # envelope only: the bare address
    return found


def _address_list(raw: object, field: str) -> list[str] | None:
    if _is_blank(raw):
        return None
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise _Reject(field, f"invalid {field}")
    for item in items:
        _header_text(item, field)
    pairs = _rejecting_bad_addresses(items, field)
    return [_format_address(name, addr) for name, addr in pairs] or None


def _rejecting_bad_addresses(value: str | list[str], field: str) -> list[tuple[str, str]]:
    try:
        return _address_pairs(value)
    except ValueError as exc:
        raise _Reject(field, f"invalid address in {field}: '{exc.args[0]}'") from None


def _address_pairs(value: str | list[str]) -> list[tuple[str, str]]:
    pairs = []
    for item in [value] if isinstance(value, str) else value:
        if not isinstance(item, str):
            raise ValueError(str(item))  # noqa: TRY004 - the caller reports it as a bad address
        for piece in _split_address_list(item):
            found = getaddresses([piece])
            # one piece, one address: "a@x.org <b@y.org>" is ambiguous, so refused
            if _CONTROL.search(piece) or len(found) != 1 or not is_valid_address(found[0][1]):
                raise ValueError(piece)
            pairs.append(found[0])
    return pairs


def _split_address_list(text: str) -> list[str]:
    """Cut at ``,``/``;`` outside quotes, comments and ``<…>``; drop empty pieces."""
    pieces: list[str] = []
    current: list[str] = []
    in_quote = escaped = in_angle = False
    comment_depth = 0
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and (in_quote or comment_depth):
            escaped = True
        elif in_quote:
            in_quote = char != '"'
        elif comment_depth:
            comment_depth += {"(": 1, ")": -1}.get(char, 0)
        elif char == '"':
            in_quote = True
        elif char == "(":
            comment_depth = 1
        elif char in "<>":
            in_angle = char == "<"
        elif char in ",;" and not in_angle:
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    pieces.append("".join(current))
    return [piece.strip() for piece in pieces if piece.strip()]


def _format_address(name: str, addr: str) -> str:
    # formataddr would RFC 2047-encode a non-ASCII name; we store text, mime.py encodes
    if not name:
        return addr
    if _NAME_SPECIALS.search(name):
        name = f'"{quote(name)}"'
    return f"{name} <{addr}>"


def _content(fields: dict[str, Any]) -> dict[str, Any]:
    body = fields.get("body")
    raw_type = fields.get("content_type")
    content_type = "plain"
    if raw_type is not None:
        key = raw_type.strip().lower() if isinstance(raw_type, str) else None
        if key not in _CONTENT_TYPES:
            raise _Reject("content_type", "invalid content_type")
        content_type = _CONTENT_TYPES[key]
    html = fields.get("html")
    if html is True:
        content_type, html = "html", None
    elif html is False or html == "":
        html = None
    elif html is not None:
        html = _stored_text(html, "html")
    return {
        "body": "" if body is None else _stored_text(body, "body"),
        "content_type": content_type,
        "html": html,
    }


def _headers(raw: object) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _Reject("headers", "invalid headers")
    headers: dict[str, str] = {}
    for name, value in raw.items():
        if value is None:
            continue
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise _Reject("headers", f"invalid header name '{name}'")
        field = f"headers.{name}"
        if name.lower() in _RESERVED_HEADERS:
            raise _Reject(field, f"{field}: reserved header")
        headers[name] = _header_text(_stringified(value), field)
    return headers or None


def _stringified(value: object) -> object:
    """Spell bools as JSON does ("true"), numbers as Python does; leave the rest."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int | float) else value


def _message_id(raw: object) -> str | None:
    if _is_blank(raw):
        return None
    text = _header_text(raw, "message_id").strip()
    if "@" not in text:
        raise _Reject("message_id", "invalid message_id")
    if not text.startswith("<"):
        text = f"<{text}"
    return text if text.endswith(">") else f"{text}>"


def _attachments(raw: object, allowed_dirs: tuple[str, ...]) -> list[dict[str, Any]] | None:
    if _is_blank(raw):
        return None
    if not isinstance(raw, list):
        raise _Reject("attachments", "invalid attachments")
    return [_attachment(f"attachments[{i}]", item, allowed_dirs) for i, item in enumerate(raw)]


def _attachment(where: str, raw: object, allowed_dirs: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _Reject.nested(where, "invalid attachment")
    for key in raw:
        if key not in _ATTACHMENT_KEYS:
            raise _Reject.nested(f"{where}.{key}", "unknown field")
    filename = raw.get("filename")
    if _is_blank(filename):
        raise _Reject.nested(f"{where}.filename", "missing filename")
    filename = _header_text(filename, f"{where}.filename")
    if len(filename) > MAX_FILENAME_CHARS:
        raise _Reject.nested(f"{where}.filename", "filename too long")
    storage_path, fetch_mode = _fetch_source(where, raw, allowed_dirs)
    mime_type = raw.get("mime_type")
    if mime_type is not None and not (
        isinstance(mime_type, str) and _MIME_TYPE.fullmatch(mime_type)
    ):
        raise _Reject.nested(f"{where}.mime_type", "invalid mime_type")
    md5 = raw.get("content_md5")
    if md5 is not None and not (isinstance(md5, str) and _MD5.fullmatch(md5)):
        raise _Reject.nested(f"{where}.content_md5", "invalid content_md5")
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
    if _is_blank(path):
        raise _Reject.nested(f"{where}.storage_path", "missing storage_path")
    if not isinstance(path, str):
        raise _Reject.nested(f"{where}.storage_path", "invalid storage_path")
    if mode is None:
        mode = _inferred_fetch_mode(path)
    elif not isinstance(mode, str) or mode not in _FETCH_MODES:
        raise _Reject.nested(f"{where}.fetch_mode", "unknown fetch_mode")
    if mode == "base64":
        return _canonical_base64(f"{where}.storage_path", path), mode
    if mode == "filesystem":
        return _confined_path(f"{where}.storage_path", path, allowed_dirs), mode
    if mode == "http_url":
        _check_url(f"{where}.storage_path", path)
    elif "\x00" in path:  # an endpoint's document key: any text, but stored
        raise _Reject.nested(f"{where}.storage_path", NUL_PROBLEM)
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
        raise _Reject.nested(field, "invalid base64")
    padded = data + "=" * (-len(data) % 4)
    try:
        base64.b64decode(padded, validate=True)
    except binascii.Error:
        raise _Reject.nested(field, "invalid base64") from None
    return padded


def _confined_path(field: str, path: str, allowed_dirs: tuple[str, ...]) -> str:
    """Resolve ``..`` and symlinks now; what is stored is the path that was checked."""
    try:
        return safety.confined_path(path, allowed_dirs)
    except safety.PathRefused as refused:
        raise _Reject.nested(field, refused.reason) from None


def _check_url(field: str, url: str) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        raise _Reject.nested(field, "invalid url") from None
    if parts.scheme.lower() not in {"http", "https"} or not parts.netloc:
        raise _Reject.nested(field, "invalid url")
    if _CONTROL.search(url) or " " in url:
        raise _Reject.nested(field, "invalid url")


def _auth(path: str, raw: object) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _Reject.nested(path, "invalid auth")
    for key in raw:
        if key not in _AUTH_KEYS:
            raise _Reject.nested(f"{path}.{key}", "unknown field")
    method = raw.get("method")
    if _is_blank(method):
        raise _Reject.nested(f"{path}.method", "missing method")
    if not isinstance(method, str) or method not in _AUTH_REQUIRED:
        raise _Reject.nested(f"{path}.method", "unknown method")
    for key in ("token", "user", "password"):
        value = raw.get(key)
        if _is_blank(value) and key in _AUTH_REQUIRED[method]:
            raise _Reject.nested(f"{path}.{key}", f"missing {key}")
        if value is not None and not isinstance(value, str):
            raise _Reject.nested(f"{path}.{key}", f"invalid {key}")
        if value is not None and "\x00" in value:
            raise _Reject.nested(f"{path}.{key}", NUL_PROBLEM)
    if _CONTROL.search(raw.get("token") or ""):  # the token is sent as a raw HTTP header
        raise _Reject.nested(f"{path}.token", "invalid token")
    return {key: value for key, value in raw.items() if value is not None}


def _priority(raw: object, default: int) -> int:
    if raw is None:
        return default
    try:
        return parse_priority(raw)
    except ValueError:
        raise _Reject("priority", "invalid priority") from None


def _deferred_ts(raw: object) -> int | None:
    if raw is None:
        return None
    value = math.floor(raw) if isinstance(raw, float) and math.isfinite(raw) else raw
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > _MAX_TS:
        raise _Reject("deferred_ts", "invalid deferred_ts")
    return value


def _optional_header_text(
    fields: dict[str, Any], name: str, max_chars: int | None = None
) -> str | None:
    raw = fields.get(name)
    return None if _is_blank(raw) else _header_text(raw, name, max_chars=max_chars)


def _header_text(value: object, field: str, *, max_chars: int | None = None) -> str:
    """Return a string bound for a header; control characters would inject, so refuse."""
    text = _text(value, field)
    if _CONTROL.search(text):
        raise _Reject(field, f"header injection in {field}")
    if max_chars is not None and len(text) > max_chars:
        raise _Reject(field, f"invalid {field}")
    return text


def _stored_text(value: object, field: str) -> str:
    """Return a string kept as it is (no header): only NUL is refused, no text may hold it."""
    text = _text(value, field)
    if "\x00" in text:
        raise _Reject(field, f"NUL character in {field}")
    return text


def _text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise _Reject(field, f"invalid {field}")
    return value


def _is_blank(value: object) -> bool:
    return value is None or value in ("", [])


def _id_of(entry: object) -> str | None:
    if isinstance(entry, dict) and isinstance(entry.get("id"), str) and entry["id"]:
        return entry["id"]
    return None
