"""A bounded load generator on loopback: open loop at a fixed rate (latency counted from each request's
scheduled time, so a slow server cannot hide its queue) and closed loop for the saturation throughput.

It speaks minimal HTTP/1.1 over keep-alive asyncio streams: a general client (httpx) costs more CPU per request
than the service itself, and on a 2-core machine the generator's CPU is taken from the server.

The open loop's clock is a thread, not `asyncio.sleep`: asyncio's timers wake on epoll's millisecond ticks, on
average 0.65 ms after the scheduled time on this machine, and since latency counts from that time the generator's
own lateness was charged to the server (BENCHMARKS.md). A thread's `time.sleep` wakes within about 0.1 ms (more
when the event loop holds the GIL just then), and each result keeps how late its requests were sent
(`lateness_ms`), so what remains is on the record.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np
import orjson


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)
    lateness_ms: list[float] = field(default_factory=list)  # open loop: each request's send after its schedule
    errors: int = 0
    seconds: float = 0.0

    @property
    def completed(self) -> int:
        return len(self.latencies_ms)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    @property
    def rps(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0


class Connection:
    """One keep-alive HTTP/1.1 connection posting JSON bodies."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: dict) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        body = orjson.dumps(payload)
        self.writer.write(f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
                          f"content-length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await self.reader.readexactly(length)
        return status


async def _send(pool: asyncio.Queue, request: dict, started: float, result: LoadResult) -> None:
    connection = await pool.get()
    try:
        status = await connection.post("/v1/recall", request)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        connection.writer, status = None, 0
    pool.put_nowait(connection)
    if status == 200:
        result.latencies_ms.append((time.perf_counter() - started) * 1000)
    else:
        result.errors += 1


async def open_loop(url: str, make_request: Callable[[int], dict], rate: float, seconds: float,
                    connections: int = 64) -> LoadResult:
    """`rate` requests per second for `seconds`, whatever the server does."""
    loop = asyncio.get_running_loop()
    result, tasks, pool, started = LoadResult(), set(), asyncio.Queue(), loop.create_future()
    stop = threading.Event()  # the clock ends with this call, even when it is cancelled or fails
    for _ in range(connections):
        pool.put_nowait(Connection(url))

    def release(n: int, scheduled: float) -> None:
        if started.done():
            return
        result.lateness_ms.append((time.perf_counter() - scheduled) * 1000)
        try:
            task = asyncio.create_task(_send(pool, make_request(n), scheduled, result))
        except Exception as error:  # handed to the caller, which raises it
            started.set_exception(error)
            return
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def finish(start: float) -> None:
        if not started.done():
            started.set_result(start)

    def clock() -> None:
        start = time.perf_counter()
        try:
            for n in range(int(rate * seconds)):
                scheduled = start + n / rate
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                if stop.is_set():
                    return
                loop.call_soon_threadsafe(release, n, scheduled)
            loop.call_soon_threadsafe(finish, start)
        except RuntimeError:  # the loop closed between the check and the call
            return

    threading.Thread(target=clock, name="open-loop clock", daemon=True).start()
    try:
        start = await started  # every request has been released: only the answers are still to come
    finally:
        stop.set()
    await asyncio.gather(*tasks)
    result.seconds = time.perf_counter() - start
    return result


async def closed_loop(url: str, make_request: Callable[[int], dict], concurrency: int,
                      seconds: float) -> LoadResult:
    """`concurrency` clients sending back to back for `seconds`: the saturation throughput."""
    result, counter, pool = LoadResult(), iter(range(10**9)), asyncio.Queue()
    for _ in range(concurrency):
        pool.put_nowait(Connection(url))
    start = time.perf_counter()
    deadline = start + seconds

    async def client_loop() -> None:
        while time.perf_counter() < deadline:
            await _send(pool, make_request(next(counter)), time.perf_counter(), result)

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - start
    return result
