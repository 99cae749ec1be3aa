"""DICOM Upper Layer PDUs (PS3.8 9.3) and DIMSE command sets (PS3.7 E) as bytes, both ways.

The one place the package frames and reads P-DATA-TF itself: the importer frames its C-STOREs and reads
their answers here (:mod:`node.read.sender`), and the receiver's own data path reads them and frames its
answers here (:mod:`node.receive.storer`).
Every length read from the wire is checked against what holds it (the PDU against the negotiated
maximum, a PDV against what is left of its PDU, an element against what is left of its command set),
so a hostile peer costs at most one PDU of memory; anything that breaks a bound raises
:class:`Malformed`, and the caller aborts that association alone.

>>> kind, length = pdu_header(a_abort(INVALID_PARAMETER))
>>> kind == A_ABORT, length
(True, 4)
>>> [bytes(p) for p in p_data_tf(1, b"abc", 2, COMMAND | LAST)]
[b'\\x04\\x00\\x00\\x00\\x00\\x08\\x00\\x00\\x00\\x04\\x01\\x01', b'ab', \
b'\\x04\\x00\\x00\\x00\\x00\\x07\\x00\\x00\\x00\\x03\\x01\\x03', b'c']
>>> read_command(c_store_rq(7, "1.2.3", "4.5")).message_id
7
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

#: PDU types (PS3.8 9.3.1).
A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = range(1, 8)
PDU_HEADER = 6
#: A PDV item's length (4 bytes), then its Presentation Context ID and Message Control Header (PS3.8 9.3.5.1).
PDV_HEADER = 6
#: The largest A-ASSOCIATE-RQ (and A-RELEASE / A-ABORT) PDU read: far above 128 presentation contexts
#: with every transfer syntax and a user-identity item (PS3.8 9.3.2).
ASSOCIATE_RQ_MAX = 1 << 20
#: A-ABORT reasons when the service provider aborts (PS3.8 9.3.8, source 2).
REASON_NOT_SPECIFIED, UNEXPECTED_PDU, INVALID_PARAMETER = 0x00, 0x02, 0x06
#: Message Control Header bits (PS3.8 E.2): command (else data set), last fragment.
COMMAND, LAST = 0x01, 0x02
#: Command Field values (PS3.7 E.1) and Command Data Set Type "no data set" (PS3.7 E.1-1).
C_STORE_RQ, C_STORE_RSP, C_ECHO_RQ, C_ECHO_RSP = 0x0001, 0x8001, 0x0030, 0x8030
NO_DATA_SET, DATA_SET_PRESENT = 0x0101, 0x0001
#: The largest command set read: a C-STORE-RQ with every optional element holds a few hundred bytes.
COMMAND_MAX = 1 << 16

_HEADER = struct.Struct(">BBL")
_PDV = struct.Struct(">LBB")
_ELEMENT = struct.Struct("<HHL")
_U16 = struct.Struct("<H")


#: How a reason begins, in the log line of the abort: the same words as pynetdicom's path (node.netcompat).
BAD_PDU, BAD_MESSAGE = "malformed P-DATA-TF PDU: ", "malformed DIMSE message: "


class Malformed(Exception):
    """A PDU, PDV or command set that breaks PS3.8 / PS3.7: the association is aborted."""

    def __init__(self, reason: str, abort: int = INVALID_PARAMETER) -> None:
        super().__init__(reason)
        self.abort = abort


class Closed(Exception):
    """The peer closed the connection (``got`` bytes into what was being read)."""

    def __init__(self, got: int) -> None:
        super().__init__(f"connection closed ({got} bytes into a read)")
        self.got = got


# -- framing -------------------------------------------------------------------------------


def pdu_header(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(PDU type, length of what follows the 6-byte header) of a PDU's first bytes (PS3.8 9.3.1)."""
    kind, _, length = _HEADER.unpack_from(data)
    return kind, length


def a_abort(reason: int) -> bytes:
    """An A-ABORT PDU from the service provider (PS3.8 9.3.8: source 2, ``reason``)."""
    return struct.pack(">BBLBBBB", A_ABORT, 0, 4, 0, 0, 2, reason)


