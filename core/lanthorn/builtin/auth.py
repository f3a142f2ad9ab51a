"""The core's identity and authorization: API tokens (``Bearer``), HTTP basic
authentication against ``RegisteredUsers`` and, without an ``Authorization`` header,
verified client certificates (``trylast``, so a plugin may identify callers first); and
the role check every route's permission goes through."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import tokens
from ..auth import basic_credentials, credentials, permits
from ..plugins import hookimpl
from ..rest.access import required_permission
from ..rest.protocol import common_names
from ..types import Principal

if TYPE_CHECKING:
    from starlette.requests import Request

    from ..server import Server


@hookimpl(trylast=True)
def authenticate(server: Server, request: Request) -> Principal | None:
    header = request.headers.get("authorization")
    if header is None:
        return certificate_user(server, request)
    bearer = credentials(header, "bearer")
    if bearer is not None:
        return tokens.authenticate(server, bearer)
    basic = basic_credentials(header)
    user = server.users.verify(*basic) if basic else None
    return Principal(user.name, user.roles, "basic") if user else None


def certificate_user(server: Server, request: Request) -> Principal | None:
    """The user whose ``CertificateCommonNames`` has the CN of the client's certificate
    (which the TLS handshake verified: ``SslVerifyPeers``)."""
    tls = request.scope.get("extensions", {}).get("tls", {})
    for name in common_names(tls.get("client_cert_name") or ""):
        user = server.users.by_certificate.get(name)
        if user is not None:
            return Principal(user.name, user.roles, "certificate")
    return None


@hookimpl
def filter_http_request(server: Server, request: Request, principal: Principal) -> bool:
    permission = required_permission(request)
    return permission is None or permits(principal, permission)
