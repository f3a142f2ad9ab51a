"""Streamed answers (files, archives, job outputs) read ahead of the socket.

Starlette sends a synchronous iterator by handing each ``next()`` to its thread pool and
waiting for it: the disk read (or the ZIP's CRC) and the sending take turns, and every
small piece — a ZIP member's header, its descriptor — costs a trip between threads. Here
a thread of the answer's own produces the bytes, a few blocks ahead, while the event loop
sends: reading overlaps sending, and pieces travel in blocks of about a megabyte.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from starlette.responses import StreamingResponse

BLOCK = 1 << 20
AHEAD = 8  # blocks read before the socket asks for them
_END = object()


def streamed(chunks: Iterable[bytes], **response: Any) -> StreamingResponse:
    """A ``StreamingResponse`` (same keyword arguments) of ``chunks``, read ahead."""
    return StreamingResponse(read_ahead(chunks), **response)


async def read_ahead(chunks: Iterable[bytes], block: int = BLOCK,
                     ahead: int = AHEAD) -> AsyncIterator[bytes]:
    """``chunks`` in blocks of at least ``block`` bytes, produced by their own thread.

    When the client goes away, the producer stops at its next block and the source
    iterator is closed (its files with it).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue(ahead)
    stop = threading.Event()

    def put(item: object) -> None:
        if not stop.is_set():
            asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

    def produce() -> None:
        source = iter(chunks)
        try:
            for data in _blocks(source, block):
                if stop.is_set():
                    return
                put(data)
            put(_END)
        except Exception as exc:  # noqa: BLE001 - raised again by the consumer
            put(exc)
        finally:
            getattr(source, "close", lambda: None)()

    threading.Thread(target=produce, name="read-ahead", daemon=True).start()
    try:
        while (item := await queue.get()) is not _END:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
        while not queue.empty():  # unblock a producer waiting for room
            queue.get_nowait()


def _blocks(chunks: Iterator[bytes], block: int) -> Iterator[bytes]:
    """Consecutive chunks joined until they weigh ``block`` bytes (the last may weigh less)."""
    pending: list[bytes] = []
    size = 0
    for chunk in chunks:
        pending.append(chunk)
        size += len(chunk)
        if size >= block:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)
