"""The streamed DATA phase: the pure chunker against aiosmtplib's own quoting, then the wire.

The wire tests run aiosmtplib against a raw scripted server in one event loop,
for what aiosmtpd cannot script: refusing the DATA command itself, answering
early, hanging up mid-stream and not reading at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable

import aiosmtplib
import pytest
from aiosmtplib.protocol import PERIOD_REGEX, SMTPProtocol, normalize_message_line_endings
from hypothesis import given
from hypothesis import strategies as st

from proxy.smtp.data import _drain, dot_stuffed_chunks, send_data

CHUNK_SIZES = [1, 2, 3, 4, 7, 64, 65536]
TRICKY = st.lists(
    st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"..", b"a", b"\r\n.", b"\n.", b"\r."]),
    max_size=40,
).map(b"".join)


def aiosmtplib_payload(data: bytes) -> bytes:
    """What ``SMTPProtocol.execute_data_command`` writes after DATA, with its own helpers."""
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data)) + b".\r\n"


# -- the pure chunker -------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
@given(data=st.binary(max_size=300) | TRICKY)
def test_chunks_join_to_what_aiosmtplib_would_send(chunk_size, data):
    assert b"".join(dot_stuffed_chunks(data, chunk_size)) == aiosmtplib_payload(data)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5])
@given(data=TRICKY)
def test_chunks_are_bounded(chunk_size, data):
    *body, last = dot_stuffed_chunks(memoryview(data), chunk_size)

    assert all(0 < len(chunk) <= 2 * chunk_size + 3 for chunk in body)
    assert last in (b".\r\n", b"\r\n.\r\n")


@pytest.mark.parametrize(
    ("data", "chunk_size", "expected"),
    [
        (b"", 4, b"\r\n.\r\n"),
        (b"a\r\n", 4, b"a\r\n.\r\n"),
        (b"a", 4, b"a\r\n.\r\n"),
        (b".a\r\n.b", 2, b"..a\r\n..b\r\n.\r\n"),
        (b"ab\r\n.c", 4, b"ab\r\n..c\r\n.\r\n"),  # the dot opens the second chunk
        (b"abc\r\n.d", 4, b"abc\r\n..d\r\n.\r\n"),  # CRLF split across chunks
        (b"a\nb\rc\r", 1, b"a\r\nb\r\nc\r\n.\r\n"),  # bare LF and CR normalised
    ],
)
def test_examples(data, chunk_size, expected):
    assert b"".join(dot_stuffed_chunks(data, chunk_size)) == expected


def test_a_chunk_size_below_one_is_refused():
    with pytest.raises(ValueError, match="chunk_size"):
        list(dot_stuffed_chunks(b"a", 0))


# -- the one protected aiosmtplib member we rely on --------------------------------------


def test_drain_pins_aiosmtplib_flow_control():
    async def scenario() -> None:
        protocol = SMTPProtocol(loop=asyncio.get_running_loop())
        await asyncio.wait_for(_drain(protocol), 1)  # not paused: returns at once

        protocol.pause_writing()
        waiting = asyncio.ensure_future(_drain(protocol))
        await asyncio.sleep(0)
        assert not waiting.done()
        protocol.resume_writing()
        await asyncio.wait_for(waiting, 1)

        protocol.pause_writing()
        waiting = asyncio.ensure_future(_drain(protocol))
        await asyncio.sleep(0)
        protocol.connection_lost(ConnectionResetError("gone"))
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(waiting, 1)
        with pytest.raises(ConnectionResetError):
            await _drain(protocol)  # once lost, at once

    asyncio.run(scenario())


# -- on the wire ---------------------------------------------------------------------------

MESSAGE = b"Subject: dots\r\n\r\n" + b"line\r\n.dot\r\n..two\r\n" * 40_000  # ~0.8 MB
HIGH_WATER = 32 * 1024
CHUNK = 8 * 1024


class RawServer(asyncio.Protocol):
    """Answers 250 to every command; DATA's handling depends on ``mode``.

    ``ok`` 354 then 250 after the final dot; ``refuse`` 554 to DATA; ``early``
    552 at the first data bytes and nothing after the dot; ``drop`` aborts at
    the first data bytes; ``stall`` stops reading after 354 until resumed.
    ``data`` keeps the raw DATA bytes received, terminator included.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.data = bytearray()
        self.transport: asyncio.Transport | None = None
        self._in_data = False
        self._pending = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._reply(b"220 raw ready")

    def data_received(self, chunk: bytes) -> None:
        if self._in_data:
            self._data(chunk)
            return
        line, found, self._pending = (self._pending + chunk).partition(b"\r\n")
        if not found:
            self._pending = line
            return
        self._command(line.split(b" ")[0].upper())
        if self._pending:
            self.data_received(b"")

    def _command(self, verb: bytes) -> None:
        if verb != b"DATA":
            self._reply(b"250 ok")
        elif self.mode == "refuse":
            self._reply(b"554 5.5.1 no data for you")
        else:
            self._reply(b"354 go ahead")
            self._in_data = True
            if self.mode == "stall":
                self.open_transport().pause_reading()
            if self._pending:
                chunk, self._pending = self._pending, b""
                self._data(chunk)

    def _data(self, chunk: bytes) -> None:
        if self.mode == "drop":
            self.open_transport().abort()
            return
        if self.mode == "early" and not self.data and chunk:
            self._reply(b"552 5.3.4 too big")
        self.data += chunk
        if self.data.endswith(b"\r\n.\r\n"):
            self._in_data = False
            if self.mode != "early":
                self._reply(b"250 2.0.0 queued")

    def _reply(self, line: bytes) -> None:
        self.open_transport().write(line + b"\r\n")

    def open_transport(self) -> asyncio.Transport:
        assert self.transport is not None
        return self.transport


