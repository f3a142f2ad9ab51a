"""The DICOMweb client: remote servers from ``DicomWeb.Servers``, reached with httpx2.

``/dicom-web/servers/{name}/qido`` and ``/get`` relay a request; ``/retrieve`` fetches
studies, series or instances over WADO-RS into Lanthorn (each received part goes
through the ingest path as it arrives); ``/stow`` sends Lanthorn resources with
STOW-RS, streamed from the storage area. Answers follow Orthanc's shapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lanthorn import BadRequest, Level, Origin, Server
from lanthorn.config import ConfigError
from lanthorn.errors import InexistentItem, NetworkError
from lanthorn.ingest import DICOM_ATTACHMENT
from lanthorn.storage import read_chunks

from .multipart import PartReader, new_boundary, related_type, write_parts
from .options import Options
from .responses import dicom_json
from .stow import DICOM

OPERATIONS = ["get", "qido", "retrieve", "stow"]
RETRIEVE_ACCEPT = f'multipart/related; type="{DICOM}"; transfer-syntax=*'


@dataclass(frozen=True)
class Remote:
    """One entry of ``DicomWeb.Servers``: ``[url, user, password]`` or an object."""

    name: str
    url: str
    username: str = ""
    password: str = field(default="", repr=False)
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 60

    def client(self) -> httpx2.Client:
        auth = (self.username, self.password) if self.username else None
        return httpx2.Client(base_url=self.url.rstrip("/"), auth=auth, headers=self.headers,
                             timeout=self.timeout)

    def as_json(self) -> dict[str, Any]:
        """What ``/servers?expand`` shows (never the password)."""
        described: dict[str, Any] = {"Url": self.url, "HttpHeaders": sorted(self.headers),
                                     "Timeout": self.timeout, "Pkcs11": False}
        if self.username:
            described["Username"] = self.username
        return described


def remotes(options: Options, default_timeout: float) -> dict[str, Remote]:
    """Parse ``Servers``; a malformed entry is a ConfigError naming it."""
    found = {}
    for name, value in options.servers.items():
        where = f'"DicomWeb.Servers.{name}"'
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value) \
                and len(value) <= 3:
            found[name] = Remote(name, *value, timeout=default_timeout)
        elif isinstance(value, dict) and isinstance(value.get("Url"), str):
            headers = value.get("HttpHeaders", {})
            if not isinstance(headers, dict):
                raise ConfigError(f"{where}.HttpHeaders must be an object")
            found[name] = Remote(name, value["Url"], str(value.get("Username", "")),
                                 str(value.get("Password", "")),
                                 {str(k): str(v) for k, v in headers.items()},
                                 float(value.get("Timeout", 0) or default_timeout))
        else:
            raise ConfigError(f'{where} must be ["url", "user", "password"] or an object '
                              'with "Url"')
    return found


class Servers:
    """The REST face of the client, bound to one Lanthorn server."""

    def __init__(self, server: Server, options: Options) -> None:
        self.server = server
        self.remotes = remotes(options, float(server.config["HttpTimeout"] or 60))

    def remote(self, request: Request) -> Remote:
        name = request.path_params["name"]
        if name not in self.remotes:
            raise InexistentItem(f"Inexistent server: {name}")
        return self.remotes[name]

    def list(self, request: Request) -> Response:
        if "expand" in request.query_params:
            return JSONResponse({n: r.as_json() for n, r in sorted(self.remotes.items())})
        return JSONResponse(sorted(self.remotes))

    def operations(self, request: Request) -> Response:
        self.remote(request)
        return JSONResponse(OPERATIONS)

    def qido(self, request: Request, body: dict[str, Any]) -> Response:
        answer = self._get(self.remote(request), body, "application/dicom+json")
        return dicom_json(_json(answer))

    def get(self, request: Request, body: dict[str, Any]) -> Response:
        answer = self._get(self.remote(request), body, body.get("Accept", "*/*"))
        return Response(answer.content, media_type=answer.headers.get("content-type"))

    def _get(self, remote: Remote, body: dict[str, Any], accept: str) -> httpx2.Response:
        uri = body.get("Uri")
        if not isinstance(uri, str) or not uri.startswith("/"):
            raise BadRequest('"Uri" must be a path on the remote server, such as "/studies"')
        arguments = _strings(body, "Arguments")
        headers = {**_strings(body, "HttpHeaders"), "Accept": accept}
        with remote.client() as http:
            return _checked(remote, lambda: http.get(uri, params=arguments, headers=headers))

    def retrieve(self, request: Request, body: dict[str, Any]) -> Response:
        """WADO-RS from the remote into Lanthorn, part by part through the ingest path."""
        remote = self.remote(request)
        resources = body.get("Resources")
        if not isinstance(resources, list) or not resources:
            raise BadRequest('"Resources" must be a list of {"Study", "Series", "Instance"}')
        received = size = 0
        origin = Origin("Plugins", remote_ip=request.client.host if request.client else "")
        with remote.client() as http:
            for resource in resources:
                for part in self._receive(remote, http, _wado_path(resource)):
                    self.server.ingest.store(part, origin)
                    received, size = received + 1, size + len(part)
        return JSONResponse({"NetworkUsageMB": str(size // (1 << 20)),
                             "ReceivedInstancesCount": str(received)})

    def _receive(self, remote: Remote, http: httpx2.Client, path: str) -> Iterator[bytes]:
        try:
            with http.stream("GET", path, headers={"Accept": RETRIEVE_ACCEPT}) as answer:
                if answer.status_code != 200:
                    raise NetworkError(f"{remote.name} answered {answer.status_code} to "
                                       f"GET {path}: {answer.read()[:300]!r}")
                reader = PartReader(answer.headers.get("content-type", ""))
                for block in answer.iter_bytes():
                    yield from (bytes(p.data) for p in reader.feed(block))
        except httpx2.HTTPError as exc:
            raise NetworkError(f"cannot reach {remote.name} ({remote.url}): {exc}") from None

    def stow(self, request: Request, body: dict[str, Any]) -> Response:
        """STOW-RS of Lanthorn resources (any level, by ID), streamed from storage."""
        remote = self.remote(request)
        resources = body.get("Resources")
        if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
            raise BadRequest('"Resources" must be a list of Lanthorn IDs')
        files = self._files(resources)
        boundary = new_boundary()
        parts = ((DICOM, read_chunks(self.server.storage, f.uuid, f.compression)) for f in files)
        headers = {**_strings(body, "HttpHeaders"),
                   "Content-Type": related_type(DICOM, boundary),
                   "Accept": "application/dicom+json"}
        with remote.client() as http:
            answer = _checked(remote, lambda: http.post(
                "/studies", content=write_parts(parts, boundary), headers=headers))
        if answer.status_code != 200:
            raise NetworkError(f"{remote.name} stored only part of the instances "
                               f"({answer.status_code}): {answer.text[:500]}")
        size = sum(f.uncompressed_size for f in files)
        return JSONResponse({"InstancesCount": str(len(files)),
                             "NetworkSizeMB": str(size // (1 << 20))})

    def _files(self, resources: list[str]) -> list[Any]:
        index = self.server.index
        ids = []
        for public_id in resources:
            found = index.lookup(public_id)
            if found is None:
                raise InexistentItem(f"no resource {public_id}")
            ids += index.descendants(found.id, Level.INSTANCE)
        attachments = index.attachments_of(ids, DICOM_ATTACHMENT)
        return [attachments[i] for i in ids if i in attachments]


def _wado_path(resource: Any) -> str:
    if not isinstance(resource, dict) or not isinstance(resource.get("Study"), str):
        raise BadRequest('each resource must be an object with "Study" (and optionally '
                         '"Series" and "Instance")')
    path = f"/studies/{resource['Study']}"
    if resource.get("Series"):
        path += f"/series/{resource['Series']}"
        if resource.get("Instance"):
            path += f"/instances/{resource['Instance']}"
    return path


def _strings(body: dict[str, Any], key: str) -> dict[str, str]:
    value = body.get(key, {}) or {}
    if not isinstance(value, dict):
        raise BadRequest(f'"{key}" must be an object')
    return {str(k): str(v) for k, v in value.items()}


def _checked(remote: Remote, send: Any) -> httpx2.Response:
    try:
        answer = send()
    except httpx2.HTTPError as exc:
        raise NetworkError(f"cannot reach {remote.name} ({remote.url}): {exc}") from None
    if answer.status_code >= 400:
        raise NetworkError(f"{remote.name} answered {answer.status_code}: {answer.text[:500]}")
    return answer


def _json(answer: httpx2.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        raise NetworkError(f"the remote answered {answer.headers.get('content-type')}, "
                           "not JSON") from None
