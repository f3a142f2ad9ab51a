"""Modification and anonymization of instances, series, studies and patients.

One request (``parse_request``) describes one operation; ``run`` carries it out: each
instance is read, changed with pydicom, and stored as a new instance through the one
ingest path, then the new resources get ``ModifiedFrom`` / ``AnonymizedFrom`` and the
change log an entry. Within one operation an original UID always becomes the same new
UID, so a study stays one study; with persistent pseudonyms (``pseudonyms.py``) that
holds across operations too. ``run`` takes a progress callback and returns the answer as
a dict, so it runs the same inside a job as in a synchronous request.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pydicom
import pydicom.config
from pydicom.datadict import dictionary_VR, private_dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from . import __version__
from .deidentify import METHOD, Action, action_of
from .errors import BadRequest, LanthornError, UnknownResource
from .index.records import Resource
from .ingest import DICOM_ATTACHMENT
from .model import IDENTIFIER_KEYWORDS, ChangeType, Level, parse_tag
from .pseudonyms import PseudonymPolicy, Pseudonyms, parse_policy
from .storage import read_all
from .transcode import check_syntax, transcode
from .types import Origin

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger(__name__)

#: The identifying tag of each level, and the level each identifying tag belongs to.
IDENTIFIERS = {level: parse_tag(keyword) for level, keyword in IDENTIFIER_KEYWORDS.items()}
IDENTIFIER_LEVEL = {tag: level for level, tag in IDENTIFIERS.items()}
PATIENT_ID, PATIENT_NAME = IDENTIFIERS[Level.PATIENT], parse_tag("PatientName")
PATIENT_IDENTITY_REMOVED, DEIDENTIFICATION_METHOD = 0x00120062, 0x00120063
#: Orthanc's names of editions of PS3.15; Lanthorn has one table (see docs/anonymization.md).
DICOM_VERSIONS = ("2017c", "2021b", "2023b")
CHANGES = {
    (False, Level.PATIENT): ChangeType.ModifiedPatient,
    (False, Level.STUDY): ChangeType.ModifiedStudy,
    (False, Level.SERIES): ChangeType.ModifiedSeries,
    (True, Level.PATIENT): ChangeType.AnonymizedPatient,
    (True, Level.STUDY): ChangeType.AnonymizedStudy,
    (True, Level.SERIES): ChangeType.AnonymizedSeries,
}
_STEP = re.compile(r"^(?P<tag>[^\[\]]+)\[(?P<item>\d+|\*)\]$")
#: Dummy values (action D) by VR: valid, and obviously not real data.
_DUMMIES = {"DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000Y",
            "IS": "0", "DS": "0"}
_NUMBERS = {"US": int, "SS": int, "UL": int, "SL": int, "UV": int, "SV": int,
            "FL": float, "FD": float}
#: File meta elements naming the sender or holding private data (PS3.10 7.1).
_META_SOURCES = (0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102)
_BINARY = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}

Progress = Callable[[float], None]


@dataclass(frozen=True)
class TagPath:
    """A tag, possibly inside sequences: ``ReferencedImageSequence[*].ReferencedSOPInstanceUID``.

    ``items`` are the sequences to go through, each with an item number or None for all.
    """

    items: tuple[tuple[int, int | None], ...]
    tag: int

    @property
    def top_level(self) -> bool:
        return not self.items

    def matches(self, trail: tuple[tuple[int, int], ...], tag: int) -> bool:
        """Whether the element ``tag`` reached through ``trail`` is this path."""
        return tag == self.tag and self.leads_through(trail) and len(trail) == len(self.items)

    def leads_through(self, trail: tuple[tuple[int, int], ...]) -> bool:
        """Whether this path goes through the items of ``trail`` (a prefix of it)."""
        return len(trail) <= len(self.items) and all(
            tag == want and wanted in (None, item)
            for (tag, item), (want, wanted) in zip(trail, self.items, strict=False))

    def datasets(self, dataset: Dataset) -> list[Dataset]:
        """The datasets that hold the path's final tag (none when a sequence is missing)."""
        current = [dataset]
        for tag, item in self.items:
            found: list[Dataset] = []
            for holder in current:
                if tag in holder and holder[tag].VR == "SQ":
                    items = list(holder[tag].value or [])
                    found += items if item is None else items[item:item + 1]
            current = found
        return current


