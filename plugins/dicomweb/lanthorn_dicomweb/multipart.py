"""multipart/related bodies: written part by part, read with python-multipart's parser.

Responses stream: each part's bytes are produced only when the client reads that far,
so a study is never held in memory. Requests (STOW-RS) are parsed as they arrive and
each part is handed over as soon as it is complete.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

from lanthorn import BadRequest

Part = tuple[str, Iterable[bytes]]  # (Content-Type of the part, its bytes block by block)


def new_boundary() -> str:
    return uuid.uuid4().hex


def related_type(media_type: str, boundary: str, transfer_syntax: str = "") -> str:
    """The Content-Type of a multipart/related answer whose parts are ``media_type``."""
    extra = f"; transfer-syntax={transfer_syntax}" if transfer_syntax else ""
    return f'multipart/related; type="{media_type}"{extra}; boundary={boundary}'


#: Bytes gathered before they are sent: each block sent costs a thread hop, so small
#: parts (a few KB) are sent several at a time.
BLOCK = 1 << 16


def write_parts(parts: Iterable[Part], boundary: str) -> Iterator[bytes]:
    """The body: each part's header, then its blocks, then the closing delimiter."""
    pending = bytearray()
    for content_type, blocks in parts:
        pending += f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()
        for block in blocks:
            pending += block
            if len(pending) >= BLOCK:
                yield bytes(pending)
                pending.clear()
        pending += b"\r\n"
    pending += f"--{boundary}--\r\n".encode()
    yield bytes(pending)


@dataclass
class ReceivedPart:
    """One part of a request body: its headers (lower-case names) and bytes."""

    headers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


class PartReader:
    """Feed the body block by block with ``feed``; complete parts come out of ``parts``.

    ``finished`` tells whether the closing delimiter was seen (a body cut short leaves
    its last part incomplete, and that part is never returned).
    """

    def __init__(self, content_type: str) -> None:
        media_type, parameters = parse_options_header(content_type)
        if media_type != b"multipart/related":
            raise UnsupportedMediaType(
                f'the body must be multipart/related, not "{media_type.decode()}"')
        boundary = parameters.get(b"boundary")
        if not boundary:
            raise BadRequest("the multipart/related Content-Type has no boundary")
        self.type = parameters.get(b"type", b"").decode("latin-1").lower()
        self.finished = False
        self.complete: list[ReceivedPart] = []
        self._current = ReceivedPart()
        self._field = bytearray()
        self._value = bytearray()
        self._parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._begin,
            "on_part_data": lambda data, start, end: self._current.data.extend(data[start:end]),
            "on_part_end": lambda: self.complete.append(self._current),
            "on_header_field": lambda data, start, end: self._field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_end": self._end,
        })

    def feed(self, block: bytes) -> list[ReceivedPart]:
        """Parse a block; return the parts it completed."""
        try:
            self._parser.write(block)
        except Exception as exc:  # python-multipart's errors: a malformed body
            raise BadRequest(f"malformed multipart body: {exc}") from None
        done, self.complete = self.complete, []
        return done

    def _begin(self) -> None:
        self._current = ReceivedPart()

    def _header_end(self) -> None:
        name = self._field.decode("latin-1").strip().lower()
        self._current.headers[name] = self._value.decode("latin-1").strip()
        self._field.clear()
        self._value.clear()

    def _end(self) -> None:
        self.finished = True


class UnsupportedMediaType(BadRequest):
    http_status = 415
    orthanc_error = "Unsupported media type"
