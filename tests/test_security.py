"""Security: HTTPS through a real ``lanthorn serve``, users, roles and route permissions."""

from __future__ import annotations

import base64
import json
import logging
import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trustme
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

import lanthorn
from lanthorn.auth import ROLES, Users, basic_credentials, hash_password
from lanthorn.cli import main
from lanthorn.config import Config, ConfigError
from lanthorn.errors import PluginError
from lanthorn.rest.app import collect_routes
from lanthorn.rest.protocol import common_names as protocol_common_names
from lanthorn.rest.protocol import subject_name
from lanthorn.server import Server
from lanthorn.testing import ServerProcess

PASSWORD = "correct horse"
#: For each permission, a role that lacks it (None: every role has it) and one that has it.
UNDER_PRIVILEGED = {"read": "uploader", "store": "viewer", "write": "viewer", "admin": "editor",
                    "account": None}
SUFFICIENT = {"read": "viewer", "store": "uploader", "write": "editor", "admin": "admin",
              "account": "uploader"}


def basic(user: str, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# -- HTTPS ------------------------------------------------------------------------------


@pytest.fixture
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def https_process(lanthorn_process: ServerProcess, authority: trustme.CA,
                  tmp_path: Path) -> ServerProcess:
    """A ``lanthorn serve`` on HTTPS whose certificate ``authority`` signed."""
    pem = tmp_path / "server.pem"  # Orthanc's form: the certificate, then its key
    authority.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    options = json.loads(lanthorn_process.config_path.read_text())
    options |= {"SslEnabled": True, "SslCertificate": str(pem)}
    lanthorn_process.config_path.write_text(json.dumps(options))
    lanthorn_process.https = True
    lanthorn_process.client_options = {"verify": client_context(authority)}
    return lanthorn_process


def client_context(authority: trustme.CA, certificate: trustme.LeafCert | None = None
                   ) -> ssl.SSLContext:
    context = ssl.create_default_context()
    authority.configure_trust(context)
    if certificate is not None:
        certificate.configure_cert(context)
    return context


def test_https(https_process: ServerProcess, authority: trustme.CA) -> None:
    https_process.start()
    answer = httpx2.get(https_process.url + "/system", verify=client_context(authority))
    assert answer.status_code == 200 and answer.json()["Name"]
    with pytest.raises(httpx2.HTTPError):  # not plain HTTP any more
        httpx2.get(f"http://127.0.0.1:{https_process.http_port}/system")
    with pytest.raises(httpx2.ConnectError):  # a certificate no one trusts
        httpx2.get(https_process.url + "/system", verify=client_context(trustme.CA()))


def test_https_client_certificates(https_process: ServerProcess, authority: trustme.CA,
                                   tmp_path: Path) -> None:
    trusted = tmp_path / "trusted.pem"
    authority.cert_pem.write_to_path(str(trusted))
    options = json.loads(https_process.config_path.read_text())
    options |= {"SslVerifyPeers": True, "SslTrustedClientCertificates": str(trusted)}
    https_process.config_path.write_text(json.dumps(options))
    member = client_context(authority, authority.issue_cert("client@example.org"))
    https_process.client_options = {"verify": member}
    https_process.start()
    assert httpx2.get(https_process.url + "/system", verify=member).status_code == 200
    stranger = trustme.CA().issue_cert("stranger@example.org")
    for refused in (client_context(authority), client_context(authority, stranger)):
        with pytest.raises(httpx2.HTTPError):
            httpx2.get(https_process.url + "/system", verify=refused)


def test_client_certificates_identify_users(https_process: ServerProcess,
                                            authority: trustme.CA, tmp_path: Path) -> None:
    """A trusted certificate whose CN a user lists logs in as that user; a trusted one
    nobody lists identifies no one; an untrusted one does not get through the handshake."""
    trusted = tmp_path / "trusted.pem"
    authority.cert_pem.write_to_path(str(trusted))
    options = json.loads(https_process.config_path.read_text())
    options |= {"SslVerifyPeers": True, "SslTrustedClientCertificates": str(trusted),
                "AuthenticationEnabled": True, "RegisteredUsers": {
                    "scanner": {"Roles": ["uploader"],
                                "CertificateCommonNames": ["scanner-1.example.org"]},
                    "reader": {"Password": PASSWORD, "Roles": ["viewer"],
                               "CertificateCommonNames": ["Dr. Who, MD"]}}}
    https_process.config_path.write_text(json.dumps(options))

    def as_holder(common_name: str, issuer: trustme.CA = authority) -> ssl.SSLContext:
        leaf = issuer.issue_cert("client.example.org", common_name=common_name)
        return client_context(authority, leaf)

    scanner, reader = as_holder("scanner-1.example.org"), as_holder("Dr. Who, MD")
    https_process.client_options = {"verify": reader}
    https_process.start()
    url = https_process.url
    assert httpx2.get(url + "/patients", verify=reader).status_code == 200
    assert httpx2.get(url + "/patients", verify=scanner).status_code == 403  # an uploader
    assert httpx2.post(url + "/instances", content=b"x", verify=scanner).status_code == 400
    # explicit credentials win over the certificate
    assert httpx2.get(url + "/patients", verify=scanner,
                      headers=basic("reader")).status_code == 200
    assert httpx2.get(url + "/patients", verify=reader,
                      headers=basic("reader", "wrong")).status_code == 401
    stranger = as_holder("nobody.example.org")
    assert httpx2.get(url + "/patients", verify=stranger).status_code == 401
    with pytest.raises(httpx2.HTTPError):  # the right name from a CA nobody trusts
        httpx2.get(url + "/patients", verify=as_holder("scanner-1.example.org", trustme.CA()))


@pytest.mark.parametrize(("certificate", "name", "common_names"), [
    ({"subject": ((("commonName", "a"),),)}, "CN=a", ["a"]),
    ({"subject": ((("countryName", "FR"),), (("organizationName", "X, Inc."),),
                  (("commonName", "Dr. Who+1"), ("userId", "7")))},
     "CN=Dr. Who\\+1+UID=7,O=X\\, Inc.,C=FR", ["Dr. Who+1"]),
    ({"subject": ((("commonName", "#lead "),),)}, "CN=\\#lead\\ ", ["#lead "]),
    ({}, "", []),
])
def test_certificate_subjects(certificate: dict[str, Any], name: str,
                              common_names: list[str]) -> None:
    assert subject_name(certificate) == name
    assert protocol_common_names(name) == common_names


def test_https_without_certificate_stops_start_up(lanthorn_process: ServerProcess,
                                                  tmp_path: Path) -> None:
    options = json.loads(lanthorn_process.config_path.read_text())
    options |= {"SslEnabled": True, "SslCertificate": str(tmp_path / "missing.pem")}
    lanthorn_process.config_path.write_text(json.dumps(options))
    lanthorn_process.https = True
    with pytest.raises(RuntimeError, match="cannot load the certificates"):
        lanthorn_process.start()


# -- users and passwords ----------------------------------------------------------------


def test_passwd_prints_a_hash_that_logs_in(capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(PASSWORD + "\n"))
    assert main(["passwd"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("$argon2id$") and PASSWORD not in printed
    config = Config.defaults().with_overrides(
        RegisteredUsers={"alice": {"Password": printed, "Roles": ["editor"]}})
    users = Users.from_config(config)
    assert users.verify("alice", PASSWORD).roles == {"editor"}
    assert users.verify("alice", PASSWORD + "!") is None
    assert users.verify("bob", PASSWORD) is None


def test_plain_text_passwords_warn(caplog: pytest.LogCaptureFixture) -> None:
    config = Config.defaults().with_overrides(RegisteredUsers={"orthanc": "orthanc"})
    with caplog.at_level(logging.WARNING, "lanthorn.auth"):
        users = Users.from_config(config)
    assert "plain-text passwords (orthanc)" in caplog.text
    assert users.verify("orthanc", "orthanc").roles == {"admin"}  # Orthanc's users: all
    assert users.verify("orthanc", "orthanx") is None


@pytest.mark.parametrize("entry", [
    3, {"Password": "x", "Roles": ["root"]}, {"Password": "x", "Roles": []},
    {"Roles": ["admin"]}, {"Password": "x", "Role": ["admin"]}, "$argon2id$broken"])
def test_bad_registered_users_are_refused(entry: object) -> None:
    with pytest.raises(ConfigError, match='RegisteredUsers "alice"'):
        Users.from_config(Config.defaults().with_overrides(RegisteredUsers={"alice": entry}))


def test_verified_credentials_are_remembered() -> None:
    """The second check of the same credentials does not hash again: it still succeeds
    once the user is gone from the table the hash would be checked against."""
    users = Users.from_config(Config.defaults().with_overrides(
        RegisteredUsers={"alice": {"Password": hash_password(PASSWORD), "Roles": ["viewer"]}}))
    assert users.verify("alice", PASSWORD) is not None
    users.users.clear()
    assert users.verify("alice", PASSWORD) is not None
    assert users.verify("alice", "other") is None


@pytest.mark.parametrize("header", [
    "", "Basic", "Basic !!!", "Basic " + base64.b64encode(b"no colon").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:x").decode(), "Bearer abc", "Digest x=y"])
def test_malformed_authorization_headers(header: str) -> None:
    assert basic_credentials(header) is None


# -- authentication and roles over HTTP -------------------------------------------------


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    return {role: hash_password(PASSWORD) for role in ROLES}


@pytest.fixture
def secured(lanthorn_config: Config, hashes: dict[str, str]) -> Iterator[Server]:
    """A server with every installed plugin, one user per role (named after the role),
    and the routes that policy options switch off switched on (their 403 is not a
    permission's)."""
    users = {role: {"Password": hashes[role], "Roles": [role]} for role in ROLES}
    server = Server(lanthorn_config.with_overrides(
        AuthenticationEnabled=True, RegisteredUsers=users, ExecuteLuaEnabled=True,
        RestApiWriteToFileSystemEnabled=True))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def client(secured: Server) -> Iterator[TestClient]:
    with TestClient(secured.app, client=("127.0.0.1", 50000)) as http:
        yield http


def test_strangers_learn_nothing(client: TestClient) -> None:
    for path in ("/system", "/no/such/resource", "/patients/unknown"):
        answer = client.get(path)
        assert answer.status_code == 401, path
        assert answer.headers["WWW-Authenticate"] == 'Basic realm="Lanthorn"'
        assert answer.json()["OrthancStatus"] == 30
    assert client.get("/no/such/resource", headers=basic("viewer")).status_code == 404
    assert client.get("/system", headers=basic("viewer", "wrong")).status_code == 401
    assert client.get("/system", headers={"Authorization": "Basic %%%"}).status_code == 401


def test_authentication_defaults_to_remote_access(lanthorn_server: Server) -> None:
    assert lanthorn_server.config["AuthenticationEnabled"] is None
    with TestClient(lanthorn_server.app, client=("127.0.0.1", 1)) as local:
        assert local.get("/system").status_code == 200  # loopback only: no credentials
    remote = Server(lanthorn_server.config.with_overrides(RemoteAccessAllowed=True),
                    load_entry_points=False)
    try:
        with TestClient(remote.app, client=("10.1.2.3", 1)) as other:
            assert other.get("/system").status_code == 401
    finally:
        remote.close()


def concrete(path: str) -> str:
    """A request path for a route template: resource levels become "studies"."""
    path = re.sub(r"\{level:[^}]+\}", "studies", path)
    return re.sub(r"\{[^}]+\}", "x", path)


def every_route(server: Server) -> list[tuple[str, str, str]]:
    """(method, path, permission) of every route of every loaded plugin."""
    walked = []
    for spec in collect_routes(server):
        assert spec.permission is not None or spec.public, spec
        if isinstance(spec.route, Mount):
            walked.append(("GET", spec.route.path + "/x", spec.permission))
            continue
        assert isinstance(spec.route, Route)
        for method in sorted(spec.route.methods - {"HEAD"}):
            walked.append((method, concrete(spec.route.path), spec.permission))
    return walked


def test_every_route_requires_its_permission(secured: Server, client: TestClient) -> None:
    routes = every_route(secured)
    plugins = {info.name for info in secured.plugins.plugins.values()
               if info.source != "builtin" and info.status == "loaded"}
    assert "dicomweb" in plugins  # the walk covers installed plugins' routes
    assert {permission for _, _, permission in routes} == set(UNDER_PRIVILEGED)
    for method, path, permission in routes:
        where = f"{method} {path} ({permission})"
        assert client.request(method, path).status_code == 401, where
        assert client.request(method, path, headers=basic("admin", "x")).status_code == 401, where
        if UNDER_PRIVILEGED[permission] is not None:
            lacking = client.request(method, path, headers=basic(UNDER_PRIVILEGED[permission]))
            assert lacking.status_code == 403, where
        allowed = client.request(method, path, headers=basic(SUFFICIENT[permission]))
        assert allowed.status_code not in (401, 403), f"{where}: {allowed.text}"


#: Path parameter values that try to leave their place: percent-encoded so that the
#: client sends them as they are and the server decodes them.
TRAVERSALS = ["..%2f..%2f..%2fetc%2fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "%2e%2e",
              "%2fetc%2fpasswd", "..%5c..%5cwindows%5cwin.ini", "x%00y"]


def with_parameter(path: str, index: int, value: str) -> str:
    """``path`` (a route template) with its ``index``-th parameter set to ``value`` and
    the others as in ``concrete``."""
    parts = re.split(r"(\{[^}]+\})", path)
    parameters = [n for n, part in enumerate(parts) if part.startswith("{")]
    parts[parameters[index]] = value
    return concrete("".join(parts))


def test_path_traversal_in_every_parameter(secured: Server, client: TestClient) -> None:
    """Every parameter of every route, given a path that tries to escape: a 4xx with a
    plain message (or, for a search, no match), never a 500, never a file's content or a
    server path."""
    storage = str(secured.config["StorageDirectory"])
    checked = 0
    for spec in collect_routes(secured):
        path = getattr(spec.route, "path", "")
        methods = sorted(getattr(spec.route, "methods", None) or {"GET"})
        for method in set(methods) - {"HEAD"}:
            for index in range(path.count("{")):
                for value in TRAVERSALS:
                    target = with_parameter(path, index, value)
                    answer = client.request(method, target, headers=basic("admin"))
                    where = f"{method} {target}: {answer.status_code} {answer.text[:200]}"
                    refused = 400 <= answer.status_code < 500
                    assert refused or answer.json() == [], where  # a search found nothing
                    assert "root:" not in answer.text and "[fonts]" not in answer.text, where
                    assert storage not in answer.text and "Traceback" not in answer.text, where
                    checked += 1
    assert checked > 500


def test_roles_of_the_issue(client: TestClient) -> None:
    """Spot checks of the documented permission set."""
    assert client.post("/tools/find", json={"Level": "Study", "Query": {}},
                       headers=basic("viewer")).status_code == 200
    assert client.post("/instances", content=b"x", headers=basic("viewer")).status_code == 403
    assert client.post("/instances", content=b"x", headers=basic("uploader")).status_code == 400
    assert client.get("/patients", headers=basic("uploader")).status_code == 403
    assert client.post("/tools/pseudonyms", headers=basic("editor")).status_code == 403
    assert client.put("/modalities/x", json=["X", "127.0.0.1", 104],
                      headers=basic("editor")).status_code == 403
    assert client.put("/modalities/x", json=["X", "127.0.0.1", 104],
                      headers=basic("admin")).status_code == 200


class MisdeclaredRoute:
    def __init__(self, wrap: Any) -> None:  # noqa: ANN401 - any way of getting it wrong
        self.wrap = wrap

    @lanthorn.hookimpl
    def register_routes(self) -> list[lanthorn.PluginRoute]:
        return [self.wrap(Route("/misdeclared", lambda request: None, methods=["GET"]))]


@pytest.mark.parametrize(("wrap", "message"), [
    (lambda route: lanthorn.PluginRoute(route, permission="root"),
     '/misdeclared: unknown permission "root"'),
    (lambda route: lanthorn.PluginRoute(route), '/misdeclared: unknown permission "None"'),
    (lambda route: route, "/misdeclared declares no permission"),
])
def test_a_route_without_a_valid_permission_stops_start_up(
        lanthorn_config: Config, lanthorn_make_server: Any, wrap: Any, message: str) -> None:
    """A new route cannot forget its permission: the server does not start."""
    server = lanthorn_make_server(lanthorn_config, [MisdeclaredRoute(wrap)])
    try:
        with pytest.raises(PluginError, match=message):
            server.app  # noqa: B018 - building the application is the point
    finally:
        server.close()
