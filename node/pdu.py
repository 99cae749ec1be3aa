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
from collections.abc import Iterator, Sequence
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


def a_abort(reason: int, *, source: int = 2) -> bytes:
    """An A-ABORT PDU (PS3.8 9.3.8): from the service provider (source 2, ``reason``), or from the service
    user (source 0, reason 0), as an SCU gives up on its own association."""
    return struct.pack(">BBLBBBB", A_ABORT, 0, 4, 0, 0, source, reason)


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


# -- association set-up (PS3.8 9.3.2-9.3.4, Annex D) ---------------------------------------------------

#: The DICOM Application Context Name (PS3.7 A.2.1), the only one.
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
#: Item types (PS3.8 9.3.2.1-9.3.3.3, D.3.3): Application Context, Presentation Context (RQ, AC), Abstract and
#: Transfer Syntax, User Information and its Maximum Length, Implementation Class UID, Asynchronous Operations
#: Window and Implementation Version Name.
APP_CONTEXT_ITEM, CONTEXT_RQ_ITEM, CONTEXT_AC_ITEM = 0x10, 0x20, 0x21
ABSTRACT_ITEM, TRANSFER_ITEM, USER_INFO_ITEM = 0x30, 0x40, 0x50
MAX_LENGTH_ITEM, IMPLEMENTATION_CLASS_ITEM, ASYNC_WINDOW_ITEM, IMPLEMENTATION_VERSION_ITEM = 0x51, 0x52, 0x53, 0x55
_ITEM = struct.Struct(">BBH")
#: What an A-ASSOCIATE-RQ or -AC holds before its items: protocol version, reserved, called and calling AE
#: titles, 32 reserved bytes (PS3.8 9.3.2, 9.3.3).
_FIXED = struct.Struct(">HH16s16s32s")
#: A-ASSOCIATE-RJ's Result, Source and Reason / Diag. (PS3.8 9.3.4), in the words pynetdicom gave them.
_RESULTS = {1: "Rejected Permanent", 2: "Rejected Transient"}
_SOURCES = {1: "Service User", 2: "Service Provider (ACSE)", 3: "Service Provider (Presentation)"}
_REASONS = {
    1: {1: "No reason given", 2: "Application context name not supported", 3: "Calling AE title not recognised",
        7: "Called AE title not recognised"},
    2: {1: "No reason given", 2: "Protocol version not supported"},
    3: {1: "Temporary congestion", 2: "Local limit exceeded"},
}


def pdu_item(kind: int, value: bytes) -> bytes:
    """An item or sub-item of an A-ASSOCIATE PDU (PS3.8 9.3.2): its type, a reserved byte, its length."""
    if len(value) > 0xFFFF:
        raise ValueError(f"an item of {len(value)} bytes, over the 65535 its length holds")
    return _ITEM.pack(kind, 0, len(value)) + value


def _ascii(text: str, what: str, limit: int) -> bytes:
    raw = text.encode("ascii", "replace")
    if not raw or len(raw) > limit or not text.isascii():
        raise ValueError(f"{what} {text!r}: 1 to {limit} ASCII characters")
    return raw