def parse_path(text: Any) -> TagPath:
    if not isinstance(text, str):
        raise BadRequest(f"a tag must be given as a string, not {text!r}")
    *steps, last = text.split(".")
    items = []
    for step in steps:
        match = _STEP.match(step.strip())
        if match is None:
            raise BadRequest(f'invalid tag path "{text}": use Sequence[2].Tag or Sequence[*].Tag')
        item = match["item"]
        items.append((_tag(match["tag"], text), None if item == "*" else int(item)))
    return TagPath(tuple(items), _tag(last, text))


def _tag(name: str, path: str) -> int:
    try:
        return parse_tag(name)
    except ValueError:
        raise BadRequest(f'unknown DICOM tag "{name}"'
                         + (f' in "{path}"' if path != name else "")) from None


@dataclass(frozen=True)
class ModifyRequest:
    """One modification or anonymization, as parsed from a REST body.

    ``resources`` are public IDs of any level; their instances are changed as at
    ``level`` (which decides which UIDs are new). ``bulk`` selects the answer's shape.
    """

    level: Level
    resources: tuple[str, ...]
    anonymize: bool
    replace: tuple[tuple[TagPath, Any], ...] = ()
    remove: tuple[TagPath, ...] = ()
    keep: tuple[TagPath, ...] = ()
    keep_private_tags: bool = False
    private_creator: str = ""
    keep_source: bool = True
    keep_labels: bool = False
    permissive: bool = False
    pseudonyms: PseudonymPolicy | None = None
    bulk: bool = False
    origin: Origin = field(default_factory=lambda: Origin("RestApi"))
    transcode: str | None = None  # the transfer syntax of the changed files

    def replaced(self, tag: int) -> bool:
        return any(p.top_level and p.tag == tag for p, _ in self.replace)

    def kept(self, tag: int) -> bool:
        return any(p.top_level and p.tag == tag for p in self.keep)


# -- parsing --------------------------------------------------------------------------

def parse_request(server: Server, body: Any, *, anonymize: bool, level: Level | None = None,
                  resource: str | None = None, origin: Origin | None = None) -> ModifyRequest:
    """Check a body as Orthanc does (``Force`` for identifiers...); raise BadRequest."""
    if not isinstance(body, dict):
        raise BadRequest("The body must contain a JSON object")
    body = {key: value for key, value in body.items() if value is not None}  # as clients send
    syntax = body.get("Transcode")
    if syntax is not None and not isinstance(syntax, str):
        raise BadRequest('"Transcode" must be a transfer syntax UID')
    replace = parse_replacements(body.get("Replace", {}))
    remove = tuple(parse_path(p) for p in option_list(body, "Remove"))
    keep = tuple(parse_path(p) for p in option_list(body, "Keep"))
    version = body.get("DicomVersion")
    if anonymize and version is not None and version not in DICOM_VERSIONS:
        raise BadRequest(f'unsupported "DicomVersion" {version!r}: use one of '
                         + ", ".join(DICOM_VERSIONS))
    bulk = resource is None
    resources = (resource,) if resource is not None else _resources(body)
    if level is None:
        level = _bulk_level(body, replace)
    _check_identifiers(body, level, anonymize, replace, remove, keep)
    private_creator = body.get("PrivateCreator", server.config["DefaultPrivateCreator"])
    if not isinstance(private_creator, str):
        raise BadRequest('"PrivateCreator" must be a string')
    policy_source = body.get("PersistentPseudonyms", server.config["PersistentPseudonyms"])
    return ModifyRequest(
        level=level, resources=resources, anonymize=anonymize, replace=replace,
        remove=remove, keep=keep,
        keep_private_tags=option_flag(body, "KeepPrivateTags", False) if anonymize
        else not option_flag(body, "RemovePrivateTags", False),
        private_creator=private_creator, keep_source=option_flag(body, "KeepSource", True),
        keep_labels=option_flag(body, "KeepLabels", False),
        permissive=option_flag(body, "Permissive", False),
        pseudonyms=parse_policy(policy_source) if anonymize else None,
        bulk=bulk, origin=origin or Origin("RestApi"),
        transcode=check_syntax(syntax) if syntax else None)


