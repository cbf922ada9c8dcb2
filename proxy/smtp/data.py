"""The SMTP DATA phase, streamed in bounded chunks (RFC 5321 §4.1.1.4, §4.5.2).

aiosmtplib's ``SMTP.data`` normalises line endings and dot-stuffs the whole
message with regular expressions, holding several whole copies at once (a
20 MB attachment raised peak memory ~7x its size). Here the same bytes go out
chunk by chunk: ``dot_stuffed_chunks`` is pure and reproduces aiosmtplib's
quoting exactly (tests compare the two on arbitrary input), and ``send_data``
writes the chunks with flow control, so at most a few chunks are in memory.

Only ``client.py`` calls this module; the aiosmtplib exceptions raised here are
the same ones ``SMTP.data`` raises, and ``client._translate`` turns them into
outcomes. Must not: log message bodies, or write to a session while another
command is in flight (the AccountActor owns its connection, one send at a time).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator

import aiosmtplib
from aiosmtplib.protocol import SMTPProtocol

CHUNK_SIZE = 64 * 1024
START_INPUT = 354
COMPLETED = 250
END_OF_DATA = b".\r\n"

# The same line endings aiosmtplib converts: CRLF, a bare LF, and a CR not followed by LF.
_LINE_ENDING = re.compile(rb"\r\n|\n|\r(?!\n)")


def dot_stuffed_chunks(data: bytes | memoryview, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    r"""Yield the DATA payload of ``data``: CRLF line endings, dot-stuffed, ``\r\n.\r\n`` last.

    Each chunk comes from at most ``chunk_size + 1`` input bytes, so it is at most
    ``2 * chunk_size + 3`` bytes long (every bare CR or LF doubles); the last one
    is the short terminator. A CR at the end of a chunk is held back until the
    next byte is seen (it may be half of a CRLF), and whether the next chunk
    starts a line is carried over, so chunk boundaries never change the output.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    view = memoryview(data).cast("B")
    total = len(view)
    held_cr = b""
    at_line_start = True
    for start in range(0, total, chunk_size):
        piece = held_cr + bytes(view[start : start + chunk_size])
        held_cr = b""
        if start + chunk_size < total and piece.endswith(b"\r"):
            piece, held_cr = piece[:-1], b"\r"
        if not piece:
            continue
        stuffed = _crlf(piece).replace(b"\n.", b"\n..")
        if at_line_start and stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        at_line_start = stuffed.endswith(b"\n")
        yield stuffed
    # Like aiosmtplib: the data always ends with CRLF before the final dot (even when empty).
    yield END_OF_DATA if at_line_start and total else b"\r\n" + END_OF_DATA


def _crlf(piece: bytes) -> bytes:
    """Convert bare CRs and LFs to CRLF; a piece that has none is returned as is."""
    pairs = piece.count(b"\r\n")
    if piece.count(b"\r") == pairs == piece.count(b"\n"):
        return piece
    return _LINE_ENDING.sub(b"\r\n", piece)


async def send_data(
    smtp: aiosmtplib.SMTP,
    data: bytes | memoryview,
    *,
    chunk_size: int = CHUNK_SIZE,
    while_waiting: Callable[[], None] | None = None,
) -> aiosmtplib.SMTPResponse:
    """Send DATA, then ``data`` in chunks, and return the server's 250 reply.

    Behaves like ``SMTP.data`` on the wire and in what it raises: ``SMTPDataError``
    for any reply but 354 to DATA or 250 at the end, a ``ConnectionError``
    (``SMTPServerDisconnected`` or the transport's own) when the server goes away,
    a ``TimeoutError`` when the final reply takes longer than ``smtp.timeout`` (when set;
    ``SmtpConnection`` leaves it unset and bounds the whole transaction instead).
    After either of the last two the session's state is unknown and the caller
    must drop it (``client._attempt`` does). ``while_waiting`` runs once the data
    is written, while the server works on it. Uses only public aiosmtplib calls,
    except ``_drain`` below.
    """
    start = await smtp.execute_command(b"DATA")
    if start.code != START_INPUT:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    protocol = smtp.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    # Listen before the first byte leaves, as SMTP.data does: a server that answers
    # early (then perhaps hangs up) is heard rather than timed out.
    reply = asyncio.ensure_future(protocol.read_response())
    try:
        try:
            for chunk in dot_stuffed_chunks(data, chunk_size):
                protocol.write(chunk)
                await _drain(protocol)
        except ConnectionError:
            if not _has_result(reply):
                raise
        if while_waiting is not None:
            while_waiting()
        async with asyncio.timeout(smtp.timeout):
            response = await reply
    finally:
        if not reply.done():
            reply.cancel()
            await asyncio.wait([reply])  # no reader outlives the send
        if not reply.cancelled():
            reply.exception()  # retrieved: asyncio would log it otherwise
    if response.code != COMPLETED:
        raise aiosmtplib.SMTPDataError(response.code, response.message)
    return response


def _has_result(task: asyncio.Future[aiosmtplib.SMTPResponse]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


async def _drain(protocol: SMTPProtocol) -> None:
    """Wait while the transport's write buffer is above its high-water mark.

    The one protected aiosmtplib member we use: ``SMTPProtocol`` inherits
    ``FlowControlMixin._drain_helper`` (copied from the standard library, where
    ``StreamWriter.drain`` awaits it), which returns at once unless writing is
    paused, waits for ``resume_writing`` and raises ``ConnectionResetError`` once
    the connection is lost. aiosmtplib has no public drain, and building an
    ``asyncio.StreamWriter`` around its protocol just to call ``drain`` is worse
    (a collected writer may close the transport). ``tests/proxy/smtp/test_data.py``
    pins this behaviour.
    """
    await protocol._drain_helper()