def a_associate_rq(calling: str, called: str, contexts: Sequence[tuple[str, Sequence[str]]], *, max_length: int,
                   implementation_class_uid: str, version_name: str) -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2): the DICOM application context, one presentation context per
    (abstract syntax, transfer syntaxes) with IDs 1, 3, 5... in order, and User Information with the
    largest P-DATA-TF PDU we take (``max_length``, 0: any), our Implementation Class UID and Version Name.
    ValueError for an AE title, UID or name that the PDU cannot carry.

    >>> rq = a_associate_rq("US", "THEM", [("1.2.840.10008.1.1", ["1.2.840.10008.1.2"])], max_length=16382,
    ...                     implementation_class_uid="1.2.3", version_name="V1")
    >>> pdu_header(rq), _FIXED.unpack_from(rq, PDU_HEADER)[:4]
    ((1, 170), (1, 0, b'THEM            ', b'US              '))
    >>> [(hex(kind), value[:4]) for kind, value in pdu_items(rq, PDU_HEADER + _FIXED.size, "")]
    [('0x10', b'1.2.'), ('0x20', b'\\x01\\x00\\x00\\x00'), ('0x50', b'Q\\x00\\x00\\x04')]
    """
    if not 1 <= len(contexts) <= 128:
        raise ValueError(f"{len(contexts)} presentation contexts: 1 to 128 may be proposed")
    items = [pdu_item(APP_CONTEXT_ITEM, APPLICATION_CONTEXT.encode("ascii"))]
    for number, (abstract, syntaxes) in enumerate(contexts):
        if not syntaxes:
            raise ValueError(f"a presentation context for {abstract} without a transfer syntax")
        body = pdu_item(ABSTRACT_ITEM, _ascii(abstract, "UID", 64)) + b"".join(
            pdu_item(TRANSFER_ITEM, _ascii(ts, "UID", 64)) for ts in syntaxes)
        items.append(pdu_item(CONTEXT_RQ_ITEM, struct.pack(">BBBB", 2 * number + 1, 0, 0, 0) + body))
    items.append(pdu_item(USER_INFO_ITEM, pdu_item(MAX_LENGTH_ITEM, struct.pack(">L", max_length))
                       + pdu_item(IMPLEMENTATION_CLASS_ITEM, _ascii(implementation_class_uid, "UID", 64))
                       + pdu_item(IMPLEMENTATION_VERSION_ITEM, _ascii(version_name, "Implementation Version Name", 16))))
    fixed = _FIXED.pack(1, 0, _ascii(called, "called AE title", 16).ljust(16),
                        _ascii(calling, "calling AE title", 16).ljust(16), bytes(32))
    body = fixed + b"".join(items)
    return _HEADER.pack(A_ASSOCIATE_RQ, 0, len(body)) + body


@dataclass(frozen=True)
class Accepted:
    """An A-ASSOCIATE-AC: the contexts accepted, {ID: (abstract syntax as proposed, transfer syntax)}, and
    the largest P-DATA-TF PDU the peer takes (0: any; PS3.8 D.1)."""

    contexts: dict[int, tuple[str, str]]
    max_length: int


@dataclass(frozen=True)
class Rejected:
    """An A-ASSOCIATE-RJ (PS3.8 9.3.4): ``permanent`` when its result is 1; :func:`str` names all three.

    >>> str(Rejected(1, 1, 7))
    'Rejected Permanent, Service User: Called AE title not recognised'
    """

    result: int
    source: int
    reason: int

    @property
    def permanent(self) -> bool:
        return self.result == 1

    def __str__(self) -> str:
        unknown = "(no value available)"
        return (f"{_RESULTS.get(self.result, unknown)}, {_SOURCES.get(self.source, unknown)}: "
                f"{_REASONS.get(self.source, {}).get(self.reason, unknown)}")


def pdu_items(data: bytes, at: int, what: str) -> Iterator[tuple[int, bytes]]:
    """(type, value) of the items or sub-items from ``at`` to the end of ``data``, each within what is left
    (:class:`Malformed` for one that runs past it; ``what`` names ``data`` in the reason)."""
    while at < len(data):
        if len(data) - at < _ITEM.size:
            raise Malformed(f"{len(data) - at} bytes left in {what}, too few for an item header")
        kind, _, length = _ITEM.unpack_from(data, at)
        at += _ITEM.size
        if length > len(data) - at:
            raise Malformed(f"item 0x{kind:02X} of {length} bytes, {len(data) - at} left in {what}")
        yield kind, data[at:at + length]
        at += length


def _uid_of(value: bytes) -> str:
    text = value.rstrip(b"\0 ")
    if not text.isascii():
        raise Malformed("a transfer syntax that is not ASCII")
    return text.decode("ascii")


def associate_answer(kind: int, body: bytes, proposed: Sequence[tuple[str, Sequence[str]]]) -> Accepted | Rejected:
    """What an A-ASSOCIATE-AC or -RJ (``kind``, ``body``: what follows the PDU header) answers to the contexts
    ``proposed`` (IDs 1, 3, 5... as :func:`a_associate_rq` gave them); :class:`Malformed` for any other PDU,
    an item longer than what holds it, or an accepted context we did not propose in that transfer syntax.

    >>> associate_answer(A_ASSOCIATE_RJ, bytes([0, 2, 3, 1]), [])
    Rejected(result=2, source=3, reason=1)
    >>> ac = _FIXED.pack(1, 0, bytes(16), bytes(16), bytes(32)) + pdu_item(CONTEXT_AC_ITEM, bytes([1, 0, 0, 0])
    ...      + pdu_item(TRANSFER_ITEM, b"1.2.840.10008.1.2")) + pdu_item(USER_INFO_ITEM, pdu_item(MAX_LENGTH_ITEM, bytes([0, 0, 16, 0])))
    >>> associate_answer(A_ASSOCIATE_AC, ac, [("1.2.840.10008.1.1", ["1.2.840.10008.1.2"])])
    Accepted(contexts={1: ('1.2.840.10008.1.1', '1.2.840.10008.1.2')}, max_length=4096)
    """
    if kind == A_ASSOCIATE_RJ:
        if len(body) != 4:
            raise Malformed(f"an A-ASSOCIATE-RJ of {len(body)} bytes, not 4")
        return Rejected(body[1], body[2], body[3])
    if kind != A_ASSOCIATE_AC:
        raise Malformed(f"PDU type 0x{kind:02X} where an A-ASSOCIATE-AC or -RJ was expected")
    if len(body) < _FIXED.size:
        raise Malformed(f"an A-ASSOCIATE-AC of {len(body)} bytes, under the {_FIXED.size} of its fixed fields")
    contexts: dict[int, tuple[str, str]] = {}
    max_length = 0
    for item, value in pdu_items(body, _FIXED.size, "the A-ASSOCIATE-AC"):
        if item == CONTEXT_AC_ITEM:
            if len(value) < 4:
                raise Malformed(f"a presentation context item of {len(value)} bytes")
            number, result = value[0], value[2]
            syntaxes = [_uid_of(v) for k, v in pdu_items(value, 4, "a presentation context item") if k == TRANSFER_ITEM]
            if result != 0:
                continue
            if number % 2 == 0 or number // 2 >= len(proposed) or len(syntaxes) != 1:
                raise Malformed(f"presentation context {number} accepted, with {len(syntaxes)} transfer syntaxes, "
                                f"of {len(proposed)} proposed")
            abstract, offered = proposed[number // 2]
            if syntaxes[0] not in offered:
                raise Malformed(f"presentation context {number} accepted in {syntaxes[0]!r}, which we did not propose")
            contexts[number] = (abstract, syntaxes[0])
        elif item == USER_INFO_ITEM:
            for sub, data in pdu_items(value, 0, "the user information item"):
                if sub == MAX_LENGTH_ITEM:
                    if len(data) != 4:
                        raise Malformed(f"a Maximum Length sub-item of {len(data)} bytes, not 4")
                    max_length = struct.unpack(">L", data)[0]
    return Accepted(contexts, max_length)
