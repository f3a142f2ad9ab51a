"""Content negotiation and the shapes of DICOMweb answers."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from python_multipart.multipart import parse_options_header
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lanthorn import BadRequest

DICOM_JSON = "application/dicom+json"
JSON_TYPES = (DICOM_JSON, "application/json", "*/*", "application/*")
ANY_SYNTAX = "*"


class NotAcceptable(BadRequest):
    """Nothing the client accepts can be produced (PS3.18: 406)."""

    http_status = 406
    orthanc_error = "Not acceptable"


def dicom_json(data: Any, status: int = 200) -> Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type=DICOM_JSON)


#: Bytes of JSON gathered before they are sent: each block costs a thread hop.
BLOCK = 1 << 16


def json_array(items: Iterable[bytes]) -> StreamingResponse:
    """A JSON array of encoded items, sent as they come (series metadata) in ~64 KB blocks."""
    def body() -> Iterator[bytes]:
        block = bytearray(b"[")
        for position, item in enumerate(items):
            if position:
                block += b","
            block += item
            if len(block) >= BLOCK:
                yield bytes(block)
                block.clear()
        block += b"]"
        yield bytes(block)

    return StreamingResponse(body(), media_type=DICOM_JSON)


def require_json(request: Request) -> None:
    """QIDO and metadata answer DICOM JSON only (no XML)."""
    accept = request.headers.get("accept", "")
    if not accept:
        return
    types = [item.split(";")[0].strip().lower() for item in accept.split(",")]
    if not any(t in JSON_TYPES for t in types):
        raise NotAcceptable(f'only {DICOM_JSON} is available here, not "{accept}"')


@dataclass(frozen=True)
class Wanted:
    """One acceptable multipart answer: the part media type and transfer syntax."""

    media_type: str  # "*/*" for anything
    transfer_syntax: str  # "*" for any syntax


def wanted(request: Request, default_type: str) -> list[Wanted]:
    """The multipart/related media types the Accept header allows, in order.

    No Accept (or ``*/*``) means the stored form. A transfer syntax left unspecified is
    read as ``*`` (the stored one), as Orthanc does, rather than PS3.18's default of
    Explicit VR Little Endian, which would require transcoding every stored file.
    """
    accept = request.headers.get("accept", "").strip()
    if not accept:
        return [Wanted("*/*", ANY_SYNTAX)]
    result = []
    for item in accept.split(","):
        media, parameters = parse_options_header(item.strip())
        media_type = media.decode("latin-1").lower()
        syntax = parameters.get(b"transfer-syntax", b"*").decode("latin-1")
        if media_type == "multipart/related":
            part = parameters.get(b"type", default_type.encode()).decode("latin-1").lower()
            result.append(Wanted(part, syntax))
        elif media_type in ("*/*", "multipart/*"):
            result.append(Wanted("*/*", syntax))
        elif media_type == default_type:
            result.append(Wanted(media_type, syntax))
    if not result:
        raise NotAcceptable(f'the answer is multipart/related; type="{default_type}", which '
                            f'"Accept: {accept}" does not allow')
    return result


def choose(wants: list[Wanted], media_type: str, stored_syntax: str) -> str | None:
    """None to send the stored form, or the transfer syntax to transcode to (the first
    one asked for); 406 when no acceptable media type is ``media_type``."""
    targets = []
    for want in wants:
        type_ok = want.media_type in ("*/*", media_type) or (
            want.media_type.endswith("/*") and media_type.startswith(want.media_type[:-1]))
        if type_ok and want.transfer_syntax in (ANY_SYNTAX, stored_syntax):
            return None
        if type_ok:
            targets.append(want.transfer_syntax)
    if not targets:
        asked = ", ".join(f"{w.media_type} ({w.transfer_syntax})" for w in wants)
        raise NotAcceptable(f"the answer is {media_type}; asked for {asked}")
    return targets[0]
