"""``/tools/metrics`` (are metrics collected?) and ``/tools/metrics-prometheus``."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import BadRequest
from ..types import PluginRoute, permitted
from .common import server_of, text

PROMETHEUS_TEXT = "text/plain; version=0.0.4"


def enabled(request: Request) -> Response:
    return text("1" if server_of(request).metrics.enabled else "0")


async def set_enabled(request: Request) -> Response:
    """Only this process changes: with ``Workers``, the others keep their setting."""
    value = (await request.body()).decode(errors="replace").strip().lower()
    if value not in ("0", "1", "true", "false"):
        raise BadRequest(f'expected "1" or "0", not "{value}"')
    server_of(request).metrics.enabled = value in ("1", "true")
    return text("")


async def prometheus(request: Request) -> Response:
    """Empty while metrics are disabled, as in Orthanc."""
    server = server_of(request)
    if not server.metrics.enabled:
        return Response("", media_type=PROMETHEUS_TEXT)
    await run_in_threadpool(server.plugins.hook.refresh_metrics, server=server,
                            metrics=server.metrics)
    return Response(server.metrics.render(), media_type=PROMETHEUS_TEXT)


def routes() -> list[PluginRoute]:
    return [
        *permitted("read",
                   Route("/tools/metrics", enabled, methods=["GET"]),
                   Route("/tools/metrics-prometheus", prometheus, methods=["GET"])),
        *permitted("admin", Route("/tools/metrics", set_enabled, methods=["PUT"])),
    ]
