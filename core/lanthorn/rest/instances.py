"""Uploading instances and reading them back: file, tags, content."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..dicom import (
    BINARY_VRS,
    NUMERIC_VRS,
    PIXEL_DATA,
    Mode,
    dataset_json,
    element_string,
    read_header,
)
from ..errors import BadFileFormat, BadRequest, Forbidden, InexistentItem
from ..ingest import DICOM_ATTACHMENT
from ..model import Level, format_tag, parse_tag
from ..storage import COMPRESSION_NONE, read_all, read_chunks
from ..types import Origin, PluginRoute, permitted
from .common import answer, byte_range, dicom_form, resource_of, server_of
from .streaming import BLOCK, streamed

if TYPE_CHECKING:
    from ..index.records import Attachment, Resource
    from ..server import Server


async def upload(request: Request) -> Response:
    """One DICOM file, or a ZIP of them (each member stored or reported on its own)."""
    data = await request.body()
    origin = Origin("RestApi", remote_ip=request.client.host if request.client else "")
    return await run_in_threadpool(_store, server_of(request), data, origin)


def _store(server: Server, data: bytes, origin: Origin) -> Response:
    items = list(server.ingest.store_many(data, origin))
    if len(items) == 1 and items[0].name == "":
        if items[0].error:
            raise items[0].error
        return answer(items[0].stored.as_json())
    if not items:
        raise BadFileFormat("The ZIP archive contains no file")
    return answer([item.stored.as_json() if item.stored else
                   {"Path": item.name, "Status": "Failure", "Details": item.error.message}
                   for item in items])


def instance_file(request: Request) -> Response:
    """The file as received, streamed from the storage area; one HTTP byte range allowed."""
    server = server_of(request)
    instance = resource_of(request, Level.INSTANCE)
    attachment = server.index.attachment(instance.id, DICOM_ATTACHMENT)
    if attachment is None:
        raise InexistentItem("this instance has no DICOM file")
    return serve_attachment(request, server, attachment, "application/dicom")


async def export(request: Request) -> Response:
    """Write the file to a path on the server (``RestApiWriteToFileSystemEnabled``):
    any path the server's user may write, as in Orthanc, so only for trusted clients."""
    server = server_of(request)
    if not server.config["RestApiWriteToFileSystemEnabled"]:
        raise Forbidden("writing to the file system is disabled: set "
                        "RestApiWriteToFileSystemEnabled to true to allow it")
    path = (await request.body()).decode(errors="replace").strip()
    if not path:
        raise BadRequest("the body must be the path of the file to write")
    await run_in_threadpool(_export, server, resource_of(request, Level.INSTANCE), Path(path))
    return answer({})


def _export(server: Server, instance: Resource, path: Path) -> None:
    attachment = server.index.attachment(instance.id, DICOM_ATTACHMENT)
    if attachment is None:
        raise InexistentItem("this instance has no DICOM file")
    try:
        path.write_bytes(read_all(server.storage, attachment.uuid, attachment.compression))
    except OSError as exc:
        raise BadRequest(f"cannot write {path}: {exc.strerror}") from None


def serve_attachment(request: Request, server: Server, attachment: Attachment,
                     media_type: str, *, stored: bool = False,
                     headers: dict[str, str] | None = None) -> Response:
    """Stream an attachment (inflated, or as ``stored`` on disk); one byte range allowed."""
    compression = COMPRESSION_NONE if stored else attachment.compression
    size = attachment.compressed_size if stored else attachment.uncompressed_size
    start, end = byte_range(request.headers.get("range"), size)
    chunks = read_chunks(server.storage, attachment.uuid, compression, start, end)
    headers = {**(headers or {}), "Content-Length": str(end - start), "Accept-Ranges": "bytes"}
    status = 200
    if "range" in request.headers:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        status = 206
    if end - start <= BLOCK:  # read at once: a read-ahead thread would only add hops
        return Response(b"".join(chunks), status, headers, media_type)
    return streamed(chunks, status_code=status, media_type=media_type, headers=headers)


def _dataset(request: Request):  # noqa: ANN202 - a pydicom Dataset
    return _stored_dataset(server_of(request), resource_of(request, Level.INSTANCE).id)


def _stored_dataset(server: Server, instance_id: int,
                    metadata: dict[str, str] | None = None):  # noqa: ANN202 - a pydicom Dataset
    """The saved header, and whether the file has pixel data (the header leaves it out)."""
    metadata = server.index.metadata(instance_id) if metadata is None else metadata
    return read_header(server.index.header(instance_id)), "PixelDataOffset" in metadata


