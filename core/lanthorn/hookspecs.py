"""Hook specifications: the whole plugin contract, and nothing but typed stubs.

Naming: ``register_*`` returns records; ``handle_*`` is firstresult (one plugin answers,
``None`` passes); ``filter_*`` is a veto (any ``False`` refuses); ``on_*`` notifies.
Each hook is documented in ``docs/plugin-hooks.md`` and tested by ``test_hook_<name>``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy as np
    from pydicom.dataset import Dataset
    from starlette.requests import Request
    from starlette.responses import Response

    from .dicom import ParsedInstance
    from .dimse.access import Modality
    from .index.records import Change
    from .jobs import JobType
    from .metrics import Metrics
    from .model import ChangeType
    from .server import Server
    from .types import (
        Command,
        DimseRequest,
        IndexBackendFactory,
        Origin,
        PluginRoute,
        Principal,
        StorageAreaFactory,
        StoredInstance,
    )

hookspec = pluggy.HookspecMarker("lanthorn")


# -- plugin host ------------------------------------------------------------------------


@hookspec(historic=True)
def add_hookspecs(plugin_manager: pluggy.PluginManager) -> None:
    """Add a plugin's own hook specifications (``plugin_manager.add_hookspecs(module)``).

    Historic: a plugin registered later still receives the call, so the order in
    which plugins load does not matter.
    """


# -- lifecycle --------------------------------------------------------------------------


@hookspec
def startup(server: Server) -> None:
    """The server is configured and its index and storage are open; start your work.

    Raise to refuse start-up (a configuration error, say): the message is shown to
    the admin and the server does not start.
    """


@hookspec
def shutdown(server: Server) -> None:
    """The server is stopping: in-flight requests have finished; release resources."""


# -- backends ---------------------------------------------------------------------------


@hookspec
def register_storage_areas(server: Server) -> list[StorageAreaFactory]:
    """Named storage-area factories; the ``StorageArea`` option picks one by name.

    The chosen factory's ``create(server)`` is called once. On a name clash the first
    answer wins, so a plugin can replace the ``trylast`` built-in ``"filesystem"``.
    """


@hookspec
def register_index_backends(server: Server) -> list[IndexBackendFactory]:
    """Named index-backend factories; ``IndexBackend`` (or a backend's own config
    section, such as ``"PostgreSQL": {"EnableIndex": true}``) picks one.

    ``create(server)`` returns a ``lanthorn.index.SqlIndex`` whose schema is up to date
    (``lanthorn.index.upgrade``); two backends requested at once are a ConfigError.
    """


# -- REST -------------------------------------------------------------------------------


@hookspec
def register_routes(server: Server) -> list[PluginRoute]:
    """Starlette routes (``Route``/``Mount``), each in a ``PluginRoute`` declaring the
    permission it needs (or ``public=True``); a route without one is a start-up error.

    A path that a core route already serves is a start-up error unless the
    ``PluginRoute`` says ``overrides_core=True``.
    """


@hookspec(firstresult=True)
def authenticate(server: Server, request: Request) -> Principal | None:
    """Who is calling: a ``Principal`` (name, roles, method), or ``None`` to pass.

    Called for every request while authentication is enabled, in a worker thread,
    before routing. firstresult; the core's HTTP basic authentication against
    ``RegisteredUsers`` is ``trylast``. When every implementation passes, the answer is
    401. Do not read the body.
    """


@hookspec
def filter_http_request(server: Server, request: Request, principal: Principal) -> bool:
    """Authorization: return ``False`` to refuse ``request`` to ``principal`` (403).

    A veto: any ``False`` refuses. Called after ``authenticate`` (with an anonymous
    admin when authentication is disabled), before routing. The core's own implementation
    checks the principal's roles against the route's permission
    (``lanthorn.rest.access.required_permission(request)``; None when no route matches).
    Raise ``lanthorn.Forbidden(msg)`` to refuse with a reason.
    """


@hookspec(firstresult=True)
def handle_exception(server: Server, request: Request, exc: Exception) -> Response | None:
    """Render an exception raised while answering ``request``.

    firstresult: the first non-None response wins; the core's default (Orthanc's JSON
    error object) is registered ``trylast``.
    """


# -- ingest -----------------------------------------------------------------------------


@hookspec(firstresult=True)
def receive_instance(server: Server, instance: ParsedInstance, origin: Origin) -> bytes | None:
    """Replace an incoming instance before it is stored.

    Return new DICOM bytes to store instead (they go through parsing and the filters
    again), or ``None`` to keep the instance as received. firstresult.
    """


@hookspec
def filter_incoming_instance(server: Server, instance: ParsedInstance,
                             origin: Origin) -> bool | None:
    """Veto an incoming instance before anything is written: return ``False`` to refuse.

    The sender gets HTTP 403 / a DIMSE refusal. Raise ``lanthorn.Rejected(msg)``
    instead to give the reason.
    """


@hookspec
def on_stored_instance(server: Server, instance: StoredInstance, dataset: Dataset) -> None:
    """An instance was committed (called in the storing thread, after the commit).

    Not called for a duplicate ("AlreadyStored"). ``dataset`` is the parsed header, for
    reading. Each plugin is called on its own: an exception is logged, the other plugins
    are still called, and the store is not undone.
    """


@hookspec
def on_change(server: Server, change: Change) -> None:
    """A change-log entry (new resource, stable resource, deletion, ...).

    Delivered from the change log by one process of the cluster, in order and at
    least once: a consumer that raises gets the same change again later.
    """


# -- DICOM query/retrieve ----------------------------------------------------------------


@hookspec
def filter_find_request(server: Server, request: DimseRequest) -> bool | None:
    """See, and change, a C-FIND received (query/retrieve or worklist) before it is answered.

    Change ``request.identifier`` in place to fix the query (its ``QueryRetrieveLevel`` is
    read again afterwards). A veto: ``False`` refuses with status 0xC000; raise
    ``lanthorn.Rejected(msg)`` to give the reason (sent as Error Comment).
    """


@hookspec
def filter_outgoing_find_request(server: Server, modality: Modality,
                                 query: Dataset) -> bool | None:
    """See, and change, a C-FIND identifier before Lanthorn sends it to ``modality``
    (the REST API's queries, ``find-*`` and worklist routes).

    Change ``query`` in place. A veto: ``False`` refuses (HTTP 403); raise
    ``lanthorn.Rejected(msg)`` to give the reason.
    """


@hookspec(firstresult=True)
def handle_c_find(server: Server, request: DimseRequest) -> Iterable[Dataset] | None:
    """Answer a C-FIND in the Patient Root or Study Root model: one identifier per match.

    firstresult: return an iterable of answer datasets (each sent as a pending response,
    as given), or ``None`` to let the next plugin answer. The core's default, registered
    ``trylast``, runs the query engine on the index. The listener stops at
    ``request.limit`` answers and on C-CANCEL. Raise ``lanthorn.BadRequest`` for an
    identifier you cannot answer (status 0xA900); any other exception is 0xC000.
    """


@hookspec(firstresult=True)
def handle_worklist_find(server: Server, request: DimseRequest) -> Iterable[Dataset] | None:
    """Answer a Modality Worklist C-FIND: one identifier per scheduled procedure step.

    firstresult, as ``handle_c_find``; there is no core default: when every plugin
    returns ``None`` the peer gets status 0x0122 (SOP class not supported).
    """


@hookspec(firstresult=True)
def handle_c_move(server: Server, request: DimseRequest) -> Iterable[str | Dataset] | None:
    """Choose what a C-MOVE sends to ``request.move_destination``.

    firstresult: return public IDs (an instance, or a patient, study or series standing
    for all its instances) and/or pydicom datasets with file meta, or ``None`` to pass.
    The list is read to its end before the first sub-operation (the count is announced
    first). The core's default, ``trylast``, matches the identifier with the query
    engine. The listener sends each instance, counts and reports the sub-operations.
    """


@hookspec(firstresult=True)
def handle_c_get(server: Server, request: DimseRequest) -> Iterable[str | Dataset] | None:
    """Choose what a C-GET sends back over the requesting association.

    The same contract as ``handle_c_move`` (firstresult, core default ``trylast``).
    """


# -- pixels ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def decode_frame(server: Server, instance: Dataset, frame: int) -> np.ndarray | None:
    """Decode one frame (numbered from 0) of a parsed instance, pixel data included.

    Return the stored values (no rescale, no windowing) as a numpy array of shape
    (rows, columns), or (rows, columns, 3) in RGB for colour; ``None`` to let the next
    plugin try. firstresult; the core's default (pydicom's decoders, with pylibjpeg,
    pyjpegls and python-gdcm) is ``trylast``. Rendering, ``/numpy`` and transcoding all
    decode through this hook, so a codec added here serves them all.
    """


@hookspec(firstresult=True)
def transcode(server: Server, instance: Dataset, syntaxes: list[str]) -> bytes | None:
    """Write a parsed instance in the first of ``syntaxes`` (transfer syntax UIDs) you can.

    Return the new DICOM file's bytes, or ``None`` to pass. Only called when the
    instance is in none of ``syntaxes``. Do not modify ``instance``. firstresult; the
    core's default (``trylast``) decodes through ``decode_frame`` and encodes with
    pydicom and Pillow (see ``docs/transcoding.md``).
    """


# -- jobs -------------------------------------------------------------------------------


@hookspec
def register_job_types(server: Server) -> list[JobType]:
    """Kinds of background jobs this plugin runs (``lanthorn.jobs.JobType``).

    A job type is a name (shown as the job's ``Type``) and a function of a
    ``JobContext``; submit with ``server.jobs.submit(name, parameters)``. Parameters
    and the context's ``checkpoint`` and ``content`` must be JSON, because jobs are
    stored in the index and may resume in another process. On a name clash the first
    answer wins.
    """


@hookspec
def on_job_event(server: Server, job_id: str, event: ChangeType) -> None:
    """A job was submitted (``ChangeType.JobSubmitted``), succeeded (``JobSuccess``) or
    failed for good (``JobFailure``, cancellation included; not a failure that is retried).

    Called once per event in the cluster, in the process where it happened: the submitting
    process, or the job runner. Each plugin is called on its own: an exception is logged.
    Not durable: a process that dies at that moment loses the call (``GET /jobs`` keeps
    the state).
    """


# -- monitoring -------------------------------------------------------------------------


@hookspec
def refresh_metrics(server: Server, metrics: Metrics) -> None:
    """Set this plugin's gauges (``metrics.set(name, value)``) just before
    ``/tools/metrics-prometheus`` renders them; not called while metrics are disabled.
    Runs in the process that answers the scrape, on a worker thread.
    """


# -- command line -----------------------------------------------------------------------


@hookspec
def register_commands(parser: argparse.ArgumentParser) -> list[Command]:
    """``lanthorn`` subcommands (e.g. ``lanthorn wsi dicomize``).

    Asked while the command line is built, before any configuration is read, so only
    installed (entry-point) plugins can add commands. ``Command.run(args)`` returns the
    exit status.
    """
