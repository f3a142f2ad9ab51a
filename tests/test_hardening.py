"""Hardening of the REST API: request size limits, CORS, security headers, malformed
credentials. Clear 4xx answers, never a 500, nothing leaked."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.responses import HTMLResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import lanthorn
from lanthorn.config import Config
from lanthorn.server import Server
from lanthorn.testing import ServerProcess, make_instance

MB = 1024 * 1024


@pytest.fixture
def make_client(lanthorn_config: Config, lanthorn_make_server: Callable[..., Server]
                ) -> Iterator[Callable[..., TestClient]]:
    """``make_client(plugins=(), **options)``: an in-process client of a server with
    these options."""
    servers: list[Server] = []
    clients: list[TestClient] = []

    def make(plugins: tuple[object, ...] = (), **options: Any) -> TestClient:
        servers.append(lanthorn_make_server(lanthorn_config.with_overrides(**options), plugins))
        clients.append(TestClient(servers[-1].app, client=("127.0.0.1", 50000)).__enter__())
        return clients[-1]

    yield make
    for client in clients:
        client.__exit__(None, None, None)
    for server in servers:
        server.close()


def test_request_body_limit(make_client: Callable[..., TestClient]) -> None:
    client = make_client(HttpMaximumRequestBodySize=1)
    small = make_instance()
    assert client.post("/instances", content=small).status_code == 200
    for body in (b"\0" * (MB + 1), iter([b"\0" * MB, b"\0" * 10])):  # declared, or chunked
        answer = client.post("/instances", content=body)
        assert answer.status_code == 413
        assert "HttpMaximumRequestBodySize" in answer.json()["Details"]
    assert client.get("/statistics").json()["CountInstances"] == 1  # nothing else stored
    unlimited = make_client(HttpMaximumRequestBodySize=0)
    assert unlimited.post("/tools/find", content=b" " * (MB + 1)).status_code == 400


def test_size_limits_over_real_http(lanthorn_process: ServerProcess) -> None:
    options = json.loads(lanthorn_process.config_path.read_text())
    options |= {"HttpMaximumHeaderSize": 8, "HttpMaximumRequestBodySize": 1}
    lanthorn_process.config_path.write_text(json.dumps(options))
    lanthorn_process.start()
    url = lanthorn_process.url
    huge = {"X-Padding": "a" * 20000}
    answer = httpx2.get(url + "/system", headers=huge)
    assert answer.status_code == 431 and "HttpMaximumHeaderSize" in answer.text
    many = {f"X-Padding-{n}": "a" * 100 for n in range(100)}
    assert httpx2.get(url + "/system", headers=many).status_code == 431
    assert httpx2.get(url + "/system?" + "a" * 10000).status_code == 431
    with socket.create_connection(("127.0.0.1", lanthorn_process.http_port)) as raw:
        raw.sendall(b"GET /system HTTP/1.1\r\nHost: x\r\nX-Endless: ")  # never finished
        for _ in range(20):
            try:
                raw.sendall(b"a" * 1024)
            except OSError:  # refused and closed mid-way: as it should
                break
        assert raw.recv(100).startswith(b"HTTP/1.1 431")
    answer = httpx2.post(url + "/instances", content=b"\0" * (2 * MB))
    assert answer.status_code == 413 and answer.json()["HttpStatus"] == 413
    assert httpx2.get(url + "/system", headers={"X-Small": "a" * 1000}).status_code == 200


#: A plugin that answers the size of the pool Starlette runs blocking handlers in.
THREADS_PLUGIN = """
import anyio.to_thread
import lanthorn
from starlette.responses import JSONResponse
from starlette.routing import Route


async def threads(request):
    return JSONResponse(anyio.to_thread.current_default_thread_limiter().total_tokens)


@lanthorn.hookimpl
def register_routes():
    return lanthorn.permitted("read", Route("/threads", threads, methods=["GET"]))
