"""ZIP archives and DICOM media (ZIP + DICOMDIR) of resources, streamed file by file.

The answer is planned from the index (names, sizes, the DICOMDIR built from the stored
headers) and then streamed: each stored file is read a block at a time while the ZIP
is written, so memory does not grow with the size of a study. Members are stored
without compression (DICOM pixel data rarely shrinks, and deflating would cap the speed),
byte-identical to the stored files; sizes are known up front, hence a Content-Length.
With ``Transcode``, each file is read and transcoded when its turn comes (one instance
in memory at a time), sizes are not known, and the DICOMDIR, last, names the syntax
each file was really written in (an instance that cannot be transcoded goes as stored,
as in Orthanc).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING, Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet, RecordNode
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from zipstream import ZipStream

from ..dicom import read_header
from ..errors import BadRequest, LanthornError, UnknownResource
from ..index.records import Attachment, Resource
from ..ingest import DICOM_ATTACHMENT
from ..jobs import JobContext, JobType
from ..model import Level
from ..storage import read_ahead_files, read_all
from ..transcode import check_syntax, transcode
from ..types import PluginRoute, permitted
from .common import asynchronous, flag, job_answer, json_body, resource_of, server_of
from .resources import LEVELS
from .streaming import streamed

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..index.sql import SqlIndex
    from ..server import Server

#: Folder names as Orthanc builds them: the values of two main tags, or a fallback.
FOLDER_TAGS = {
    Level.PATIENT: (("PatientID", "PatientName"), "Unknown Patient"),
    Level.STUDY: (("AccessionNumber", "StudyDescription"), "Unknown Study"),
    Level.SERIES: (("Modality", "SeriesDescription"), "Unknown Series"),
}
#: Keys of the DICOMDIR records (as in Orthanc's media), then the type 3 keys that an
#: "extended" DICOMDIR adds when the instance has them. Every instance is an IMAGE
#: record, whatever its SOP class, as in Orthanc.
RECORD_KEYS = {
    "PATIENT": (("PatientName", "PatientID"), ("PatientBirthDate", "PatientSex")),
    "STUDY": (("StudyDate", "StudyTime", "AccessionNumber", "StudyDescription",
               "StudyInstanceUID", "StudyID"), ("ReferringPhysicianName",)),
    "SERIES": (("Modality", "SeriesInstanceUID", "SeriesNumber"),
               ("SeriesDescription", "SeriesDate", "SeriesTime", "BodyPartExamined",
                "ProtocolName")),
    "IMAGE": (("InstanceNumber",),
              ("ImageType", "ContentDate", "ContentTime", "NumberOfFrames", "Rows", "Columns")),
}
MEDIA_ID = "LANTHORN_MEDIA"

log = logging.getLogger(__name__)

Selection = dict[tuple[int, int, int], list[int]]
#: One file of the ZIP: its name, the instance and its DICOM attachment.
Member = tuple[str, int, Attachment]


@dataclass(frozen=True)
class Options:
    """What a request asks for, from the query string (GET) or the JSON body (POST)."""

    resources: list[Resource]
    filename: str
    extended: bool
    transcode: str | None = None

    def parameters(self) -> dict[str, Any]:
        """The options as a job keeps them (JSON)."""
        return {"Resources": [r.public_id for r in self.resources],
                "Filename": self.filename, "Extended": self.extended,
                "Transcode": self.transcode}


@dataclass(frozen=True)
class Packed:
    """A ZIP ready to stream, and what Orthanc's job content says about it."""

    stream: ZipStream
    instances: int
    uncompressed: int

    @property
    def size(self) -> int | None:
        """The ZIP's size, known before it streams unless its members are transcoded."""
        return len(self.stream) if self.stream.sized else None

    def content(self, archive: int) -> dict[str, Any]:
        size = self.uncompressed
        return {"ArchiveSize": str(archive), "ArchiveSizeMB": archive >> 20,
                "Description": "REST API", "InstancesCount": self.instances,
                "UncompressedSize": str(size), "UncompressedSizeMB": size >> 20}


def endpoint(*, media: bool, extended: bool = False):  # noqa: ANN201 - a Starlette endpoint
    """One handler for every level and for ``/tools/create-*``: GET or POST, ZIP or media."""

    async def answer(request: Request) -> Response:
        body = await _body(request)
        return await run_in_threadpool(_respond, request, body, media, extended)

    return answer


