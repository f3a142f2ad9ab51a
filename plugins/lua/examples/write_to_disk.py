"""Write to disk in Python: once a series is stable, copy its files to
``TARGET/<PatientID>/<StudyDate>/<SeriesDescription>/<instance id>.dcm``.

Load with ``"Plugins": ["write_to_disk.py"]``; the copies go where the environment
variable ``LANTHORN_COPIES`` says. Stable events come from
the change log, once per series even with several server processes.
"""

import os
import re
from pathlib import Path

from lanthorn import ChangeType, Server, hookimpl
from lanthorn.index.records import Change
from lanthorn.ingest import DICOM_ATTACHMENT
from lanthorn.model import Level
from lanthorn.storage import read_all

TARGET = Path(os.environ.get("LANTHORN_COPIES", "copies"))
TAGS = {"PatientID": 0x00100020, "StudyDate": 0x00080020, "SeriesDescription": 0x0008103E}


def safe(text: str) -> str:
    return re.sub(r"[^\w-]", "_", text, flags=re.ASCII)


@hookimpl
def on_change(server: Server, change: Change) -> None:
    if change.change_type != ChangeType.StableSeries:
        return
    index = server.index
    series = index.lookup(change.public_id, Level.SERIES)
    if series is None:  # deleted meanwhile
        return
    series_tags, study_tags, patient_tags = (index.main_tags_of(r.id)
                                             for r in index.ancestors(series.id)[:3])
    folder = TARGET / safe(patient_tags.get(TAGS["PatientID"], "")) \
        / safe(study_tags.get(TAGS["StudyDate"], "")) \
        / safe(series_tags.get(TAGS["SeriesDescription"], ""))
    folder.mkdir(parents=True, exist_ok=True)
    instances = index.descendants(series.id, Level.INSTANCE)
    files = index.attachments_of(instances, DICOM_ATTACHMENT)
    for public_id, instance in zip(index.public_ids_of(instances), instances, strict=True):
        attachment = files[instance]
        data = read_all(server.storage, attachment.uuid, attachment.compression)
        (folder / f"{public_id}.dcm").write_bytes(data)
