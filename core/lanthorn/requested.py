"""Values of tags asked about a resource, without reading its files.

REST ``RequestedTags`` and C-FIND return keys both come from here: the main tags the
index keeps (of the resource and its ancestors), the tags Orthanc computes from the
hierarchy (``NumberOfStudyRelatedInstances``, ``ModalitiesInStudy``...), and for any
other tag the header the index saved for the resource's first instance.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from .dicom import element_string, read_header
from .model import Level, parse_tag
from .query import MODALITIES_IN_STUDY, MODALITY

if TYPE_CHECKING:
    from .server import Server

COUNT_TAGS = {
    parse_tag("NumberOfPatientRelatedStudies"): (Level.PATIENT, Level.STUDY),
    parse_tag("NumberOfPatientRelatedSeries"): (Level.PATIENT, Level.SERIES),
    parse_tag("NumberOfPatientRelatedInstances"): (Level.PATIENT, Level.INSTANCE),
    parse_tag("NumberOfStudyRelatedSeries"): (Level.STUDY, Level.SERIES),
    parse_tag("NumberOfStudyRelatedInstances"): (Level.STUDY, Level.INSTANCE),
    parse_tag("NumberOfSeriesRelatedInstances"): (Level.SERIES, Level.INSTANCE),
}
SOP_CLASSES_IN_STUDY = parse_tag("SOPClassesInStudy")
#: Tags computed from the hierarchy: they can be returned, not matched.
COMPUTED_TAGS = frozenset({*COUNT_TAGS, SOP_CLASSES_IN_STUDY})
INTEGER_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV"})
FLOAT_VRS = frozenset({"FL", "FD"})
NUMERIC_VRS = INTEGER_VRS | FLOAT_VRS


@dataclass
class Known:
    """What the index knows of one resource: values (stored or computed) and, when some
    asked tag is neither, the saved header of the resource's first instance."""

    values: dict[int, str]
    header: Dataset | None


def known(server: Server, ids: Sequence[int], level: Level,
          tags: Sequence[int]) -> Iterator[Known]:
    """Known values of resources of one level, in the order given: a fixed number of
    index queries for each ID_BATCH resources (not several per resource), so that a
    QIDO-RS or C-FIND answer costs about the same for one match as for a hundred, and
    in one transaction per batch (the yields are not inside it)."""
    left = [t for t in tags if not _computed(t, level) and _owner(server, t, level) is None]
    for start in range(0, len(ids), server.index.ID_BATCH):
        batch = ids[start:start + server.index.ID_BATCH]
        with server.index.read():
            counts = _counter(server, batch, level)
            values = _index_values(server, batch, level, tags, counts)
            headers = _first_headers(server, batch, level, counts) if left else {}
        for resource_id in batch:
            yield Known(values[resource_id], headers.get(resource_id))


Counts = Callable[[Level], dict[int, tuple[int, int]]]


def _counter(server: Server, ids: Sequence[int], level: Level) -> Counts:
    """Descendant counts (and first descendants) of ``ids``, each level asked once."""
    return functools.cache(lambda below: server.index.descendant_counts(ids, level, below))


def _computed(tag: int, level: Level) -> bool:
    if tag in COUNT_TAGS:
        return COUNT_TAGS[tag][0] == level
    return tag in (MODALITIES_IN_STUDY, SOP_CLASSES_IN_STUDY) and level == Level.STUDY


def _owner(server: Server, tag: int, level: Level) -> Level | None:
    """The level (``level`` or above) whose main tags hold ``tag``, if any."""
    owner = server.main_tags.level_of(tag)
    return owner if owner is not None and owner <= level else None


def _index_values(server: Server, ids: Sequence[int], level: Level, tags: Sequence[int],
                  counts: Counts) -> dict[int, dict[int, str]]:
    index = server.index
    values: dict[int, dict[int, str]] = {i: {} for i in ids}
    computed = [t for t in tags if _computed(t, level)]
    owners = {t: owner for t in tags
              if t not in computed and (owner := _owner(server, t, level)) is not None}
    if owners:
        # chains[i][k]: the ancestor k levels up, as far up as the highest owner
        chains = index.lineages(ids, level - min(owners.values()))
        holder = {(i, owner): chain[level - owner] for i, chain in chains.items()
                  for owner in set(owners.values()) if level - owner < len(chain)}
        kept = index.main_tags_of_many(list(set(holder.values())))
        for (resource_id, owner), holder_id in holder.items():
            for tag in (t for t, o in owners.items() if o == owner):
                if tag in kept[holder_id]:
                    values[resource_id][tag] = kept[holder_id][tag]
    for tag in computed:
        for resource_id, value in _computed_values(server, ids, tag, counts).items():
            values[resource_id][tag] = value
    return values


