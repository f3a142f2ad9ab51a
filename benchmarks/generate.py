"""Deterministic benchmark datasets: P patients x S studies x R series x I instances.

Every UID, name, date and pixel byte derives from the spec and a seed, so the same
command gives the same files on any machine, and two servers compared in one run
receive identical bytes. A different seed gives a disjoint dataset (new patients and
UIDs), which is how the runner uploads new instances on every run.

    python benchmarks/generate.py ct:1x1x2x100 --seed demo --out dataset

Profiles: ``ct`` is 512x512 16-bit noise (about 0.5 MB a file, image-bound; the worst
case for any image codec), ``phantom`` the same size with a CT-like body section (air,
soft tissue, lungs, spine, in Hounsfield units through a rescale: what preview and
compression meet in practice), ``small`` is 64x64 noise (about 8 KB, index-bound) with
the 26 elements the others have too, ``scanner`` the same with the header of a real
CT scanner's file besides (pydicom's ``CT_small.dcm``: 255 elements in all, private ones
included, about 15 KB): what parsing meets in practice. The files come from
``lanthorn.testing.make_instance`` and ``make_image``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import io
import itertools
import random
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from lanthorn.testing import CT_IMAGE_STORAGE, make_image, make_instance

#: Rows (and columns) of each profile's images.
PROFILES = {"ct": 512, "phantom": 512, "small": 64, "scanner": 64}

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SOP_CLASSES = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE}

FAMILY_NAMES = (
    "SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA", "MILLER", "DAVIS",
    "MARTIN", "BERNARD", "DUBOIS", "MULLER", "SCHMIDT", "ROSSI", "FERRARI", "NOVAK",
    "KOWALSKI", "JANSEN", "PEETERS", "LAMBERT",
)
GIVEN_NAMES = (
    "JOHN", "MARY", "ALICE", "PETER", "ANNA", "LUCAS", "EMMA", "NOAH", "SOFIA", "LEO",
    "CLARA", "HUGO", "JULIA", "MAX", "NORA", "PAUL",
)
DESCRIPTIONS = {
    "CT": ("CT CHEST WITH CONTRAST", "CT HEAD WITHOUT CONTRAST", "CT ABDOMEN PELVIS"),
    "MR": ("MR BRAIN", "MR KNEE LEFT", "MR LUMBAR SPINE"),
}
SERIES_DESCRIPTIONS = ("AXIAL 5MM", "CORONAL MPR", "SAGITTAL MPR", "LOCALIZER", "DWI")
FIRST_YEAR, YEARS = 2005, 20  # study dates spread over 2005-2024


@dataclass(frozen=True)
class Spec:
    """A dataset's shape, profile and seed; everything else is derived from them."""

    profile: str
    patients: int
    studies: int
    series: int
    instances: int
    seed: str = "lanthorn"

    @classmethod
    def parse(cls, text: str, seed: str = "lanthorn") -> Spec:
        """``PROFILE:PxSxRxI``, e.g. ``ct:1x1x2x100``."""
        match = re.fullmatch(r"(\w+):(\d+)x(\d+)x(\d+)x(\d+)", text)
        if not match or match.group(1) not in PROFILES:
            raise ValueError(f"expected PROFILE:PxSxRxI with PROFILE in {sorted(PROFILES)}, "
                             f"got {text!r}")
        counts = [int(n) for n in match.groups()[1:]]
        if min(counts) < 1:
            raise ValueError(f"every count must be at least 1, got {text!r}")
        return cls(match.group(1), *counts, seed=seed)

    def __str__(self) -> str:
        return f"{self.profile}:{self.patients}x{self.studies}x{self.series}x{self.instances}"

    def with_seed(self, seed: str) -> Spec:
        return dataclasses.replace(self, seed=seed)

    @property
    def count(self) -> int:
        return self.patients * self.studies * self.series * self.instances

    def keys(self) -> Iterator[tuple[int, int, int, int]]:
        """(patient, study, series, instance) indices, in sending order."""
        return itertools.product(range(self.patients), range(self.studies),
                                 range(self.series), range(self.instances))

    def files(self) -> Iterator[tuple[str, bytes]]:
        """(relative file name, DICOM bytes) for every instance, in sending order."""
        for key in self.keys():
            yield self.file_name(*key), self.instance(*key)

    def file_name(self, p: int, s: int, r: int, i: int) -> str:
        return f"{self.patient_id(p)}/study{s + 1:03d}/series{r + 1:03d}/{i + 1:05d}.dcm"

    def uid(self, *indices: int) -> str:
        """A UID that only this spec, seed and these indices give."""
        return generate_uid(entropy_srcs=[self._source(*indices)])

    def patient_id(self, p: int) -> str:
        tag = hashlib.sha1(self._source().encode()).hexdigest()[:6].upper()
        return f"{tag}{p:06d}"

    def patient_name(self, p: int) -> str:
        rng = self._rng(p)
        return f"{rng.choice(FAMILY_NAMES)}^{rng.choice(GIVEN_NAMES)}"

    def modality(self, p: int, s: int) -> str:
        return self._rng(p, s).choice(("CT", "MR"))

    def study_date(self, p: int, s: int) -> str:
        rng = self._rng(p, s, "date")
        year, month, day = FIRST_YEAR + rng.randrange(YEARS), rng.randint(1, 12), rng.randint(1, 28)
        return f"{year}{month:02d}{day:02d}"

    def instance(self, p: int, s: int, r: int, i: int) -> bytes:
        patient, study = self._rng(p, "patient"), self._rng(p, s, "study")
        modality = self.modality(p, s)
        sop_instance = self.uid(p, s, r, i)
        seed = zlib.crc32(sop_instance.encode())
        size = PROFILES[self.profile]
        image = (partial(make_image, phantom(size, seed), bits_stored=12, RescaleSlope=1,
                         RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400)
                 if self.profile == "phantom" else
                 partial(make_instance, rows=size, columns=size, seed=seed))
        data = image(
            SOPClassUID=SOP_CLASSES[modality], SOPInstanceUID=sop_instance,
            StudyInstanceUID=self.uid(p, s), SeriesInstanceUID=self.uid(p, s, r),
            PatientID=self.patient_id(p), PatientName=self.patient_name(p),
            PatientBirthDate=f"{patient.randint(1930, 2015)}0{patient.randint(1, 9)}15",
            PatientSex=patient.choice("FM"),
            StudyDate=self.study_date(p, s), StudyTime=f"{study.randint(7, 19):02d}1500",
            AccessionNumber=f"A{self.patient_id(p)}{s:03d}", StudyID=str(s + 1),
            StudyDescription=study.choice(DESCRIPTIONS[modality]), Modality=modality,
            SeriesNumber=r + 1, SeriesDescription=SERIES_DESCRIPTIONS[r % len(SERIES_DESCRIPTIONS)],
            InstanceNumber=i + 1,
        )
        return with_scanner_header(data) if self.profile == "scanner" else data

    def _rng(self, *indices: object) -> random.Random:
        return random.Random(self._source(*indices))

    def _source(self, *indices: object) -> str:
        """What every derived value hashes. The shape is part of it, so two datasets of
        one seed are disjoint; the separators keep ``(1, 23)`` apart from ``(12, 3)``
        (pydicom joins entropy sources as they are)."""
        return "/".join([self.seed, str(self), *map(str, indices)])


