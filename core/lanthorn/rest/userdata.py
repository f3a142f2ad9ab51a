"""Metadata and attachments of any resource: ``/{level}/{id}/metadata[/{name}]`` and
``/{level}/{id}/attachments[/{name}[/...]]``, with Orthanc's revisions.

Both are named as ``lanthorn.userdata`` says; users write only their own (1024 to
65535). Every value has a revision: answers carry it in an ``ETag``
(``"revision-md5"``), ``If-Match`` makes a change conditional (a mismatch is a 409),
and ``CheckRevisions`` makes ``If-Match`` mandatory for changing an existing value.
``If-None-Match`` answers 304 when unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import BadFileFormat, BadRequest, CorruptedFile, InexistentItem
from ..index.records import Attachment, Resource
from ..storage import (
    COMPRESSION_NONE,
    COMPRESSION_ZLIB,
    compress,
    new_uuid,
    read_all,
    read_chunks,
)
from ..types import PluginRoute, permitted
from ..userdata import Names, attachment_names, metadata_names
from .common import answer, flag, resource_of, server_of, text
from .instances import serve_attachment

if TYPE_CHECKING:
    from ..server import Server

ATTACHMENT_OPERATIONS = ["compress", "compressed-data", "compressed-md5", "compressed-size",
                         "data", "info", "is-compressed", "md5", "size", "uncompress",
                         "verify-md5"]


# -- revisions -----------------------------------------------------------------------------

def etag(revision: int, md5: str) -> str:
    return f'"{revision}-{md5}"'


def if_match(request: Request) -> int | None:
    """The revision an ``If-Match`` header names (``"3-<md5>"``, or just ``3``)."""
    value = request.headers.get("If-Match")
    if value is None:
        return None
    revision = value.strip().strip('"').partition("-")[0]
    if not revision.isdigit():
        raise BadRequest('The "If-Match" HTTP header should contain the ETag (revision '
                         f"followed by MD5 hash), but found: {value}")
    return int(revision)


def unchanged(request: Request, tag: str) -> bool:
    """Whether ``If-None-Match`` names this very ETag (then the answer is a 304)."""
    value = request.headers.get("If-None-Match")
    return value is not None and value.strip() == tag


def _conditional(request: Request, tag: str, make: Callable[[], Response]) -> Response:
    """The answer ``make`` gives, with its ETag; a bare 304 when the client has it."""
    if unchanged(request, tag):
        return Response(status_code=304, headers={"ETag": tag})
    response = make()
    response.headers["ETag"] = tag
    return response


def _require(server: Server) -> bool:
    return bool(server.config["CheckRevisions"])


# -- metadata ------------------------------------------------------------------------------

def list_metadata(request: Request) -> Response:
    server = server_of(request)
    metadata = server.index.metadata(resource_of(request).id)
    if flag(request, "numeric"):
        names = metadata_names(server.config)
        metadata = {str(names.number(k)) if _known(names, k) else k: v
                    for k, v in metadata.items()}
    return answer(metadata if flag(request, "expand") else list(metadata))


def _known(names: Names, name: str) -> bool:
    try:
        names.number(name)
    except InexistentItem:
        return False
    return True


def get_metadata(request: Request) -> Response:
    server = server_of(request)
    name = _metadata_key(server, request.path_params["name"])
    found = server.index.metadata_entry(resource_of(request).id, name)
    if found is None:
        raise InexistentItem(f'no metadata "{name}" on this resource')
    value, revision = found
    return _conditional(request, etag(revision, _md5(value.encode())), lambda: text(value))


async def put_metadata(request: Request) -> Response:
    """Set a user metadata value (the body is the value, as in Orthanc)."""
    server, resource = server_of(request), resource_of(request)
    name = _writable_metadata(server, request.path_params["name"])
    value = (await request.body()).decode(errors="replace")
    revision = await run_in_threadpool(
        server.index.set_metadata, resource, name, value, revision=if_match(request),
        require=_require(server))
    return _tagged(text(""), etag(revision, _md5(value.encode())))


async def delete_metadata(request: Request) -> Response:
    server, resource = server_of(request), resource_of(request)
    name = _writable_metadata(server, request.path_params["name"])
    if not await run_in_threadpool(server.index.delete_metadata, resource, name,
                                   revision=if_match(request), require=_require(server)):
        raise InexistentItem(f'no metadata "{name}" on this resource')
    return text("")


def _metadata_key(server: Server, name: str) -> str:
    """The name a metadata is stored under: its user or system name, or its number."""
    names = metadata_names(server.config)
    return names.name(names.number(name))


def _writable_metadata(server: Server, name: str) -> str:
    names = metadata_names(server.config)
    return names.name(names.writable(name))


# -- attachments ---------------------------------------------------------------------------

def list_attachments(request: Request) -> Response:
    server = server_of(request)
    names = attachment_names(server.config)
    numbers = sorted(server.index.describe([resource_of(request).id])[0].attachments)
    if flag(request, "full"):
        return answer({names.name(n): n for n in numbers})
    return answer([names.name(n) for n in numbers])


@dataclass(frozen=True)
class Found:
    server: Server
    resource: Resource
    attachment: Attachment
    names: Names

    @property
    def etag(self) -> str:
        return etag(self.attachment.revision, self.attachment.uncompressed_md5)


def _found(request: Request) -> Found:
    server, resource = server_of(request), resource_of(request)
    names = attachment_names(server.config)
    number = names.number(request.path_params["name"])
    attachment = server.index.attachment(resource.id, number)
    if attachment is None:
        raise InexistentItem(f'no attachment "{request.path_params["name"]}" on this resource')
    return Found(server, resource, attachment, names)


def attachment_value(field: str):  # noqa: ANN201 - a Starlette endpoint
    """``operations``, ``info``, ``md5``, ``size``...: what the index knows, with its ETag."""

    def endpoint(request: Request) -> Response:
        found = _found(request)
        a = found.attachment
        values: dict[str, Any] = {
            "operations": ATTACHMENT_OPERATIONS,
            "info": {"CompressedMD5": a.compressed_md5, "CompressedSize": a.compressed_size,
                     "ContentType": a.content_type, "UncompressedMD5": a.uncompressed_md5,
                     "UncompressedSize": a.uncompressed_size, "Uuid": a.uuid},
            "md5": a.uncompressed_md5, "compressed-md5": a.compressed_md5,
            "size": str(a.uncompressed_size), "compressed-size": str(a.compressed_size),
            "is-compressed": "1" if a.compression != COMPRESSION_NONE else "0",
        }
        value = values[field]
        return _conditional(request, found.etag,
                            lambda: text(value) if isinstance(value, str) else answer(value))

    return endpoint


def attachment_data(stored: bool):  # noqa: ANN201 - a Starlette endpoint
    """``data`` (inflated) or ``compressed-data`` (as on disk), streamed."""

    def endpoint(request: Request) -> Response:
        found = _found(request)
        media_type = "application/octet-stream" if stored else \
            found.names.media_types.get(found.attachment.content_type, "application/octet-stream")
        filename = request.query_params.get("filename")
        headers = {"Content-Disposition": f'filename="{filename}"'} if filename else {}
        return _conditional(request, found.etag, lambda: serve_attachment(
            request, found.server, found.attachment, media_type, stored=stored,
            headers=headers))

    return endpoint


async def put_attachment(request: Request) -> Response:
    server, resource = server_of(request), resource_of(request)
    number = attachment_names(server.config).writable(request.path_params["name"])
    data = await request.body()
    revision = await run_in_threadpool(_put_attachment, server, resource, number, data,
                                       if_match(request))
    return _tagged(answer({}), etag(revision, _md5(data)))


def _put_attachment(server: Server, resource: Resource, number: int, data: bytes,
                    expected: int | None) -> int:
    attachment = _write(server, number, data, bool(server.config["StorageCompression"]))
    try:
        revision, replaced = server.index.set_attachment(resource, attachment, revision=expected,
                                                         require=_require(server))
    except BaseException:
        server.storage.remove(attachment.uuid)
        raise
    if replaced:
        server.storage.remove(replaced)
    return revision


def _write(server: Server, number: int, data: bytes, compressed: bool) -> Attachment:
    """Write a new file for an attachment's content; its record (revision set later)."""
    uuid = new_uuid()
    md5 = _md5(data)
    stored = compress(data) if compressed else data
    server.storage.write(uuid, stored)
    return Attachment(number, uuid, len(stored), len(data),
                      COMPRESSION_ZLIB if compressed else COMPRESSION_NONE,
                      _md5(stored) if compressed else md5, md5)


