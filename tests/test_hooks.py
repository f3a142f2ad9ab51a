"""Every hook: its documentation matches its specification, and it works through a server.

One ``test_hook_<name>`` per hook in ``lanthorn.hookspecs`` (a test below checks that),
each exercising the hook for real: plugins registered with the ``lanthorn_plugins``
marker, requests through the REST API, the event loop and the command line.
"""

from __future__ import annotations

import argparse
import inspect
import io
import logging
import re
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pluggy
import pydicom
import pytest
from dimse_peers import PEER_AET, SCU_AET, StoreSCP, listening, scu
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)
from pynetdicom import build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    ModalityWorklistInformationFind,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import lanthorn
from lanthorn import cli, hookspecs
from lanthorn.builtin.sqlite import sqlite_engine
from lanthorn.changes import EventDispatcher
from lanthorn.config import Config
from lanthorn.errors import PluginError
from lanthorn.index import SqlIndex, upgrade
from lanthorn.rest.access import required_permission
from lanthorn.storage import FilesystemStorage
from lanthorn.testing import make_image

DOC = Path(__file__).parents[1] / "docs" / "plugin-hooks.md"
HOOKSPECS: dict[str, Callable[..., Any]] = {
    name: function for name, function in vars(hookspecs).items()
    if callable(function) and hasattr(function, "lanthorn_spec")
}


def dicom(**tags: str) -> bytes:
    """pydicom's CT_small.dcm with some tags changed, as a new instance (new SOP UID)."""
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in tags.items():
        setattr(dataset, keyword, value)
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def registered(server: lanthorn.Server, kind: type) -> Any:
    """The plugin object of class ``kind`` that the lanthorn_plugins marker registered."""
    return next(p for p in server.plugins.manager.get_plugins() if isinstance(p, kind))


def instance_count(client: TestClient) -> int:
    return client.get("/statistics").json()["CountInstances"]


# -- docs/plugin-hooks.md ---------------------------------------------------------------


def documented_hooks() -> list[tuple[str, str]]:
    """(name, body) of each ``## hook_name`` section; other headings have several words."""
    parts = re.split(r"^## (.+)$", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return [(title, body) for title, body in zip(parts[1::2], parts[2::2], strict=True)
            if re.fullmatch(r"[a-z_]+", title)]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def signature_line(function: Callable[..., Any]) -> str:
    """``def name(arg: Type, ...) -> Ret`` (annotations are strings: postponed evaluation)."""
    signature = inspect.signature(function)
    arguments = ", ".join(f"{p.name}: {p.annotation}" for p in signature.parameters.values())
    return f"def {function.__name__}({arguments}) -> {signature.return_annotation}"


def expected_kind(name: str, options: dict[str, Any]) -> str:
    if options.get("historic"):
        return "historic"
    if options.get("firstresult"):
        return "firstresult"
    return {"filter": "veto", "on": "notification"}.get(name.split("_")[0], "broadcast")


def test_each_hookspec_has_exactly_one_section_with_its_exact_signature() -> None:
    sections = documented_hooks()
    names = [name for name, _ in sections]
    assert sorted(names) == sorted(HOOKSPECS), "one '## hook_name' section per hookspec"
    for name, body in sections:
        assert python_blocks(body), f"section {name} has no signature block"
        assert python_blocks(body)[0].strip() == signature_line(HOOKSPECS[name])


def test_each_section_states_the_kind_of_its_hook() -> None:
    for name, body in documented_hooks():
        kind = re.search(r"\*\*Kind:\*\* (\w+)", body)
        assert kind, f"section {name} does not state its kind"
        assert kind[1] == expected_kind(name, HOOKSPECS[name].lanthorn_spec), name


def test_every_hookspec_has_a_docstring() -> None:
    for name, function in HOOKSPECS.items():
        assert (inspect.getdoc(function) or "").strip(), f"{name} has no docstring"


def test_examples_in_the_hook_reference_are_valid_python() -> None:
    signatures = {signature_line(function) for function in HOOKSPECS.values()}
    for block in python_blocks(DOC.read_text(encoding="utf-8")):
        if block.strip() not in signatures:
            compile(block, str(DOC), "exec")


def test_the_plugin_guide_links_every_hook() -> None:
    guide = (DOC.parent / "writing-plugins.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\(plugin-hooks\.md#(\w+)\)", guide))
    assert linked == set(HOOKSPECS)


def test_every_hook_has_its_test() -> None:
    assert {f"test_hook_{name}" for name in HOOKSPECS} <= set(globals())


def test_a_misspelled_hook_stops_start_up(lanthorn_config: Config) -> None:
    class Misspelled:
        @lanthorn.hookimpl
        def on_stored_instanse(self, server: lanthorn.Server) -> None: ...

    with pytest.raises(PluginError, match="on_stored_instanse.*misspelled"):
        lanthorn.Server(lanthorn_config, load_entry_points=False, plugins=[Misspelled()])


def test_a_wrong_argument_name_stops_start_up(lanthorn_config: Config) -> None:
    class WrongArgument:
        @lanthorn.hookimpl
        def on_stored_instance(self, server: lanthorn.Server, stored: object) -> None: ...

    with pytest.raises(PluginError, match="stored"):
        lanthorn.Server(lanthorn_config, load_entry_points=False, plugins=[WrongArgument()])


# -- plugin host ------------------------------------------------------------------------

