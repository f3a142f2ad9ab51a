"""A realistic script written with the pyorthanc client library against a real
``lanthorn serve``: upload, find, label, anonymize (now and as a job), archives, jobs."""

from __future__ import annotations

import io
import zipfile

import pydicom
import pyorthanc

from lanthorn.testing import ServerProcess, make_instance


def test_a_pyorthanc_script(lanthorn_process: ServerProcess) -> None:
    with pyorthanc.Orthanc(lanthorn_process.start().url) as client:
        script(client)


def script(client: pyorthanc.Orthanc) -> None:
    for number in range(3):
        dataset = pydicom.dcmread(io.BytesIO(make_instance(
            PatientID="PY1", PatientName="PYTHON^MONTY", StudyInstanceUID="1.2.840.99.1",
            SeriesInstanceUID="1.2.840.99.1.1",
            InstanceNumber=str(number))))
        pyorthanc.upload(client, dataset)
    [study] = pyorthanc.find_studies(client, query={"PatientName": "PYTHON*"})
    assert (study.patient_information["PatientID"], len(study.series[0].instances)) == ("PY1", 3)

    study.add_label("reviewed")
    assert [s.id_ for s in pyorthanc.find_studies(client, labels=["reviewed"])] == [study.id_]

    anonymized = study.anonymize(keep=["StudyDescription"])
    assert anonymized.patient_information["PatientID"] != "PY1"
    assert anonymized.uid != study.uid

    job = study.anonymize_as_job()
    job.wait_until_completion(time_interval=1)
    assert (job.state.value, job.type) == ("Success", "ResourceModification")
    from_job = pyorthanc.Study(job.content["ID"], client)
    assert len(from_job.series[0].instances) == 3

    with zipfile.ZipFile(io.BytesIO(study.get_zip())) as archive:
        names = archive.namelist()
    assert len(names) == 3 and all(name.endswith(".dcm") for name in names)
    assert job.id_ in client.get_jobs()
    assert len(pyorthanc.find_studies(client)) == 3  # the original and two anonymized
