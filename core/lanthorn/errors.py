"""Errors that carry their HTTP status and Orthanc error code across protocol edges.

The REST layer renders these as Orthanc's JSON error object; the DICOM layer maps
them to failure statuses. Anything else that escapes is an internal error.
"""

from __future__ import annotations


class LanthornError(Exception):
    """Base class: ``http_status`` and Orthanc's ``orthanc_status`` / ``orthanc_error``."""

    http_status = 500
    orthanc_status = -1
    orthanc_error = "Internal error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.orthanc_error)

    @property
    def message(self) -> str:
        return str(self)


class BadRequest(LanthornError):
    http_status = 400
    orthanc_status = 8
    orthanc_error = "Bad request"


class BadFileFormat(LanthornError):
    """The bytes are not a DICOM instance we can store."""

    http_status = 400
    orthanc_status = 15
    orthanc_error = "Bad file format"


class UnknownResource(LanthornError):
    http_status = 404
    orthanc_status = 17
    orthanc_error = "Unknown resource"


class InexistentItem(LanthornError):
    http_status = 404
    orthanc_status = 7
    orthanc_error = "Accessing an inexistent item"


class RangeNotSatisfiable(LanthornError):
    http_status = 416
    orthanc_status = 8
    orthanc_error = "Bad request"


class NotDecodable(LanthornError):
    """Pixels that no installed codec can decode or encode as asked (Orthanc answers 415)."""

    http_status = 415
    orthanc_status = 2
    orthanc_error = "Not implemented yet"


class NotAcceptable(LanthornError):
    """No representation the client accepts (``Accept``) can be produced."""

    http_status = 406
    orthanc_status = 8
    orthanc_error = "Bad request"


class Unauthorized(LanthornError):
    """No credentials, or credentials that identify no one (HTTP 401)."""

    http_status = 401
    orthanc_status = 30
    orthanc_error = "Unauthorized"


class Forbidden(LanthornError):
    http_status = 403
    orthanc_status = 11
    orthanc_error = "Forbidden access"


class PayloadTooLarge(LanthornError):
    """A request body beyond ``HttpMaximumRequestBodySize``."""

    http_status = 413
    orthanc_status = 8
    orthanc_error = "Bad request"


class Rejected(LanthornError):
    """A plugin filter or a policy refused an instance."""

    http_status = 403
    orthanc_status = 11
    orthanc_error = "Forbidden access"


class NetworkError(LanthornError):
    """A remote DICOM modality could not be reached or refused what was asked."""

    orthanc_status = 9
    orthanc_error = "Error in the network protocol"


class DimseFailure(LanthornError):
    """A remote modality answered a DIMSE request with a failure status (not transient:
    unlike a NetworkError, a job does not retry it)."""

    orthanc_status = 9
    orthanc_error = "Error in the network protocol"


class StorageFull(LanthornError):
    http_status = 507
    orthanc_status = 19
    orthanc_error = "The file storage is full"


class CorruptedFile(LanthornError):
    """A stored file does not match the MD5 hash recorded when it was written."""

    orthanc_status = 20
    orthanc_error = "Corrupted file (e.g. inconsistent MD5 hash)"


class RevisionConflict(LanthornError):
    """``If-Match`` names another revision (or is missing under ``CheckRevisions``)."""

    http_status = 409
    orthanc_status = 43
    orthanc_error = ("A bad revision number was provided, which might indicate conflict "
                     "between multiple writers")


class PluginError(LanthornError):
    """A plugin is misconfigured or missing; raised at start-up."""

    orthanc_status = 1
    orthanc_error = "Error encountered within the plugin engine"


class CanceledJob(LanthornError):
    """A job was canceled by a user (its final error code, as in Orthanc)."""

    http_status = 400
    orthanc_status = 37
    orthanc_error = "This job was canceled"


def orthanc_error_description(code: int) -> str:
    """Orthanc's description of one of its error codes, as jobs report it."""
    if code == 0:
        return "Success"
    classes = [LanthornError]
    while classes:
        cls = classes.pop()
        if cls.orthanc_status == code:
            return cls.orthanc_error
        classes += cls.__subclasses__()
    return "Internal error"
