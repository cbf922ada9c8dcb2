"""Judge an add-messages request (SPEC §3.7, §4, §9.1, §9.5, §9.6 rule 1).

Pure: no database, network, falcon or actor code. The two lookups that need the
database arrive as callables, and the filesystem is touched only by
``os.path.realpath`` (to see where ``..`` and symlinks lead; files need not exist).
This module is the entry point and judges the message itself; it leans on
``addresses.py`` (address parsing), ``attachment_fields.py`` (attachment objects) and
``field_checks.py`` (``Reject`` and the text rules they all share).

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

import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.api.addresses import address_pairs, format_address
from proxy.api.attachment_fields import parse_attachments
from proxy.api.field_checks import Reject, header_text, is_blank, stored_text

MAX_MESSAGES = 1000
MAX_ID_CHARS = 255
MAX_BATCH_CODE_CHARS = 64
LOWEST_PRIORITY = 3
_MAX_TS = 2**63 - 1  # a database integer column; beyond it the upsert would fail with a 500

_PRIORITY_NAMES = {"immediate": 0, "high": 1, "medium": 2, "low": 3}
_CONTENT_TYPES = {"plain": "plain", "text/plain": "plain", "html": "html", "text/html": "html"}
_RESERVED_HEADERS = frozenset(
    {"content-type", "content-transfer-encoding", "mime-version", "bcc", "x-genro-mail-id"}
)
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")  # printable ASCII, no ':' or space


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
        except Reject as problem:
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
        if not is_blank(named) and named != owner:
            raise ForeignTenant


def _parse_message(entry: object, ctx: _Context) -> Accepted:
    if not isinstance(entry, dict):
        raise Reject("payload", "invalid payload")
    fields = dict(entry)
    if is_blank(fields.get("tenant_id")) and ctx.principal_tenant is not None:
        fields["tenant_id"] = ctx.principal_tenant
    for name in ("id", "tenant_id", "account_id", "from", "to", "subject"):
        if is_blank(fields.get(name)):
            raise Reject(name, f"missing {name}")
    message_id = header_text(fields["id"], "id", max_chars=MAX_ID_CHARS)
    tenant_id = stored_text(fields["tenant_id"], "tenant_id")  # checked before the lookups
    account_id = stored_text(fields["account_id"], "account_id")
    if not ctx.tenant_known(tenant_id):
        raise Reject("tenant_id", "tenant not found")
    if not ctx.account_known(tenant_id, account_id):
        raise Reject("account_id", "account not found for tenant")
    payload: dict[str, Any] = {"id": message_id, "tenant_id": tenant_id, "account_id": account_id}
    payload.update(_addresses(fields))
    payload["subject"] = header_text(fields["subject"], "subject")
    payload.update(_content(fields))
    payload["headers"] = _headers(fields.get("headers"))
    payload["message_id"] = _message_id(fields.get("message_id"))
    payload["attachments"] = parse_attachments(fields.get("attachments"), ctx.allowed_dirs)
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
    sender = header_text(fields["from"], "from")
    if len(_rejecting_bad_addresses(sender, "from")) != 1:
        raise Reject("from", f"invalid address in from: '{sender}'")
    found: dict[str, Any] = {"from": sender.strip()}
    found["from_name"] = _optional_header_text(fields, "from_name")
    for name in ("to", "cc", "bcc", "reply_to"):
        found[name] = _address_list(fields.get(name), name)
    if found["to"] is None:  # present but only separators, e.g. " , "
        raise Reject("to", "missing to")
    if not is_blank(fields.get("return_path")):
        raw = header_text(fields["return_path"], "return_path")
        pairs = _rejecting_bad_addresses(raw, "return_path")
        if len(pairs) != 1:
            raise Reject("return_path", f"invalid address in return_path: '{raw}'")
        found["return_path"] = pairs[0][1]  # envelope only: the bare address
    return found


def _address_list(raw: object, field: str) -> list[str] | None:
    if is_blank(raw):
        return None
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise Reject(field, f"invalid {field}")
    for item in items:
        header_text(item, field)
    pairs = _rejecting_bad_addresses(items, field)
    return [format_address(name, addr) for name, addr in pairs] or None


def _rejecting_bad_addresses(value: str | list[str], field: str) -> list[tuple[str, str]]:
    try:
        return address_pairs(value)
    except ValueError as exc:
        raise Reject(field, f"invalid address in {field}: '{exc.args[0]}'") from None


def _content(fields: dict[str, Any]) -> dict[str, Any]:
    body = fields.get("body")
    raw_type = fields.get("content_type")
    content_type = "plain"
    if raw_type is not None:
        key = raw_type.strip().lower() if isinstance(raw_type, str) else None
        if key not in _CONTENT_TYPES:
            raise Reject("content_type", "invalid content_type")
        content_type = _CONTENT_TYPES[key]
    html = fields.get("html")
    if html is True:
        content_type, html = "html", None
    elif html is False or html == "":
        html = None
    elif html is not None:
        html = stored_text(html, "html")
    return {
        "body": "" if body is None else stored_text(body, "body"),
        "content_type": content_type,
        "html": html,
    }


def _headers(raw: object) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise Reject("headers", "invalid headers")
    headers: dict[str, str] = {}
    for name, value in raw.items():
        if value is None:
            continue
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise Reject("headers", f"invalid header name '{name}'")
        field = f"headers.{name}"
        if name.lower() in _RESERVED_HEADERS:
            raise Reject(field, f"{field}: reserved header")
        headers[name] = header_text(_stringified(value), field)
    return headers or None


def _stringified(value: object) -> object:
    """Spell bools as JSON does ("true"), numbers as Python does; leave the rest."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int | float) else value


def _message_id(raw: object) -> str | None:
    if is_blank(raw):
        return None
    text = header_text(raw, "message_id").strip()
    if "@" not in text:
        raise Reject("message_id", "invalid message_id")
    if not text.startswith("<"):
        text = f"<{text}"
    return text if text.endswith(">") else f"{text}>"


def _priority(raw: object, default: int) -> int:
    if raw is None:
        return default
    try:
        return parse_priority(raw)
    except ValueError:
        raise Reject("priority", "invalid priority") from None


def _deferred_ts(raw: object) -> int | None:
    if raw is None:
        return None
    value = math.floor(raw) if isinstance(raw, float) and math.isfinite(raw) else raw
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > _MAX_TS:
        raise Reject("deferred_ts", "invalid deferred_ts")
    return value


def _optional_header_text(
    fields: dict[str, Any], name: str, max_chars: int | None = None
) -> str | None:
    raw = fields.get(name)
    return None if is_blank(raw) else header_text(raw, name, max_chars=max_chars)


def _id_of(entry: object) -> str | None:
    if isinstance(entry, dict) and isinstance(entry.get("id"), str) and entry["id"]:
        return entry["id"]
    return None