async def _body(request: Request) -> dict[str, Any]:
    if request.method == "POST":
        data = await request.body()
        body = json_body(data) if data.strip() else {}
        if not isinstance(body, dict):
            raise BadRequest("The body must contain a JSON object")
        return body
    query, body = request.query_params, {}
    for name, key in (("filename", "Filename"), ("transcode", "Transcode")):
        if name in query:
            body[key] = query[name]
    if "resources" in query:
        body["Resources"] = [r for r in query["resources"].split(",") if r]
    if "extended" in query:
        body["Extended"] = flag(request, "extended")
    return body


def _respond(request: Request, body: dict[str, Any], media: bool, extended: bool) -> Response:
    server = server_of(request)
    default_name = "Archive.zip"
    if "id" in request.path_params:
        resource = resource_of(request)
        body = {**body, "Resources": [resource.public_id]}
        default_name = f"{resource.public_id}.zip"
    options = _options(server.index, body, default_name, extended)
    if asynchronous(body):
        job_type = MEDIA_JOB_TYPE if media else ARCHIVE_JOB_TYPE
        return job_answer(server.jobs.submit(job_type.name, options.parameters(),
                                             priority=int(body.get("Priority", 0))))
    packed = _pack(server, options, media)
    headers = {"Content-Disposition": f'attachment; filename="{options.filename}"'}
    if packed.size is not None:
        headers["Content-Length"] = str(packed.size)
    return streamed(packed.stream, media_type="application/zip", headers=headers)


def _options(index: SqlIndex, body: dict[str, Any], default_name: str,
             extended: bool) -> Options:
    syntax = body.get("Transcode") or None
    if not isinstance(syntax, str | None):
        raise BadRequest('"Transcode" must be a transfer syntax UID')
    filename = body.get("Filename")
    extended = body.get("Extended", extended)
    if not isinstance(filename, str | None) or not isinstance(extended, bool):
        raise BadRequest('"Filename" must be a string and "Extended" a boolean')
    public_ids = body.get("Resources")
    if not isinstance(public_ids, list) or not all(isinstance(p, str) for p in public_ids):
        raise BadRequest('"Resources" must be a list of resource IDs')
    return Options(_lookup_all(index, public_ids), _safe_filename(filename, default_name),
                   extended, check_syntax(syntax) if syntax else None)


def _lookup_all(index: SqlIndex, public_ids: list[str]) -> list[Resource]:
    resources = []
    for public_id in public_ids:
        found = index.lookup(public_id)
        if found is None:
            raise UnknownResource(f"no resource has the ID {public_id}")
        resources.append(found)
    return resources


def _safe_filename(requested: str | None, default: str) -> str:
    """A name that fits in a quoted Content-Disposition header (printable ASCII)."""
    kept = "".join(c for c in requested or "" if c.isascii() and c.isprintable()
                   and c not in '"\\')
    return kept or default


# -- what goes in -----------------------------------------------------------------------

def _selection(index: SqlIndex, resources: list[Resource]) -> Selection:
    """The instances to pack, by (patient, study, series) in index order, each once."""
    chosen: dict[tuple[int, int, int], set[int]] = defaultdict(set)
    for resource in resources:
        if resource.level == Level.INSTANCE:
            groups = {resource.parent_id: [resource.id]}
        else:
            groups = {series: index.descendants(series, Level.INSTANCE)
                      for series in index.descendants(resource.id, Level.SERIES)}
        for series_id, instances in groups.items():
            series, study, patient = (r.id for r in index.ancestors(series_id))
            chosen[patient, study, series].update(instances)
    return {key: sorted(chosen[key]) for key in sorted(chosen)}


def _archive_members(index: SqlIndex, selection: Selection) -> list[Member]:
    """``Patient/Study/Series/MR000000.dcm`` names, as in Orthanc's archives."""
    folders = _Folders(index)
    members = []
    for (patient, study, series), instances in selection.items():
        path = "/".join((folders.name(Level.PATIENT, patient, None),
                         folders.name(Level.STUDY, study, patient),
                         folders.name(Level.SERIES, series, study)))
        modality = _folder_name([index.main_tags_of(series).get(_tag("Modality"), "")], "")
        files = index.attachments_of(instances, DICOM_ATTACHMENT)
        for number, instance in enumerate(instances):
            name = f"{modality[:2]}{number:06d}" if modality else f"{number:08d}"
            members.append((f"{path}/{name}.dcm", instance, files[instance]))
    return members