hookspec = pluggy.HookspecMarker("lanthorn")


class GreetingSpecs:
    @hookspec(firstresult=True)
    def greeting(self, name: str) -> str | None:
        """A plugin's own hook."""


class Greeter:
    @lanthorn.hookimpl
    def greeting(self, name: str) -> str:
        return f"hello, {name}"


class SpecAdder:
    @lanthorn.hookimpl
    def add_hookspecs(self, plugin_manager: pluggy.PluginManager) -> None:
        plugin_manager.add_hookspecs(GreetingSpecs)


# The implementer comes first: historic add_hookspecs makes the load order irrelevant.
@pytest.mark.lanthorn_plugins(Greeter(), SpecAdder())
def test_hook_add_hookspecs(lanthorn_server: lanthorn.Server) -> None:
    assert lanthorn_server.plugins.hook.greeting(name="Ada") == "hello, Ada"


# -- lifecycle --------------------------------------------------------------------------


class Lifecycle:
    def __init__(self) -> None:
        self.calls: list[str] = []

    @lanthorn.hookimpl
    def startup(self, server: lanthorn.Server) -> None:
        assert server.index is not None and server.storage is not None
        self.calls.append("startup")

    @lanthorn.hookimpl
    def shutdown(self, server: lanthorn.Server) -> None:
        self.calls.append("shutdown")


def test_hook_startup(lanthorn_config: Config) -> None:
    lifecycle = Lifecycle()
    server = lanthorn.Server(lanthorn_config, load_entry_points=False, plugins=[lifecycle])
    assert lifecycle.calls == []
    server.start()
    assert lifecycle.calls == ["startup"]
    server.stop()
    server.close()


def test_hook_startup_can_refuse_to_start(lanthorn_config: Config) -> None:
    class Picky:
        @lanthorn.hookimpl
        def startup(self, server: lanthorn.Server) -> None:
            raise lanthorn.LanthornError("Picky needs a Picky section")

    server = lanthorn.Server(lanthorn_config, load_entry_points=False, plugins=[Picky()])
    with pytest.raises(lanthorn.LanthornError, match="Picky needs"):
        server.start(background=False)
    server.close()


def test_hook_shutdown(lanthorn_config: Config) -> None:
    lifecycle = Lifecycle()
    server = lanthorn.Server(lanthorn_config, load_entry_points=False, plugins=[lifecycle])
    server.start()
    server.stop()
    assert lifecycle.calls == ["startup", "shutdown"]
    server.close()


# -- backends ---------------------------------------------------------------------------


def beside_storage(server: lanthorn.Server, name: str) -> Path:
    """A folder next to StorageDirectory (the fixtures put that in a temporary folder)."""
    return Path(server.config["StorageDirectory"]).parent / name


class ElsewhereStorage:
    @lanthorn.hookimpl
    def register_storage_areas(self, server: lanthorn.Server) -> list[Any]:
        return [lanthorn.StorageAreaFactory("elsewhere", self.create)]

    @staticmethod
    def create(server: lanthorn.Server) -> FilesystemStorage:
        return FilesystemStorage(beside_storage(server, "elsewhere"), sync=False)


@pytest.mark.lanthorn_plugins(ElsewhereStorage())
@pytest.mark.lanthorn_config(StorageArea="elsewhere")
def test_hook_register_storage_areas(lanthorn_server: lanthorn.Server,
                                     lanthorn_client: TestClient) -> None:
    data = dicom()
    stored = lanthorn_client.post("/instances", content=data).json()
    files = [p for p in beside_storage(lanthorn_server, "elsewhere").rglob("*") if p.is_file()]
    assert [f.read_bytes() for f in files] == [data]
    assert lanthorn_client.get(f"/instances/{stored['ID']}/file").content == data
    with pytest.raises(PluginError, match="choose one of: elsewhere, filesystem"):
        lanthorn.Server(lanthorn_server.config.with_overrides(StorageArea="nowhere"),
                        load_entry_points=False, plugins=[ElsewhereStorage()])


class RequestedStorage:
    """Chosen by its own section's ``EnableStorage``, whatever ``StorageArea`` says."""

    config_sections = ("Elsewhere",)

    @lanthorn.hookimpl
    def register_storage_areas(self, server: lanthorn.Server) -> list[Any]:
        return [lanthorn.StorageAreaFactory(
            "elsewhere", ElsewhereStorage.create,
            requested=lambda s: bool(s.config.section("Elsewhere").get("EnableStorage")))]


@pytest.mark.parametrize("enabled", [True, False])
def test_a_storage_area_requested_by_its_section_is_chosen(enabled: bool,
                                                           lanthorn_config: Config) -> None:
    config = lanthorn_config.with_overrides(Elsewhere={"EnableStorage": enabled})
    server = lanthorn.Server(config, load_entry_points=False, plugins=[RequestedStorage()])
    server.close()
    chosen = beside_storage(server, "elsewhere") if enabled \
        else Path(config["StorageDirectory"])
    assert server.storage.root == chosen


class ReplacedFilesystem:
    @lanthorn.hookimpl
    def register_storage_areas(self, server: lanthorn.Server) -> list[Any]:
        return [lanthorn.StorageAreaFactory("filesystem", ElsewhereStorage.create)]


@pytest.mark.lanthorn_plugins(ReplacedFilesystem())
def test_a_plugin_factory_replaces_the_built_in_one_of_the_same_name(
        lanthorn_server: lanthorn.Server) -> None:
    assert lanthorn_server.storage.root == beside_storage(lanthorn_server, "elsewhere")


