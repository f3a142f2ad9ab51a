"""The DICOM resource model shared by every part of Lanthorn.

Levels, Orthanc-compatible public identifiers and the "main DICOM tags" that the
index keeps for each level. Public IDs must equal Orthanc's so that clients and
scripts can move between the two servers without translating identifiers.
"""

from __future__ import annotations

import hashlib
from enum import IntEnum

from pydicom.datadict import keyword_for_tag, tag_for_keyword


class Level(IntEnum):
    """A level of the Patient/Study/Series/Instance hierarchy (parents are smaller)."""

    PATIENT = 0
    STUDY = 1
    SERIES = 2
    INSTANCE = 3

    @property
    def title(self) -> str:
        """The name Orthanc uses in JSON ("Patient", "Study", ...)."""
        return self.name.capitalize()

    @property
    def plural(self) -> str:
        """The REST collection name ("patients", "studies", ...)."""
        return _PLURALS[self]

    @property
    def parent(self) -> Level | None:
        return Level(self - 1) if self > Level.PATIENT else None

    @property
    def child(self) -> Level | None:
        return Level(self + 1) if self < Level.INSTANCE else None

    @classmethod
    def parse(cls, text: str) -> Level:
        """Accept "Study", "study", "STUDY" or "studies", as Orthanc clients send them."""
        lowered = text.strip().lower()
        for level in cls:
            if lowered in (level.name.lower(), level.plural):
                return level
        raise ValueError(f'unknown resource level "{text}"')


_PLURALS = {
    Level.PATIENT: "patients",
    Level.STUDY: "studies",
    Level.SERIES: "series",
    Level.INSTANCE: "instances",
}

#: The tag whose value identifies a resource within its parent, per level.
IDENTIFIER_KEYWORDS = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.INSTANCE: "SOPInstanceUID",
}


def public_id(*identifiers: str) -> str:
    """Orthanc's public ID: SHA-1 of the identifiers joined by "|", dashed every 8 digits.

    Pass the PatientID for a patient; PatientID and StudyInstanceUID for a study; and so
    on down to the SOPInstanceUID for an instance.
    """
    digest = hashlib.sha1("|".join(identifiers).encode()).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


def public_ids(identifiers: tuple[str, str, str, str]) -> tuple[str, str, str, str]:
    """The public IDs of an instance and its three parents, from the top down."""
    return tuple(public_id(*identifiers[: depth + 1]) for depth in range(4))  # type: ignore[return-value]


def _tags(*keywords: str) -> tuple[int, ...]:
    return tuple(tag_for_keyword(k) for k in keywords)  # type: ignore[misc]


#: The tags the index keeps per level: Orthanc's lists, so MainDicomTags match.
MAIN_DICOM_TAGS: dict[Level, tuple[int, ...]] = {
    Level.PATIENT: _tags(
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "OtherPatientIDs"
    ),
    Level.STUDY: _tags(
        "StudyDate", "StudyTime", "StudyID", "StudyDescription", "AccessionNumber",
        "StudyInstanceUID", "RequestedProcedureDescription", "InstitutionName",
        "RequestingPhysician", "ReferringPhysicianName",
    ),
    Level.SERIES: _tags(
        "SeriesDate", "SeriesTime", "Modality", "Manufacturer", "StationName",
        "SeriesDescription", "BodyPartExamined", "SequenceName", "ProtocolName",
        "SeriesNumber", "CardiacNumberOfImages", "ImagesInAcquisition",
        "NumberOfTemporalPositions", "NumberOfSlices", "NumberOfTimeSlices",
        "SeriesInstanceUID", "ImageOrientationPatient", "SeriesType", "OperatorsName",
        "PerformedProcedureStepDescription", "AcquisitionDeviceProcessingDescription",
        "ContrastBolusAgent",
    ),
    Level.INSTANCE: _tags(
        "InstanceCreationDate", "InstanceCreationTime", "AcquisitionNumber", "ImageIndex",
        "InstanceNumber", "NumberOfFrames", "TemporalPositionIdentifier", "SOPInstanceUID",
        "ImagePositionPatient", "ImageComments", "ImageOrientationPatient",
    ),
}


class MainTags:
    """Orthanc's main tags plus the site's ``ExtraMainDicomTags``, per level."""

    def __init__(self, extra: dict[str, list[str]] | None = None) -> None:
        self.by_level = {level: list(tags) for level, tags in MAIN_DICOM_TAGS.items()}
        for name, keywords in (extra or {}).items():
            level = Level.parse(name)
            self.by_level[level] += [t for k in keywords if (t := parse_tag(k)) not in
                                     self.by_level[level]]

    def level_of(self, tag: int) -> Level | None:
        """The highest level that keeps ``tag``, or None when only headers have it."""
        return next((level for level in Level if tag in self.by_level[level]), None)


class ChangeType(IntEnum):
    """Kinds of change-log entries; the names are what ``/changes`` shows."""

    CompletedSeries = 1
    Deleted = 2
    NewChildInstance = 3
    NewInstance = 4
    NewPatient = 5
    NewSeries = 6
    NewStudy = 7
    StablePatient = 8
    StableSeries = 9
    StableStudy = 10
    UpdatedAttachment = 11
    UpdatedMetadata = 12
    UpdatedPeers = 13
    UpdatedModalities = 14
    JobSubmitted = 15
    JobSuccess = 16
    JobFailure = 17
    AnonymizedStudy = 18
    AnonymizedSeries = 19
    ModifiedStudy = 20
    ModifiedSeries = 21
    AnonymizedPatient = 22
    ModifiedPatient = 23


