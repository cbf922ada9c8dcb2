"""The per-message refusal and the text rules every message field obeys (SPEC §4.3).

``Reject`` carries one message's first problem; ``header_text`` refuses control
characters in anything bound for a header, ``stored_text`` refuses NUL in anything
stored. ``validation.py`` (the message) and ``attachment_fields.py`` (its attachments)
both raise and call these, and ``addresses.py`` shares ``CONTROL``: they live here so
those modules need not import one another. Pure.
"""

from __future__ import annotations

import re

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # C0, DEL, C1, U+2028/U+2029


class Reject(Exception):
    """One message's first problem: the field it names and SPEC §4.3's reason."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason

    @classmethod
    def nested(cls, path: str, problem: str) -> Reject:
        """Build the ``attachments[i].x: problem`` form, whose reason repeats its path."""
        return cls(path, f"{path}: {problem}")


def header_text(value: object, field: str, *, max_chars: int | None = None) -> str:
    """Return a string bound for a header; control characters would inject, so refuse."""
    text = _text(value, field)
    if CONTROL.search(text):
        raise Reject(field, f"header injection in {field}")
    if max_chars is not None and len(text) > max_chars:
        raise Reject(field, f"invalid {field}")
    return text


def stored_text(value: object, field: str) -> str:
    """Return a string kept as it is (no header): only NUL is refused, no text may hold it."""
    text = _text(value, field)
    if "\x00" in text:
        raise Reject(field, f"NUL character in {field}")
    return text


def _text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise Reject(field, f"invalid {field}")
    return value


def is_blank(value: object) -> bool:
    return value is None or value in ("", [])