def option_flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f'"{key}" must be a boolean')
    return value


def option_list(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key, [])
    if not isinstance(value, list):
        raise BadRequest(f'"{key}" must be a list of tags')
    return value


def parse_replacements(value: Any) -> tuple[tuple[TagPath, Any], ...]:
    if not isinstance(value, dict):
        raise BadRequest('"Replace" must be an object of tag: value')
    for name, new in value.items():
        if not valid_value(new):
            raise BadRequest(f'the value of "{name}" in "Replace" must be a string (or, for a '
                             "sequence, a list of objects)")
    return tuple((parse_path(name), new) for name, new in value.items())


def valid_value(value: Any) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, list) and all(
        isinstance(item, dict) and all(valid_value(v) for v in item.values()) for item in value)


def _resources(body: dict[str, Any]) -> tuple[str, ...]:
    resources = body.get("Resources")
    if not isinstance(resources, list) or not resources \
            or not all(isinstance(r, str) for r in resources):
        raise BadRequest('"Resources" must be a non-empty list of resource IDs')
    return tuple(resources)


def _bulk_level(body: dict[str, Any], replace: tuple[tuple[TagPath, Any], ...]) -> Level:
    """``Level``, or as Orthanc guesses it: the level of the highest identifier replaced."""
    if "Level" in body:
        try:
            return Level.parse(str(body["Level"]))
        except ValueError:
            raise BadRequest('"Level" must be Patient, Study, Series or Instance') from None
    replaced = [IDENTIFIER_LEVEL[p.tag] for p, _ in replace
                if p.top_level and p.tag in IDENTIFIER_LEVEL]
    return min(replaced, default=Level.INSTANCE)


def _check_identifiers(body: dict[str, Any], level: Level, anonymize: bool,
                       replace: tuple[tuple[TagPath, Any], ...], remove: tuple[TagPath, ...],
                       keep: tuple[TagPath, ...]) -> None:
    """Identifiers change only with ``Force``, are never removed, and a modification may
    not move a resource under another parent (Orthanc's rules)."""
    force = option_flag(body, "Force", False)
    replaced = {p.tag for p, _ in replace if p.top_level} & set(IDENTIFIER_LEVEL)
    for verb, tags in (("removed", {p.tag for p in remove if p.top_level}),
                       ("replaced", replaced), ("kept", {p.tag for p in keep if p.top_level})):
        for tag in sorted(tags & set(IDENTIFIER_LEVEL)):
            name = IDENTIFIER_KEYWORDS[IDENTIFIER_LEVEL[tag]]
            if verb == "removed":
                raise BadRequest(f"{name} identifies a resource: it cannot be removed")
            if not force:
                raise BadRequest(f'Marking tag "{name}" as to be {verb} requires the "Force" '
                                 "option to be set to true")
    if anonymize:
        return
    if level == Level.PATIENT and IDENTIFIERS[Level.PATIENT] not in replaced:
        raise BadRequest('When modifying a patient, "Replace" must give it a new PatientID')
    for tag in replaced:
        parent = IDENTIFIER_LEVEL[tag]
        if parent < level:
            raise BadRequest(f"When modifying a {level.title.lower()}, its parent's "
                             f"{IDENTIFIER_KEYWORDS[parent]} cannot be changed")


# -- changing one dataset ----------------------------------------------------------------

