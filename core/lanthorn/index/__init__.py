"""The index: public API for backend plugins (schema, records, the SQLAlchemy index)."""

from . import schema
from .migrate import upgrade
from .records import (
    Attachment,
    Change,
    DeleteOutcome,
    NewInstance,
    Resource,
    ResourceInfo,
    Statistics,
    StoreOutcome,
)
from .sql import SqlIndex, orthanc_date

__all__ = [
    "Attachment",
    "Change",
    "DeleteOutcome",
    "NewInstance",
    "Resource",
    "ResourceInfo",
    "SqlIndex",
    "Statistics",
    "StoreOutcome",
    "orthanc_date",
    "schema",
    "upgrade",
]