class _Folders:
    """Folder names, made unique among siblings with "-2", "-3"... as Orthanc does."""

    def __init__(self, index: SqlIndex) -> None:
        self.index = index
        self.names: dict[int, str] = {}
        self.taken: dict[int | None, set[str]] = defaultdict(set)

    def name(self, level: Level, resource_id: int, parent_id: int | None) -> str:
        if resource_id not in self.names:
            keywords, fallback = FOLDER_TAGS[level]
            tags = self.index.main_tags_of(resource_id)
            base = _folder_name([tags.get(_tag(k), "") for k in keywords], fallback)
            name, number = base, 1
            while name in self.taken[parent_id]:
                number += 1
                name = f"{base}-{number}"
            self.taken[parent_id].add(name)
            self.names[resource_id] = name
        return self.names[resource_id]


def _folder_name(values: list[str], fallback: str) -> str:
    """ASCII letters, digits, ".", "_" and single spaces ("^" separates like a space).

    A name of dots only would climb out of the archive's folders: the fallback is used.
    """
    text = " ".join(values).replace("^", " ")
    kept = "".join(c for c in text if c.isascii() and (c.isalnum() or c in " ._"))
    name = " ".join(kept.split())
    return name if name.strip(".") else fallback


def _tag(keyword: str) -> int:
    return tag_for_keyword(keyword)  # type: ignore[return-value]


# -- DICOM media ------------------------------------------------------------------------

def _media_members(server: Server, selection: Selection, extended: bool,
                   transcoder: _Transcoder | None,
                   ) -> tuple[list[Member], Callable[[], bytes]]:
    """Files named by the DICOMDIR's File IDs, and how to make the DICOMDIR (from stored
    headers) once they are written."""
    instances = [i for group in selection.values() for i in group]
    dicomdir, file_ids = _dicomdir(server.index, instances, extended)
    files = server.index.attachments_of(list(file_ids), DICOM_ATTACHMENT)
    members = [(file_ids[i], i, files[i]) for i in instances if i in file_ids]
    if transcoder is None:
        return members, lambda: dicomdir
    return members, lambda: _dicomdir(server.index, list(file_ids), extended,
                                      transcoder.written)[0]


def _dicomdir(index: SqlIndex, instances: list[int], extended: bool,
              syntaxes: dict[int, str] | None = None) -> tuple[bytes, dict[int, str]]:
    """The DICOMDIR of the instances (pydicom's FileSet) and each instance's File ID.

    A SOP Instance UID appears once on a medium: a second instance with the same UID
    (possible under another patient) is left out. ``syntaxes`` are those the files were
    written in, when not as stored.
    """
    file_set = FileSet()
    try:
        file_set.ID = MEDIA_ID
        by_uid: dict[str, int] = {}
        for instance in instances:
            dataset = read_header(index.header(instance))
            if syntaxes and instance in syntaxes:
                dataset.file_meta.TransferSyntaxUID = syntaxes[instance]
            if dataset.SOPInstanceUID not in by_uid:
                by_uid[dataset.SOPInstanceUID] = instance
                file_set.add_custom(dataset, _records(dataset, extended))
        with TemporaryDirectory() as folder:
            file_set.write(folder)
            dicomdir = (Path(folder) / "DICOMDIR").read_bytes()
            paths = {i.SOPInstanceUID: PurePath(i.FileID).as_posix() for i in file_set}
    finally:
        # pydicom removes its staging folder only when the FileSet is collected, and
        # then with a ResourceWarning; it offers no public way to do it sooner.
        file_set._stage["t"].cleanup()
    return dicomdir, {instance: paths[uid] for uid, instance in by_uid.items()}