class SecondIndex:
    """A second SQLite file, chosen by name or requested by its own section."""

    config_sections = ("SecondIndex",)

    @lanthorn.hookimpl
    def register_index_backends(self, server: lanthorn.Server) -> list[Any]:
        return [lanthorn.IndexBackendFactory("second", self.create, self.requested)]

    @staticmethod
    def create(server: lanthorn.Server) -> SqlIndex:
        engine = sqlite_engine(beside_storage(server, "second") / "index.sqlite", durable=False)
        upgrade(engine)
        return SqlIndex(engine, server.main_tags)

    @staticmethod
    def requested(server: lanthorn.Server) -> bool:
        return bool(server.config.section("SecondIndex").get("EnableIndex"))


@pytest.mark.parametrize("options", [{"IndexBackend": "second"},
                                     {"SecondIndex": {"EnableIndex": True}}],
                         ids=["by-name", "by-section"])
def test_hook_register_index_backends(options: dict[str, Any], lanthorn_config: Config) -> None:
    server = lanthorn.Server(lanthorn_config.with_overrides(**options), load_entry_points=False,
                             plugins=[SecondIndex()])
    try:
        server.ingest.store(dicom(), lanthorn.Origin())
        assert (beside_storage(server, "second") / "index.sqlite").is_file()
        assert not (Path(server.config["StorageDirectory"]) / "index.sqlite").exists()
        assert server.index.statistics().count_by_level[lanthorn.Level.INSTANCE] == 1
    finally:
        server.close()


# -- REST -------------------------------------------------------------------------------


def plugin_routes(*routes: Any) -> object:
    class Routes:
        @lanthorn.hookimpl
        def register_routes(self, server: lanthorn.Server) -> list[Any]:
            return list(routes)

    return Routes()


def _name(request: Any) -> JSONResponse:
    return JSONResponse({"Name": request.app.state.server.config["Name"], "Plugin": True})


@pytest.mark.lanthorn_plugins(plugin_routes(
    *lanthorn.permitted("read", Route("/hooks-test/read", _name, methods=["GET"])),
    lanthorn.PluginRoute(Route("/hooks-test/public", _name, methods=["GET"]), public=True),
))
def test_hook_register_routes(lanthorn_client: TestClient) -> None:
    for path in ("/hooks-test/read", "/hooks-test/public"):
        assert lanthorn_client.get(path).json() == {"Name": "Lanthorn", "Plugin": True}
    assert "Version" in lanthorn_client.get("/system").json()  # core routes are still there


def test_a_route_that_shadows_a_core_route_is_a_start_up_error(lanthorn_config: Config) -> None:
    shadow = lanthorn.permitted("read", Route("/system", _name, methods=["GET"]))
    server = lanthorn.Server(lanthorn_config, load_entry_points=False,
                             plugins=[plugin_routes(*shadow)])
    try:
        with pytest.raises(PluginError, match="/system.*overrides_core"):
            server.app  # noqa: B018 - building the application is what fails
    finally:
        server.close()


@pytest.mark.lanthorn_plugins(plugin_routes(
    lanthorn.PluginRoute(Route("/system", _name, methods=["GET"]), "read", overrides_core=True)))
def test_a_route_declared_as_overriding_replaces_the_core_route(
        lanthorn_client: TestClient) -> None:
    assert lanthorn_client.get("/system").json() == {"Name": "Lanthorn", "Plugin": True}


class PlainNotFound:
    @lanthorn.hookimpl
    def handle_exception(self, request: Any, exc: Exception) -> PlainTextResponse | None:
        if isinstance(exc, HTTPException) and exc.status_code == 404:
            return PlainTextResponse(f"nothing at {request.url.path}", status_code=404)
        return None


@pytest.mark.lanthorn_plugins(PlainNotFound())
def test_hook_handle_exception(lanthorn_client: TestClient) -> None:
    answer = lanthorn_client.get("/no-such-route")
    assert (answer.status_code, answer.text) == (404, "nothing at /no-such-route")
    # The plugin passes (None) on other errors: the core's JSON error renders them.
    answer = lanthorn_client.get("/instances/unknown/tags")
    assert answer.status_code == 404
    assert answer.json()["OrthancError"] == "Unknown resource"


class BrokenRenderer:
    @lanthorn.hookimpl
    def handle_exception(self) -> None:
        raise RuntimeError("the renderer is broken")


