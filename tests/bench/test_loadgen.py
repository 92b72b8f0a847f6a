"""The load generator sends every scheduled request, records how late it sent each, and does not hide a failure."""

from __future__ import annotations

import asyncio

import pytest

from bench.loadgen import open_loop


async def answer_every_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        writer.close()


async def load(make_request, rate: float = 100, seconds: float = 0.5):
    server = await asyncio.start_server(answer_every_request, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        return await open_loop(f"http://127.0.0.1:{port}", make_request, rate, seconds, connections=4)


def test_the_open_loop_sends_every_scheduled_request():
    result = asyncio.run(load(lambda n: {"n": n}))
    assert result.completed == 50 and result.errors == 0
    assert len(result.lateness_ms) == 50 and min(result.lateness_ms) >= 0


def test_a_request_that_cannot_be_made_fails_the_load():
    def make_request(n: int) -> dict:
        if n == 5:
            raise ValueError("no request 5")
        return {"n": n}

    with pytest.raises(ValueError, match="no request 5"):
        asyncio.run(load(make_request))
