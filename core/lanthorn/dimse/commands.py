"""DIMSE command sets and P-DATA-TF PDUs as bytes, for the listener's busiest messages.

pynetdicom turns every command set into a pydicom Dataset and a validated primitive,
both ways, and encodes each one twice (once to learn its length): for a small instance
that was a third of a C-STORE's CPU, and a third of a C-FIND's went into its responses.
A command set is a short list of group 0000 elements in Implicit VR Little Endian
(PS3.7 E.1) and a P-DATA-TF PDU a list of presentation data values (PS3.8 9.3.5), so
the C-STORE request, and the C-STORE and C-FIND responses, are read and written here;
everything else stays pynetdicom's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..dicom import even_value

#: Command elements (PS3.7 E.1), by element number in group 0000.
GROUP_LENGTH = 0x0000
AFFECTED_SOP_CLASS = 0x0002
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
MESSAGE_ID_RESPONDED_TO = 0x0120
DATA_SET_TYPE = 0x0800
STATUS = 0x0900
ERROR_COMMENT = 0x0902
AFFECTED_SOP_INSTANCE = 0x1000

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_FIND_RSP = 0x8020
NO_DATA_SET = 0x0101
WITH_DATA_SET = 0x0001  # any other value says the same (PS3.7 E.1)

#: The PDU types of PS3.8 9.3 (A-ASSOCIATE-RQ to A-ABORT), that of P-DATA-TF, and the
#: bits of a presentation data value's message control header.
PDU_TYPES = range(0x01, 0x08)
P_DATA_TF = 0x04
COMMAND_BIT = 0x01
LAST_BIT = 0x02

_ELEMENT = struct.Struct("<HHL")  # group, element, value length
_PDU_HEADER = struct.Struct(">BBL")  # type, reserved, length
PDU_HEADER_LENGTH = _PDU_HEADER.size
_ITEM_HEADER = struct.Struct(">LBB")  # item length, context ID, message control header


class CommandError(ValueError):
    """Bytes that are not a well-formed command set or P-DATA-TF PDU."""


@dataclass(frozen=True)
class StoreCommand:
    """What a C-STORE request's command set says."""

    message_id: int
    sop_class: str
    sop_instance: str


def read_store_command(encoded: bytes) -> StoreCommand | None:
    """The C-STORE request of a command set that has a data set; None for any other
    command (pynetdicom serves those). CommandError if it cannot be read."""
    values = _read_elements(encoded)
    if _us(values, COMMAND_FIELD) != C_STORE_RQ or _us(values, DATA_SET_TYPE) == NO_DATA_SET:
        return None
    message_id = _us(values, MESSAGE_ID)
    sop_class, sop_instance = _ui(values, AFFECTED_SOP_CLASS), _ui(values, AFFECTED_SOP_INSTANCE)
    if message_id is None or not (sop_class and sop_instance):
        return None
    return StoreCommand(message_id, sop_class, sop_instance)


def response_command(command_field: int, message_id: int, sop_class: str, status: int,
                     comment: str | None = None, *, sop_instance: str | None = None,
                     data_set: bool = False) -> bytes:
    """The command set of a response (PS3.7 9.3 and E.1), with the Error Comment when
    there is one (the caller keeps it to a LO's 64 printable characters) and the
    Affected SOP Instance UID when given."""
    elements = [(AFFECTED_SOP_CLASS, even_value(sop_class, b"\0")),
                (COMMAND_FIELD, _US.pack(command_field)),
                (MESSAGE_ID_RESPONDED_TO, _US.pack(message_id)),
                (DATA_SET_TYPE, _US.pack(WITH_DATA_SET if data_set else NO_DATA_SET)),
                (STATUS, _US.pack(status))]
    if comment:
        elements.append((ERROR_COMMENT, even_value(comment, b" ")))
    if sop_instance:
        elements.append((AFFECTED_SOP_INSTANCE, even_value(sop_instance, b"\0")))
    body = b"".join(_ELEMENT.pack(0, element, len(value)) + value for element, value in elements)
    return _ELEMENT.pack(0, GROUP_LENGTH, 4) + _UL.pack(len(body)) + body


