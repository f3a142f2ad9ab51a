"""The core's identity and authorization: API tokens (``Bearer``) and HTTP basic
authentication against ``RegisteredUsers`` (``trylast``, so a plugin may identify callers
first) and the role check every route's permission goes through."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import tokens
from ..auth import basic_credentials, credentials, permits
from ..plugins import hookimpl
from ..rest.access import required_permission
from ..types import Principal

if TYPE_CHECKING:
    from starlette.requests import Request

    from ..server import Server


@hookimpl(trylast=True)
def authenticate(server: Server, request: Request) -> Principal | None:
    header = request.headers.get("authorization", "")
    bearer = credentials(header, "bearer")
    if bearer is not None:
        return tokens.authenticate(server, bearer)
    basic = basic_credentials(header)
    user = server.users.verify(*basic) if basic else None
    return Principal(user.name, user.roles, "basic") if user else None


@hookimpl
def filter_http_request(server: Server, request: Request, principal: Principal) -> bool:
    permission = required_permission(request)
    return permission is None or permits(principal, permission)