@pytest.mark.lanthorn_plugins(BrokenRenderer())
def test_a_failing_handle_exception_falls_back_to_the_core_error(
        lanthorn_client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    answer = lanthorn_client.get("/no-such-route")
    assert (answer.status_code, answer.json()["HttpStatus"]) == (404, 404)
    assert "the renderer is broken" in caplog.text


class ApiKeys:
    """Identifies robots by a header; the core's basic authentication comes after."""

    @lanthorn.hookimpl
    def authenticate(self, request: Any) -> lanthorn.Principal | None:
        if request.headers.get("x-api-key") == "robot-key":
            return lanthorn.Principal("robot", frozenset({"viewer"}), "api-key")
        return None


@pytest.mark.lanthorn_plugins(ApiKeys())
@pytest.mark.lanthorn_config(AuthenticationEnabled=True, RegisteredUsers={"alice": "pw"})
def test_hook_authenticate(lanthorn_client: TestClient) -> None:
    assert lanthorn_client.get("/patients", headers={"x-api-key": "robot-key"}).json() == []
    assert lanthorn_client.get("/patients", headers={"x-api-key": "wrong"}).status_code == 401
    # A viewer: the roles the plugin gave apply.
    assert lanthorn_client.delete("/patients/x",
                                  headers={"x-api-key": "robot-key"}).status_code == 403
    # The core's basic authentication still answers when the plugin passes.
    assert lanthorn_client.get("/patients", auth=("alice", "pw")).status_code == 200


class NoDeletesOnFridays:
    """A plugin's own rule: nobody deletes, not even an admin; it sees who asks."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    @lanthorn.hookimpl
    def filter_http_request(self, request: Any, principal: lanthorn.Principal) -> bool:
        self.seen.append((principal.name, required_permission(request)))
        if request.method == "PUT":
            raise lanthorn.Forbidden("no changes on Fridays")
        return request.method != "DELETE"


FRIDAY = NoDeletesOnFridays()


@pytest.mark.lanthorn_plugins(FRIDAY)
@pytest.mark.lanthorn_config(AuthenticationEnabled=True, RegisteredUsers={"alice": "pw"})
def test_hook_filter_http_request(lanthorn_client: TestClient) -> None:
    answer = lanthorn_client.delete("/patients/x", auth=("alice", "pw"))
    assert answer.status_code == 403 and answer.json()["OrthancStatus"] == 11
    assert lanthorn_client.get("/patients/x", auth=("alice", "pw")).status_code == 404
    assert FRIDAY.seen == [("alice", "write"), ("alice", "read")]
    assert lanthorn_client.get("/patients").status_code == 401  # no one: no filter called
    assert len(FRIDAY.seen) == 2
    answer = lanthorn_client.put("/patients/x/metadata/1", content="v", auth=("alice", "pw"))
    assert (answer.status_code, answer.json()["Details"]) == (403, "no changes on Fridays")


# -- ingest -----------------------------------------------------------------------------


class Renamer:
    @lanthorn.hookimpl
    def receive_instance(self, instance: Any, origin: lanthorn.Origin) -> bytes | None:
        assert origin.kind == "RestApi"
        if instance.dataset.PatientName != "KEEP^ME":
            return None
        dataset = pydicom.dcmread(io.BytesIO(instance.data))
        dataset.PatientName = "RENAMED^BY^PLUGIN"
        buffer = io.BytesIO()
        dataset.save_as(buffer)
        return buffer.getvalue()


@pytest.mark.lanthorn_plugins(Renamer())
def test_hook_receive_instance(lanthorn_client: TestClient) -> None:
    untouched = dicom(PatientName="OTHER")
    stored = lanthorn_client.post("/instances", content=untouched).json()
    assert lanthorn_client.get(f"/instances/{stored['ID']}/file").content == untouched

    stored = lanthorn_client.post("/instances", content=dicom(PatientName="KEEP^ME")).json()
    file = lanthorn_client.get(f"/instances/{stored['ID']}/file").content
    assert pydicom.dcmread(io.BytesIO(file)).PatientName == "RENAMED^BY^PLUGIN"
    tags = lanthorn_client.get(f"/instances/{stored['ID']}/simplified-tags").json()
    assert tags["PatientName"] == "RENAMED^BY^PLUGIN"


class Gatekeeper:
    @lanthorn.hookimpl
    def filter_incoming_instance(self, instance: Any) -> bool | None:
        patient = instance.dataset.PatientID
        if patient == "REJECTED":
            raise lanthorn.Rejected("patient REJECTED may not be stored here")
        return None if patient == "WELCOME" else patient != "VETOED"


@pytest.mark.lanthorn_plugins(Gatekeeper())
def test_hook_filter_incoming_instance(lanthorn_client: TestClient) -> None:
    vetoed = lanthorn_client.post("/instances", content=dicom(PatientID="VETOED"))
    assert vetoed.status_code == 403
    assert vetoed.json()["Details"] == "A plugin refused this instance"
    rejected = lanthorn_client.post("/instances", content=dicom(PatientID="REJECTED"))
    assert rejected.status_code == 403
    assert rejected.json()["Details"] == "patient REJECTED may not be stored here"
    assert instance_count(lanthorn_client) == 0
    for patient in ("WELCOME", "ANYONE"):  # None and True both accept
        assert lanthorn_client.post("/instances", content=dicom(PatientID=patient)).is_success
    assert instance_count(lanthorn_client) == 2


class StoredRecorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    @lanthorn.hookimpl
    def on_stored_instance(self, instance: lanthorn.StoredInstance, dataset: Any) -> None:
        self.seen.append((instance.id, instance.status, str(dataset.PatientName)))


class FailingListener:
    @lanthorn.hookimpl
    def on_stored_instance(self) -> None:
        raise RuntimeError("the listener is broken")


# FailingListener is registered last, so pluggy calls it first: the recorder must still
# hear about the instance.
@pytest.mark.lanthorn_plugins(StoredRecorder(), FailingListener())
def test_hook_on_stored_instance(lanthorn_server: lanthorn.Server, lanthorn_client: TestClient,
                                 caplog: pytest.LogCaptureFixture) -> None:
    data = dicom(PatientName="STORED^ONCE")
    with caplog.at_level(logging.ERROR, logger="lanthorn"):
        answer = lanthorn_client.post("/instances", content=data)
    assert answer.status_code == 200
    assert registered(lanthorn_server, StoredRecorder).seen == [
        (answer.json()["ID"], "Success", "STORED^ONCE")]
    assert 'plugin "FailingListener-1" failed in on_stored_instance' in caplog.text
    assert "the listener is broken" in caplog.text
    assert instance_count(lanthorn_client) == 1
    lanthorn_client.post("/instances", content=data)  # AlreadyStored: no new notification
    assert len(registered(lanthorn_server, StoredRecorder).seen) == 1


class ChangeRecorder:
    def __init__(self, fail_on: tuple[str, ...] = ()) -> None:
        self.flaky = bool(fail_on)
        self.fail_on = set(fail_on)
        self.seen: list[str] = []

    @lanthorn.hookimpl
    def on_change(self, server: lanthorn.Server, change: Any) -> None:
        self.seen.append(change.change_type.name)
        if change.change_type.name in self.fail_on:
            self.fail_on.remove(change.change_type.name)  # fail the first delivery only
            raise RuntimeError(f"failed on {change.change_type.name}")


NEW_RESOURCES = ["NewInstance", "NewSeries", "NewStudy", "NewPatient"]


@pytest.mark.lanthorn_plugins(ChangeRecorder())
@pytest.mark.lanthorn_config(StableAge=3600)
def test_hook_on_change(lanthorn_server: lanthorn.Server, lanthorn_client: TestClient) -> None:
    """Delivered in order by the background loop that Server.start() started."""
    recorder = registered(lanthorn_server, ChangeRecorder)
    lanthorn_client.post("/instances", content=dicom())
    assert lanthorn_server.events is not None
    lanthorn_server.events.wake()
    wait_for(lambda: len(recorder.seen) >= len(NEW_RESOURCES))
    assert recorder.seen == NEW_RESOURCES


@pytest.mark.lanthorn_plugins(ChangeRecorder(), ChangeRecorder(fail_on=("NewStudy",)))
@pytest.mark.lanthorn_config(StableAge=3600)
def test_on_change_is_delivered_again_after_a_failure(
        lanthorn_server: lanthorn.Server, lanthorn_client: TestClient,
        caplog: pytest.LogCaptureFixture) -> None:
    assert lanthorn_server.events is not None
    lanthorn_server.events.stop()  # drive the rounds by hand, deterministically
    events = EventDispatcher(lanthorn_server)
    steady, flaky = sorted((p for p in lanthorn_server.plugins.manager.get_plugins()
                            if isinstance(p, ChangeRecorder)), key=lambda p: p.flaky)
    lanthorn_client.post("/instances", content=dicom())
    events.run_once()
    assert flaky.seen == ["NewInstance", "NewSeries", "NewStudy"]
    assert steady.seen == NEW_RESOURCES  # not held back by the failing consumer
    assert "failed on NewStudy" in caplog.text
    events.run_once()
    assert flaky.seen == ["NewInstance", "NewSeries", "NewStudy", "NewStudy", "NewPatient"]
    events.run_once()
    assert steady.seen == NEW_RESOURCES and flaky.seen[-1] == "NewPatient"


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- DICOM query/retrieve ---------------------------------------------------------------

DICOM_PEERS = {"scu": [SCU_AET, "127.0.0.1", 104], "teaching": ["TEACHING", "127.0.0.1", 104]}
FIND = StudyRootQueryRetrieveInformationModelFind
PATIENT_FIND = PatientRootQueryRetrieveInformationModelFind


def study_identifier(**keys: str) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    for keyword, value in {"StudyInstanceUID": "", **keys}.items():
        setattr(identifier, keyword, value)
    return identifier


def stored_study(server: lanthorn.Server) -> Dataset:
    """Store one instance (of CT_small.dcm's study); its dataset."""
    data = dicom()
    server.ingest.store(data, lanthorn.Origin())
    return pydicom.dcmread(io.BytesIO(data))


class TeachingFinder:
    """Answers the TEACHING modality itself; every other peer gets the core's answer."""

    @lanthorn.hookimpl
    def handle_c_find(self, request: lanthorn.DimseRequest) -> list[Dataset] | None:
        if request.origin.remote_aet != "TEACHING":
            return None
        assert (request.level, request.sop_class) == (lanthorn.Level.STUDY, FIND)
        return [study_identifier(StudyInstanceUID="1.2.840.99", StudyDescription="TEACHING")]


@pytest.mark.lanthorn_plugins(TeachingFinder())
@pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1", DicomModalities=DICOM_PEERS)
def test_hook_handle_c_find(lanthorn_server: lanthorn.Server) -> None:
    stored = stored_study(lanthorn_server)
    port = lanthorn_server.config["DicomPort"]
    with listening(lanthorn_server):
        for aet, expected in (("TEACHING", "1.2.840.99"), (SCU_AET, stored.StudyInstanceUID)):
            with scu(port, FIND, aet=aet) as assoc:
                answers = [a for _, a in assoc.send_c_find(study_identifier(), FIND) if a]
            assert [a.StudyInstanceUID for a in answers] == [expected]


class FindFixer:
    """Turns the "*" some modalities send for "any" into an empty key, and refuses the
    peer called BANNED with a reason."""

    @lanthorn.hookimpl
    def filter_find_request(self, request: lanthorn.DimseRequest) -> bool:
        if request.origin.remote_aet == "BANNED":
            raise lanthorn.Rejected("BANNED may not query")
        if request.identifier.get("PatientID") == "NOBODY":
            request.identifier.PatientID = ""
            request.identifier.QueryRetrieveLevel = "PATIENT"
        return request.origin.remote_aet != "TEACHING"


@pytest.mark.lanthorn_plugins(FindFixer())
@pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1", DicomAlwaysAllowFind=True)
def test_hook_filter_find_request(lanthorn_server: lanthorn.Server) -> None:
    stored = stored_study(lanthorn_server)
    port = lanthorn_server.config["DicomPort"]
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientID = "NOBODY"
    with listening(lanthorn_server):
        with scu(port, PATIENT_FIND) as assoc:  # the filter asks for every patient instead
            answers = [a for _, a in assoc.send_c_find(identifier, PATIENT_FIND) if a]
        assert [(a.QueryRetrieveLevel, a.PatientID) for a in answers] == \
            [("PATIENT", stored.PatientID)]
        for aet, comment in (("TEACHING", "a plugin refused this query"),  # False
                             ("BANNED", "BANNED may not query")):
            with scu(port, FIND, aet=aet) as assoc:
                [(status, _)] = list(assoc.send_c_find(study_identifier(), FIND))
            assert (status.Status, status.ErrorComment) == (0xC000, comment)


class Worklist:
    @lanthorn.hookimpl
    def handle_worklist_find(self, request: lanthorn.DimseRequest) -> list[Dataset]:
        assert request.level is None
        item = Dataset()
        item.PatientName = "WORK^LIST"
        step = Dataset()
        step.Modality = request.identifier.ScheduledProcedureStepSequence[0].Modality or "CT"
        item.ScheduledProcedureStepSequence = [step]
        return [item]


@pytest.mark.lanthorn_plugins(Worklist())
@pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1", DicomModalities=DICOM_PEERS)
def test_hook_handle_worklist_find(lanthorn_server: lanthorn.Server) -> None:
    query = Dataset()
    query.PatientName = ""
    step = Dataset()
    step.Modality = "MR"
    query.ScheduledProcedureStepSequence = [step]
    with listening(lanthorn_server), \
            scu(lanthorn_server.config["DicomPort"], ModalityWorklistInformationFind) as assoc:
        responses = list(assoc.send_c_find(query, ModalityWorklistInformationFind))
    assert [status.Status for status, _ in responses] == [0xFF00, 0x0000]
    answer = responses[0][1]
    assert (answer.PatientName, answer.ScheduledProcedureStepSequence[0].Modality) == \
        ("WORK^LIST", "MR")


class ExtraOnMove:
    @lanthorn.hookimpl
    def handle_c_move(self, server: lanthorn.Server, request: lanthorn.DimseRequest) -> list[Any]:
        assert request.move_destination == PEER_AET
        return extra_and_stored(server, request)


class ExtraOnGet:
    @lanthorn.hookimpl
    def handle_c_get(self, server: lanthorn.Server, request: lanthorn.DimseRequest) -> list[Any]:
        return extra_and_stored(server, request)


def extra_and_stored(server: lanthorn.Server, request: lanthorn.DimseRequest) -> list[Any]:
    """A file that is not stored (a dataset), then the study asked for (a public ID)."""
    [study] = server.index.lookup_identifier(request.identifier.StudyInstanceUID)
    return [pydicom.dcmread(get_testdata_file("MR_small.dcm")), study.public_id]




MR_SMALL_UID = pydicom.dcmread(get_testdata_file("MR_small.dcm")).SOPInstanceUID


def test_hook_handle_c_move(lanthorn_config: Config) -> None:
    peer = StoreSCP()
    config = lanthorn_config.with_overrides(DicomBindAddress="127.0.0.1", DicomModalities={
        **DICOM_PEERS, "peer": [PEER_AET, "127.0.0.1", peer.port]})
    server = lanthorn.Server(config, load_entry_points=False, plugins=[ExtraOnMove()])
    try:
        study = stored_study(server)
        with listening(server), peer.running(), \
                scu(config["DicomPort"], StudyRootQueryRetrieveInformationModelMove) as assoc:
            statuses = [s.Status for s, _ in assoc.send_c_move(
                study_identifier(StudyInstanceUID=study.StudyInstanceUID), PEER_AET,
                StudyRootQueryRetrieveInformationModelMove)]
    finally:
        server.close()
    assert statuses == [0xFF00, 0xFF00, 0x0000]
    assert [r.sop_instance for r in peer.received] == [MR_SMALL_UID, study.SOPInstanceUID]


@pytest.mark.lanthorn_plugins(ExtraOnGet())
@pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1", DicomModalities=DICOM_PEERS)
def test_hook_handle_c_get(lanthorn_server: lanthorn.Server) -> None:
    study = stored_study(lanthorn_server)
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(event.request.AffectedSOPInstanceUID)
        return 0x0000

    model = StudyRootQueryRetrieveInformationModelGet
    roles = [build_role(c, scp_role=True) for c in (CTImageStorage, MRImageStorage)]
    with listening(lanthorn_server), \
            scu(lanthorn_server.config["DicomPort"], model, CTImageStorage, MRImageStorage,
                ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)]) as assoc:
        statuses = [s.Status for s, _ in assoc.send_c_get(
            study_identifier(StudyInstanceUID=study.StudyInstanceUID), model)]
    assert statuses == [0xFF00, 0xFF00, 0x0000]
    assert received == [MR_SMALL_UID, study.SOPInstanceUID]


