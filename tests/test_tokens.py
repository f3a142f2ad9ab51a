"""API tokens: created, listed and revoked over REST and the CLI, stored as digests,
presented as ``Authorization: Bearer``, on every index backend."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from lanthorn.cli import main
from lanthorn.config import Config
from lanthorn.index import schema
from lanthorn.server import Server
from lanthorn.testing import IndexBackendUnderTest

pytestmark = pytest.mark.all_index_backends

USERS = {"alice": {"Password": "alice-pw", "Roles": ["editor"]},
         "bob": {"Password": "bob-pw", "Roles": ["viewer"]},
         "root": {"Password": "root-pw", "Roles": ["admin"]}}


def basic(user: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{user}:{USERS[user]['Password']}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def secured(lanthorn_config: Config, lanthorn_make_server: Callable[..., Server]
            ) -> Iterator[Server]:
    server = lanthorn_make_server(lanthorn_config.with_overrides(
        AuthenticationEnabled=True, RegisteredUsers=USERS))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def client(secured: Server) -> Iterator[TestClient]:
    with TestClient(secured.app, client=("127.0.0.1", 50000)) as http:
        yield http


def new_token(client: TestClient, caller: str, **options: Any) -> dict[str, Any]:
    answer = client.post("/auth/tokens", json=options, headers=basic(caller))
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_request_without_a_body_makes_a_token_for_the_caller(client: TestClient) -> None:
    created = client.post("/auth/tokens", headers=basic("alice"))
    assert created.status_code == 200, created.text
    assert created.json()["User"] == "alice"
    assert client.get("/patients", headers=bearer(created.json()["Token"])).status_code == 200


def test_a_token_acts_for_its_user(client: TestClient, secured: Server) -> None:
    created = new_token(client, "alice", Description="nightly export")
    assert created["User"] == "alice" and created["Role"] is None
    assert created["Expires"] is None and created["Token"].startswith("lanthorn_")
    token = created["Token"]
    assert client.get("/patients", headers=bearer(token)).status_code == 200
    assert client.post("/tools/pseudonyms", headers=bearer(token)).status_code == 403
    with secured.index.read() as conn:  # only the digest is kept
        stored = conn.execute(select(schema.api_tokens)).one()._mapping
    assert token not in json.dumps(list(stored.values()))
    assert stored["digest"] == hashlib.sha256(token.encode()).hexdigest()
    listed = client.get("/auth/tokens", headers=bearer(token)).json()
    assert listed == [{k: v for k, v in created.items() if k != "Token"}]
    assert client.delete(f"/auth/tokens/{created['ID']}", headers=basic("alice")).status_code \
        == 200
    assert client.get("/patients", headers=bearer(token)).status_code == 401
    assert client.delete(f"/auth/tokens/{created['ID']}", headers=basic("alice")).status_code \
        == 404


def test_a_narrower_role(client: TestClient) -> None:
    token = new_token(client, "alice", Role="viewer")["Token"]
    assert client.get("/patients", headers=bearer(token)).status_code == 200
    assert client.delete("/patients/x", headers=bearer(token)).status_code == 403
    # a viewer's token cannot mint the editor's token its user could
    refused = client.post("/auth/tokens", json={}, headers=bearer(token))
    assert refused.status_code == 403
    assert client.post("/auth/tokens", json={"Role": "admin"},
                       headers=basic("alice")).status_code == 400


def test_expiry(client: TestClient) -> None:
    created = new_token(client, "bob", ExpiresIn=1)
    assert created["Expires"] is not None
    assert client.get("/patients", headers=bearer(created["Token"])).status_code == 200
    time.sleep(1.1)
    assert client.get("/patients", headers=bearer(created["Token"])).status_code == 401


def test_users_manage_their_own_and_admins_everyones(client: TestClient) -> None:
    mine = new_token(client, "bob")
    theirs = new_token(client, "root", User="alice")
    assert theirs["User"] == "alice"
    assert client.post("/auth/tokens", json={"User": "alice"},
                       headers=basic("bob")).status_code == 403
    assert [t["ID"] for t in client.get("/auth/tokens", headers=basic("bob")).json()] \
        == [mine["ID"]]
    everyone = client.get("/auth/tokens", headers=basic("root")).json()
    assert {t["ID"] for t in everyone} == {mine["ID"], theirs["ID"]}
    assert [t["ID"] for t in client.get("/auth/tokens?user=alice",
                                        headers=basic("root")).json()] == [theirs["ID"]]
    assert client.delete(f"/auth/tokens/{theirs['ID']}", headers=basic("bob")).status_code \
        == 404  # bob learns nothing about alice's tokens
    assert client.delete(f"/auth/tokens/{theirs['ID']}", headers=basic("root")).status_code \
        == 200


@pytest.mark.parametrize("options", [
    {"User": "nobody"}, {"Role": "root"}, {"ExpiresIn": -5}, {"ExpiresIn": "soon"},
    {"Description": "x" * 300}, {"Expiry": 5}, {"User": True}])
def test_bad_requests(client: TestClient, options: dict[str, Any]) -> None:
    answer = client.post("/auth/tokens", json=options, headers=basic("root"))
    assert answer.status_code == 400, answer.text
    assert client.post("/auth/tokens", content=b"[", headers=basic("root")).status_code == 400


@pytest.mark.parametrize("header", [
    "Bearer", "Bearer ", "Bearer lanthorn_unknown", "Bearer " + "x" * 5000, "bearer  \x7f"])
def test_unknown_or_malformed_tokens(client: TestClient, header: str) -> None:
    answer = client.get("/patients", headers={"Authorization": header})
    assert answer.status_code == 401


def test_a_removed_user_takes_its_tokens_along(client: TestClient, secured: Server) -> None:
    token = new_token(client, "bob")["Token"]
    del secured.users.users["bob"]
    assert client.get("/patients", headers=bearer(token)).status_code == 401


def test_cli(lanthorn_config: Config, lanthorn_index_backend: IndexBackendUnderTest,
             tmp_path: Path, client: TestClient, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI works on the index of the running server (``lanthorn`` is its admin)."""
    config = tmp_path / "lanthorn.json"
    config.write_text(json.dumps({
        "StorageDirectory": lanthorn_config["StorageDirectory"], "RegisteredUsers": USERS,
        **lanthorn_index_backend.options}))
    assert main(["token", "create", "--config", str(config), "--user", "bob", "--days", "1",
                 "--description", "backup script"]) == 0
    token_id, token = capsys.readouterr().out.split()
    assert client.get("/patients", headers=bearer(token)).status_code == 200
    assert main(["token", "list", "--config", str(config)]) == 0
    listed = capsys.readouterr().out
    assert token_id in listed and "backup script" in listed and token not in listed
    assert main(["token", "revoke", "--config", str(config), token_id]) == 0
    assert client.get("/patients", headers=bearer(token)).status_code == 401
    assert main(["token", "revoke", "--config", str(config), token_id]) == 1
    assert main(["token", "create", "--config", str(config), "--user", "nobody"]) == 1