def store_response(request: StoreCommand, status: int, comment: str | None) -> bytes:
    """The command set of the C-STORE response (PS3.7 9.3.1.2)."""
    return response_command(C_STORE_RSP, request.message_id, request.sop_class, status, comment,
                            sop_instance=request.sop_instance)


def presentation_values(pdu: bytes | memoryview) -> list[tuple[int, int, memoryview]]:
    """The (context ID, message control header, fragment) of each value of a P-DATA-TF
    PDU, header included; CommandError if its items do not fill it exactly."""
    view = memoryview(pdu)
    kind, _, length = _PDU_HEADER.unpack_from(view)
    if kind != P_DATA_TF or length != len(view) - _PDU_HEADER.size:
        raise CommandError("not a complete P-DATA-TF PDU")
    values = []
    offset = _PDU_HEADER.size
    while offset < len(view):
        if offset + _ITEM_HEADER.size > len(view):
            raise CommandError("a presentation data value item is cut")
        item_length, context_id, control = _ITEM_HEADER.unpack_from(view, offset)
        end = offset + 4 + item_length
        if item_length < 2 or end > len(view):
            raise CommandError("a presentation data value item has an invalid length")
        values.append((context_id, control, view[offset + _ITEM_HEADER.size:end]))
        offset = end
    return values


def read_pdu_header(header: bytes | bytearray) -> tuple[int, int]:
    """The type and the length (what follows the header) of a PDU."""
    kind, _, length = _PDU_HEADER.unpack(header)
    return kind, length


def message_pdus(command: bytes, data_set: bytes, maximum_length: int
                 ) -> list[list[tuple[int, bytes]]]:
    """A message's presentation data values (message control header and fragment), in
    as few PDUs as the peer's maximum PDU length allows (0: no limit; the length bounds
    the PDU's items, each fragment with its 6-byte item header) as PS3.8 9.3.1 and
    Annex E require: the command set and a small data set go in one PDU, one write."""
    pdus: list[list[tuple[int, bytes]]] = [[]]
    room = maximum_length or len(command) + len(data_set) + 2 * _ITEM_HEADER.size
    for control, encoded in ((COMMAND_BIT, command), (0, data_set)):
        offset = 0
        while offset < len(encoded):
            if room <= _ITEM_HEADER.size:
                pdus.append([])
                room = maximum_length
            fragment = encoded[offset:offset + room - _ITEM_HEADER.size]
            offset += len(fragment)
            pdus[-1].append((control | (LAST_BIT if offset == len(encoded) else 0), fragment))
            room -= _ITEM_HEADER.size + len(fragment)
    return pdus


def p_data_tf(context_id: int, values: list[tuple[int, bytes]]) -> bytes:
    """One P-DATA-TF PDU holding these presentation data values."""
    items = b"".join(_ITEM_HEADER.pack(len(fragment) + 2, context_id, control) + fragment
                     for control, fragment in values)
    return _PDU_HEADER.pack(P_DATA_TF, 0, len(items)) + items


_US = struct.Struct("<H")
_UL = struct.Struct("<L")


def _read_elements(encoded: bytes) -> dict[int, bytes]:
    values: dict[int, bytes] = {}
    offset = 0
    while offset < len(encoded):
        if offset + _ELEMENT.size > len(encoded):
            raise CommandError("the command set ends inside an element header")
        group, element, length = _ELEMENT.unpack_from(encoded, offset)
        offset += _ELEMENT.size
        if group != 0 or offset + length > len(encoded):
            raise CommandError("the command set holds an element outside group 0000 or "
                               "longer than itself")
        values[element] = encoded[offset:offset + length]
        offset += length
    return values


def _us(values: dict[int, bytes], element: int) -> int | None:
    value = values.get(element)
    if value is None:
        return None
    if len(value) != 2:
        raise CommandError(f"command element (0000,{element:04X}) is not a US")
    return int(_US.unpack(value)[0])


def _ui(values: dict[int, bytes], element: int) -> str:
    try:
        return values.get(element, b"").rstrip(b"\0 ").decode("ascii")
    except UnicodeDecodeError:
        raise CommandError(f"command element (0000,{element:04X}) is not a UID") from None

