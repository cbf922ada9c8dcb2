"""Streaming spooled attachments into a built message gives exactly mime.build's bytes."""

from __future__ import annotations

import os

import pytest

from proxy.attachments import splice
from proxy.attachments.budget import Spool
from proxy.smtp import mime

PAYLOAD = {
    "id": "m1",
    "from": "Sender <s@acme.example>",
    "to": ["ann@example.org"],
    "subject": "Files",
    "body": "See attached.",
    "html": "<p>See attached.</p>",
}


def build(attachments: list[mime.AttachmentContent]) -> bytes:
    return mime.build(PAYLOAD, pk="pk-1", now_ts=1_700_000_000, attachments=attachments).data


def spooled(data: bytes) -> Spool:
    spool = Spool(None, threshold_bytes=0)
    spool.write(data)
    assert not spool.in_memory
    return spool


@pytest.mark.parametrize("size", [1, 56, 57, 58, 57 * 1152, 57 * 1152 + 1, 300_001])
def test_a_spliced_message_equals_the_directly_built_one(size: int) -> None:
    data = os.urandom(size)
    placeholder = splice.placeholder()
    skeleton = build([mime.AttachmentContent("a.bin", "application/octet-stream", placeholder)])
    spool = spooled(data)
    spliced = splice.splice(skeleton, [splice.Streamed(placeholder, spool)])
    assert spliced == build([mime.AttachmentContent("a.bin", "application/octet-stream", data)])
    spool.close()


def test_several_streamed_and_in_memory_attachments_keep_their_order() -> None:
    first, middle, last = os.urandom(100_000), b"small", os.urandom(70_000)
    p1, p3 = splice.placeholder(), splice.placeholder()
    skeleton = build(
        [
            mime.AttachmentContent("1.bin", "application/octet-stream", p1),
            mime.AttachmentContent("2.txt", "text/plain", middle),
            mime.AttachmentContent("3.bin", "application/octet-stream", p3),
        ]
    )
    s1, s3 = spooled(first), spooled(last)
    spliced = splice.splice(skeleton, [splice.Streamed(p3, s3), splice.Streamed(p1, s1)])
    assert spliced == build(
        [
            mime.AttachmentContent("1.bin", "application/octet-stream", first),
            mime.AttachmentContent("2.txt", "text/plain", middle),
            mime.AttachmentContent("3.bin", "application/octet-stream", last),
        ]
    )


def test_a_missing_placeholder_is_an_error() -> None:
    skeleton = build([])
    with pytest.raises(ValueError, match="placeholder"):
        splice.splice(skeleton, [splice.Streamed(splice.placeholder(), spooled(b"x"))])
