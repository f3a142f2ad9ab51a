"""The default rendering of errors (Orthanc's JSON error object), overridable."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..plugins import hookimpl
from ..rest.app import error_response

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from ..server import Server


@hookimpl(trylast=True)
def handle_exception(server: Server, request: Request, exc: Exception) -> Response:
    return error_response(request, exc, server.config["HttpDescribeErrors"])
