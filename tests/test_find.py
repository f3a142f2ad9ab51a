"""POST /tools/find and /tools/lookup: DICOM matching rules through the one query engine."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.uid import generate_uid
from sqlalchemy import event

from lanthorn import Server
from lanthorn.model import Level, parse_tag
from lanthorn.query import Query
from lanthorn.requested import requested_datasets
from lanthorn.rest.describe import describe_many

MakeInstance = Callable[..., bytes]

pytestmark = pytest.mark.all_index_backends


@dataclass(frozen=True)
class Stored:
    """One uploaded instance: its public IDs and the UIDs it was made with."""

    patient: str
    study: str
    series: str
    instance: str
    study_uid: str
    sop_uid: str


#: name: (patient, study, series, tags). Same patient/study/series letters share UIDs.
ARCHIVE = {
    "john_ct": ("P1", "S1", "S1a", {"PatientName": "DOE^JOHN", "StudyDate": "20200101",
                                    "Modality": "CT", "SliceThickness": "1.0"}),
    "john_ct2": ("P1", "S1", "S1a", {"PatientName": "DOE^JOHN", "StudyDate": "20200101",
                                     "Modality": "CT", "ConvolutionKernel": "BONE"}),
    "john_mr": ("P1", "S1", "S1b", {"PatientName": "DOE^JOHN", "StudyDate": "20200101",
                                    "Modality": "MR"}),
    "john_later": ("P1", "S2", "S2a", {"PatientName": "DOE^JOHN", "StudyDate": "20210615",
                                       "Modality": "MR"}),
    "jane": ("P2", "S3", "S3a", {"PatientName": "Doe^Jane", "StudyDate": "20220301",
                                 "Modality": "CT"}),
    "anna": ("P3", "S4", "S4a", {"PatientName": "SMITH^ANNA", "StudyDate": "20190101",
                                 "Modality": "US"}),
}


@pytest.fixture
def archive(lanthorn_client: Any, ct_instance: MakeInstance) -> dict[str, Stored]:
    uids: dict[str, str] = {}
    stored = {}
    for name, (patient, study, series, tags) in ARCHIVE.items():
        study_uid = uids.setdefault(study, generate_uid())
        series_uid = uids.setdefault(series, generate_uid())
        sop_uid = generate_uid()
        data = ct_instance(PatientID=patient, StudyInstanceUID=study_uid,
                           SeriesInstanceUID=series_uid, SOPInstanceUID=sop_uid, **tags)
        answer = lanthorn_client.post("/instances", content=data).json()
        stored[name] = Stored(answer["ParentPatient"], answer["ParentStudy"],
                              answer["ParentSeries"], answer["ID"], study_uid, sop_uid)
    return stored


def find(client: Any, level: str, query: dict[str, str], **options: Any) -> Any:
    response = client.post("/tools/find", json={"Level": level, "Query": query, **options})
    assert response.status_code == 200, response.text
    return response.json()


def ids(archive: dict[str, Stored], level: str, *names: str) -> list[str]:
    """The distinct IDs at ``level`` of the named instances, in upload order."""
    return list(dict.fromkeys(getattr(archive[n], level) for n in names))


LEVELS = {"Patient": "patient", "Study": "study", "Series": "series", "Instance": "instance"}


@pytest.mark.parametrize("level", LEVELS)
def test_each_level(level: str, lanthorn_client: Any, archive: dict[str, Stored]) -> None:
    every = ids(archive, LEVELS[level], *ARCHIVE)
    assert find(lanthorn_client, level, {}) == every
    assert find(lanthorn_client, level.lower(), {"PatientID": "P2"}) == \
        ids(archive, LEVELS[level], "jane")


def test_exact_and_wildcards(lanthorn_client: Any, archive: dict[str, Stored]) -> None:
    assert find(lanthorn_client, "Patient", {"PatientID": "P1"}) == \
        ids(archive, "patient", "john_ct")
    assert find(lanthorn_client, "Patient", {"PatientID": "P"}) == []
    assert find(lanthorn_client, "Patient", {"PatientName": "DOE*"}) == \
        ids(archive, "patient", "john_ct", "jane")
    assert find(lanthorn_client, "Patient", {"PatientName": "D?E^J*"}) == \
        ids(archive, "patient", "john_ct", "jane")
    assert find(lanthorn_client, "Patient", {"PatientName": "?OE^JOHN"}) == \
        ids(archive, "patient", "john_ct")
    assert find(lanthorn_client, "Patient", {"PatientName": "DOE?JOHN"}) == \
        ids(archive, "patient", "john_ct")
    assert find(lanthorn_client, "Patient", {"PatientName": "DOE_JOHN"}) == []  # not SQL's _
    assert find(lanthorn_client, "Patient", {"PatientName": "%"}) == []  # not SQL's %


def test_person_names_ignore_case_unless_asked(lanthorn_client: Any,
                                               archive: dict[str, Stored]) -> None:
    john_and_jane = ids(archive, "patient", "john_ct", "jane")
    assert find(lanthorn_client, "Patient", {"PatientName": "doe*"}) == john_and_jane
    assert find(lanthorn_client, "Patient", {"PatientName": "doe^jane"}) == \
        ids(archive, "patient", "jane")
    assert find(lanthorn_client, "Patient", {"PatientName": "doe*"}, CaseSensitive=True) == []
    assert find(lanthorn_client, "Patient", {"PatientName": "Doe*"}, CaseSensitive=True) == \
        ids(archive, "patient", "jane")
    assert find(lanthorn_client, "Series", {"Modality": "ct"}) == []  # only PN ignores case


@pytest.mark.lanthorn_config(CaseSensitivePN=True)
def test_case_sensitive_pn_by_configuration(lanthorn_client: Any,
                                            archive: dict[str, Stored]) -> None:
    assert find(lanthorn_client, "Patient", {"PatientName": "doe*"}) == []
    assert find(lanthorn_client, "Patient", {"PatientName": "doe*"}, CaseSensitive=False) == \
        ids(archive, "patient", "john_ct", "jane")


def test_date_ranges(lanthorn_client: Any, archive: dict[str, Stored]) -> None:
    def studies(date: str) -> list[str]:
        return find(lanthorn_client, "Study", {"StudyDate": date})

    assert studies("20200101-") == ids(archive, "study", "john_ct", "john_later", "jane")
    assert studies("-20200101") == ids(archive, "study", "john_ct", "anna")
    assert studies("20200102-20220301") == ids(archive, "study", "john_later", "jane")
    assert studies("20200101") == ids(archive, "study", "john_ct")
    assert studies("20200101\\20190101") == ids(archive, "study", "john_ct", "anna")


def test_lists_and_uid_lists(lanthorn_client: Any, archive: dict[str, Stored]) -> None:
    assert find(lanthorn_client, "Series", {"Modality": "MR\\US"}) == \
        ids(archive, "series", "john_mr", "john_later", "anna")
    uids = f"{archive['jane'].study_uid}\\{archive['anna'].study_uid}"
    assert find(lanthorn_client, "Study", {"StudyInstanceUID": uids}) == \
        ids(archive, "study", "jane", "anna")
    assert find(lanthorn_client, "Instance", {"SOPInstanceUID": archive["anna"].sop_uid}) == \
        ids(archive, "instance", "anna")


def test_universal_matching(lanthorn_client: Any, archive: dict[str, Stored]) -> None:
    every = ids(archive, "study", *ARCHIVE)
    assert find(lanthorn_client, "Study", {"PatientName": "", "StudyDate": "*"}) == every
    assert find(lanthorn_client, "Study", {"AccessionNumber": "*"}) == every


@pytest.mark.parametrize("level", ["Study", "Series", "Instance"])
def test_patient_tag_below_the_patient_level(level: str, lanthorn_client: Any,
                                             archive: dict[str, Stored]) -> None:
    johns = ["john_ct", "john_ct2", "john_mr", "john_later"]
    assert find(lanthorn_client, level, {"PatientName": "DOE^JOHN"}) == \
        ids(archive, LEVELS[level], *johns)
    assert find(lanthorn_client, level, {"PatientID": "P3", "StudyDate": "2019*"}) == \
        ids(archive, LEVELS[level], "anna")


def test_modalities_in_study(lanthorn_client: Any, archive: dict[str, Stored]) -> None:
    assert find(lanthorn_client, "Study", {"ModalitiesInStudy": "MR"}) == \
        ids(archive, "study", "john_ct", "john_later")
    assert find(lanthorn_client, "Study", {"ModalitiesInStudy": "US\\CT"}) == \
        ids(archive, "study", "john_ct", "jane", "anna")


def test_tag_kept_only_in_headers(lanthorn_client: Any, archive: dict[str, Stored]) -> None:
    assert find(lanthorn_client, "Instance", {"SliceThickness": "1.0"}) == \
        ids(archive, "instance", "john_ct")
    assert find(lanthorn_client, "Instance", {"ConvolutionKernel": "B*"}) == \
        ids(archive, "instance", "john_ct2")
    assert find(lanthorn_client, "Instance", {"ConvolutionKernel": "B*", "Modality": "MR"}) == []
    assert find(lanthorn_client, "Instance", {"SliceThickness": "1.0"}, Since=1) == []


def test_expand_answers_like_the_resource_route(lanthorn_client: Any,
                                                archive: dict[str, Stored]) -> None:
    for level, key in LEVELS.items():
        expanded = find(lanthorn_client, level, {"PatientID": "P2"}, Expand=True)
        resource = getattr(archive["jane"], key)
        route = f"/{Level.parse(level).plural}/{resource}"
        assert expanded == [lanthorn_client.get(route).json()]


def test_limit_and_since(lanthorn_client: Any, archive: dict[str, Stored]) -> None:
    every = ids(archive, "instance", *ARCHIVE)
    assert find(lanthorn_client, "Instance", {}, Limit=2) == every[:2]
    assert find(lanthorn_client, "Instance", {}, Since=2, Limit=3) == every[2:5]
    assert find(lanthorn_client, "Instance", {}, Since=5) == every[5:]
    assert find(lanthorn_client, "Instance", {"PatientID": "P1"}, Since=1, Limit=2) == \
        ids(archive, "instance", "john_ct2", "john_mr")


@pytest.mark.lanthorn_config(LimitFindResults=2, LimitFindInstances=3)
def test_configured_limits(lanthorn_client: Any, archive: dict[str, Stored]) -> None:
    assert find(lanthorn_client, "Study", {}) == ids(archive, "study", *ARCHIVE)[:2]
    assert find(lanthorn_client, "Study", {}, Limit=1) == ids(archive, "study", *ARCHIVE)[:1]
    assert find(lanthorn_client, "Instance", {}) == ids(archive, "instance", *ARCHIVE)[:3]


def test_requested_tags(lanthorn_client: Any, archive: dict[str, Stored]) -> None:
    (study,) = find(lanthorn_client, "Study", {"StudyInstanceUID": archive["john_ct"].study_uid},
                    Expand=True, RequestedTags=["PatientName", "ModalitiesInStudy",
                                                "NumberOfStudyRelatedInstances",
                                                "NumberOfStudyRelatedSeries",
                                                "SliceThickness"])
    assert study["RequestedTags"] == {
        "PatientName": "DOE^JOHN", "ModalitiesInStudy": "CT\\MR",
        "NumberOfStudyRelatedInstances": "3", "NumberOfStudyRelatedSeries": "2",
        "SliceThickness": "1.0",
    }
    (series,) = find(lanthorn_client, "Series", {"Modality": "US"}, Expand=True,
                     RequestedTags=["NumberOfSeriesRelatedInstances", "StudyDate"])
    assert series["RequestedTags"] == {"NumberOfSeriesRelatedInstances": "1",
                                       "StudyDate": "20190101"}


def test_requested_values_are_read_in_batches(lanthorn_server: Server, lanthorn_client: Any,
                                              archive: dict[str, Stored]) -> None:
    """C-FIND answers and QIDO-RS results cost a fixed number of index statements for a
    page of matches, whatever its size, and each match gets its own values."""
    asked = [DataElement(parse_tag(k), dictionary_VR(k), None) for k in (
        "PatientName", "ModalitiesInStudy", "NumberOfStudyRelatedInstances",
        "NumberOfStudyRelatedSeries", "SOPClassesInStudy", "SliceThickness", "StudyDate")]
    statements: list[str] = []  # this thread's: the server's own threads run statements too
    event.listen(lanthorn_server.index.engine, "before_cursor_execute",
                 lambda _conn, _cursor, statement, *_: threading.get_ident() == here
                 and statements.append(statement))
    here = threading.get_ident()
    every = lanthorn_server.index.find(Query(Level.STUDY))
    counted = []
    for ids_ in (every, every[:1], every):  # the first round opens connections
        statements.clear()
        answers = list(requested_datasets(lanthorn_server, ids_, Level.STUDY, asked))
        counted.append(len(statements))
    assert len(every) == 4 and counted[1] == counted[2]
    john = answers[0]
    assert (john.PatientName, john.ModalitiesInStudy, john.NumberOfStudyRelatedInstances,
            john.NumberOfStudyRelatedSeries, john.SliceThickness, john.StudyDate) \
        == ("DOE^JOHN", ["CT", "MR"], 3, 2, 1.0, "20200101")
    assert [a.PatientName for a in answers[1:]] == ["DOE^JOHN", "Doe^Jane", "SMITH^ANNA"]
    assert [a.NumberOfStudyRelatedInstances for a in answers[1:]] == [1, 1, 1]


def test_an_answer_reads_the_index_in_one_transaction(lanthorn_server: Server,
                                                      archive: dict[str, Stored]) -> None:
    """Nested ``read()`` calls of one thread share the outer transaction (a find and the
    description of its matches: one BEGIN, one connection); another thread gets its own."""
    index = lanthorn_server.index
    begins: list[int] = []
    event.listen(index.engine, "begin", lambda _conn: begins.append(threading.get_ident()))
    here = threading.get_ident()
    with index.read() as outer:
        ids = index.find(Query(Level.STUDY))
        described = describe_many(lanthorn_server, ids)
        with index.read() as inner:
            assert inner is outer
        elsewhere = threading.Thread(target=lambda: index.find(Query(Level.STUDY)))
        elsewhere.start()
        elsewhere.join()
    assert len(described) == 4
    assert begins.count(here) == 1 and begins.count(elsewhere.ident) == 1
    index.find(Query(Level.STUDY))  # after the outer one ended: a transaction of its own
    assert begins.count(here) == 2


def test_unknown_label_finds_nothing(lanthorn_client: Any, archive: dict[str, Stored]) -> None:
    assert find(lanthorn_client, "Study", {}, Labels=["nosuchlabel"], LabelsConstraint="All") \
        == []
    assert find(lanthorn_client, "Study", {}, Labels=["nosuchlabel"], LabelsConstraint="None") \
        == ids(archive, "study", *ARCHIVE)


@pytest.mark.parametrize("body", [
    b'{"Level": "Foo", "Query": {}}',
    b'{"Level": "Study"}',
    b'{"Level": "Study", "Query": []}',
    b'{"Level": "Study",',
    b'["Study"]',
    b'{"Level": "Study", "Query": {"NoSuchTag": "x"}}',
    b'{"Level": "Study", "Query": {"PatientName": 3}}',
    b'{"Level": "Study", "Query": {}, "Limit": -1}',
    b'{"Level": "Study", "Query": {}, "Labels": "x"}',
    b'{"Level": "Study", "Query": {}, "LabelsConstraint": "Some"}',
    b'{"Level": "Study", "Query": {}, "RequestedTags": ["NoSuchTag"], "Expand": true}',
    b'{"Level": "Study", "Query": {"StudyInstanceUID": "1.2.*"}}',
])
def test_bad_requests(body: bytes, lanthorn_client: Any) -> None:
    response = lanthorn_client.post("/tools/find", content=body)
    assert response.status_code == 400
    answer = response.json()
    assert (answer["HttpStatus"], answer["OrthancStatus"], answer["Message"]) == \
        (400, 8, "Bad request")
    assert answer["Details"]


def test_lookup(lanthorn_client: Any, archive: dict[str, Stored]) -> None:
    def lookup(value: str) -> Any:
        response = lanthorn_client.post("/tools/lookup", content=value)
        assert response.status_code == 200
        return response.json()

    anna = archive["anna"]
    assert lookup(anna.sop_uid) == [
        {"ID": anna.instance, "Path": f"/instances/{anna.instance}", "Type": "Instance"}]
    assert lookup(anna.study_uid) == [
        {"ID": anna.study, "Path": f"/studies/{anna.study}", "Type": "Study"}]
    assert lookup("P3") == [
        {"ID": anna.patient, "Path": f"/patients/{anna.patient}", "Type": "Patient"}]
    assert lookup("nothing") == []


@pytest.mark.lanthorn_config(LimitFindResults=1)
def test_count_resources_counts_what_find_lists(lanthorn_client: Any,
                                                archive: dict[str, Stored]) -> None:
    def count(body: dict[str, Any]) -> Any:
        return lanthorn_client.post("/tools/count-resources", json=body)

    assert count({"Level": "Study", "Query": {}}).json() == {"Count": 4}  # not capped
    assert count({"Level": "Series", "Query": {"Modality": "MR"}}).json() == {"Count": 2}
    assert count({"Level": "Instance", "Query": {"PatientName": "doe*"}}).json() == \
        {"Count": 5}
    assert count({"Level": "Patient", "Query": {"PatientID": "none"}}).json() == {"Count": 0}
    assert count({"Level": "Nowhere", "Query": {}}).status_code == 400
    assert count({"Level": "Study"}).status_code == 400