class Modifier:
    """Changes datasets for one operation; remembers new UIDs and patient pseudonyms."""

    def __init__(self, server: Server, request: ModifyRequest,
                 state: dict[str, Any] | None = None) -> None:
        """``state`` holds the maps (JSON-able): a resumed operation passes it back."""
        self.request = request
        self.pseudonyms = Pseudonyms(server.index, request.pseudonyms) \
            if request.pseudonyms else None
        self.server = server
        state = {} if state is None else state
        self.uids: dict[str, str] = state.setdefault("Uids", {})
        self.patients: dict[str, list[str]] = state.setdefault("Patients", {})
        self._patient = ""

    def apply(self, dataset: Dataset) -> None:
        request = self.request
        self._patient = str(dataset.get("PatientID", "") or "")
        if request.anonymize:
            self._deidentify(dataset, ())
            self._pseudonymize(dataset)
        elif not request.keep_private_tags:
            dataset.remove_private_tags()
        for path in request.remove:
            for holder in path.datasets(dataset):
                if path.tag in holder:
                    del holder[path.tag]
        for path, value in request.replace:
            for holder in path.datasets(dataset):
                self._replace(holder, path.tag, value)
        if not request.anonymize:
            self._new_identifiers(dataset)
        if dataset.file_meta is not None and "SOPInstanceUID" in dataset:
            dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
            if request.anonymize:  # who sent the file, and private meta, may identify
                for tag in _META_SOURCES:
                    dataset.file_meta.pop(tag, None)

    def new_uid(self, original: str) -> str:
        """The new UID of ``original``: the same one throughout the operation."""
        if original not in self.uids:
            self.uids[original] = self.pseudonyms.uid(original, self._patient) \
                if self.pseudonyms and self.pseudonyms.policy.uids else generate_uid()
        return self.uids[original]

    def _new_identifiers(self, dataset: Dataset) -> None:
        """A modification gives new UIDs at its level and below, unless replaced or kept."""
        for level in (Level.STUDY, Level.SERIES, Level.INSTANCE):
            tag = IDENTIFIERS[level]
            if level >= self.request.level and tag in dataset and \
                    not self.request.replaced(tag) and not self.request.kept(tag):
                dataset[tag].value = self.new_uid(str(dataset[tag].value))

    # -- anonymization --

    def _deidentify(self, dataset: Dataset, trail: tuple[tuple[int, int], ...],
                    only_kept: bool = False) -> None:
        """Apply the Basic Profile at every depth, except to what ``Keep`` names.

        A sequence the profile would remove or empty, but that a ``Keep`` path goes
        through, keeps only what the paths name (``only_kept``).
        """
        keep = self.request.keep
        for tag in list(dataset.keys()):
            element = dataset[tag]
            if any(p.matches(trail, tag) for p in keep):
                continue
            action = Action.REMOVE if only_kept else action_of(tag)
            if tag.is_private and self.request.keep_private_tags and not only_kept:
                action = Action.KEEP
            items = list(element.value or []) if element.VR == "SQ" else []
            passing = any(p.leads_through((*trail, (tag, number)))
                          for p in keep for number in range(len(items)))
            if passing:
                strict = action in (Action.REMOVE, Action.EMPTY, Action.DUMMY)
                for number, item in enumerate(items):
                    self._deidentify(item, (*trail, (tag, number)), strict)
            elif action is Action.REMOVE:
                del dataset[tag]
            elif element.VR == "SQ":
                if action in (Action.EMPTY, Action.DUMMY):
                    element.value = Sequence()
                for number, item in enumerate(element.value or []):
                    self._deidentify(item, (*trail, (tag, number)))
            elif action is Action.EMPTY:
                element.value = None
            elif action is Action.DUMMY:
                element.value = self._dummy(element)
            elif action is Action.NEW_UID:
                element.value = self._mapped(element.value)

    def _mapped(self, value: Any) -> Any:
        if isinstance(value, MultiValue | list):
            return [self.new_uid(str(v)) for v in value]
        return self.new_uid(str(value)) if value else value

    def _dummy(self, element: DataElement) -> Any:
        vr = element.VR.split(" or ")[0]
        if vr == "UI":
            return self._mapped(element.value)
        if vr in _NUMBERS or vr == "AT":
            return 0
        if vr in _BINARY:
            return b"\0\0"
        return _DUMMIES.get(vr, "ANONYMIZED")

    def _pseudonymize(self, dataset: Dataset) -> None:
        """New PatientID and PatientName (one per original patient), and the marks of
        de-identification (PS3.15 E.1.1)."""
        if self._patient not in self.patients:
            self.patients[self._patient] = list(self.pseudonyms.patient(self._patient)) \
                if self.pseudonyms else [str(uuid.uuid4()), self._anonymous_name()]
        patient_id, name = self.patients[self._patient]
        request = self.request
        for tag, value, vr in ((PATIENT_ID, patient_id, "LO"), (PATIENT_NAME, name, "PN"),
                               (PATIENT_IDENTITY_REMOVED, "YES", "CS"),
                               (DEIDENTIFICATION_METHOD, f"Lanthorn {__version__} - {METHOD}",
                                "LO")):
            if not request.kept(tag):
                dataset[tag] = DataElement(tag, vr, value)

    def _anonymous_name(self) -> str:
        return f"Anonymized{self.server.index.next_counter('AnonymizedPatients')}"

    # -- replacing --

    def _replace(self, dataset: Dataset, tag: int, value: Any) -> None:
        vr = dataset[tag].VR if tag in dataset else self._vr(dataset, tag)
        try:  # an invalid value (too long for its VR...) is the client's error
            dataset[tag] = DataElement(tag, vr, self._value(vr, value),
                                       validation_mode=pydicom.config.RAISE)
        except (ValueError, TypeError, binascii.Error) as exc:
            raise BadRequest(f"cannot set {tag:08X} ({vr}) to {value!r}: {exc}") from None
        if isinstance(value, str) and not value.isascii() and \
                "SpecificCharacterSet" not in dataset:
            dataset.SpecificCharacterSet = "ISO_IR 192"

    def _vr(self, dataset: Dataset, tag: int) -> str:
        group, element = tag >> 16, tag & 0xFFFF
        if group % 2 == 0:
            vr = dictionary_VR(tag)
            return vr.split(" or ")[0]
        if element < 0x1000:  # a private creator
            return "LO"
        creator_tag = (group << 16) | (element >> 8)
        if creator_tag not in dataset and self.request.private_creator:
            dataset[creator_tag] = DataElement(creator_tag, "LO", self.request.private_creator)
        creator = dataset.get(creator_tag)
        try:
            return private_dictionary_VR(tag, str(creator.value)) if creator else "UN"
        except KeyError:
            return "UN"

    def _value(self, vr: str, value: Any) -> Any:
        if vr == "SQ":
            if not isinstance(value, list):
                raise ValueError("a sequence needs a list of objects")
            return Sequence([self._item(item) for item in value])
        if isinstance(value, list):
            raise ValueError("only a sequence takes a list")
        if vr in _BINARY:
            if value.startswith("data:") and ";base64," in value:
                return base64.b64decode(value.split(";base64,", 1)[1], validate=True)
            return value.encode()
        if vr in _NUMBERS:
            numbers = [_NUMBERS[vr](v) for v in value.split("\\")]
            return numbers[0] if len(numbers) == 1 else numbers
        return value

    def _item(self, item: dict[str, Any]) -> Dataset:
        dataset = Dataset()
        for name, value in item.items():
            self._replace(dataset, _tag(name, name), value)
        return dataset


