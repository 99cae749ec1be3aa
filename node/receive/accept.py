"""Association negotiation for the associations that only store, without pynetdicom.

:class:`node.receive.storer.Dispatcher` hands each whole A-ASSOCIATE-RQ here. When every presentation
context we would accept is a storage SOP class or Verification, and the request carries no user
information we would answer otherwise (user identity, role selection, extended negotiation), the
association runs on our own data path; anything else (Media Creation Management, a user identity, a
request this reader does not take apart plainly) goes to pynetdicom, loaded then
(:mod:`node.receive.workers`). A request whose items run past their ends (which pynetdicom cannot decode
either) raises :class:`node.pdu.Malformed`: it is aborted without loading pynetdicom. The answer is pynetdicom's, byte for byte: the contexts and transfer
syntaxes its ``negotiate_as_acceptor`` picks for an SCP without role selection, the A-ASSOCIATE-AC its
``ACSE.send_accept`` encodes with the same Maximum Length, Implementation Class UID and Version Name
(PS3.7 D.3.3), the A-ASSOCIATE-RJ of ``ACSE.send_reject``; ``tests/test_accept.py`` compares them
with pynetdicom's on real and random requests, so the conformance statement holds whichever path serves.

>>> from node.pdu import a_associate_rq
>>> from node.receive.sopclasses import VERIFICATION
>>> rq = a_associate_rq("STORESCU", "MEDIANODE", [(VERIFICATION, ["1.2.840.10008.1.2"])], max_length=16384,
...                     implementation_class_uid="1.2.3", version_name="SCU")
>>> request = own_path(rq, {VERIFICATION: ("1.2.840.10008.1.2",)}, frozenset({VERIFICATION}))
>>> request.calling, request.called, request.peer_max, request.accepted
('STORESCU', 'MEDIANODE', 16384, {1: ('1.2.840.10008.1.1', '1.2.840.10008.1.2')})
>>> own_path(rq[:-3], {}, frozenset())
'a malformed A-ASSOCIATE-RQ (its header)'
>>> cut = rq[:-3]  # its last item cut short, its PDU length agreeing
>>> own_path(cut[:2] + (len(cut) - 6).to_bytes(4, "big") + cut[6:], {}, frozenset())
Traceback (most recent call last):
node.pdu.Malformed: malformed A-ASSOCIATE-RQ PDU: item 0x50 of 24 bytes, 21 left in the A-ASSOCIATE-RQ
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from node import dicom
from node.pdu import (
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    ABSTRACT_ITEM,
    APP_CONTEXT_ITEM,
    APPLICATION_CONTEXT,
    ASYNC_WINDOW_ITEM,
    CONTEXT_AC_ITEM,
    CONTEXT_RQ_ITEM,
    IMPLEMENTATION_CLASS_ITEM,
    IMPLEMENTATION_VERSION_ITEM,
    MAX_LENGTH_ITEM,
    TRANSFER_ITEM,
    USER_INFO_ITEM,
    Malformed,
    pdu_item,
    pdu_items,
)

#: Presentation context results (PS3.8 9.3.3.2).
ACCEPTANCE, ABSTRACT_SYNTAX_NOT_SUPPORTED, TRANSFER_SYNTAXES_NOT_SUPPORTED = 0x00, 0x03, 0x04
#: User information sub-items our own path answers as pynetdicom does: Maximum Length, Implementation Class
#: UID and Version Name, and Asynchronous Operations Window (answered by pynetdicom only to a bound handler,
#: and none is bound here). Any other (role selection 0x54, extended negotiation 0x56/0x57, user identity
#: 0x58) goes to pynetdicom.
_PLAIN_USER_ITEMS = (MAX_LENGTH_ITEM, IMPLEMENTATION_CLASS_ITEM, ASYNC_WINDOW_ITEM, IMPLEMENTATION_VERSION_ITEM)
_UID_CHARS = frozenset(b"0123456789.")
#: What a request that cannot be decoded is logged as, on either path (:func:`node.netcompat.decode_pdu`).
BAD_RQ = "malformed A-ASSOCIATE-RQ PDU: "


@dataclass(frozen=True)
class Result:
    """One presentation context of the A-ASSOCIATE-AC: accepted with ``syntax``, or refused (``syntax`` then
    is the first one proposed, as pynetdicom sends it)."""

    context_id: int
    result: int
    abstract: str
    syntax: str


@dataclass(frozen=True)
class Request:
    """An A-ASSOCIATE-RQ our own path serves, and what it negotiated."""

    calling: str
    called: str
    #: The requestor's Maximum Length (PS3.8 D.1.1): our PDUs' bound, 0 unlimited.
    peer_max: int
    #: Accepted presentation contexts: ID -> (abstract syntax, transfer syntax).
    accepted: dict[int, tuple[str, str]]
    results: tuple[Result, ...]


class _Unplain(Exception):
    """Why an A-ASSOCIATE-RQ is left to pynetdicom."""


def own_path(received: bytes, supported: Mapping[str, Sequence[str]], served: frozenset[str]) -> Request | str:
    """The request when our own data path may serve it (every context we accept of it is one of the
    ``served`` SOP classes), else why not: pynetdicom then serves it. :class:`~node.pdu.Malformed` when
    an item runs past the end of what holds it.

    ``supported``: abstract syntax -> the transfer syntaxes we accept it in, ours first.
    """
    try:
        calling, called, contexts, peer_max = _read(received)
    except _Unplain as why:
        return str(why)
    results = negotiate(contexts, supported)
    accepted = {r.context_id: (r.abstract, r.syntax) for r in results if r.result == ACCEPTANCE}
    others = sorted({abstract for abstract, _ in accepted.values() if abstract not in served})
    if others:
        return f"SOP class {', '.join(others)}"
    return Request(calling, called, peer_max, accepted, tuple(results))


def negotiate(contexts: Sequence[tuple[int, str, Sequence[str]]],
              supported: Mapping[str, Sequence[str]]) -> list[Result]:
    """Each proposed (ID, abstract syntax, transfer syntaxes) context's result, as pynetdicom's
    ``negotiate_as_acceptor`` gives them to an SCP without role selection: the first of our transfer
    syntaxes the requestor proposed wins; a context proposed twice (same ID, same abstract syntax) is
    answered once, where it first came, as it last came; the results ordered by ID.

    >>> negotiate([(3, "1.2", ["9", "8"]), (1, "1.3", ["8"]), (5, "1.2", ["7"])], {"1.2": ("8", "9")})
    ... # doctest: +NORMALIZE_WHITESPACE
    [Result(context_id=1, result=3, abstract='1.3', syntax='8'), Result(context_id=3, result=0, abstract='1.2',
     syntax='8'), Result(context_id=5, result=4, abstract='1.2', syntax='7')]
    """
    proposed = {(cid, abstract): syntaxes for cid, abstract, syntaxes in contexts}
    results = []
    for (cid, abstract), syntaxes in proposed.items():
        ours = supported.get(abstract)
        if ours is None:
            results.append(Result(cid, ABSTRACT_SYNTAX_NOT_SUPPORTED, abstract, syntaxes[0]))
            continue
        chosen = next((ts for ts in ours if ts in syntaxes), None)
        results.append(Result(cid, ACCEPTANCE, abstract, chosen) if chosen is not None
                       else Result(cid, TRANSFER_SYNTAXES_NOT_SUPPORTED, abstract, syntaxes[0]))
    return sorted(results, key=lambda r: r.context_id)


def accept_pdu(request: Request, *, max_pdu: int) -> bytes:
    """The A-ASSOCIATE-AC (PS3.8 9.3.3), as pynetdicom's ``ACSE.send_accept`` encodes it."""
    items = [pdu_item(APP_CONTEXT_ITEM, APPLICATION_CONTEXT.encode())]
    for r in request.results:
        items.append(pdu_item(CONTEXT_AC_ITEM, bytes((r.context_id, 0, r.result, 0))
                              + pdu_item(TRANSFER_ITEM, r.syntax.encode())))
    user = (pdu_item(MAX_LENGTH_ITEM, struct.pack(">I", max_pdu))
            + pdu_item(IMPLEMENTATION_CLASS_ITEM, dicom.MEDIANODE_CLASS_UID.encode())
            + pdu_item(IMPLEMENTATION_VERSION_ITEM, dicom.MEDIANODE_VERSION_NAME.encode()))
    items.append(pdu_item(USER_INFO_ITEM, user))
    body = (struct.pack(">HH", 1, 0) + request.called.ljust(16).encode() + request.calling.ljust(16).encode()
            + bytes(32) + b"".join(items))
    return struct.pack(">BBI", A_ASSOCIATE_AC, 0, len(body)) + body