def _records(dataset: Dataset, extended: bool) -> RecordNode:
    """PATIENT, STUDY, SERIES and IMAGE records of an instance; returns the IMAGE node."""
    parent = None
    for record_type in RECORD_KEYS:
        record = _record(record_type, dataset, extended)
        if record_type == "IMAGE":
            record.ReferencedSOPInstanceUIDInFile = dataset.SOPInstanceUID
        node = RecordNode(record)
        if parent is not None:
            node.parent = parent
        parent = node
    return node


def _record(record_type: str, dataset: Dataset, extended: bool) -> Dataset:
    keys, extra = RECORD_KEYS[record_type]
    record = Dataset()
    record.DirectoryRecordType = record_type
    if "SpecificCharacterSet" in dataset:
        record.SpecificCharacterSet = dataset.SpecificCharacterSet
    for keyword in keys:
        setattr(record, keyword, dataset.get(keyword))
    for keyword in extra if extended else ():
        if keyword in dataset:
            record[keyword] = dataset[keyword]
    return record


# -- streaming -------------------------------------------------------------------------

@dataclass
class _Transcoder:
    """Transcodes members as they are streamed, remembering the syntax of each."""

    server: Server
    syntax: str
    written: dict[int, str] = field(default_factory=dict)

    def member(self, instance: int, attachment: Attachment) -> Iterator[bytes]:
        data = read_all(self.server.storage, attachment.uuid, attachment.compression)
        try:
            data = transcode(self.server, data, [self.syntax])
        except LanthornError as exc:
            log.warning("an archived instance is sent as stored: %s", exc.message)
        else:
            self.written[instance] = self.syntax
        yield data


def _pack(server: Server, options: Options, media: bool) -> Packed:
    """The ZIP of the selected instances: planned now, read from storage as it streams."""
    selection = _selection(server.index, options.resources)
    transcoder = _Transcoder(server, options.transcode) if options.transcode else None
    if media:
        members, dicomdir = _media_members(server, selection, options.extended, transcoder)
    else:
        members, dicomdir = _archive_members(server.index, selection), None
    stream = ZipStream(sized=transcoder is None)
    if transcoder is None:
        files = read_ahead_files(server.storage, [attachment for _, _, attachment in members])
        for (name, _, attachment), data in zip(members, files, strict=True):
            stream.add(data, name, size=attachment.uncompressed_size)
    else:
        for name, instance, attachment in members:
            stream.add(transcoder.member(instance, attachment), name)
    if dicomdir is not None:
        stream.add(dicomdir() if transcoder is None else _later(dicomdir), "DICOMDIR")
    return Packed(stream, len(members), sum(a.uncompressed_size for _, _, a in members))


# -- asynchronous archives ----------------------------------------------------------------

def _job(media: bool):  # noqa: ANN202 - a job's run function
    """Pack the archive into the storage area, where ``GET /jobs/{id}/archive`` finds it."""

    def run(context: JobContext) -> None:
        options = _options(context.server.index, context.parameters, "Archive.zip", False)
        packed = _pack(context.server, options, media)
        # Transcoded members have no size until written: the stored sizes stand in.
        total = max(packed.size or packed.uncompressed, 1)
        written = 0

        def reported() -> Iterator[bytes]:
            nonlocal written
            for chunk in packed.stream:
                written += len(chunk)
                context.progress(min(written / total, 1.0))
                yield chunk

        context.save_output("archive", reported(), media_type="application/zip",
                            filename=options.filename)
        context.content = packed.content(written)

    return run


ARCHIVE_JOB_TYPE = JobType("Archive", _job(media=False))
MEDIA_JOB_TYPE = JobType("Media", _job(media=True))


def _later(make: Callable[[], bytes]) -> Iterator[bytes]:
    """The bytes of ``make()``, computed when the stream reaches them."""
    yield make()


def routes() -> list[PluginRoute]:
    both = ["GET", "POST"]  # POST only carries options: downloads change nothing
    return permitted(
        "read",
        Route(f"/{LEVELS}/{{id}}/archive", endpoint(media=False), methods=both),
        Route(f"/{LEVELS}/{{id}}/media", endpoint(media=True), methods=both),
        Route("/tools/create-archive", endpoint(media=False), methods=both),
        Route("/tools/create-media", endpoint(media=True), methods=both),
        Route("/tools/create-media-extended", endpoint(media=True, extended=True),
              methods=both))
