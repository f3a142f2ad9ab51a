"""The read-ahead behind every streamed answer: order, blocks, early close, errors."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from lanthorn.rest.streaming import read_ahead


def pieces(count: int, size: int, closed: threading.Event | None = None) -> Iterator[bytes]:
    try:
        for n in range(count):
            yield bytes([n % 256]) * size
    finally:
        if closed is not None:
            closed.set()


async def collect(chunks: Iterator[bytes], block: int) -> list[bytes]:
    return [data async for data in read_ahead(chunks, block=block, ahead=2)]


def test_bytes_arrive_in_order_joined_into_blocks() -> None:
    blocks = asyncio.run(collect(pieces(25, 100), block=1000))
    assert b"".join(blocks) == b"".join(pieces(25, 100))
    assert [len(b) for b in blocks] == [1000, 1000, 500]


def test_a_client_that_leaves_stops_the_producer_and_closes_the_source() -> None:
    closed = threading.Event()

    async def first_block_only() -> bytes:
        stream = read_ahead(pieces(10_000, 1000, closed), block=1000, ahead=2)
        data = await anext(stream)
        await stream.aclose()
        return data

    assert asyncio.run(first_block_only()) == bytes(1000)
    assert closed.wait(5), "the source iterator was not closed"
    for thread in threading.enumerate():
        if thread.name == "read-ahead":
            thread.join(5)
            assert not thread.is_alive(), "the producer thread did not end"


def test_an_error_while_reading_reaches_the_sender() -> None:
    def failing() -> Iterator[bytes]:
        yield b"x" * 10
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        asyncio.run(collect(failing(), block=5))