class OutgoingFindFixer:
    """Asks the modality for what was meant, not what was typed; refuses modality "down"."""

    @lanthorn.hookimpl
    def filter_outgoing_find_request(self, modality: Any, query: Dataset) -> bool:
        if query.get("PatientID") == "typo":
            query.PatientID = "P1"
        return modality.name != "down"


@pytest.mark.lanthorn_plugins(OutgoingFindFixer())
@pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1")
def test_hook_filter_outgoing_find_request(lanthorn_server: lanthorn.Server,
                                           lanthorn_client: TestClient) -> None:
    lanthorn_server.ingest.store(dicom(PatientID="P1"), lanthorn.Origin())
    for name in ("self", "down"):  # Lanthorn's own C-FIND SCP is the modality asked
        lanthorn_client.put(f"/modalities/{name}", json={
            "AET": lanthorn_server.config["DicomAet"], "Host": "127.0.0.1",
            "Port": lanthorn_server.config["DicomPort"]})
    query = {"Level": "Patient", "Query": {"PatientID": "typo"}}
    with listening(lanthorn_server):
        asked = lanthorn_client.post("/modalities/self/query", json=query).json()
        answers = lanthorn_client.get(f"{asked['Path']}/answers?expand&simplify").json()
        refused = lanthorn_client.post("/modalities/down/query", json=query)
    assert [a["PatientID"] for a in answers] == ["P1"]
    assert refused.status_code == 403
    assert refused.json()["Details"] == 'a plugin refused this C-FIND to modality "down"'