# -- running an operation ---------------------------------------------------------------

def modified_file(server: Server, request: ModifyRequest, instance: Resource) -> bytes:
    """The changed file of one instance, not stored (``/instances/{id}/modify``)."""
    return _changed(server, Modifier(server, request), instance.id)


def _changed(server: Server, modifier: Modifier, instance_id: int) -> bytes:
    attachment = server.index.attachment(instance_id, DICOM_ATTACHMENT)
    if attachment is None:
        raise UnknownResource("this instance has no DICOM file")
    dataset = pydicom.dcmread(io.BytesIO(read_all(server.storage, attachment.uuid,
                                                  attachment.compression)))
    modifier.apply(dataset)
    if modifier.request.transcode:
        return transcode(server, dataset, [modifier.request.transcode])
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def run(server: Server, request: ModifyRequest, progress: Progress = lambda _: None,
        state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Carry out a modification: store the changed instances, then record where they
    came from; answer Orthanc's JSON. A failure (without ``Permissive``) removes what
    this operation stored and leaves the originals as they were.

    ``state`` (JSON-able) is updated before each progress report: the instances planned
    and done, the new UIDs, what was stored. A job saves it as its checkpoint and passes
    it back to resume after a restart with the same UIDs, without doing anything twice.
    """
    state = {} if state is None else state
    resources = [_lookup(server, public_id) for public_id in request.resources]
    if "Instances" not in state:  # planned once: new instances may join these resources
        state.update(Instances=list(dict.fromkeys(_instances(server, resources))), Done=0,
                     Stored=[], Failed=0)
    modifier = Modifier(server, request, state)
    instances = state["Instances"]
    for position in range(state["Done"], len(instances)):
        try:
            stored = server.ingest.store(_changed(server, modifier, instances[position]),
                                         request.origin)
            state["Stored"].append([*stored.public_ids, stored.status, instances[position]])
        except LanthornError as exc:
            if not request.permissive:
                _undo(server, state["Stored"])
                raise
            state["Failed"] += 1
            # Not the message: it may quote values, and logs must not show PHI.
            log.warning("could not modify instance %s: %s", instances[position],
                        exc.orthanc_error)
        state["Done"] = position + 1
        progress(state["Done"] / len(instances))
    if not state["Stored"]:
        raise BadRequest("no instance could be modified")
    done = [Done(tuple(row[:4]), row[4], row[5]) for row in state["Stored"]]
    _record(server, request, done)
    if not request.keep_source:
        _remove_sources(server, resources, done)
    return _answer(request, done, state["Failed"])


@dataclass(frozen=True)
class Done:
    """One instance stored by an operation: its new public IDs, and the original's ID."""

    public_ids: tuple[str, ...]
    status: str
    original: int


def _lookup(server: Server, public_id: str) -> Resource:
    found = server.index.lookup(public_id)
    if found is None:
        raise UnknownResource(f"no resource has the ID {public_id}")
    return found


def _instances(server: Server, resources: list[Resource]) -> Iterator[int]:
    for resource in resources:
        yield from server.index.descendants(resource.id, Level.INSTANCE)


def _undo(server: Server, stored: list[list[Any]]) -> None:
    for row in stored:
        found = server.index.lookup(row[Level.INSTANCE], Level.INSTANCE)
        if row[4] == "Success" and found is not None:
            server.delete(found)


def _record(server: Server, request: ModifyRequest, stored: list[Done]) -> None:
    """``ModifiedFrom`` / ``AnonymizedFrom`` on every new resource, labels if asked, and a
    change-log entry per new resource at the operation's level."""
    origins: dict[str, str] = {}
    for instance in stored:
        chain = [r.public_id for r in reversed(server.index.ancestors(instance.original))]
        for new, old in zip(instance.public_ids, chain, strict=True):
            if new != old:
                origins.setdefault(new, old)
    change = CHANGES.get((request.anonymize, request.level))
    tops = dict.fromkeys(i.public_ids[request.level] for i in stored)
    server.index.record_derivation(
        origins, "AnonymizedFrom" if request.anonymize else "ModifiedFrom",
        [(change, request.level, top) for top in tops if top in origins] if change else [],
        copy_labels=request.keep_labels)


def _remove_sources(server: Server, resources: list[Resource], stored: list[Done]) -> None:
    """``KeepSource: false``: delete the originals, unless a change kept their identity."""
    created = {public_id for instance in stored for public_id in instance.public_ids}
    for resource in resources:
        if resource.public_id not in created and server.index.lookup(resource.public_id):
            server.delete(resource)


def _answer(request: ModifyRequest, stored: list[Done], failed: int) -> dict[str, Any]:
    answer: dict[str, Any] = {"Description": "REST API", "FailedInstancesCount": failed,
                              "InstancesCount": len(stored),
                              "IsAnonymization": request.anonymize}
    first = stored[0].public_ids
    if not request.bulk:
        level = request.level
        return {**answer, "ID": first[level], "Path": f"/{level.plural}/{first[level]}",
                "PatientID": first[Level.PATIENT], "Type": level.title}
    listed: dict[str, Level] = {}
    for level in reversed(Level):
        for instance in stored:
            listed.setdefault(instance.public_ids[level], level)
    answer["Resources"] = [{"ID": public_id, "Path": f"/{level.plural}/{public_id}",
                            "Type": level.title} for public_id, level in listed.items()]
    return answer


def bulk_delete(server: Server, public_ids: list[str]) -> None:
    """Delete several resources of any level; unknown IDs are a 404 before any deletion."""
    resources = [_lookup(server, public_id) for public_id in public_ids]
    for resource in resources:
        if server.index.lookup(resource.public_id) is not None:  # not gone with a parent
            server.delete(resource)