def with_scanner_header(data: bytes) -> bytes:
    """The file with every element of a real scanner's header that it lacks."""
    dataset = pydicom.dcmread(io.BytesIO(data))
    for element in _scanner_header():
        if element.tag not in dataset:
            dataset.add(element)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@functools.cache
def _scanner_header() -> Dataset:
    """CT_small.dcm without its image pixel module and pixel data (the file's own
    image is kept)."""
    header = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    for tag in [t for t in header.keys() if t.group in (0x0028, 0x7FE0)]:  # noqa: SIM118
        del header[tag]
    return header


def phantom(size: int, seed: int) -> np.ndarray:
    """A CT-like axial slice, stored as HU + 1024: air around an elliptic body of soft
    tissue with two lungs and a vertebra, sizes varied by ``seed``, with scanner noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size - 0.5

    def inside(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1

    hu = np.full((size, size), -1000.0)
    hu[inside(0, 0, rng.uniform(0.38, 0.45), rng.uniform(0.28, 0.34))] = 40
    for side in (-1, 1):
        hu[inside(side * 0.17, -0.03, rng.uniform(0.1, 0.13), rng.uniform(0.16, 0.2))] = -820
    hu[inside(0, 0.2, 0.05, 0.05)] = 700
    hu += rng.normal(0, 12, hu.shape)
    return np.clip(hu + 1024, 0, 4095).astype(np.uint16)


def write(spec: Spec, folder: Path) -> tuple[int, int]:
    """Write the dataset's files under ``folder``; returns (files, bytes)."""
    count = size = 0
    for name, data in spec.files():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        count, size = count + 1, size + len(data)
    return count, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("spec", type=Spec.parse, help="PROFILE:PxSxRxI, e.g. small:2x2x2x50")
    parser.add_argument("--seed", default="lanthorn", help="same seed, same files")
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    args = parser.parse_args()
    count, size = write(args.spec.with_seed(args.seed), args.out)
    print(f"{count} files, {size / 1e6:.1f} MB in {args.out}")


if __name__ == "__main__":
    main()
