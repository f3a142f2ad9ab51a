"""DIMSE command sets and P-DATA-TF PDUs as bytes, for the listener's C-STORE path.

pynetdicom turns every command set into a pydicom Dataset and a validated primitive,
both ways: for a small instance that was a third of a C-STORE's CPU. A command set is
a short list of group 0000 elements in Implicit VR Little Endian (PS3.7 E.1) and a
P-DATA-TF PDU a list of presentation data values (PS3.8 9.3.5), so the few a C-STORE
needs are read and written here; everything else stays pynetdicom's.
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
NO_DATA_SET = 0x0101

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


def store_response(request: StoreCommand, status: int, comment: str | None) -> bytes:
    """The command set of the C-STORE response (PS3.7 9.3.1.2), Error Comment included
    when there is one (the caller keeps it to a LO's 64 printable characters)."""
    elements = [(AFFECTED_SOP_CLASS, even_value(request.sop_class, b"\0")),
                (COMMAND_FIELD, _US.pack(C_STORE_RSP)),
                (MESSAGE_ID_RESPONDED_TO, _US.pack(request.message_id)),
                (DATA_SET_TYPE, _US.pack(NO_DATA_SET)),
                (STATUS, _US.pack(status))]
    if comment:
        elements.append((ERROR_COMMENT, even_value(comment, b" ")))
    elements.append((AFFECTED_SOP_INSTANCE, even_value(request.sop_instance, b"\0")))
    body = b"".join(_ELEMENT.pack(0, element, len(value)) + value for element, value in elements)
    return _ELEMENT.pack(0, GROUP_LENGTH, 4) + _UL.pack(len(body)) + body


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


def command_pdus(context_id: int, command: bytes, maximum_length: int) -> list[bytes]:
    """The P-DATA-TF PDUs of a command set, fragmented to the peer's maximum PDU length
    (0: no limit, which bounds the PDU's items: each fragment and its 6-byte item
    header) as PS3.8 9.3.1 requires of any message."""
    size = maximum_length - _ITEM_HEADER.size if maximum_length else len(command)
    chunks = [command[i:i + size] for i in range(0, len(command), size)]
    return [p_data_tf(context_id, COMMAND_BIT | (LAST_BIT if i == len(chunks) - 1 else 0), chunk)
            for i, chunk in enumerate(chunks)]


def p_data_tf(context_id: int, control: int, fragment: bytes) -> bytes:
    """One P-DATA-TF PDU holding one presentation data value."""
    item = _ITEM_HEADER.pack(len(fragment) + 2, context_id, control) + fragment
    return _PDU_HEADER.pack(P_DATA_TF, 0, len(item)) + item


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

