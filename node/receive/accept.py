"""Association negotiation for the associations that only store, answered without pynetdicom's threads.

:class:`node.receive.storer.Dispatcher` hands each whole A-ASSOCIATE-RQ here. When every presentation
context we would accept is a storage SOP class or Verification, and the request carries no user
information we would answer otherwise (user identity, role selection, extended negotiation), the
association runs on our own data path; anything else (Media Creation Management, a user identity)
goes to pynetdicom as before. The answer is pynetdicom's own, item for item: its
``negotiate_as_acceptor`` picks the contexts and transfer syntaxes from the AE's supported contexts,
its PDU classes encode the A-ASSOCIATE-AC or -RJ, with the same Maximum Length, Implementation Class
UID and Version Name (PS3.7 D.3.3), so the conformance statement holds whichever path serves.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import UID
from pynetdicom._globals import APPLICATION_CONTEXT_NAME
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    AsynchronousOperationsWindowNegotiation,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from node import dicom
from node.netcompat import MalformedPDU, decode_pdu

#: User information items our own path answers as pynetdicom does: nothing back for Asynchronous
#: Operations (pynetdicom answers it only to a bound handler, and binds none here).
_PLAIN_ITEMS = (MaximumLengthNotification, ImplementationClassUIDNotification, ImplementationVersionNameNotification,
                AsynchronousOperationsWindowNegotiation)


@dataclass(frozen=True)
class Request:
    """An A-ASSOCIATE-RQ our own path serves, and what it negotiated."""

    calling: str
    called: str
    #: The requestor's Maximum Length (PS3.8 D.1.1): our PDUs' bound, 0 unlimited.
    peer_max: int
    #: Accepted presentation contexts: ID -> (abstract syntax, transfer syntax).
    accepted: dict[int, tuple[str, str]]
    primitive: A_ASSOCIATE
    results: list[PresentationContext]


def own_path(received: bytes, supported: list[PresentationContext], served: frozenset[str]) -> Request | None:
    """The request when our own data path may serve it (every context we accept of it is one of the
    ``served`` SOP classes), else None: pynetdicom serves it, malformed or not."""
    try:
        rq = decode_pdu(received).to_primitive()
    except MalformedPDU:
        return None
    if any(not isinstance(item, _PLAIN_ITEMS) for item in rq.user_information):
        return None
    results, _ = negotiate_as_acceptor(rq.presentation_context_definition_list, supported, None)
    accepted = {int(cx.context_id or 0): (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                for cx in results if cx.result == 0x00}
    if any(abstract not in served for abstract, _ in accepted.values()):
        return None
    return Request(rq.calling_ae_title.strip(), rq.called_ae_title.strip(), int(rq.maximum_length_received or 0),
                   accepted, rq, results)


def accept_pdu(request: Request, *, max_pdu: int) -> bytes:
    """The A-ASSOCIATE-AC, as pynetdicom's ``ACSE.send_accept`` makes it (PS3.8 9.3.3)."""
    rq = request.primitive
    ac = A_ASSOCIATE()
    ac.application_context_name = UID(APPLICATION_CONTEXT_NAME)
    ac.calling_ae_title, ac.called_ae_title = rq.calling_ae_title, rq.called_ae_title
    ac.result, ac.result_source = 0x00, 0x01
    ac.presentation_context_definition_results_list = request.results
    length = MaximumLengthNotification()
    length.maximum_length_received = max_pdu
    klass = ImplementationClassUIDNotification()
    klass.implementation_class_uid = UID(dicom.MEDIANODE_CLASS_UID)
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = dicom.MEDIANODE_VERSION_NAME
    ac.user_information = [length, klass, version]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(ac)
    return bytes(pdu.encode())


def reject_pdu(code: tuple[int, int, int]) -> bytes:
    """An A-ASSOCIATE-RJ (PS3.8 9.3.4): (result, source, diagnostic)."""
    rj = A_ASSOCIATE()
    rj.result, rj.result_source, rj.diagnostic = code
    pdu = A_ASSOCIATE_RJ()
    pdu.from_primitive(rj)
    return bytes(pdu.encode())