def tags(request: Request) -> Response:
    return answer(_tags(server_of(request), resource_of(request, Level.INSTANCE).id,
                        dicom_form(request)))


def simplified_tags(request: Request) -> Response:
    return answer(_tags(server_of(request), resource_of(request, Level.INSTANCE).id,
                        "simplify"))


def _tags(server: Server, instance_id: int, mode: Mode,
          metadata: dict[str, str] | None = None) -> dict[str, Any]:
    dataset, has_pixels = _stored_dataset(server, instance_id, metadata)
    dataset.file_meta = None  # /tags shows the data set; /header shows the file meta
    return dataset_json(dataset, mode, with_pixel_data=has_pixels)


def instances_tags(level: Level):  # noqa: ANN201 - a Starlette endpoint
    """``/{patients|studies|series}/{id}/instances-tags``: the tags of each instance
    below, by instance ID, read from the saved headers (not the files)."""

    def endpoint(request: Request) -> Response:
        server = server_of(request)
        ids = server.index.descendants(resource_of(request, level).id, Level.INSTANCE)
        mode = dicom_form(request)
        return answer({info.resource.public_id:
                       _tags(server, info.resource.id, mode, info.metadata)
                       for info in server.index.describe(ids)})

    return endpoint


def header(request: Request) -> Response:
    """The file meta information; as in Orthanc, binary elements are left out."""
    dataset, _ = _dataset(request)
    meta = Dataset()
    for element in dataset.file_meta:
        if element.VR not in BINARY_VRS:
            meta.add(element)
    return answer(dataset_json(meta, dicom_form(request)))


def content(request: Request) -> Response:
    """Browse the dataset: ``content/0010-0010``, ``content/0008-1140/0/0008-1150``.

    A value is answered as the bytes of the file, padding included (as Orthanc does);
    a number, which DICOM stores in binary, as text.
    """
    dataset, has_pixels = _dataset(request)
    dataset.file_meta = None
    path = [p for p in request.path_params.get("path", "").split("/") if p]
    node: Dataset | list[Dataset] | DataElement = dataset
    raw: DataElement | RawDataElement | None = None
    for position, step in enumerate(path):
        where = "/".join(path[: position + 1])
        if isinstance(node, list):
            if not step.isdigit() or int(step) >= len(node):
                raise InexistentItem(f'no "{where}" in this instance')
            node = node[int(step)]
            continue
        try:
            tag = parse_tag(step)
        except ValueError:
            raise InexistentItem(f'no "{where}" in this instance') from None
        if not isinstance(node, Dataset) or tag not in node:
            raise InexistentItem(f'no "{where}" in this instance')
        raw = node.get_item(tag)  # before conversion, which strips the padding
        element = node[tag]
        node = list(element.value) if element.VR == "SQ" else element
    if isinstance(node, list):
        return answer([str(i) for i in range(len(node))])
    if isinstance(node, DataElement):
        if isinstance(raw, RawDataElement) and node.VR not in NUMERIC_VRS:
            value = raw.value or b""
        else:
            value = node.value if isinstance(node.value, bytes) else \
                (element_string(node) or "").encode()
        return Response(value, media_type="application/octet-stream")
    tags = {e.tag for e in node} | ({PIXEL_DATA} if has_pixels and node is dataset else set())
    return answer([format_tag(t).replace(",", "-") for t in sorted(tags)])


def routes() -> list[PluginRoute]:
    return [
        *permitted("store", Route("/instances", upload, methods=["POST"])),
        *permitted("write", Route("/instances/{id}/export", export, methods=["POST"])),
        *permitted(
            "read",
            Route("/instances/{id}/file", instance_file, methods=["GET"]),
            Route("/instances/{id}/tags", tags, methods=["GET"]),
            *(Route(f"/{level.plural}/{{id}}/instances-tags", instances_tags(level),
                    methods=["GET"]) for level in (Level.PATIENT, Level.STUDY, Level.SERIES)),
            Route("/instances/{id}/simplified-tags", simplified_tags, methods=["GET"]),
            Route("/instances/{id}/header", header, methods=["GET"]),
            Route("/instances/{id}/content", content, methods=["GET"]),
            Route("/instances/{id}/content/{path:path}", content, methods=["GET"])),
    ]
