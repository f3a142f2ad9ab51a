"""Labels at every level: set, read, remove, list, validate, and find resources by label."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydicom.uid import generate_uid

pytestmark = pytest.mark.all_index_backends

MakeInstance = Callable[..., bytes]
LEVELS = {"patients": "ParentPatient", "studies": "ParentStudy", "series": "ParentSeries",
          "instances": "ID"}


@pytest.mark.parametrize("level", LEVELS)
def test_labels_round_trip(level: str, lanthorn_client: Any, ct_instance: MakeInstance) -> None:
    stored = lanthorn_client.post("/instances", content=ct_instance()).json()
    url = f"/{level}/{stored[LEVELS[level]]}"
    assert lanthorn_client.get(f"{url}/labels").json() == []
    assert lanthorn_client.get(f"{url}/labels/todo").status_code == 404
    for label in ("todo", "Reviewed-by_2", "todo", "x" * 64):  # adding twice changes nothing
        response = lanthorn_client.put(f"{url}/labels/{label}")
        assert (response.status_code, response.text) == (200, "")
    expected = sorted(["Reviewed-by_2", "todo", "x" * 64])
    assert lanthorn_client.get(f"{url}/labels").json() == expected
    assert lanthorn_client.get(url).json()["Labels"] == expected
    assert lanthorn_client.get("/tools/labels").json() == expected
    assert (lanthorn_client.get(f"{url}/labels/todo").status_code,
            lanthorn_client.get(f"{url}/labels/todo").text) == (200, "")

    assert lanthorn_client.delete(f"{url}/labels/todo").status_code == 200
    assert lanthorn_client.delete(f"{url}/labels/todo").status_code == 200  # already gone
    assert lanthorn_client.get(f"{url}/labels/todo").status_code == 404
    assert lanthorn_client.get(f"{url}/labels").json() == sorted(["Reviewed-by_2", "x" * 64])


@pytest.mark.parametrize("label", ["a.b", "a%20b", "%C3%A9t%C3%A9", "x" * 65, "a+b"])
def test_invalid_labels_are_refused(label: str, lanthorn_client: Any,
                                    ct_instance: MakeInstance) -> None:
    study = lanthorn_client.post("/instances", content=ct_instance()).json()["ParentStudy"]
    for method in ("PUT", "GET", "DELETE"):
        response = lanthorn_client.request(method, f"/studies/{study}/labels/{label}")
        assert response.status_code == 400, (method, label)
        assert "label" in response.json()["Details"]
    assert lanthorn_client.get("/tools/labels").json() == []


def test_labels_of_unknown_resources(lanthorn_client: Any) -> None:
    assert lanthorn_client.get("/studies/nosuchstudy/labels").status_code == 404
    assert lanthorn_client.put("/series/nosuchseries/labels/todo").status_code == 404


def test_labels_leave_with_their_resource(lanthorn_client: Any,
                                          ct_instance: MakeInstance) -> None:
    stored = lanthorn_client.post("/instances", content=ct_instance()).json()
    other = lanthorn_client.post("/instances", content=ct_instance()).json()
    lanthorn_client.put(f"/series/{stored['ParentSeries']}/labels/gone")
    lanthorn_client.put(f"/instances/{other['ID']}/labels/kept")
    lanthorn_client.delete(f"/studies/{stored['ParentStudy']}")
    assert lanthorn_client.get("/tools/labels").json() == ["kept"]


def test_find_by_labels(lanthorn_client: Any, ct_instance: MakeInstance) -> None:
    studies = [lanthorn_client.post("/instances", content=ct_instance(
        StudyInstanceUID=generate_uid())).json()["ParentStudy"] for _ in range(4)]
    labels = {studies[0]: ["a"], studies[1]: ["a", "b"], studies[2]: ["b"]}
    for study, names in labels.items():
        for name in names:
            lanthorn_client.put(f"/studies/{study}/labels/{name}")

    def find(constraint: str | None, *names: str, level: str = "Study") -> list[str]:
        body: dict[str, Any] = {"Level": level, "Query": {}, "Labels": list(names)}
        if constraint:
            body["LabelsConstraint"] = constraint
        response = lanthorn_client.post("/tools/find", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    assert find(None, "a") == studies[:2]  # "All" is the default
    assert find("All", "a", "b") == [studies[1]]
    assert find("Any", "a", "b") == studies[:3]
    assert find("None", "a") == studies[2:]
    assert find("None", "a", "b") == [studies[3]]
    assert find("All") == studies  # no label asked: no constraint
    assert find("All", "a", level="Series") == []  # labels belong to one level
    expanded = lanthorn_client.post("/tools/find", json={
        "Level": "Study", "Query": {}, "Labels": ["b"], "Expand": True}).json()
    assert [s["Labels"] for s in expanded] == [["a", "b"], ["b"]]