"""


def test_http_threads_count_sizes_the_pool_of_blocking_handlers(
        lanthorn_process: ServerProcess, tmp_path: Path) -> None:
    plugin = tmp_path / "threads.py"
    plugin.write_text(THREADS_PLUGIN)
    options = json.loads(lanthorn_process.config_path.read_text())
    options |= {"HttpThreadsCount": 3, "Plugins": [str(plugin)]}
    lanthorn_process.config_path.write_text(json.dumps(options))
    lanthorn_process.start()
    assert httpx2.get(lanthorn_process.url + "/threads").json() == 3


class HtmlPage:
    @lanthorn.hookimpl
    def register_routes(self) -> list[lanthorn.PluginRoute]:
        page = Route("/page", lambda request: HTMLResponse("<p>hi</p>"), methods=["GET"])
        return lanthorn.permitted("read", page)


def test_security_headers(make_client: Callable[..., TestClient]) -> None:
    client = make_client((HtmlPage(),))
    html = client.get("/page").headers
    assert html["x-content-type-options"] == "nosniff"
    assert html["x-frame-options"] == "DENY"
    assert html["content-security-policy"] == "frame-ancestors 'none'"
    assert html["referrer-policy"] == "no-referrer"
    assert "strict-transport-security" not in html
    data = client.get("/system").headers
    assert data["x-content-type-options"] == "nosniff" and "x-frame-options" not in data
    https = make_client((HtmlPage(),), SslEnabled=True)
    assert https.get("/page").headers["strict-transport-security"].startswith("max-age=")


def test_describe_errors_false_answers_the_status_alone(
        make_client: Callable[..., TestClient]) -> None:
    """``HttpDescribeErrors: false`` hides why a request failed, as Orthanc: no body."""
    described = make_client().post("/tools/find", content=b"{bad")
    assert described.status_code == 400 and described.json()["HttpStatus"] == 400
    terse = make_client(HttpDescribeErrors=False, AuthenticationEnabled=True,
                        RegisteredUsers={"alice": {"Password": "pw", "Roles": ["admin"]}})
    alice = ("alice", "pw")
    for answer, status in ((terse.post("/tools/find", content=b"{bad", auth=alice), 400),
                           (terse.get("/instances/nope", auth=alice), 404),
                           (terse.get("/system"), 401)):
        assert (answer.status_code, answer.content) == (status, b"")
    assert terse.get("/system").headers["www-authenticate"].startswith("Basic")


def test_cors_is_off_unless_origins_are_listed(make_client: Callable[..., TestClient]) -> None:
    viewer = "https://viewer.example.org"
    preflight = {"Origin": viewer, "Access-Control-Request-Method": "GET"}
    closed = make_client()
    assert "access-control-allow-origin" not in closed.get("/system",
                                                           headers={"Origin": viewer}).headers
    assert "access-control-allow-origin" not in closed.options("/system",
                                                               headers=preflight).headers
    opened = make_client(HttpCorsAllowedOrigins=[viewer], AuthenticationEnabled=True,
                         RegisteredUsers={"alice": {"Password": "pw", "Roles": ["viewer"]}})
    answer = opened.options("/system", headers=preflight)  # no credentials in a preflight
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == viewer
    assert opened.get("/system", headers={"Origin": viewer}).status_code == 401
    other = opened.options("/system", headers={**preflight, "Origin": "https://evil.example"})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("header", [
    "Basic", "Basic !!!", "Basic " + base64.b64encode(b"no colon").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:x").decode(), "Basic " + "QQ==" * 5000,
    "Digest username=alice", "Negotiate abc", "Bearer", "Bearer \u00e9", ":", " ",
    "Basic YWxpY2U6cHc= trailing"])
def test_malformed_authorization_headers_over_http(make_client: Callable[..., TestClient],
                                                   header: str) -> None:
    client = make_client(AuthenticationEnabled=True,
                         RegisteredUsers={"alice": {"Password": "pw", "Roles": ["viewer"]}})
    answer = client.get("/system", headers={"Authorization": header.encode()})
    assert answer.status_code == 401, answer.text
    assert "pw" not in answer.text and "Traceback" not in answer.text


def test_wrong_content_types_are_clear_4xx(make_client: Callable[..., TestClient]) -> None:
    """Bodies that are not what the route reads, whatever Content-Type claims."""
    client = make_client()
    dicom = make_instance()
    wrong = [("/instances", b'{"PatientID": "X"}', "application/json"),
             ("/tools/find", dicom, "application/dicom"),
             ("/tools/find", b"<Level>Study</Level>", "application/xml"),
             ("/tools/create-dicom", b"PatientName=X", "application/x-www-form-urlencoded"),
             ("/tools/bulk-delete", dicom, "application/dicom")]
    for path, body, media_type in wrong:
        reply = client.post(path, content=body, headers={"content-type": media_type})
        assert 400 <= reply.status_code < 500, (path, reply.status_code, reply.text)
        assert "Traceback" not in reply.text and "File \"" not in reply.text, path
    assert client.get("/instances").json() == []  # nothing stored on the way