async def delete_attachment(request: Request) -> Response:
    server, resource = server_of(request), resource_of(request)
    number = attachment_names(server.config).writable(request.path_params["name"])
    uuid = await run_in_threadpool(server.index.delete_attachment, resource, number,
                                   revision=if_match(request), require=_require(server))
    if uuid is None:
        raise InexistentItem(f'no attachment "{request.path_params["name"]}" on this resource')
    server.storage.remove(uuid)
    return answer({})


async def verify_md5(request: Request) -> Response:
    found = _found(request)
    await run_in_threadpool(_verify, found.server, found.attachment)
    return answer({})


def _verify(server: Server, attachment: Attachment) -> None:
    stored = hashlib.md5()
    for chunk in read_chunks(server.storage, attachment.uuid, COMPRESSION_NONE):
        stored.update(chunk)
    content = hashlib.md5()
    for chunk in read_chunks(server.storage, attachment.uuid, attachment.compression):
        content.update(chunk)
    if (stored.hexdigest(), content.hexdigest()) != (attachment.compressed_md5,
                                                     attachment.uncompressed_md5):
        raise CorruptedFile(f"the file of attachment {attachment.content_type} does not match "
                            "its MD5 hash")


def recompress(compressed: bool):  # noqa: ANN201 - a Starlette endpoint
    """``compress`` / ``uncompress``: store the same content in another form."""

    async def endpoint(request: Request) -> Response:
        found = _found(request)
        await run_in_threadpool(_recompress, found.server, found.resource, found.attachment,
                                compressed)
        return answer({})

    return endpoint