# -- jobs -------------------------------------------------------------------------------

class Counting:
    """A job type that counts up to its parameter, and one that always fails."""

    @lanthorn.hookimpl
    def register_job_types(self, server: lanthorn.Server) -> list[lanthorn.JobType]:
        return [lanthorn.JobType("Count", self.count), lanthorn.JobType("Broken", self.broken)]

    @staticmethod
    def count(context: lanthorn.JobContext) -> None:
        upto = context.parameters["UpTo"]
        for number in range(context.checkpoint.get("Done", 0), upto):
            context.checkpoint["Done"] = number + 1
            context.progress((number + 1) / upto)
        context.content = {"Counted": upto}
        context.save_output("numbers", (f"{n}\n".encode() for n in range(upto)),
                            media_type="text/plain", filename="numbers.txt")

    @staticmethod
    def broken(context: lanthorn.JobContext) -> None:
        raise lanthorn.BadRequest("this job cannot work")


@pytest.mark.lanthorn_plugins(Counting())
def test_hook_register_job_types(lanthorn_server: lanthorn.Server,
                                 lanthorn_client: TestClient) -> None:
    counted = lanthorn_server.jobs.submit("Count", {"UpTo": 3})
    broken = lanthorn_server.jobs.submit("Broken", {})
    wait_for(lambda: all(lanthorn_client.get(f"/jobs/{j}").json()["State"] in
                         ("Success", "Failure") for j in (counted, broken)))
    job = lanthorn_client.get(f"/jobs/{counted}").json()
    assert (job["Type"], job["State"], job["Content"]) == ("Count", "Success", {"Counted": 3})
    assert lanthorn_client.get(f"/jobs/{counted}/numbers").text == "0\n1\n2\n"
    failed = lanthorn_client.get(f"/jobs/{broken}").json()
    assert (failed["State"], failed["ErrorCode"], failed["ErrorDetails"]) == \
        ("Failure", 8, "this job cannot work")
    with pytest.raises(lanthorn.BadRequest, match="unknown job type"):
        lanthorn_server.jobs.submit("Nobody", {})


