"""Attachments and metadata of any resource: user types by name or number, the
attachment operations (data, md5, sizes, compress, verify-md5...), files on disk,
and revisions (ETag, If-Match, If-None-Match, CheckRevisions) as Orthanc has them."""

from __future__ import annotations

import hashlib
import zlib
from typing import Any

import pytest
from starlette.testclient import TestClient

import lanthorn
from lanthorn.config import ConfigError
from lanthorn.model import Level
from lanthorn.testing import make_instance

USER_TYPES = pytest.mark.lanthorn_config(
    UserContentType={"notes": [1025, "text/plain"], "blob": 1026},
    UserMetadata={"Sample": 1024})


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def files_match_index(server: lanthorn.Server) -> bool:
    """The storage area holds exactly the files the index's attachments point to."""
    ids = [i for level in Level for i, _ in server.index.list_resources(level)]
    indexed = {a.uuid for info in server.index.describe(ids) for a in info.attachments.values()}
    return indexed == {uuid for uuid, _ in server.storage.scan()}


@pytest.fixture
def ids(lanthorn_client: TestClient) -> dict[str, str]:
    return lanthorn_client.post("/instances", content=make_instance()).json()


@USER_TYPES
def test_user_attachments_at_any_level(lanthorn_server: lanthorn.Server,
                                       lanthorn_client: TestClient, ids: dict[str, str]) -> None:
    url = f"/instances/{ids['ID']}/attachments"
    put = lanthorn_client.put(f"{url}/notes", content=b"hello")
    assert (put.status_code, put.json(), put.headers["ETag"]) == (200, {}, f'"0-{md5(b"hello")}"')
    assert lanthorn_client.get(url).json() == ["dicom", "notes"]
    assert lanthorn_client.get(f"{url}?full").json() == {"dicom": 1, "notes": 1025}
    assert lanthorn_client.get(f"{url}/notes").json() == [
        "compress", "compressed-data", "compressed-md5", "compressed-size", "data", "info",
        "is-compressed", "md5", "size", "uncompress", "verify-md5"]
    data = lanthorn_client.get(f"{url}/notes/data?filename=notes.txt")
    assert (data.content, data.headers["content-type"].split(";")[0],
            data.headers["content-disposition"]) == (b"hello", "text/plain",
                                                     'filename="notes.txt"')
    part = lanthorn_client.get(f"{url}/1025/data", headers={"Range": "bytes=1-3"})
    assert (part.status_code, part.content) == (206, b"ell")
    info = lanthorn_client.get(f"{url}/notes/info").json()
    assert {k: v for k, v in info.items() if k != "Uuid"} == {
        "CompressedMD5": md5(b"hello"), "CompressedSize": 5, "ContentType": 1025,
        "UncompressedMD5": md5(b"hello"), "UncompressedSize": 5}
    assert [lanthorn_client.get(f"{url}/notes/{op}").text for op in (
        "md5", "compressed-md5", "size", "compressed-size", "is-compressed")] == [
        md5(b"hello"), md5(b"hello"), "5", "5", "0"]
    study = f"/studies/{ids['ParentStudy']}/attachments"
    assert lanthorn_client.put(f"{study}/2000", content=b"\x00\x01").status_code == 200
    assert lanthorn_client.put(f"{study}/blob", content=b"").status_code == 200
    assert lanthorn_client.get(study).json() == ["blob", "2000"]
    assert lanthorn_client.get(f"{study}/2000/data").headers["content-type"] == \
        "application/octet-stream"
    assert lanthorn_client.put(f"{url}/notes", content=b"again").status_code == 200
    assert lanthorn_client.get(f"{url}/notes/data").content == b"again"
    assert files_match_index(lanthorn_server)  # the replaced file is gone
    assert lanthorn_client.delete(f"{url}/notes").json() == {}
    assert lanthorn_client.get(f"{url}/notes/data").status_code == 404
    assert lanthorn_client.delete(f"{url}/notes").status_code == 404
    assert files_match_index(lanthorn_server)
    # Deleting the last instance takes its emptied study along, with its attachments.
    assert lanthorn_client.delete(f"/instances/{ids['ID']}").status_code == 200
    assert lanthorn_client.get(study).status_code == 404
    assert files_match_index(lanthorn_server)


@USER_TYPES
def test_system_and_unknown_attachments_are_refused(lanthorn_client: TestClient,
                                                    ids: dict[str, str]) -> None:
    url = f"/instances/{ids['ID']}/attachments"
    for method, name in (("put", "dicom"), ("delete", "dicom"), ("put", "1"),
                         ("put", "65536")):
        refused = lanthorn_client.request(method.upper(), f"{url}/{name}", content=b"x")
        assert refused.status_code == 403, (method, name)
    assert lanthorn_client.put(f"{url}/unknown", content=b"x").status_code == 404
    assert lanthorn_client.get(f"{url}/blob/data").status_code == 404  # not attached
    assert lanthorn_client.get(f"{url}/dicom/data").content == \
        lanthorn_client.get(f"/instances/{ids['ID']}/file").content