def a_release(kind: int) -> bytes:
    """An A-RELEASE-RQ or -RP PDU (PS3.8 9.3.6, 9.3.7)."""
    return _HEADER.pack(kind, 0, 4) + bytes(4)


def p_data_tf(context: int, data: bytes | memoryview, fragment: int, control: int) -> Iterator[bytes | memoryview]:
    """P-DATA-TF PDUs, one PDV each (PS3.8 9.3.5) of at most ``fragment`` bytes: header, then the fragment.

    ``control`` is :data:`COMMAND` and/or :data:`LAST`; LAST goes on the final fragment only.
    """
    view = memoryview(data)
    for start in range(0, max(len(view), 1), fragment):
        piece = view[start:start + fragment]
        last = control & LAST if start + fragment >= len(view) else 0
        yield _HEADER.pack(P_DATA_TF, 0, len(piece) + PDV_HEADER) + _PDV.pack(len(piece) + 2, context,
                                                                               (control & COMMAND) | last)
        yield piece


# -- command sets (Implicit VR Little Endian, PS3.7 6.3.1) ------------------------------------


def _element(tag: int, value: bytes) -> bytes:
    return _ELEMENT.pack(0x0000, tag, len(value)) + value


def _uid(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\0" * (len(raw) % 2)  # UI values are padded to even length with NUL (PS3.5 6.2)


def _command(elements: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(_element(tag, value) for tag, value in elements)
    return _element(0x0000, struct.pack("<L", len(body))) + body  # Command Group Length


def c_store_rq(message_id: int, sop_class: str, sop_instance: str) -> bytes:
    """A C-STORE-RQ command set (PS3.7 9.3.1.1), priority medium, a data set following."""
    return _command([(0x0002, _uid(sop_class)), (0x0100, _U16.pack(C_STORE_RQ)), (0x0110, _U16.pack(message_id)),
                     (0x0700, _U16.pack(0)), (0x0800, _U16.pack(DATA_SET_PRESENT)), (0x1000, _uid(sop_instance))])


def response(field: int, answering: int, sop_class: str, status: int, *, sop_instance: str = "",
             comment: str = "") -> bytes:
    """A C-STORE-RSP or C-ECHO-RSP command set (PS3.7 9.3.1.2, 9.3.5.2), with an Error Comment when given."""
    elements = [(0x0002, _uid(sop_class)), (0x0100, _U16.pack(field)), (0x0120, _U16.pack(answering)),
                (0x0800, _U16.pack(NO_DATA_SET)), (0x0900, _U16.pack(status))]
    if comment:
        raw = comment.encode("ascii", "replace")[:64]
        elements.append((0x0902, raw + b" " * (len(raw) % 2)))  # LO, padded with a space
    if sop_instance:
        elements.append((0x1000, _uid(sop_instance)))
    return _command(elements)


@dataclass(frozen=True)
class Command:
    """What the receiver reads of a request's command set."""

    field: int
    message_id: int
    sop_class: str
    sop_instance: str
    has_data_set: bool


def command_elements(data: bytes | bytearray) -> dict[int, bytes]:
    """Element number -> value of a whole command set (group 0000, Implicit VR Little Endian, PS3.7 E.1);
    :class:`Malformed` when an element runs past it or is of another group."""
    values: dict[int, bytes] = {}
    at, end = 0, len(data)
    while at < end:
        if end - at < _ELEMENT.size:
            raise Malformed(f"{BAD_MESSAGE}command set cut within an element header ({end - at} bytes left)")
        group, tag, length = _ELEMENT.unpack_from(data, at)
        at += _ELEMENT.size
        if group != 0x0000 or length > end - at:
            raise Malformed(f"{BAD_MESSAGE}command set element ({group:04X},{tag:04X}) of {length} bytes, "
                            f"{end - at} left in the command set")
        values[tag] = bytes(data[at:at + length])
        at += length
    return values


def read_command(data: bytes | bytearray) -> Command:
    """The request in a whole command set; :class:`Malformed` when an element runs past it or one needed
    is missing."""
    values = command_elements(data)

    def number(tag: int) -> int:
        raw = values.get(tag)
        if raw is None or len(raw) != 2:
            raise Malformed(f"{BAD_MESSAGE}command set without a valid (0000,{tag:04X})")
        return int(_U16.unpack(raw)[0])

    def text(tag: int) -> str:
        raw = values.get(tag, b"").rstrip(b"\0 ")
        if not raw.isascii():
            raise Malformed(f"{BAD_MESSAGE}command set element (0000,{tag:04X}) is not ASCII")
        return raw.decode("ascii")

    return Command(number(0x0100), number(0x0110), text(0x0002), text(0x1000), number(0x0800) != NO_DATA_SET)


# -- reading a stream ---------------------------------------------------------------------------


class Source(Protocol):
    def recv_into(self, buffer: memoryview, nbytes: int) -> int: ...


class Wire:
    """Buffered reads from a connection (a socket, or anything with ``recv_into``), through one buffer.

    :meth:`take` returns small pieces (headers, command sets) and :meth:`stream` hands large ones on
    in the buffer's own memory, so a data set crosses Python once per buffer, not once per PDV.
    """

    def __init__(self, source: Source, size: int = 1 << 18) -> None:
        self.source = source
        self._buf = bytearray(size)
        self._view = memoryview(self._buf)
        self._start = self._end = 0

    @property
    def buffered(self) -> int:
        return self._end - self._start

    def _fill(self, got: int) -> None:
        if self._start == self._end:
            self._start = self._end = 0
        elif self._end == len(self._buf):  # keep what is left, at the front
            left = self._end - self._start
            self._buf[:left] = self._buf[self._start:self._end]
            self._start, self._end = 0, left
        n = self.source.recv_into(self._view[self._end:], len(self._buf) - self._end)
        if not n:
            raise Closed(got)
        self._end += n

    def more(self) -> None:
        """Wait until at least one byte is buffered; :class:`Closed` when the peer closes first."""
        if not self.buffered:
            self._fill(0)

    def take(self, n: int) -> bytes:
        """Exactly ``n`` bytes (at most the buffer's size); :class:`Closed` when the peer closes first."""
        if n > len(self._buf):
            raise ValueError(f"take({n}) over the buffer of {len(self._buf)}")
        while self.buffered < n:
            if len(self._buf) - self._start < n:  # too near the end: move what is left to the front
                left = self.buffered
                self._buf[:left] = self._buf[self._start:self._end]
                self._start, self._end = 0, left
            self._fill(self.buffered)
        piece = bytes(self._view[self._start:self._start + n])
        self._start += n
        return piece

    def stream(self, n: int) -> Iterator[memoryview]:
        """``n`` bytes in pieces (each valid until the next is asked for); :class:`Closed` when cut short."""
        left = n
        while left:
            if not self.buffered:
                self._fill(n - left)
            piece = self._view[self._start:self._start + min(left, self.buffered)]
            self._start += len(piece)
            left -= len(piece)
            yield piece


def pdvs(wire: Wire, length: int) -> Iterator[tuple[int, int, int]]:
    """The PDV items of a P-DATA-TF whose body (``length`` bytes) is next on ``wire``: (context ID,
    Message Control Header, value length) each, the caller reading the value before asking for the next.

    :class:`Malformed` for an item under 2 bytes or longer than what is left of the PDU (PS3.8 9.3.5.1).
    """
    left = length
    if left == 0:
        raise Malformed(f"{BAD_PDU}no PDV item")
    while left:
        if left < PDV_HEADER:
            raise Malformed(f"{BAD_PDU}{left} bytes left, too few for a PDV item")
        item, context, control = _PDV.unpack(wire.take(PDV_HEADER))
        if item < 2 or item - 2 > left - PDV_HEADER:
            raise Malformed(f"{BAD_PDU}PDV item of {item} bytes, {left - 4} left in its P-DATA-TF")
        left -= PDV_HEADER + item - 2
        yield context, control, item - 2
