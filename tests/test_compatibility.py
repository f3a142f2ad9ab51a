"""docs/compatibility.md cannot lie: it lists every operation of Orthanc's OpenAPI document
once; a row is "implemented" exactly when the server (with the official plugins that
serve Orthanc core routes, such as lanthorn-lua's ``/tools/execute-script``) registers
a route that serves it, and then names a test that exists (in ``tests/`` or a plugin's
tests); its summary line is computed here.

``python tests/test_compatibility.py`` rewrites the summary line after the table changes.
Also here: the level-generic routes of the core, exercised at every level.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import BaseRoute, Match

import lanthorn_lua
from lanthorn.config import Config
from lanthorn.server import Server

TESTS = Path(__file__).resolve().parent
DOC = TESTS.parent / "docs" / "compatibility.md"
OPENAPI = TESTS.parent.parent / "shared" / "orthanc-openapi.json"
METHODS = ("GET", "PUT", "POST", "DELETE")
ROW = re.compile(r"^\| (GET|PUT|POST|DELETE) +\| `([^`]+)` *\| ([a-z/]+) *\| ([^|]*)\| ([^|]*)\|$")
#: Orthanc paths that one of our parametric routes matches too, only to answer 404.
MATCHED_BY_A_PARAMETER = {("GET", "/plugins/explorer.js")}  # /plugins/{name}: no such plugin
SUMMARY = re.compile(r"^\*\*\d+ of \d+ operations.*$", re.M)
MakeInstance = Callable[..., bytes]


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    status: str  # "implemented", "planned" or "n/a"
    note: str  # the issue (planned) or the reason (n/a)
    test: str  # "test_file.py::test_name" for an implemented row


def read_rows(text: str) -> list[Row]:
    return [Row(*(g.strip() for g in m.groups()))  # type: ignore[arg-type]
            for line in text.splitlines() if (m := ROW.match(line))]


def summary(rows: list[Row]) -> str:
    counts = Counter(row.status for row in rows)
    done = counts["implemented"]
    return (f"**{done} of {len(rows)} operations ({100 * done / len(rows):.1f} %) "
            f"implemented**; {counts['planned']} planned, {counts['n/a']} not applicable.")


def orthanc_operations() -> list[tuple[str, str]]:
    paths = json.loads(OPENAPI.read_text())["paths"]
    return [(m.upper(), p) for p, ops in paths.items() for m in ops if m.upper() in METHODS]


@cache
def registered_routes() -> tuple[BaseRoute, ...]:
    with tempfile.TemporaryDirectory() as folder:
        config = Config.defaults().with_overrides(StorageDirectory=folder)
        server = Server(config, load_entry_points=False, plugins=[lanthorn_lua])
        try:
            return tuple(server.app.routes)
        finally:
            server.close()


def served(method: str, orthanc_path: str) -> bool:
    """Whether a registered route serves this operation (path parameters filled in)."""
    path = re.sub(r"\{[^}]+\}", "x", orthanc_path)
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    return any(route.matches(scope)[0] == Match.FULL for route in registered_routes())


@cache
def defined_tests() -> frozenset[str]:
    modules = [*TESTS.glob("test_*.py"), *TESTS.parent.glob("plugins/*/tests/test_*.py")]
    return frozenset(f"{module.name}::{node.name}" for module in modules
                     for node in ast.parse(module.read_text()).body
                     if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"))


ROWS = read_rows(DOC.read_text())


def test_every_orthanc_operation_has_one_row() -> None:
    if not OPENAPI.exists():  # Orthanc's document sits beside the repository, not in it
        pytest.skip(f"Orthanc's OpenAPI document is not at {OPENAPI}")
    listed = Counter((row.method, row.path) for row in ROWS)
    assert [key for key, count in listed.items() if count > 1] == []
    assert set(listed) == set(orthanc_operations())


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.method} {r.path}")
def test_row_tells_the_truth(row: Row) -> None:
    assert row.status in ("implemented", "planned", "n/a")
    if (row.method, row.path) not in MATCHED_BY_A_PARAMETER:
        assert served(row.method, row.path) == (row.status == "implemented"), \
            "the status disagrees with the routes the server registers"
    if row.status == "implemented":
        assert row.test in defined_tests(), f"no test named {row.test!r}"
    elif row.status == "planned":
        assert re.fullmatch(r"#\d+", row.note), "a planned row names its issue"
    else:
        assert len(row.note) > 10, "a row that does not apply says why"


def test_summary_is_computed() -> None:
    found = SUMMARY.findall(DOC.read_text())
    assert found == [summary(ROWS)], "run: python tests/test_compatibility.py"


# -- the level-generic routes of the core, at every level --------------------------------

KEYS = {"patients": "ParentPatient", "studies": "ParentStudy", "series": "ParentSeries",
        "instances": "ID"}
PARENT_PATHS = {"patients": "patient", "studies": "study", "series": "series"}


@pytest.mark.parametrize("level", KEYS)
def test_level_routes_serve_every_level(level: str, lanthorn_client: Any,
                                        ct_instance: MakeInstance) -> None:
    client, order = lanthorn_client, list(KEYS)
    shared = {"StudyInstanceUID": "1.2.3.4", "SeriesInstanceUID": "1.2.3.4.5"}
    stored = [client.post("/instances", content=ct_instance(**shared)).json() for _ in range(2)]
    url = f"/{level}/{stored[0][KEYS[level]]}"
    assert client.get(f"/{level}").json() == list(dict.fromkeys(s[KEYS[level]] for s in stored))
    assert [r["ID"] for r in client.get(f"/{level}?expand").json()] == client.get(
        f"/{level}").json()
    statistics = client.get(f"{url}/statistics").json()
    assert int(statistics["DiskSize"]) > 0
    assert statistics.get("CountInstances", 2) == 2
    assert client.get(f"{url}/attachments").json() == (["dicom"] if level == "instances"
                                                       else [])
    assert client.put(f"{url}/metadata/1024", content=b"x").status_code == 200
    assert "1024" in client.get(f"{url}/metadata").json()
    assert client.get(f"{url}/metadata/1024").text == "x"
    assert client.delete(f"{url}/metadata/1024").status_code == 200
    assert client.get(f"{url}/shared-tags?simplify").json()["PatientID"] == "1CT1"
    for target in order:
        if target == level:
            continue
        expected = list(dict.fromkeys(s[KEYS[target]] for s in stored))
        if order.index(target) > order.index(level):
            assert [r["ID"] for r in client.get(f"{url}/{target}").json()] == expected
        else:
            assert client.get(f"{url}/{PARENT_PATHS[target]}").json()["ID"] == expected[0]
    assert client.delete(url).status_code == 200
    assert client.get(url).status_code == 404


if __name__ == "__main__":  # rewrite the summary line from the table
    text = DOC.read_text()
    DOC.write_text(SUMMARY.sub(summary(read_rows(text)), text, count=1))
    sys.exit(0)
