"""Orthanc peers: remote Orthanc-compatible servers reached over HTTP(S).

Peers come from ``OrthancPeers`` (Orthanc's array form ``[url, user, password]`` or
its object form), overlaid by the peers defined or deleted over REST, which live in
the index so that every process of a server sees them. Those REST changes survive a
restart only with ``OrthancPeersInDatabase``, as in Orthanc.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx2

from .config import ConfigError
from .errors import BadFileFormat, InexistentItem, NetworkError

if TYPE_CHECKING:
    from .config import Config
    from .server import Server

_KNOWN_KEYS = {"Url", "URL", "Username", "Password", "HttpHeaders", "Timeout",
               "CertificateFile", "CertificateKeyFile", "CertificateKeyPassword", "Pkcs11"}


@dataclass(frozen=True)
class Peer:
    """One remote server and how to talk to it."""

    name: str
    url: str  # always ends with "/"
    username: str | None = None
    password: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: int = 0  # seconds; 0 means ``HttpTimeout``
    certificate: tuple[str, str | None, str | None] | None = None  # file, key file, key password

    def configuration(self) -> dict[str, Any]:
        """Orthanc's description: secrets (password, header values) are left out."""
        description: dict[str, Any] = {"HttpHeaders": sorted(self.headers), "Pkcs11": False,
                                       "Timeout": self.timeout, "Url": self.url}
        if self.username is not None:
            description |= {"Username": self.username, "Password": None}
        if self.certificate is not None:
            description |= {"CertificateFile": self.certificate[0],
                            "CertificateKeyFile": self.certificate[1]}
        return description

    def to_json(self) -> dict[str, Any]:
        """Everything needed to rebuild the peer (kept in the index)."""
        value: dict[str, Any] = {"Url": self.url, "HttpHeaders": self.headers,
                                 "Timeout": self.timeout}
        if self.username is not None:
            value |= {"Username": self.username, "Password": self.password or ""}
        if self.certificate is not None:
            value |= {"CertificateFile": self.certificate[0],
                      "CertificateKeyFile": self.certificate[1],
                      "CertificateKeyPassword": self.certificate[2]}
        return value


def parse_peer(name: str, value: Any) -> Peer:
    """A peer from Orthanc's array or object form; BadFileFormat says what is wrong."""
    if isinstance(value, list):
        if not 1 <= len(value) <= 3 or not all(isinstance(v, str) for v in value):
            raise BadFileFormat(f'peer "{name}": the array form is [url, username, password]')
        value = dict(zip(("Url", "Username", "Password"), value, strict=False))
    if not isinstance(value, dict):
        raise BadFileFormat(f'peer "{name}" must be an array or an object')
    unknown = set(value) - _KNOWN_KEYS
    if unknown:
        raise BadFileFormat(f'peer "{name}": unknown keys {sorted(unknown)}')
    url = value.get("Url", value.get("URL")) or ""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise BadFileFormat(f'peer "{name}": "Url" must be an http:// or https:// URL'
                            if url else "Empty URL")
    headers = value.get("HttpHeaders", {})
    timeout = value.get("Timeout", 0)
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise BadFileFormat(f'peer "{name}": "HttpHeaders" must map names to strings')
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0:
        raise BadFileFormat(f'peer "{name}": "Timeout" must be a non-negative integer')
    certificate = None
    if value.get("CertificateFile"):
        certificate = (str(value["CertificateFile"]), value.get("CertificateKeyFile") or None,
                       value.get("CertificateKeyPassword") or None)
    username = value.get("Username")
    return Peer(name, url.rstrip("/") + "/", None if username is None else str(username),
                value.get("Password"), dict(headers), timeout, certificate)


def check_configuration(config: Config) -> None:
    """Refuse to start on a malformed ``OrthancPeers`` entry rather than fail on use."""
    for name, value in config["OrthancPeers"].items():
        try:
            parse_peer(name, value)
        except BadFileFormat as exc:
            raise ConfigError(f"OrthancPeers: {exc}") from None


def all_peers(server: Server) -> dict[str, Peer]:
    """The configured peers with the REST changes applied, by name."""
    configured = {name: parse_peer(name, value)
                  for name, value in server.config["OrthancPeers"].items()}
    return server.index.overlaid("peer", configured, parse_peer)


def peer(server: Server, name: str) -> Peer:
    found = all_peers(server).get(name)
    if found is None:
        raise InexistentItem(f"No peer with symbolic name: {name}")
    return found


def save_peer(server: Server, found: Peer) -> None:
    server.index.set_remote_node("peer", found.name, found.to_json())


def delete_peer(server: Server, name: str) -> None:
    if name not in all_peers(server):
        raise InexistentItem(f"Unknown Orthanc peer: {name}")
    server.index.set_remote_node("peer", name, None)


@contextmanager
def connect(server: Server, remote: Peer) -> Iterator[httpx2.Client]:
    """An HTTP client for the peer; transport failures become NetworkError (retried by
    store jobs)."""
    auth = (remote.username, remote.password or "") if remote.username is not None else None
    client = httpx2.Client(base_url=remote.url, auth=auth, headers=remote.headers,
                           timeout=remote.timeout or float(server.config["HttpTimeout"]),
                           cert=remote.certificate)
    try:
        with client:
            yield client
    except httpx2.HTTPError as exc:
        raise NetworkError(f'cannot reach peer "{remote.name}" at {remote.url}: {exc}') from exc


def call(server: Server, remote: Peer, method: str, path: str, **kwargs: Any) -> Any:
    """One request to the peer; its JSON answer, or NetworkError with the peer's reason."""
    with connect(server, remote) as client:
        response = client.request(method, path, **kwargs)
    if not response.is_success:
        raise NetworkError(f'peer "{remote.name}" answered {method} /{path} with HTTP '
                           f"{response.status_code}: {response.text[:500]}")
    try:
        return response.json()
    except ValueError:
        raise NetworkError(f'peer "{remote.name}" did not answer JSON to {method} '
                           f"/{path}") from None
