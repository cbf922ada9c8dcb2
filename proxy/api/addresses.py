"""Parse, check and format e-mail addresses and address lists (SPEC §4.1, §4.3 rule 4).

Separate from ``validation.py`` because it knows nothing of messages or fields: it
raises ValueError carrying the raw entry that failed, and the caller words the
rejection. Pure: email-validator's syntax rules only, no DNS; ``is_valid_address``
is cached because senders and recipients repeat across a batch.
"""

from __future__ import annotations

import functools
import re
from email.utils import getaddresses, quote

import email_validator

from proxy.api.field_checks import CONTROL

_NAME_SPECIALS = re.compile(r'[][\\()<>@,:;".]')  # the set email.utils.formataddr quotes


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
    return [format_address(name, addr) for name, addr in address_pairs(value)]


def address_pairs(value: str | list[str]) -> list[tuple[str, str]]:
    """Return ``(display name, bare address)`` per entry; ValueError names the bad one."""
    pairs = []
    for item in [value] if isinstance(value, str) else value:
        if not isinstance(item, str):
            raise ValueError(str(item))  # noqa: TRY004 - the caller reports it as a bad address
        for piece in _split_address_list(item):
            found = getaddresses([piece])
            # one piece, one address: "a@x.org <b@y.org>" is ambiguous, so refused
            if CONTROL.search(piece) or len(found) != 1 or not is_valid_address(found[0][1]):
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


def format_address(name: str, addr: str) -> str:
    """Write ``name <addr>`` (quoting the name where needed), or the bare address."""
    # formataddr would RFC 2047-encode a non-ASCII name; we store text, mime.py encodes
    if not name:
        return addr
    if _NAME_SPECIALS.search(name):
        name = f'"{quote(name)}"'
    return f"{name} <{addr}>"
