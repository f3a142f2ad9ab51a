"""Values of tags asked about a resource, without reading its files.

REST ``RequestedTags`` and C-FIND return keys both come from here: the main tags the
index keeps (of the resource and its ancestors), the tags Orthanc computes from the
hierarchy (``NumberOfStudyRelatedInstances``, ``ModalitiesInStudy``...), and for any
other tag the header the index saved for the resource's first instance.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
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


def index_values(server: Server, resource_id: int, level: Level,
                 tags: Sequence[int]) -> tuple[dict[int, str], list[int]]:
    """The values the index knows (stored or computed), and the tags left for a header."""
    index = server.index
    chain = {r.level: r.id for r in index.ancestors(resource_id)}
    values: dict[int, str] = {}
    left = []
    tags_of: dict[int, dict[int, str]] = {}  # one query per resource, not one per tag
    for tag in tags:
        owner = server.main_tags.level_of(tag)
        if tag in COUNT_TAGS and COUNT_TAGS[tag][0] == level:
            values[tag] = str(len(index.descendants(resource_id, COUNT_TAGS[tag][1])))
        elif tag == MODALITIES_IN_STUDY and level == Level.STUDY:
            series = index.descendants(resource_id, Level.SERIES)
            values[tag] = "\\".join(sorted({index.main_tags_of(s).get(MODALITY, "")
                                            for s in series} - {""}))
        elif tag == SOP_CLASSES_IN_STUDY and level == Level.STUDY:
            instances = index.describe(index.descendants(resource_id, Level.INSTANCE))
            values[tag] = "\\".join(sorted({i.metadata.get("SopClassUid", "")
                                            for i in instances} - {""}))
        elif owner is not None and owner <= level:
            owner_id = chain[owner]
            if owner_id not in tags_of:
                tags_of[owner_id] = index.main_tags_of(owner_id)
            found = tags_of[owner_id].get(tag)
            if found is not None:
                values[tag] = found
        else:
            left.append(tag)
    return values, left


def first_header(server: Server, resource_id: int) -> Dataset | None:
    """The saved header of the resource's first instance (None for an empty resource)."""
    instances = server.index.descendants(resource_id, Level.INSTANCE, limit=1)
    return read_header(server.index.header(instances[0])) if instances else None


def requested_tags(server: Server, resource_id: int, level: Level,
                   tags: Sequence[int]) -> dict[int, str]:
    """Values of the requested tags as Orthanc's strings (absent tags are left out)."""
    values, left = index_values(server, resource_id, level, tags)
    header = first_header(server, resource_id) if left else None
    if header is not None:
        for tag in left:
            if tag in header:
                values[tag] = element_string(header[tag]) or ""
    return values


def requested_dataset(server: Server, resource_id: int, level: Level,
                      asked: Sequence[DataElement]) -> Dataset:
    """The asked elements with the resource's values, typed as DICOM (C-FIND answers,
    QIDO-RS results): index values first, then the first instance's header; an element
    nobody knows is returned empty, as DICOM wants."""
    values, left = index_values(server, resource_id, level, [e.tag for e in asked])
    header = first_header(server, resource_id) if left else None
    answer = Dataset()
    for element in asked:
        if element.tag in values:
            answer.add(_element(element, values[element.tag]))
        elif header is not None and element.tag in header:
            answer.add(copy.deepcopy(header[element.tag]))
        else:
            answer.add(DataElement(element.tag, element.VR, [] if element.VR == "SQ" else None))
    return answer


def _element(asked: DataElement, text: str) -> DataElement:
    """An element from the index's string; stored values go back as they are."""
    vr = dictionary_VR(asked.tag) if dictionary_has_tag(asked.tag) else asked.VR
    if vr in INTEGER_VRS | FLOAT_VRS and text:
        kind = int if vr in INTEGER_VRS else float
        numbers = [kind(part) for part in text.split("\\")]
        return DataElement(asked.tag, vr, numbers if len(numbers) > 1 else numbers[0])
    return DataElement(asked.tag, vr, text, validation_mode=pydicom_config.IGNORE)
