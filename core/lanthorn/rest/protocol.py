"""uvicorn's httptools protocol with two additions the REST API needs before any ASGI
code runs.

- A limit on the request line plus headers (``HttpMaximumHeaderSize``): the parser
  buffers an unfinished header without bound, so a client could otherwise fill memory
  before the request exists. Parsed headers are counted as they come, and so are the
  bytes read while the headers are unfinished: the memory held is at most the limit plus
  one read.
- The verified client certificate of an HTTPS connection, as the ASGI TLS extension's
  ``client_cert_name`` (RFC 4514), so that ``authenticate`` can map it to a user.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if TYPE_CHECKING:
    import asyncio

    from starlette.types import ASGIApp, Receive, Scope, Send

#: ``getpeercert()``'s attribute names, as RFC 4514 writes them.
SHORT_NAMES = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
               "countryName": "C", "localityName": "L", "stateOrProvinceName": "ST",
               "streetAddress": "STREET", "domainComponent": "DC", "userId": "UID"}
SPECIAL = ',+"\\<>;='


def protocol_class(max_header_bytes: int) -> type[HttpToolsProtocol]:
    """The protocol class to give uvicorn (``http=``) for this limit."""
    return type("LanthornProtocol", (LanthornProtocol,), {"max_header_bytes": max_header_bytes})


class LanthornProtocol(HttpToolsProtocol):
    max_header_bytes = 64 * 1024

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = self._unfinished = 0
        self._in_headers = True
        self._too_large = False
        ssl_object = transport.get_extra_info("ssl_object")
        peer = ssl_object.getpeercert() if ssl_object is not None else None
        if peer:
            self.app = with_tls_extension(self.app, {"client_cert_name": subject_name(peer),
                                                     "client_cert_error": None})

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_headers and not self._too_large:
            self._unfinished += len(data)
            if self._unfinished > self.max_header_bytes:
                self._too_large = True
                self.send_400_response("")  # answered 431 below

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = self._unfinished = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._count(len(name) + len(value) + 4)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        super().on_headers_complete()

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            self._too_large = True
            raise ValueError("headers too large")  # the parser stops: send_400_response

    def send_400_response(self, msg: str) -> None:
        if not self._too_large:
            super().send_400_response(msg)
            return
        self.logger.warning("request headers larger than %d bytes refused",
                            self.max_header_bytes)
        body = (b"Request headers too large: at most %d bytes (HttpMaximumHeaderSize)"
                % self.max_header_bytes)
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                             b"content-type: text/plain; charset=utf-8\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                             % (len(body), body))
        self.transport.close()


def with_tls_extension(app: ASGIApp, tls: dict[str, Any]) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["extensions"] = {**scope.get("extensions", {}), "tls": tls}
        await app(scope, receive, send)

    return wrapped


def subject_name(certificate: dict[str, Any]) -> str:
    """The subject of ``ssl.SSLSocket.getpeercert()`` as RFC 4514 writes it."""
    return ",".join(
        "+".join(f"{SHORT_NAMES.get(name, name)}={_escape(value)}" for name, value in rdn)
        for rdn in reversed(certificate.get("subject", ())))


def common_names(name: str) -> list[str]:
    """The CN values of an RFC 4514 name (escapes undone)."""
    found, current, escaped = [], "", False
    for char in name + ",":
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char in ",+":
            key, _, value = current.partition("=")
            if key.strip().upper() == "CN":
                found.append(value)
            current = ""
        else:
            current += char
    return found


def _escape(value: str) -> str:
    escaped = "".join("\\" + char if char in SPECIAL else char for char in value)
    if escaped[:1] in ("#", " "):
        escaped = "\\" + escaped
    return escaped[:-1] + "\\ " if escaped.endswith(" ") else escaped
