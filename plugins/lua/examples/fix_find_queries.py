"""Fixing C-FIND queries in Python, as the Orthanc Book does in Lua: received queries lose
a private key that one modality sends by mistake, and queries sent to the modality
"sample" say "" (any) where the user typed "*", which that PACS takes literally.

The identifier is a pydicom dataset, changed in place.
"""

from pydicom.dataset import Dataset

from lanthorn import DimseRequest, Server, hookimpl
from lanthorn.dimse.access import Modality

PRIVATE_KEY = (0x0009, 0x0010)
LITERAL_PACS = "sample"


@hookimpl
def filter_find_request(server: Server, request: DimseRequest) -> None:
    if PRIVATE_KEY in request.identifier:
        del request.identifier[PRIVATE_KEY]


@hookimpl
def filter_outgoing_find_request(server: Server, modality: Modality, query: Dataset) -> None:
    if modality.name != LITERAL_PACS:
        return
    for element in query:
        if element.value == "*":
            element.value = ""
