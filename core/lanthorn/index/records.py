"""Plain records that cross the index boundary (no SQL types leak out)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model import ChangeType, Level


@dataclass(frozen=True)
class Attachment:
    content_type: int
    uuid: str
    compressed_size: int
    uncompressed_size: int
    compression: int
    compressed_md5: str
    uncompressed_md5: str
    revision: int = 1


@dataclass(frozen=True)
class NewInstance:
    """Everything one ingest transaction writes."""

    public_ids: tuple[str, str, str, str]
    main_tags: dict[Level, dict[int, str]]
    metadata: dict[str, str]
    attachment: Attachment
    header: bytes
    timestamp: float


@dataclass(frozen=True)
class StorageLimits:
    """``MaximumStorageSize`` (bytes here), ``MaximumPatientCount`` (0: no limit) and
    whether a full storage refuses (``Reject``) instead of recycling old patients."""

    max_size: int = 0
    max_patients: int = 0
    reject: bool = False

    @property
    def active(self) -> bool:
        return bool(self.max_size or self.max_patients)


@dataclass(frozen=True)
class StoreOutcome:
    """``stored`` is False for a duplicate kept as it was (Orthanc's "AlreadyStored");
    ``replaced_uuids`` are files to remove after the commit (overwritten, recycled)."""

    stored: bool
    replaced_uuids: list[str] = field(default_factory=list)
    new_levels: tuple[Level, ...] = ()


@dataclass(frozen=True)
class Resource:
    id: int
    level: Level
    public_id: str
    parent_id: int | None
    last_update: float
    is_stable: bool
    protected: bool = False


@dataclass
class ResourceInfo:
    """A resource with what its REST description needs, loaded in a few queries."""

    resource: Resource
    parent_public_id: str | None
    children: list[str]
    main_tags: dict[int, str]
    labels: list[str]
    metadata: dict[str, str]
    attachments: dict[int, Attachment]


@dataclass(frozen=True)
class Change:
    seq: int
    change_type: ChangeType
    level: Level
    public_id: str
    date: str


@dataclass(frozen=True)
class DeleteOutcome:
    removed_uuids: list[str]
    deleted: list[tuple[Level, str]]
    remaining_ancestor: tuple[Level, str] | None


@dataclass(frozen=True)
class Statistics:
    count_by_level: dict[Level, int]
    disk_size: int
    uncompressed_size: int