class JobWatcher:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    @lanthorn.hookimpl
    def on_job_event(self, job_id: str, event: lanthorn.ChangeType) -> None:
        self.events.append((job_id, event.name))


@pytest.mark.lanthorn_plugins(Counting(), JobWatcher())
def test_hook_on_job_event(lanthorn_server: lanthorn.Server) -> None:
    watcher = registered(lanthorn_server, JobWatcher)
    jobs = lanthorn_server.jobs
    counted, broken = jobs.submit("Count", {"UpTo": 2}), jobs.submit("Broken", {})
    wait_for(lambda: len(watcher.events) == 4)
    assert sorted(watcher.events) == sorted([
        (counted, "JobSubmitted"), (broken, "JobSubmitted"), (counted, "JobSuccess"),
        (broken, "JobFailure")])
    # Paused before it starts, or (when the runner was quicker) while it runs: either
    # way it is still counting when cancelled, and fails.
    jobs.pause(waiting := jobs.submit("Count", {"UpTo": 10**7}))
    jobs.cancel(waiting)
    wait_for(lambda: [e for e in watcher.events if e[0] == waiting]
             == [(waiting, "JobSubmitted"), (waiting, "JobFailure")])


# -- monitoring -------------------------------------------------------------------------

class Gauges:
    """Publishes how many times it was asked, to show the hook runs per scrape."""

    def __init__(self) -> None:
        self.calls = 0

    @lanthorn.hookimpl
    def refresh_metrics(self, server: lanthorn.Server, metrics: Any) -> None:
        self.calls += 1
        metrics.set("test_plugin_calls", self.calls)
        metrics.set("test_plugin_ratio", 0.25)


