"""node.receive.accept against pynetdicom: the same negotiation and the same A-ASSOCIATE-AC and -RJ bytes, on
real requests (pynetdicom's AE, DCMTK's storescu and echoscu, captured here) and on random and hostile ones.

The reference is what the receivers ran before they negotiated without pynetdicom: pynetdicom decodes the
request, its ``negotiate_as_acceptor`` picks the contexts, its PDU classes encode the answer.
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydicom.uid import UID
from pynetdicom import AE, AllStoragePresentationContexts, StoragePresentationContexts
from pynetdicom._globals import APPLICATION_CONTEXT_NAME
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    AsynchronousOperationsWindowNegotiation,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from node import dicom
from node.config import parse_config
from node.netcompat import MalformedPDU, decode_pdu
from node.pdu import Malformed
from node.receive import sopclasses
from node.receive.accept import Request, accept_pdu, own_path, reject_pdu
from node.receive.scp import make_ae
from node.receive.storage import TRANSFER_SYNTAXES, VERIFICATION_SYNTAXES, own_path_classes, supported
from tests.conftest import ct_series, need

CONFIG = parse_config("node: {data_dir: /nonexistent, extra_sop_classes: ['1.3.12.2.1107.5.9.1']}\nmcm: {}\n",
                      source="test")
SUPPORTED, SERVED = supported(CONFIG), own_path_classes(CONFIG)
AE_CONTEXTS = make_ae(CONFIG).supported_contexts
PLAIN = (MaximumLengthNotification, ImplementationClassUIDNotification, ImplementationVersionNameNotification,
         AsynchronousOperationsWindowNegotiation)
CT, MR, VERIFY, MCM = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", sopclasses.VERIFICATION, \
    sopclasses.MEDIA_CREATION_MANAGEMENT


# -- the reference: pynetdicom, as the receivers used it ----------------------------------------


def reference(received: bytes) -> tuple[A_ASSOCIATE, list[PresentationContext]] | None:
    try:
        rq = decode_pdu(received).to_primitive()
    except MalformedPDU:
        return None
    if any(not isinstance(item, PLAIN) for item in rq.user_information):
        return None
    results, _ = negotiate_as_acceptor(rq.presentation_context_definition_list, AE_CONTEXTS, None)
    accepted = {int(cx.context_id or 0): str(cx.abstract_syntax) for cx in results if cx.result == 0x00}
    if any(abstract not in SERVED for abstract in accepted.values()):
        return None
    return rq, results


def reference_ac(rq: A_ASSOCIATE, results: list[PresentationContext], max_pdu: int) -> bytes:
    ac = A_ASSOCIATE()
    ac.application_context_name = UID(APPLICATION_CONTEXT_NAME)
    ac.calling_ae_title, ac.called_ae_title = rq.calling_ae_title, rq.called_ae_title
    ac.result, ac.result_source = 0x00, 0x01
    ac.presentation_context_definition_results_list = results
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


def same(received: bytes, *, max_pdu: int = 16384) -> Request | str | Malformed:
    """Our answer to ``received``; when it is our own path's, pynetdicom's is the same, byte for byte; when we
    find it malformed, pynetdicom cannot decode it either."""
    with warnings.catch_warnings():  # pydicom's warnings (a UID with a trailing dot) are warnings in a receiver,
        warnings.simplefilter("ignore")  # not the errors this suite makes of them
        try:
            ours = own_path(received, SUPPORTED, SERVED)
        except Malformed as exc:
            with pytest.raises(MalformedPDU):
                decode_pdu(received)
            return exc
        if isinstance(ours, Request):
            theirs = reference(received)
            assert theirs is not None, "our own path takes a request pynetdicom would not"
            rq, results = theirs
            assert (ours.calling, ours.called) == (rq.calling_ae_title.strip(), rq.called_ae_title.strip())
            assert ours.peer_max == int(rq.maximum_length_received or 0)
            assert ours.accepted == {int(cx.context_id or 0): (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                                     for cx in results if cx.result == 0x00}
            assert accept_pdu(ours, max_pdu=max_pdu) == reference_ac(rq, results, max_pdu)
        return ours


def pynetdicom_rq(calling: str, called: str, contexts: list[tuple[int, str, list[str]]], *, max_length: int = 16384,
                  version: str | None = "PYNETDICOM_304", async_window: bool = False, role: bool = False) -> bytes:
    rq = A_ASSOCIATE()
    rq.application_context_name = UID(APPLICATION_CONTEXT_NAME)
    rq.calling_ae_title, rq.called_ae_title = calling, called
    for cid, abstract, syntaxes in contexts:
        cx = PresentationContext()
        cx.context_id, cx.abstract_syntax = cid, abstract
        for ts in syntaxes:
            cx.add_transfer_syntax(ts)
        rq.presentation_context_definition_list.append(cx)
    length, klass = MaximumLengthNotification(), ImplementationClassUIDNotification()
    length.maximum_length_received, klass.implementation_class_uid = max_length, UID("1.2.826.0.1.3680043.9.3811")
    rq.user_information = [length, klass]
    if version:
        name = ImplementationVersionNameNotification()
        name.implementation_version_name = version
        rq.user_information.append(name)
    if async_window:
        window = AsynchronousOperationsWindowNegotiation()
        window.maximum_number_operations_invoked = window.maximum_number_operations_performed = 1
        rq.user_information.append(window)
    if role:  # SCP/SCU Role Selection for the first context's class (PS3.7 D.3.3.4)
        selection = SCP_SCU_RoleSelectionNegotiation()
        selection.sop_class_uid, selection.scu_role, selection.scp_role = UID(contexts[0][1]), True, True
        rq.user_information.append(selection)
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(rq)
    return bytes(pdu.encode())


# -- the supported contexts ------------------------------------------------------------------------


def test_a_receiver_starts_without_pynetdicom_and_pydicom() -> None:
    """Its accept loop, lobby, negotiation and own data path: pynetdicom comes with the first association
    that needs it (``tests/test_mcm.py``)."""
    code = ("import sys, node.receive.workers, node.receive.storer; "
            "print(' '.join(m for m in ('pydicom', 'pynetdicom', 'numpy') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == ""


def test_our_storage_classes_are_pynetdicom_s() -> None:
    assert set(sopclasses.STORAGE) == {str(cx.abstract_syntax) for cx in
                                       (*AllStoragePresentationContexts, *StoragePresentationContexts)}
    assert len(set(sopclasses.STORAGE)) == len(sopclasses.STORAGE)


def test_the_supported_contexts_are_the_ae_s() -> None:
    assert SUPPORTED == {str(cx.abstract_syntax): tuple(str(ts) for ts in cx.transfer_syntax) for cx in AE_CONTEXTS}
    assert SUPPORTED[VERIFY] == VERIFICATION_SYNTAXES and SUPPORTED[CT] == TRANSFER_SYNTAXES
    assert SUPPORTED[MCM] == VERIFICATION_SYNTAXES and MCM not in SERVED


# -- real requests -------------------------------------------------------------------------------


def captured(run: Callable[[int], object]) -> bytes:
    """The A-ASSOCIATE-RQ ``run(port)`` sends to a listener that answers it with an A-ASSOCIATE-RJ."""
    listener = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def take() -> None:
        client, _ = listener.accept()
        with client:
            data = client.recv(6)
            while len(data) < 6 + struct.unpack(">I", data[2:6])[0]:
                data += client.recv(65536)
            got.append(data)
            client.sendall(reject_pdu((1, 1, 7)))

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    with listener:
        run(listener.getsockname()[1])
        thread.join(30)
    assert got, "no request came"
    return got[0]


def test_pynetdicom_s_requests_get_pynetdicom_s_answer() -> None:
    def associate(port: int) -> None:
        ae = AE("SCU")
        for uid in (CT, MR, VERIFY, "1.2.3.4.5"):
            ae.add_requested_context(uid, [dicom.EXPLICIT_VR_LE, dicom.JPEG_BASELINE, dicom.IMPLICIT_VR_LE])
        ae.add_requested_context(CT, dicom.JPEG_LS_LOSSLESS)
        ae.add_requested_context(MR, "1.2.3.999")
        ae.associate("127.0.0.1", port, ae_title="MEDIANODE")

    request = same(captured(associate))
    assert isinstance(request, Request) and request.calling == "SCU" and request.called == "MEDIANODE"
    assert [r.result for r in request.results] == [0, 0, 0, 3, 0, 4]


@pytest.mark.parametrize("tool", ["storescu", "echoscu"])
def test_dcmtk_s_requests_get_pynetdicom_s_answer(tool: str, tmp_path: Path) -> None:
    need(tool)
    files = [str(f) for f in ct_series(tmp_path, n=1)] if tool == "storescu" else []
    request = same(captured(lambda port: subprocess.run([tool, "-aet", "MODALITY", "-aec", "MEDIANODE", "127.0.0.1",
                                                         str(port), *files], capture_output=True, timeout=30)))
    assert isinstance(request, Request) and request.calling == "MODALITY"
    assert request.accepted, request.results


def test_requests_our_own_path_does_not_take_are_declined_with_why() -> None:
    assert same(pynetdicom_rq("CT1", "MEDIANODE", [(1, CT, [dicom.EXPLICIT_VR_LE]), (3, MCM, [dicom.IMPLICIT_VR_LE])])) \
        == f"SOP class {MCM}"
    rq = pynetdicom_rq("CT1", "MEDIANODE", [(1, CT, [dicom.EXPLICIT_VR_LE])], role=True)
    assert same(rq) == "user information item 0x54"
    assert same(rq[:40]) == "a malformed A-ASSOCIATE-RQ (its header)"
    cut = rq[:-3]  # its user information item cut short, the PDU's length agreeing: aborted without pynetdicom
    malformed = same(cut[:2] + struct.pack(">I", len(cut) - 6) + cut[6:])
    assert isinstance(malformed, Malformed)
    assert re.fullmatch(r"malformed A-ASSOCIATE-RQ PDU: item 0x50 of \d+ bytes, \d+ left in the A-ASSOCIATE-RQ",
                        str(malformed))


def test_the_rejection_is_pynetdicom_s() -> None:
    for code in [(1, 1, 3), (1, 1, 7), (2, 3, 2), (2, 2, 1)]:
        rj = A_ASSOCIATE()
        rj.result, rj.result_source, rj.diagnostic = code
        pdu = A_ASSOCIATE_RJ()
        pdu.from_primitive(rj)
        assert reject_pdu(code) == bytes(pdu.encode())


# -- random and hostile requests -------------------------------------------------------------------

TITLES = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="\\"),
                 min_size=1, max_size=16)
ABSTRACTS = st.sampled_from([CT, MR, VERIFY, MCM, "1.3.12.2.1107.5.9.1", "1.2.3.4.5", sopclasses.STORAGE[-1]])
SYNTAXES = st.lists(st.sampled_from([*TRANSFER_SYNTAXES, "1.2.3.999", "1.2.840.10008.1.2.4.201"]), min_size=1,
                    max_size=5)
CONTEXTS = st.lists(st.tuples(st.integers(0, 127).map(lambda n: 2 * n + 1), ABSTRACTS, SYNTAXES), max_size=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calling=TITLES, called=TITLES, contexts=CONTEXTS, max_length=st.integers(0, 2**32 - 1),
       version=st.none() | TITLES, async_window=st.booleans(), max_pdu=st.integers(0, 2**32 - 1))
def test_random_requests_get_pynetdicom_s_answer(calling: str, called: str, contexts: list[tuple[int, str, list[str]]],
                                                 max_length: int, version: str | None, async_window: bool,
                                                 max_pdu: int) -> None:
    rq = pynetdicom_rq(calling, called, contexts, max_length=max_length, version=version, async_window=async_window)
    ours = same(rq, max_pdu=max_pdu)
    if MCM not in [c[1] for c in contexts if any(ts in VERIFICATION_SYNTAXES for ts in c[2])]:
        assert isinstance(ours, Request), ours  # pynetdicom's own requests are all read plainly


@st.composite
def hostile(draw: st.DrawFn) -> bytes:
    """A real request, then bytes flipped, cut, inserted or its lengths lied about."""
    rq = bytearray(pynetdicom_rq(draw(TITLES), draw(TITLES), draw(CONTEXTS), version=draw(st.none() | TITLES)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(rq)))
        how = draw(st.sampled_from(["flip", "cut", "insert", "length"]))
        if how == "flip" and at < len(rq):
            rq[at] = draw(st.integers(0, 255))
        elif how == "cut":
            del rq[at:at + draw(st.integers(1, 8))]
        elif how == "insert":
            rq[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif how == "length":
            rq[2:6] = struct.pack(">I", len(rq) - 6)  # a cut or insertion the PDU header agrees with
    return bytes(rq)


#: Two contexts of one ID, the second's abstract syntax a UID with a trailing dot, which pydicom warns of.
TRAILING_DOT = (b"\x01\x00\x00\x00\x00\xff\x00\x01\x00\x00" + b"0".ljust(16) * 2 + bytes(32)
                + b"\x10\x00\x00\x151.2.840.10008.3.1.1.1"
                + b" \x00\x008\x01\x00\x00\x000\x00\x00\x191.2.840.10008.5.1.4.1.1.2@\x00\x00\x131.2.840.10008.1.2.1"
                + b" \x00\x008\x01\x00\x00\x000\x00\x00\x191.2.840.10008.5.1.4.1.1.\x00@\x00\x00\x131.2.840.10008.1.2.1"
                + b"P\x00\x00&Q\x00\x00\x04\x00\x00@\x00R\x00\x00\x1a1.2.826.0.1.3680043.9.3811")


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(received=hostile() | st.binary(max_size=300))
@example(received=TRAILING_DOT)
def test_hostile_requests_are_declined_or_answered_as_pynetdicom_does(received: bytes) -> None:
    ours = same(received)
    assert isinstance(ours, (Request, str, Malformed))