def _computed_values(server: Server, ids: Sequence[int], tag: int,
                     counts: Counts) -> dict[int, str]:
    """A count, ModalitiesInStudy or SOPClassesInStudy of each resource."""
    index = server.index
    if tag in COUNT_TAGS:
        return {i: str(count) for i, (count, _) in counts(COUNT_TAGS[tag][1]).items()}
    below = index.descendants_of(ids, Level.STUDY, Level.SERIES if tag == MODALITIES_IN_STUDY
                                 else Level.INSTANCE)
    every = [d for found in below.values() for d in found]
    if tag == MODALITIES_IN_STUDY:
        of = {i: found.get(MODALITY, "") for i, found in index.main_tags_of_many(every).items()}
    else:
        of = index.metadata_of_many(every, "SopClassUid")
    return {i: "\\".join(sorted({of.get(d, "") for d in found} - {""}))
            for i, found in below.items()}


def _first_headers(server: Server, ids: Sequence[int], level: Level,
                   counts: Counts) -> dict[int, Dataset]:
    """The saved header of each resource's first instance (none for an empty one)."""
    if level == Level.INSTANCE:
        first = {i: i for i in ids}
    else:
        first = {i: instance for i, (_, instance) in counts(Level.INSTANCE).items() if instance}
    headers = server.index.headers(list(first.values()))
    return {i: read_header(headers[instance]) for i, instance in first.items()
            if instance in headers}


def first_header(server: Server, resource_id: int) -> Dataset | None:
    """The saved header of the resource's first instance (None for an empty resource)."""
    instances = server.index.descendants(resource_id, Level.INSTANCE, limit=1)
    return read_header(server.index.header(instances[0])) if instances else None


def requested_tags(server: Server, resource_id: int, level: Level,
                   tags: Sequence[int]) -> dict[int, str]:
    """Values of the requested tags as Orthanc's strings (absent tags are left out)."""
    (found,) = known(server, [resource_id], level, tags)
    values = dict(found.values)
    if found.header is not None:
        for tag in tags:
            if tag not in values and tag in found.header:
                values[tag] = element_string(found.header[tag]) or ""
    return values


#: An asked element's value for one resource: the index's string, the element of the
#: first instance's header, or None when neither knows it.
Value = str | DataElement | None


def requested_values(server: Server, ids: Sequence[int], level: Level,
                     asked: Sequence[DataElement]) -> Iterator[list[Value]]:
    """Each resource's values of the asked elements, in their order: index values first,
    then the first instance's header."""
    for found in known(server, ids, level, [e.tag for e in asked]):
        header = found.header
        yield [found.values[e.tag] if e.tag in found.values
               else header[e.tag] if header is not None and e.tag in header
               else None for e in asked]


def requested_datasets(server: Server, ids: Sequence[int], level: Level,
                       asked: Sequence[DataElement]) -> Iterator[Dataset]:
    """The asked elements with each resource's values, typed as DICOM (QIDO-RS
    results); an element nobody knows is returned empty, as DICOM wants."""
    typed = [(element, asked_vr(element)) for element in asked]  # once, not per answer
    for values in requested_values(server, ids, level, asked):
        answer = Dataset()
        for (element, vr), value in zip(typed, values, strict=True):
            answer.add(typed_element(element, vr, value))
        yield answer


def typed_element(asked: DataElement, vr: str, value: Value) -> DataElement:
    """An asked element with its value: stored strings go back as they are."""
    if isinstance(value, DataElement):
        return copy.deepcopy(value)
    if value is None:
        return DataElement(asked.tag, asked.VR, [] if asked.VR == "SQ" else None)
    if vr in NUMERIC_VRS and value:
        kind = int if vr in INTEGER_VRS else float
        numbers = [kind(part) for part in value.split("\\")]
        return DataElement(asked.tag, vr, numbers if len(numbers) > 1 else numbers[0])
    return DataElement(asked.tag, vr, value, validation_mode=pydicom_config.IGNORE)


def asked_vr(asked: DataElement) -> str:
    """The dictionary's VR of an asked element (the one asked when it has none)."""
    return dictionary_VR(asked.tag) if dictionary_has_tag(asked.tag) else asked.VR
