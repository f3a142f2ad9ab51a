"""The read-ahead behind every streamed answer (order, blocks, early close, errors) and
the storage's read-ahead of the files an archive or a multipart answer sends in turn."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from lanthorn import storage
from lanthorn.errors import InexistentItem
from lanthorn.index.records import Attachment
from lanthorn.rest.streaming import read_ahead
from lanthorn.storage import (
    COMPRESSION_NONE,
    COMPRESSION_ZLIB,
    FilesystemStorage,
    compress,
    new_uuid,
    read_ahead_files,
)


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


class WatchedStorage(FilesystemStorage):
    """A real filesystem area that tells which files were opened, and when."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, sync=False)
        self.opened: list[str] = []
        self.changed = threading.Condition()

    def open(self, uuid: str) -> BinaryIO:
        with self.changed:
            self.opened.append(uuid)
            self.changed.notify_all()
        return super().open(uuid)

    def wait_opened(self, count: int) -> list[str]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.opened) >= count, 5)
            return list(self.opened)


def stored(area: FilesystemStorage, name: str, data: bytes, zlib: bool = False) -> Attachment:
    area.write(name, compress(data) if zlib else data)
    return Attachment(1, name, len(data), len(data), COMPRESSION_ZLIB if zlib else
                      COMPRESSION_NONE, "", "")


def test_files_arrive_in_order_while_the_next_ones_are_read(tmp_path: Path) -> None:
    area = WatchedStorage(tmp_path)
    contents = [bytes([n]) * (1000 + n) for n in range(40)]
    files = [stored(area, f"f{n:02}", data, zlib=n % 3 == 0) for n, data in enumerate(contents)]

    streams = read_ahead_files(area, files)
    assert area.opened == []  # nothing is read before the consumer starts
    first = b"".join(streams[0])
    assert first == contents[0]
    ahead = area.wait_opened(storage.AHEAD_FILES)
    assert set(ahead) == {f.uuid for f in files[:storage.AHEAD_FILES]}
    assert [b"".join(s) for s in streams[1:]] == contents[1:]
    assert sorted(area.opened) == sorted(f.uuid for f in files)  # each file read once


def test_files_over_the_budget_are_streamed_block_by_block(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "AHEAD_BYTES", 3 << 20)
    area = FilesystemStorage(tmp_path, sync=False)
    big = bytes(range(256)) * (5 << 12)  # 5 MB
    files = [stored(area, "small", b"s" * 10), stored(area, "big", big)]

    streams = read_ahead_files(area, files)
    assert list(streams[0]) == [b"s" * 10]
    blocks = list(streams[1])
    assert len(blocks) == 5 and b"".join(blocks) == big


def test_a_missing_file_fails_at_its_turn(tmp_path: Path) -> None:
    area = FilesystemStorage(tmp_path, sync=False)
    files = [stored(area, "there", b"x"),
             Attachment(1, "gone", 1, 1, COMPRESSION_NONE, "", ""), stored(area, "after", b"y")]

    streams = read_ahead_files(area, files)
    assert b"".join(streams[0]) == b"x"
    with pytest.raises(InexistentItem):
        b"".join(streams[1])
    assert b"".join(streams[2]) == b"y"


def test_a_write_whose_chunks_fail_leaves_no_file(tmp_path: Path) -> None:
    area = FilesystemStorage(tmp_path)
    failed, whole = new_uuid(), new_uuid()

    def chunks() -> Iterator[bytes]:
        yield b"the first part"
        raise RuntimeError("the producer failed")

    with pytest.raises(RuntimeError, match="the producer failed"):
        area.write(failed, chunks())
    area.write(whole, [b"whole", b" file"])
    assert not area.exists(failed)
    assert [name for name, _ in area.scan()] == [whole]
    with area.open(whole) as handle:
        assert handle.read() == b"whole file"
