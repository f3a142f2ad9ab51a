"""Names of metadata and attachment types: Orthanc's system names and numbers, the
user's (``UserMetadata``, ``UserContentType``: numbers 1024 to 65535), or a number."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import Config, ConfigError
from .errors import Forbidden, InexistentItem
from .ingest import DICOM_ATTACHMENT

FIRST_USER, LAST_USER = 1024, 65535
#: Orthanc's numbers of its own metadata and attachment types.
SYSTEM_METADATA = {
    1: "IndexInSeries", 2: "ReceptionDate", 3: "RemoteAET", 4: "ExpectedNumberOfInstances",
    5: "ModifiedFrom", 6: "AnonymizedFrom", 7: "LastUpdate", 8: "Origin",
    9: "TransferSyntax", 10: "SopClassUid", 11: "RemoteIP", 12: "CalledAET",
    13: "HttpUsername", 14: "PixelDataOffset", 15: "MainDicomTagsSignature",
    16: "MainDicomSequences", 17: "PixelDataVR",
}
SYSTEM_ATTACHMENTS = {DICOM_ATTACHMENT: "dicom", 2: "dicom-as-json",
                      3: "dicom-until-pixel-data"}


@dataclass(frozen=True)
class Names:
    """The names and numbers of metadata or of attachment types."""

    kind: str
    system: dict[int, str]
    user: dict[str, int]
    media_types: dict[int, str]

    def number(self, name: str) -> int:
        if name.isdigit():
            return int(name)
        for number, system_name in self.system.items():
            if system_name == name:
                return number
        if name in self.user:
            return self.user[name]
        raise InexistentItem(f'unknown {self.kind} "{name}"')

    def name(self, number: int) -> str:
        by_number = {n: name for name, n in self.user.items()} | self.system
        return by_number.get(number, str(number))

    def writable(self, name: str) -> int:
        """The number of a user-defined type; system ones are read-only (403)."""
        number = self.number(name)
        if not FIRST_USER <= number <= LAST_USER:
            raise Forbidden(f'the {self.kind} "{name}" is reserved to the server')
        return number


def metadata_names(config: Config) -> Names:
    return Names("metadata", SYSTEM_METADATA, _user_numbers(config, "UserMetadata"), {})


def attachment_names(config: Config) -> Names:
    user = _user_numbers(config, "UserContentType")
    media_types = {number: value[1] for value, number in (
        (v, _number_of(v)) for v in config["UserContentType"].values())
        if isinstance(value, list) and len(value) > 1}
    return Names("attachment", SYSTEM_ATTACHMENTS, user,
                 {DICOM_ATTACHMENT: "application/dicom"} | media_types)


def check_configuration(config: Config) -> None:
    """Refuse to start on a malformed ``UserMetadata`` or ``UserContentType``."""
    metadata_names(config)
    attachment_names(config)


def _user_numbers(config: Config, option: str) -> dict[str, int]:
    """``{"Name": 1024}`` or, for attachments, ``{"Name": [1024, "mime/type"]}``."""
    numbers = {name: _number_of(value) for name, value in config[option].items()}
    bad = [name for name, n in numbers.items() if not FIRST_USER <= n <= LAST_USER]
    if bad:
        raise ConfigError(f"{option}: {', '.join(bad)} must be numbered {FIRST_USER} to "
                          f"{LAST_USER}")
    return numbers


def _number_of(value: Any) -> int:
    number = value[0] if isinstance(value, list) and value else value
    return number if isinstance(number, int) and not isinstance(number, bool) else -1