def reject_pdu(code: tuple[int, int, int]) -> bytes:
    """An A-ASSOCIATE-RJ (PS3.8 9.3.4): (result, source, diagnostic).

    >>> reject_pdu((1, 1, 7)).hex()
    '03000000000400010107'
    """
    return struct.pack(">BBIBBBB", A_ASSOCIATE_RJ, 0, 4, 0, *code)


# -- reading ----------------------------------------------------------------------------------


def _items(data: bytes) -> list[tuple[int, bytes]]:
    """The (type, value) items of a variable field (PS3.8 9.3.1); :class:`~node.pdu.Malformed` when one runs
    past the end of ``data``, where pynetdicom's decoder fails too (``PDU._generate_items``)."""
    try:
        return list(pdu_items(data, 0, "the A-ASSOCIATE-RQ"))
    except Malformed as exc:
        raise Malformed(f"{BAD_RQ}{exc}") from None


def _title(raw: bytes) -> str:
    """An AE title as pynetdicom reads it (PS3.8 9.3.2: leading and trailing spaces not significant)."""
    if any(b < 0x20 or b > 0x7E or b == 0x5C for b in raw) or not raw.strip():
        raise _Unplain("an AE title other than 1 to 16 printable ASCII characters")
    return raw.decode("ascii").strip()