NEW_RESOURCE_CHANGE = {
    Level.PATIENT: ChangeType.NewPatient,
    Level.STUDY: ChangeType.NewStudy,
    Level.SERIES: ChangeType.NewSeries,
    Level.INSTANCE: ChangeType.NewInstance,
}
STABLE_CHANGE = {
    Level.PATIENT: ChangeType.StablePatient,
    Level.STUDY: ChangeType.StableStudy,
    Level.SERIES: ChangeType.StableSeries,
}


def format_tag(tag: int) -> str:
    """Orthanc's spelling of a tag: ``"0010,0010"``."""
    return f"{tag >> 16:04x},{tag & 0xFFFF:04x}"


def parse_tag(text: str) -> int:
    """Accept a keyword ("PatientName") or a tag ("0010,0010", "0010-0010", "00100010")."""
    cleaned = text.strip()
    tag = tag_for_keyword(cleaned)
    if tag is not None:
        return tag
    digits = cleaned.replace(",", "").replace("-", "").replace("(", "").replace(")", "")
    if len(digits) == 8:
        try:
            return int(digits, 16)
        except ValueError:
            pass
    raise ValueError(f'unknown DICOM tag "{text}"')


def tag_name(tag: int) -> str:
    """The keyword of a tag, or its Orthanc spelling when the dictionary has none."""
    return keyword_for_tag(tag) or format_tag(tag)


#: The attributes of the DICOM module of each level (PS3.3): Patient (C.7.1.1), General
#: Study (C.7.2.1), General Series (C.7.3.1) and SOP Common (C.12.1).
MODULES = {
    Level.PATIENT: """PatientName PatientID IssuerOfPatientID IssuerOfPatientIDQualifiersSequence
        TypeOfPatientID PatientBirthDate PatientBirthTime PatientBirthDateInAlternativeCalendar
        PatientDeathDateInAlternativeCalendar PatientAlternativeCalendar PatientSex
        QualityControlSubject ReferencedPatientPhotoSequence ReferencedPatientSequence
        OtherPatientIDs OtherPatientIDsSequence OtherPatientNames EthnicGroup
        EthnicGroupCodeSequence PatientComments PatientSpeciesDescription
        PatientSpeciesCodeSequence PatientBreedDescription PatientBreedCodeSequence
        BreedRegistrationSequence StrainDescription StrainNomenclature StrainCodeSequence
        StrainAdditionalInformation StrainStockSequence GeneticModificationsSequence
        ResponsiblePerson ResponsiblePersonRole ResponsibleOrganization PatientIdentityRemoved
        DeidentificationMethod DeidentificationMethodCodeSequence
        SourcePatientGroupIdentificationSequence GroupOfPatientsIdentificationSequence""",
    Level.STUDY: """StudyInstanceUID StudyDate StudyTime ReferringPhysicianName
        ReferringPhysicianIdentificationSequence ConsultingPhysicianName
        ConsultingPhysicianIdentificationSequence StudyID AccessionNumber
        IssuerOfAccessionNumberSequence StudyDescription PhysiciansOfRecord
        PhysiciansOfRecordIdentificationSequence NameOfPhysiciansReadingStudy
        PhysiciansReadingStudyIdentificationSequence RequestingServiceCodeSequence
        ReferencedStudySequence ProcedureCodeSequence ReasonForPerformedProcedureCodeSequence""",
    Level.SERIES: """Modality SeriesInstanceUID SeriesNumber Laterality SeriesDate SeriesTime
        PerformingPhysicianName PerformingPhysicianIdentificationSequence ProtocolName
        SeriesDescription SeriesDescriptionCodeSequence OperatorsName
        OperatorIdentificationSequence ReferencedPerformedProcedureStepSequence
        RelatedSeriesSequence AnatomicalOrientationType BodyPartExamined PatientPosition
        SmallestPixelValueInSeries LargestPixelValueInSeries RequestAttributesSequence
        PerformedProcedureStepID PerformedProcedureStepStartDate PerformedProcedureStepStartTime
        PerformedProcedureStepEndDate PerformedProcedureStepEndTime
        PerformedProcedureStepDescription PerformedProtocolCodeSequence
        CommentsOnThePerformedProcedureStep TreatmentSessionUID""",
    Level.INSTANCE: """SOPClassUID SOPInstanceUID SpecificCharacterSet InstanceCreationDate
        InstanceCreationTime InstanceCoercionDateTime InstanceCreatorUID
        RelatedGeneralSOPClassUID OriginalSpecializedSOPClassUID
        CodingSchemeIdentificationSequence ContextGroupIdentificationSequence
        MappingResourceIdentificationSequence TimezoneOffsetFromUTC
        ContributingEquipmentSequence InstanceNumber SOPInstanceStatus SOPAuthorizationDateTime
        SOPAuthorizationComment AuthorizationEquipmentCertificationNumber
        MACParametersSequence DigitalSignaturesSequence EncryptedAttributesSequence
        OriginalAttributesSequence HL7StructuredDocumentReferenceSequence
        LongitudinalTemporalInformationModified QueryRetrieveView
        ConversionSourceAttributesSequence ContentQualification
        PrivateDataElementCharacteristicsSequence InstanceOriginStatus BarcodeValue""",
}
MODULE_TAGS = {level: sorted(parse_tag(k) for k in keywords.split())
               for level, keywords in MODULES.items()}
