"""Synchronous calls to the server's own REST API, without a socket.

Scripts call the API from worker threads (the event dispatcher, DICOM associations,
the thread pool of a request), never from an event loop's thread: each call runs the
ASGI application on a short-lived event loop of the calling thread.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import anyio
from starlette.types import ASGIApp, Message

from lanthorn import BadRequest


def call(app: ASGIApp, method: str, uri: str, body: bytes = b"",
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """``(status, body)`` of one request to ``app``, made from a thread without a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return anyio.run(_call, app, method, uri, body, headers or {})
    raise BadRequest("the REST API cannot be called in-process from an event loop")


async def _call(app: ASGIApp, method: str, uri: str, body: bytes,
                headers: dict[str, str]) -> tuple[int, bytes]:
    parts = urlsplit(uri if uri.startswith("/") else "/" + uri)
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": parts.path, "raw_path": parts.path.encode(),
        "query_string": parts.query.encode(), "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in
                    {**headers, "content-length": str(len(body))}.items()],
        "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0),
    }
    sent = False
    status, chunks = 500, []

    async def receive() -> Message:
        nonlocal sent
        if sent:
            await anyio.sleep_forever()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)
