"""Lanthorn: a DICOM server built as a plugin host.

This module is the public plugin API: ``hookimpl``, ``Server``, the records plugins
exchange with the core, and the errors they may raise.
"""

__version__ = "0.1.0"

from .errors import (
    BadFileFormat,
    BadRequest,
    Forbidden,
    LanthornError,
    Rejected,
    UnknownResource,
)
from .jobs import JobContext, JobType
from .model import ChangeType, Level
from .plugins import hookimpl
from .server import Server
from .types import (
    Command,
    DimseRequest,
    IndexBackendFactory,
    Origin,
    PluginRoute,
    Principal,
    StorageAreaFactory,
    StoredInstance,
    permitted,
)

__all__ = [
    "BadFileFormat",
    "BadRequest",
    "ChangeType",
    "Command",
    "DimseRequest",
    "Forbidden",
    "IndexBackendFactory",
    "JobContext",
    "JobType",
    "LanthornError",
    "Level",
    "Origin",
    "PluginRoute",
    "Principal",
    "Rejected",
    "Server",
    "StorageAreaFactory",
    "StoredInstance",
    "UnknownResource",
    "__version__",
    "hookimpl",
    "permitted",
]