def _uid(raw: bytes) -> str:
    """A UID, one trailing NUL dropped as pynetdicom does; only digits and dots, 1 to 64 of them."""
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    if not 0 < len(raw) <= 64 or not _UID_CHARS.issuperset(raw):
        raise _Unplain("a UID other than 1 to 64 digits and dots")
    return raw.decode("ascii")


def _read(data: bytes) -> tuple[str, str, list[tuple[int, str, list[str]]], int]:
    """(calling, called, contexts, Maximum Length) of an A-ASSOCIATE-RQ (PS3.8 9.3.2) read plainly, else
    :class:`_Unplain`: anything unusual, even where pynetdicom reads it, is left to pynetdicom."""
    if len(data) < 74 or data[0] != A_ASSOCIATE_RQ or int.from_bytes(data[2:6], "big") != len(data) - 6:
        raise _Unplain("a malformed A-ASSOCIATE-RQ (its header)")
    called, calling = _title(data[10:26]), _title(data[26:42])
    kinds: dict[int, list[bytes]] = {}
    for kind, value in _items(data[74:]):
        kinds.setdefault(kind, []).append(value)
    if set(kinds) - {APP_CONTEXT_ITEM, CONTEXT_RQ_ITEM, USER_INFO_ITEM} or len(kinds.get(APP_CONTEXT_ITEM, ())) != 1 \
            or len(kinds.get(USER_INFO_ITEM, ())) != 1:
        raise _Unplain("an A-ASSOCIATE-RQ without one application context and one user information item")
    _uid(kinds[APP_CONTEXT_ITEM][0])
    contexts = [_context(value) for value in kinds.get(CONTEXT_RQ_ITEM, [])]
    user: dict[int, bytes] = {}
    for kind, value in _items(kinds[USER_INFO_ITEM][0]):
        if kind not in _PLAIN_USER_ITEMS or kind in user:
            raise _Unplain(f"user information item 0x{kind:02X}")
        user[kind] = value
    if len(user.get(MAX_LENGTH_ITEM, bytes(4))) != 4 or len(user.get(ASYNC_WINDOW_ITEM, bytes(4))) != 4:
        raise _Unplain("a malformed A-ASSOCIATE-RQ (a user information item's length)")
    if IMPLEMENTATION_CLASS_ITEM in user:
        _uid(user[IMPLEMENTATION_CLASS_ITEM])
    if IMPLEMENTATION_VERSION_ITEM in user:
        _title(user[IMPLEMENTATION_VERSION_ITEM])
    return calling, called, contexts, int.from_bytes(user.get(MAX_LENGTH_ITEM, bytes(4)), "big")


def _context(value: bytes) -> tuple[int, str, list[str]]:
    """One presentation context item (PS3.8 9.3.2.2): ID, abstract syntax, transfer syntaxes (each once)."""
    if len(value) < 4 or value[0] % 2 == 0:
        raise _Unplain("a presentation context ID that is not odd")
    abstract: list[str] = []
    syntaxes: list[str] = []
    for kind, sub in _items(value[4:]):
        if kind == ABSTRACT_ITEM:
            abstract.append(_uid(sub))
        elif kind == TRANSFER_ITEM:
            if (ts := _uid(sub)) not in syntaxes:
                syntaxes.append(ts)
        else:
            raise _Unplain(f"sub-item 0x{kind:02X} in a presentation context")
    if len(abstract) != 1 or not syntaxes:
        raise _Unplain("a presentation context without one abstract syntax and a transfer syntax")
    return value[0], abstract[0], syntaxes