def _recompress(server: Server, resource: Resource, old: Attachment, compressed: bool) -> None:
    if (old.compression != COMPRESSION_NONE) == compressed:
        return
    data = read_all(server.storage, old.uuid, old.compression)
    if _md5(data) != old.uncompressed_md5:
        raise CorruptedFile("the attachment does not match its MD5 hash: left as it is")
    new = _write(server, old.content_type, data, compressed)
    if server.index.replace_attachment_file(resource.id, old.uuid, new):
        server.storage.remove(old.uuid)
    else:  # changed meanwhile by another request: keep that one
        server.storage.remove(new.uuid)
        raise BadFileFormat("the attachment changed during the operation")


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _tagged(response: Response, tag: str) -> Response:
    response.headers["ETag"] = tag
    return response


def routes() -> list[PluginRoute]:
    base = "/{level:lanthorn_level}/{id}"
    one = f"{base}/attachments/{{name}}"
    values = ["info", "md5", "compressed-md5", "size", "compressed-size", "is-compressed"]
    return [
        *permitted(
            "read",
            Route(f"{base}/metadata", list_metadata, methods=["GET"]),
            Route(f"{base}/metadata/{{name}}", get_metadata, methods=["GET"]),
            Route(f"{base}/attachments", list_attachments, methods=["GET"]),
            Route(one, attachment_value("operations"), methods=["GET"]),
            *(Route(f"{one}/{field}", attachment_value(field), methods=["GET"])
              for field in values),
            Route(f"{one}/data", attachment_data(stored=False), methods=["GET"]),
            Route(f"{one}/compressed-data", attachment_data(stored=True), methods=["GET"]),
            Route(f"{one}/verify-md5", verify_md5, methods=["POST"])),
        *permitted(
            "write",
            Route(f"{base}/metadata/{{name}}", put_metadata, methods=["PUT"]),
            Route(f"{base}/metadata/{{name}}", delete_metadata, methods=["DELETE"]),
            Route(one, put_attachment, methods=["PUT"]),
            Route(one, delete_attachment, methods=["DELETE"]),
            Route(f"{one}/compress", recompress(True), methods=["POST"]),
            Route(f"{one}/uncompress", recompress(False), methods=["POST"])),
    ]
