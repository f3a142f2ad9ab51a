"""WADO-URI (PS3.18 9): ``/wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..``.

``contentType=application/dicom`` returns the stored file (transcoded when
``transferSyntax`` names another syntax). JPEG and PNG renderings
(the default content type) are not wired to the core's rendering (``lanthorn.pixels``)
yet: they are refused with 406 and a message instead of being answered wrongly.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lanthorn import BadRequest, Level, Server

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
    if DICOM not in content_types:
        raise NotAcceptable(f"only contentType={DICOM} is available (asked: "
                            f"{', '.join(content_types)}); JPEG and PNG are not yet")
    uids = {keyword: params[name] for name, keyword in PARAMETERS.items()}
    (attachment, syntax), *_ = stored_files(server, instances(server, Level.INSTANCE, uids))
    asked = params.get("transferSyntax", syntax)
    target = writable(asked if asked != syntax else None)
    _, blocks = dicom_part(server, attachment, target or syntax, target is not None)
    headers = {} if target else {"Content-Length": str(attachment.uncompressed_size)}
    return StreamingResponse(blocks, media_type=DICOM, headers=headers)
