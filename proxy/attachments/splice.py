"""Stream large attachments' base64 into a message that ``mime.build`` made (SPEC §9.2 rule 3).

``mime.build`` stays the one place that decides a message's structure, but it
takes whole ``bytes`` and its encoder and generator hold several copies of them
at once (about 5x the attachment at peak). For a spooled attachment the send
path gives ``mime.build`` a random 48-byte placeholder instead, whose base64 is
a single unique 64-character line, then swaps that line for the real content
encoded chunk by chunk from the spool. The result is byte-for-byte what
``mime.build`` writes for the real content (76-character lines, CRLF; the tests
compare both), while the raw content is never in memory whole.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.attachments.budget import Spool

PLACEHOLDER_BYTES = 48  # base64: exactly 64 characters, one line
LINE_INPUT_BYTES = 57  # base64.encodebytes writes 76-character lines of 57 input bytes
CHUNK_LINES = 1152  # ~64 KB of input per read


@dataclass(frozen=True, slots=True)
class Streamed:
    """An attachment whose body is spliced in: the placeholder mime saw, and the content."""

    placeholder: bytes
    spool: Spool

    @property
    def line(self) -> bytes:
        """The line ``mime.build`` wrote for the placeholder."""
        return base64.b64encode(self.placeholder) + b"\r\n"


def placeholder() -> bytes:
    return secrets.token_bytes(PLACEHOLDER_BYTES)


def splice(data: bytes, streamed: Sequence[Streamed]) -> bytes:
    """``data`` with every placeholder line replaced by its spool's base64 body."""
    if not streamed:
        return data
    cuts = []
    for item in streamed:
        start = data.find(item.line)
        if start < 0 or data.find(item.line, start + 1) >= 0:
            raise ValueError("attachment placeholder not found exactly once in the built message")
        cuts.append((start, item))
    cuts.sort(key=lambda cut: cut[0])
    pieces: list[bytes] = []
    position = 0
    for start, item in cuts:
        pieces.append(data[position:start])
        pieces.extend(encoded_chunks(item.spool))
        position = start + len(item.line)
    pieces.append(data[position:])
    return b"".join(pieces)


def encoded_chunks(spool: Spool) -> list[bytes]:
    """The spool's content as mime's base64 body: 76-character lines ending in CRLF."""
    return [
        base64.encodebytes(chunk).replace(b"\n", b"\r\n")
        for chunk in spool.chunks(LINE_INPUT_BYTES * CHUNK_LINES)
    ]
