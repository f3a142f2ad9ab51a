"""The grouped router picks the route Starlette's own scan would pick."""

from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from lanthorn.rest.routing import GroupedRouter


def answer(text: str) -> Callable[[Request], PlainTextResponse]:
    return lambda request: PlainTextResponse(f"{text} {dict(request.path_params)}")


ROUTES = [
    Route("/tools/now", answer("now")),
    Route("/{level}/{id}", answer("resource")),
    Route("/tools/{name}", answer("tool"), methods=["POST"]),
    Route("/", answer("root")),
    Mount("/static", routes=[Route("/{file}", answer("static"))]),
]


def client(*, grouped: bool) -> TestClient:
    app = Starlette(routes=ROUTES)
    if grouped:
        app.router = GroupedRouter(app.router.routes)
    return TestClient(app)


def test_same_answers_as_starlettes_router() -> None:
    grouped, plain = client(grouped=True), client(grouped=False)
    requests = [("GET", "/tools/now"), ("GET", "/tools/other"), ("POST", "/tools/other"),
                ("GET", "/patients/1"), ("GET", "/"), ("GET", "/static/a.css"),
                ("GET", "/nothing/here/at/all"), ("PUT", "/tools/now"), ("GET", "/tools/now/")]
    for method, path in requests:
        mine, theirs = grouped.request(method, path), plain.request(method, path)
        assert (mine.status_code, mine.text) == (theirs.status_code, theirs.text), (method, path)
    assert grouped.get("/tools/other").text == "resource {'level': 'tools', 'id': 'other'}"
    assert grouped.put("/tools/now").status_code == 405