@pytest.mark.lanthorn_plugins(Gauges())
def test_hook_refresh_metrics(lanthorn_server: lanthorn.Server,
                              lanthorn_client: TestClient) -> None:
    gauges = registered(lanthorn_server, Gauges)

    def scrape() -> dict[str, str]:
        lines = lanthorn_client.get("/tools/metrics-prometheus").text.splitlines()
        return {line.split()[0]: line.split()[1] for line in lines}

    assert (scrape()["test_plugin_calls"], scrape()["test_plugin_calls"]) == ("1", "2")
    assert scrape()["test_plugin_ratio"] == "0.25"
    assert lanthorn_client.put("/tools/metrics", content="0").status_code == 200
    assert lanthorn_client.get("/tools/metrics-prometheus").text == ""
    assert gauges.calls == 3  # not asked while metrics are disabled


# -- command line -----------------------------------------------------------------------

COMMAND_PLUGIN = '''
import lanthorn


def _greet(args):
    print(f"greetings, {args.who}")
    return 7


@lanthorn.hookimpl
def register_commands(parser):
    return [lanthorn.Command("greet", "greet someone", _greet,
                             lambda sub: sub.add_argument("who"))]
'''


class Inverter:
    """A codec for instances of patient INVERTED: their pixels are read inverted."""

    @lanthorn.hookimpl
    def decode_frame(self, instance: Dataset, frame: int) -> Any:
        if instance.PatientID != "INVERTED":
            return None
        return 4095 - instance.pixel_array.astype(np.uint16)


@pytest.mark.lanthorn_plugins(Inverter())
def test_hook_decode_frame(lanthorn_client: TestClient) -> None:
    pixels = (np.arange(32 * 40).reshape(32, 40) % 4096).astype(np.uint16)
    plain = lanthorn_client.post("/instances", content=make_image(pixels)).json()["ID"]
    inverted = lanthorn_client.post(
        "/instances", content=make_image(pixels, PatientID="INVERTED")).json()["ID"]

    def uint16(instance: str) -> np.ndarray:
        response = lanthorn_client.get(f"/instances/{instance}/image-uint16")
        return np.asarray(Image.open(io.BytesIO(response.content)))

    assert np.array_equal(uint16(plain), pixels)  # the core's default decodes this one
    assert np.array_equal(uint16(inverted), 4095 - pixels)
    # Transcoding decodes through the hook too.
    archive = lanthorn_client.get(f"/instances/{inverted}/archive?transcode={RLELossless}")
    with zipfile.ZipFile(io.BytesIO(archive.content)) as members:
        member = members.read(members.namelist()[0])
    assert np.array_equal(pydicom.dcmread(io.BytesIO(member)).pixel_array, 4095 - pixels)


class BigEndianWriter:
    """Writes big endian itself, marking what it wrote; leaves other syntaxes alone."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    @lanthorn.hookimpl
    def transcode(self, instance: Dataset, syntaxes: list[str]) -> bytes | None:
        self.asked.append(syntaxes)
        if syntaxes[0] != ExplicitVRBigEndian:
            return None
        copy = pydicom.dcmread(io.BytesIO(make_image(instance.pixel_array)))
        copy.PatientName = "WRITTEN^BY^PLUGIN"
        copy.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, copy, enforce_file_format=True, little_endian=False,
                         implicit_vr=False)
        return buffer.getvalue()


@pytest.mark.lanthorn_plugins(BigEndianWriter())
def test_hook_transcode(lanthorn_server: lanthorn.Server, lanthorn_client: TestClient) -> None:
    pixels = (np.arange(32 * 40).reshape(32, 40)).astype(np.uint16)
    data = make_image(pixels)
    instance = lanthorn_client.post("/instances", content=data).json()["ID"]

    def member(syntax: str) -> Dataset:
        archive = lanthorn_client.get(f"/instances/{instance}/archive?transcode={syntax}")
        with zipfile.ZipFile(io.BytesIO(archive.content)) as members:
            return pydicom.dcmread(io.BytesIO(members.read(members.namelist()[0])))

    written = member(ExplicitVRBigEndian)
    assert written.PatientName == "WRITTEN^BY^PLUGIN"
    assert written.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    default = member(RLELossless)  # the plugin passes: the core's default writes it
    assert default.PatientName == "TEST^PATIENT"
    assert np.array_equal(default.pixel_array, pixels)
    # Never asked for a syntax the instance is already in.
    assert member(ExplicitVRLittleEndian).PatientName == "TEST^PATIENT"
    assert registered(lanthorn_server, BigEndianWriter).asked == [[ExplicitVRBigEndian],
                                                                  [RLELossless]]


def test_hook_register_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """A plugin installed with an entry point (a dist-info folder on sys.path)."""
    (tmp_path / "lanthorn_greet_test.py").write_text(COMMAND_PLUGIN)
    dist_info = tmp_path / "lanthorn_greet_test-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: lanthorn-greet-test\nVersion: 1.0\nSummary: test\n")
    (dist_info / "entry_points.txt").write_text("[lanthorn]\ngreet = lanthorn_greet_test\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    parser = cli.build_parser()
    assert re.search(r"greet\s+greet someone", parser.format_help())
    args = parser.parse_args(["greet", "world"])
    assert isinstance(args, argparse.Namespace) and args.run(args) == 7
    assert capsys.readouterr().out == "greetings, world\n"