@USER_TYPES
def test_compress_uncompress_and_verify_md5(lanthorn_server: lanthorn.Server,
                                            lanthorn_client: TestClient,
                                            ids: dict[str, str]) -> None:
    url = f"/instances/{ids['ID']}/attachments"
    original = lanthorn_client.get(f"/instances/{ids['ID']}/file").content
    for name in ("dicom", "notes"):
        if name == "notes":
            lanthorn_client.put(f"{url}/notes", content=b"hello " * 100)
        content = lanthorn_client.get(f"{url}/{name}/data").content
        assert lanthorn_client.post(f"{url}/{name}/compress").json() == {}
        assert lanthorn_client.get(f"{url}/{name}/is-compressed").text == "1"
        stored = lanthorn_client.get(f"{url}/{name}/compressed-data").content
        assert int.from_bytes(stored[:8], "little") == len(content)
        assert zlib.decompress(stored[8:]) == content
        assert lanthorn_client.get(f"{url}/{name}/compressed-md5").text == md5(stored)
        assert lanthorn_client.get(f"{url}/{name}/compressed-size").text == str(len(stored))
        assert lanthorn_client.get(f"{url}/{name}/md5").text == md5(content)
        assert lanthorn_client.get(f"{url}/{name}/data").content == content
        assert lanthorn_client.post(f"{url}/{name}/verify-md5").json() == {}
        assert files_match_index(lanthorn_server)
    assert lanthorn_client.get(f"/instances/{ids['ID']}/file").content == original
    assert lanthorn_client.post(f"{url}/notes/uncompress").json() == {}
    assert lanthorn_client.get(f"{url}/notes/is-compressed").text == "0"
    assert lanthorn_client.get(f"{url}/notes/data").content == b"hello " * 100
    assert files_match_index(lanthorn_server)
    uuid = lanthorn_client.get(f"{url}/notes/info").json()["Uuid"]
    path = lanthorn_server.storage.path(uuid)  # type: ignore[attr-defined]
    path.write_bytes(b"jello" + path.read_bytes()[5:])
    corrupted = lanthorn_client.post(f"{url}/notes/verify-md5")
    assert (corrupted.status_code, corrupted.json()["OrthancStatus"]) == (500, 20)


@USER_TYPES
@pytest.mark.lanthorn_config(CheckRevisions=True)
def test_revisions_of_metadata_and_attachments(lanthorn_client: TestClient,
                                               ids: dict[str, str]) -> None:
    assert lanthorn_client.get("/system").json()["CheckRevisions"] is True
    base = f"/series/{ids['ParentSeries']}"
    for url, value in ((f"{base}/metadata/Sample", b"a"), (f"{base}/attachments/notes", b"b")):
        first = lanthorn_client.put(url, content=value).headers["ETag"]
        assert first == f'"0-{md5(value)}"'
        read = f"{url}/data" if "attachments" in url else url
        assert lanthorn_client.get(read).headers["ETag"] == first
        assert lanthorn_client.get(read, headers={"If-None-Match": first}).status_code == 304
        missing = lanthorn_client.put(url, content=b"c")
        assert (missing.status_code, missing.json()["Details"]) == (
            409, 'HTTP header "If-Match" is missing, as "CheckRevisions" is "true"')
        second = lanthorn_client.put(url, content=b"c", headers={"If-Match": first})
        assert second.headers["ETag"] == f'"1-{md5(b"c")}"'
        stale = lanthorn_client.put(url, content=b"d", headers={"If-Match": first})
        assert (stale.status_code, stale.json()["OrthancStatus"]) == (409, 43)
        bad = lanthorn_client.put(url, content=b"d", headers={"If-Match": "latest"})
        assert bad.status_code == 400
        assert lanthorn_client.delete(url).status_code == 409
        assert lanthorn_client.delete(url, headers={"If-Match": first}).status_code == 409
        assert lanthorn_client.delete(
            url, headers={"If-Match": second.headers["ETag"]}).status_code == 200
        assert lanthorn_client.get(read).status_code == 404


@USER_TYPES
def test_metadata_names_and_numbers(lanthorn_client: TestClient, ids: dict[str, str]) -> None:
    url = f"/instances/{ids['ID']}/metadata"
    reception = lanthorn_client.get(f"{url}/ReceptionDate").text
    assert lanthorn_client.get(f"{url}/2").text == reception  # Orthanc's number of it
    assert lanthorn_client.put(f"{url}/ReceptionDate", content=b"x").status_code == 403
    assert lanthorn_client.delete(f"{url}/2").status_code == 403
    assert lanthorn_client.put(f"{url}/Nope", content=b"x").status_code == 404
    assert lanthorn_client.put(f"{url}/1024", content=b"by number").status_code == 200
    assert lanthorn_client.get(f"{url}/Sample").text == "by number"
    assert lanthorn_client.put(f"{url}/4000", content=b"unnamed").status_code == 200
    expanded: dict[str, Any] = lanthorn_client.get(f"{url}?expand").json()
    assert (expanded["Sample"], expanded["4000"]) == ("by number", "unnamed")
    numeric = lanthorn_client.get(f"{url}?expand&numeric").json()
    assert (numeric["1024"], numeric["2"], numeric["4000"]) == ("by number", reception,
                                                                "unnamed")
    # Without CheckRevisions, If-Match is optional but still checked when given.
    assert lanthorn_client.put(f"{url}/Sample", content=b"x").status_code == 200
    stale = lanthorn_client.put(f"{url}/Sample", content=b"y", headers={"If-Match": '"0-x"'})
    assert stale.status_code == 409


@pytest.mark.parametrize("option", [{"UserMetadata": {"Low": 99}},
                                    {"UserContentType": {"Big": [70000, "text/plain"]}}])
def test_user_types_outside_the_user_range_stop_start_up(
        lanthorn_config: lanthorn.Config, option: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="1024 to 65535"):
        lanthorn.Server(lanthorn_config.with_overrides(**option), load_entry_points=False)