@contextlib.asynccontextmanager
async def raw_session(
    mode: str, *, small_buffers: bool = False
) -> AsyncIterator[tuple[aiosmtplib.SMTP, RawServer]]:
    """An aiosmtplib session past MAIL and RCPT, talking to a ``RawServer``."""
    servers: list[RawServer] = []

    def accept() -> RawServer:
        servers.append(RawServer(mode))
        return servers[-1]

    listener, client = socket.socket(), socket.socket()
    if small_buffers:  # so that the kernel cannot absorb the message
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    server = await asyncio.get_running_loop().create_server(accept, sock=listener)
    client.connect(listener.getsockname())  # the backlog completes it before accept()
    smtp = aiosmtplib.SMTP(sock=client, local_hostname="client.test", start_tls=False, timeout=5)
    try:
        await smtp.connect()
        await smtp.mail("billing@acme.example")
        await smtp.rcpt("ann@example.org")
        yield smtp, servers[0]
    finally:
        smtp.close()
        for accepted in servers:
            if accepted.transport is not None:
                accepted.transport.abort()
        server.close()
        await server.wait_closed()


async def until(condition: Callable[[], bool], timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_data_is_streamed_exactly_as_aiosmtplib_would_send_it():
    async def scenario() -> tuple[aiosmtplib.SMTPResponse, bytes]:
        async with raw_session("ok") as (smtp, server):
            response = await send_data(smtp, MESSAGE, chunk_size=7)
            return response, bytes(server.data)

    response, received = asyncio.run(scenario())

    assert response == (250, "2.0.0 queued")
    assert received == aiosmtplib_payload(MESSAGE)


def test_a_refused_data_command_raises_like_smtp_data():
    async def scenario() -> bytes:
        async with raw_session("refuse") as (smtp, server):
            with pytest.raises(aiosmtplib.SMTPDataError) as raised:
                await send_data(smtp, MESSAGE)
            assert (raised.value.code, raised.value.message) == (554, "5.5.1 no data for you")
            assert (await smtp.rset()).code == 250  # the session is still usable
            return bytes(server.data)

    assert asyncio.run(scenario()) == b""


def test_an_early_reply_is_heard_not_timed_out():
    async def scenario() -> None:
        async with raw_session("early", small_buffers=True) as (smtp, _):  # 552 mid-stream
            with pytest.raises(aiosmtplib.SMTPDataError) as raised:
                await asyncio.wait_for(send_data(smtp, MESSAGE), 4)
            assert raised.value.code == 552

    asyncio.run(scenario())


def test_a_hang_up_mid_stream_is_a_connection_error():
    async def scenario() -> None:
        async with raw_session("drop", small_buffers=True) as (smtp, _):
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(send_data(smtp, MESSAGE), 4)

    asyncio.run(scenario())


def test_streaming_waits_while_the_server_is_not_reading():
    async def scenario() -> tuple[int, aiosmtplib.SMTPResponse, bytes]:
        async with raw_session("stall", small_buffers=True) as (smtp, server):
            transport = smtp.transport
            assert isinstance(transport, asyncio.WriteTransport)
            transport.set_write_buffer_limits(high=HIGH_WATER)
            sending = asyncio.ensure_future(send_data(smtp, MESSAGE, chunk_size=CHUNK))
            await until(lambda: transport.get_write_buffer_size() > HIGH_WATER)
            buffered = transport.get_write_buffer_size()
            assert not sending.done()
            server.open_transport().resume_reading()
            response = await asyncio.wait_for(sending, 5)
            return buffered, response, bytes(server.data)

    buffered, response, received = asyncio.run(scenario())

    assert buffered <= HIGH_WATER + 2 * CHUNK + 3  # one chunk past the mark, not the message
    assert response.code == 250
    assert received == aiosmtplib_payload(MESSAGE)
