"""ASGI middleware that protects the REST API whatever the route: request body size,
browser security headers, and CORS (off unless ``HttpCorsAllowedOrigins`` lists origins).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request

from ..errors import BadRequest, PayloadTooLarge

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from ..server import Server

#: On every answer: browsers must not guess a content type (an uploaded file served back
#: as HTML would run as a page of this origin).
ALWAYS = {"x-content-type-options": "nosniff"}
#: On HTML answers: no framing by other sites (clickjacking), no URLs leaked to others.
HTML = {"x-frame-options": "DENY", "content-security-policy": "frame-ancestors 'none'",
        "referrer-policy": "no-referrer"}
HSTS = {"strict-transport-security": "max-age=31536000"}


def harden(app: Starlette, server: Server) -> None:
    """Add the middleware the configuration asks for (call before AccessControl is added:
    the body limit runs once the caller is known, the rest around everything)."""
    config = server.config
    if config["HttpMaximumRequestBodySize"] > 0:
        app.add_middleware(BodyLimit, server=server,
                           limit=config["HttpMaximumRequestBodySize"] * 1024 * 1024)


def surround(app: Starlette, server: Server) -> None:
    """The middleware that must see every answer, refusals included (call after
    AccessControl is added)."""
    config = server.config
    if config["HttpCorsAllowedOrigins"]:
        app.add_middleware(CORSMiddleware, allow_origins=config["HttpCorsAllowedOrigins"],
                           allow_methods=["GET", "POST", "PUT", "DELETE"],
                           allow_headers=["*"], allow_credentials=True)
    app.add_middleware(SecurityHeaders, https=bool(config["SslEnabled"]))


class BodyLimit:
    """413 for a body larger than the limit: at once when ``Content-Length`` says so,
    else as soon as the bytes read exceed it (chunked uploads)."""

    def __init__(self, app: ASGIApp, server: Server, limit: int) -> None:
        self.app = app
        self.server = server
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Request(scope).headers.get("content-length")
        refusal: Exception | None = None
        if declared is not None and not declared.isdigit():
            refusal = BadRequest("Content-Length must be a number of bytes")
        elif declared is not None and int(declared) > self.limit:
            refusal = self.too_large()
        if refusal is not None:
            from .app import render_error

            await render_error(self.server, Request(scope), refusal)(scope, receive, send)
            return
        read = 0

        async def counted() -> Message:
            nonlocal read
            message = await receive()
            read += len(message.get("body", b""))
            if read > self.limit:
                raise self.too_large()
            return message

        await self.app(scope, counted, send)

    def too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body exceeds {self.limit // (1024 * 1024)} MB "
                               "(HttpMaximumRequestBodySize)")


class SecurityHeaders:
    """Security headers a plugin's answer has not set itself."""

    def __init__(self, app: ASGIApp, https: bool) -> None:
        self.app = app
        self.always = {**ALWAYS, **(HSTS if https else {})}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                html = headers.get("content-type", "").startswith("text/html")
                for name, value in {**self.always, **(HTML if html else {})}.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
