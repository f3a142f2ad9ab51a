"""Say hello over REST and count the instances this server stores.

An example Lanthorn plugin: one route (``GET /hello``), one notification
(``on_stored_instance``) and one configuration section (``"Hello"``).
"""

from __future__ import annotations

import logging
import threading
import weakref

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import lanthorn

__version__ = "0.1.0"

#: Top-level configuration keys this plugin owns, so Lanthorn does not warn about them.
config_sections = ("Hello",)

log = logging.getLogger(__name__)

# Counts are kept per server: one process may run several (tests do).
_stored: weakref.WeakKeyDictionary[lanthorn.Server, int] = weakref.WeakKeyDictionary()
_lock = threading.Lock()  # instances are stored from many threads at once


@lanthorn.hookimpl
def register_routes(server: lanthorn.Server) -> list[lanthorn.PluginRoute]:
    def hello(request: Request) -> JSONResponse:
        # A sync endpoint: Starlette runs it in a worker thread, so blocking index
        # calls are fine here.
        counts = server.index.statistics().count_by_level
        return JSONResponse({
            "Greeting": server.config.section("Hello").get("Greeting", "Hello"),
            "Instances": counts[lanthorn.Level.INSTANCE],
            "StoredSinceStartup": _stored.get(server, 0),
        })

    return [lanthorn.PluginRoute(Route("/hello", hello, methods=["GET"]), permission="read")]


@lanthorn.hookimpl
def on_stored_instance(server: lanthorn.Server, instance: lanthorn.StoredInstance) -> None:
    # A hook implementation may take any subset of the hook's arguments: no dataset here.
    with _lock:
        _stored[server] = _stored.get(server, 0) + 1
    log.info("hello, instance %s", instance.id)
