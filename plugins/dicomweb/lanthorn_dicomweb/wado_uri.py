"""WADO-URI (PS3.18 9): ``/wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..``.

``contentType=application/dicom`` returns the stored file (transcoded when
``transferSyntax`` names another syntax); ``image/jpeg`` (the default) and ``image/png``
a rendering of one frame (see ``rendered.wado_uri_picture``).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lanthorn import BadRequest, Level, Server
from lanthorn.storage import read_chunks

from .rendered import MEDIA_TYPES, wado_uri_picture
from .resources import instances
from .responses import NotAcceptable
from .wado import DICOM, dicom_part, stored_files, writable

PARAMETERS = {"studyUID": "StudyInstanceUID", "seriesUID": "SeriesInstanceUID",
              "objectUID": "SOPInstanceUID"}


def wado_uri(request: Request, server: Server) -> Response:
    params = request.query_params
    if params.get("requestType") != "WADO":
        raise BadRequest('"requestType" must be "WADO"')
    missing = [name for name in PARAMETERS if not params.get(name)]
    if missing:
        raise BadRequest(f"missing parameter(s): {', '.join(missing)}")
    content_types = [t.strip() for t in params.get("contentType", "image/jpeg").split(",")]
    uids = {keyword: params[name] for name, keyword in PARAMETERS.items()}
    found = instances(server, Level.INSTANCE, uids)
    if DICOM not in content_types:
        picture = next((t for t in content_types if t in MEDIA_TYPES), None)
        if picture is None:
            raise NotAcceptable(f"contentType is {DICOM}, image/jpeg or image/png, not "
                                f"{', '.join(content_types)}")
        return wado_uri_picture(request, server, found[0], picture)
    (attachment, syntax), *_ = stored_files(server, found)
    asked = params.get("transferSyntax", syntax)
    target = writable(asked if asked != syntax else None)
    stored = read_chunks(server.storage, attachment.uuid, attachment.compression)
    _, blocks = dicom_part(server, stored, target or syntax, target is not None)
    headers = {} if target else {"Content-Length": str(attachment.uncompressed_size)}
    return StreamingResponse(blocks, media_type=DICOM, headers=headers)
