"""Every parser of outside bytes, fed mutated real inputs: each input is read, or refused with the error its
caller turns into a clear message; nothing else escapes (README "Security", Fuzzing).

Bounded and reproducible (derandomized, no example database): a few hundred inputs per parser, seeded
from real files (``tests/fuzzing.py``) and mutated the structure-aware way. The long, coverage-guided
runs are ``scripts/fuzz``; what they found is pinned below, each as the smallest input that showed it.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pynetdicom import _config, dimse_messages
from pynetdicom.dimse_messages import DIMSEMessage

from node import dcmio, netcompat
from node.media.sources import UnreadableSource
from node.media.sources import read as read_source
from node.read.check import check_medium
from node.tags import ROWS, SOP_CLASS_UID, SOP_INSTANCE_UID
from tests import fuzzing
from tests.conftest import until
from tests.test_netguard import _close_attackers, associated, attacker, closed, node, served_within_5_s  # noqa: F401
from tests.test_serve import Node

#: Derandomized and database-free: every run tries the same inputs, and CI stores nothing.
BOUNDED = settings(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))

OPS = st.lists(st.tuples(st.sampled_from(fuzzing.KINDS), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
               min_size=1, max_size=4)


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, fuzzing.Target]]:
    """The harness's targets, in this process; the receiver's settings the ``commands`` target makes (its
    temporary folder, pynetdicom's streaming of data sets) are the process's, so they are put back after."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", tempfile.tempdir)
        patch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", _config.STORE_RECV_CHUNKED_DATASET)
        patch.setattr(dimse_messages, "NamedTemporaryFile", dimse_messages.NamedTemporaryFile)  # type: ignore[attr-defined]
        yield fuzzing.targets(tmp_path_factory.mktemp("fuzz"))


def mutated(target: fuzzing.Target, data: st.DataObject) -> bytes:
    seed = data.draw(st.sampled_from(target.seeds), label="seed")
    return fuzzing.apply(seed, data.draw(OPS, label="ops"), hot=target.hot)


@pytest.mark.parametrize(("name", "examples"), [
    ("elements", 300), ("dicomdir", 200), ("iso", 200), ("udf", 300), ("pdu", 500), ("commands", 400),
])
def test_every_input_is_read_or_refused_clearly(targets: dict[str, fuzzing.Target], name: str, examples: int) -> None:
    target = targets[name]
    for seed in target.seeds:  # the real inputs themselves
        target.run(seed)

    @settings(BOUNDED, max_examples=examples)
    @given(data=st.data())
    def mutations(data: st.DataObject) -> None:
        target.run(mutated(target, data))

    mutations()


def test_the_mutations_change_the_seeds() -> None:
    seed = bytes(range(64))
    assert fuzzing.apply(seed, [("truncate", 10, 0)]) == seed[:10]
    assert fuzzing.apply(seed, [("u32", 4, 1)]) == seed[:4] + struct.pack("<L", 1) + seed[8:]
    assert fuzzing.apply(seed, [("byte", 8, 0xAB)], hot=(32, 48))[40] == 0xAB
    assert fuzzing.apply(seed, [("insert", 0, 2)]).startswith(fuzzing.TOKENS[2])


# -- what the long runs found ------------------------------------------------------------------

#: A preamble, then a File Meta element of undefined length: dcmio declines it, and the pydicom fallback read it again.
META_UNDEFINED = b"\0" * 128 + b"DICM" + b"\x02\x00\x01\x00OB\x00\x00\xff\xff\xff\xff"
#: A File Meta element whose length runs past the end of the file.
META_PAST_END = b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x40\x001.2"
@pytest.mark.parametrize("data", [META_UNDEFINED, META_PAST_END], ids=["undefined", "past-end"])
def test_a_malformed_file_meta_is_an_unreadable_source(tmp_path: Path, data: bytes) -> None:
    """burn and the watched folders list the file as unreadable, not a traceback."""
    path = tmp_path / "IM1"
    path.write_bytes(data)
    with pytest.raises(UnreadableSource, match="malformed File Meta Information"):
        read_source(str(path))


def test_the_last_element_of_a_file_is_read_where_it_is(tmp_path: Path) -> None:
    """An element header in the last 12 bytes of a file was decoded from where the read window began."""
    path = tmp_path / "bare"
    path.write_bytes(dcmio.encode(SOP_CLASS_UID, "UI", "1.2.840.10008.5.1.4.1.1.7")
                     + dcmio.encode(SOP_INSTANCE_UID, "UI", "1.2.3") + dcmio.encode(ROWS, "US", b"\x01\x00"))
    header = dcmio.read_header(str(path), wanted=frozenset({SOP_INSTANCE_UID, ROWS}), vrs={})
    assert header.text(SOP_INSTANCE_UID) == "1.2.3"
    assert header.elements[ROWS].value == b"\x01\x00"


def test_a_file_meta_value_pydicom_cannot_decode_is_a_problem(tmp_path: Path) -> None:
    """A Media Storage SOP Class UID of an unknown VR, which pydicom decodes only when it is first read."""
    meta = dcmio.file_meta("1.2.840.10008.5.1.4.1.1.7", "1.2.3", "1.2.840.10008.1.2.1").replace(
        b"\x02\x00\x02\x00UI", b"\x02\x00\x02\x00ZZ")
    (tmp_path / "IM1").write_bytes(meta + dcmio.encode(SOP_CLASS_UID, "UI", "1.2.840.10008.5.1.4.1.1.7")
                                   + dcmio.encode(SOP_INSTANCE_UID, "UI", "1.2.3"))
    report = check_medium(tmp_path)
    assert [(f.path, f.problem.split(":")[0]) for f in report.problems if f.path == "IM1"] == [("IM1", "unreadable")]
    assert "Unknown Value Representation" in next(f.problem for f in report.problems if f.path == "IM1")


#: PDUs pynetdicom cannot decode or make a primitive of, each by what it raised there.
BAD_PDUS = {
    "unknown item (KeyError)": b"\x01\x00" + struct.pack(">L", 72) + b"\x00\x01\x00\x00" + b"A" * 32 + bytes(32)
                               + b"\x31\x00\x00\x00",
    "item past the PDU (AssertionError)": b"\x01\x00" + struct.pack(">L", 72) + b"\x00\x01\x00\x00" + b"A" * 32
                                          + bytes(32) + b"\x10\x00\x00\x09",
    "PDV past the PDU (AssertionError)": b"\x04\x00" + struct.pack(">L", 10) + struct.pack(">L", 100) + b"\x01\x03"
                                         + bytes(4),
    "abort source 224 (ValueError)": b"\x07\x00" + struct.pack(">L", 4) + b"\x00\x00\xe0\x00",
    "called AE title of spaces (ValueError)": b"\x01\x00" + struct.pack(">L", 68) + b"\x00\x01\x00\x00"
                                              + b" " * 16 + b"A" * 16 + bytes(32),
}


@pytest.mark.parametrize("pdu", BAD_PDUS.values(), ids=BAD_PDUS.keys())
def test_a_pdu_pynetdicom_cannot_decode_is_malformed(pdu: bytes) -> None:
    with pytest.raises(netcompat.MalformedPDU, match="^malformed A-|^malformed P-"):
        netcompat.decode_pdu(pdu)


def command_pdu(context_id: int, command: bytes) -> bytes:
    """One P-DATA-TF holding one PDV: the last fragment of a command set (PS3.8 E.2)."""
    pdv = bytes([context_id, 0x03]) + command
    return b"\x04\x00" + struct.pack(">L", 4 + len(pdv)) + struct.pack(">L", len(pdv)) + pdv


def implicit(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(value)) + value


#: A command set without a Command Field, and a C-STORE-RQ with a data set, to go on a presentation context never
#: accepted.
NO_COMMAND_FIELD = implicit(0x00000002, b"1.2.840.10008.1.1\0")
STORE = (implicit(0x00000002, b"1.2.840.10008.5.1.4.1.1.2\0") + implicit(0x00000100, b"\x01\x00")
         + implicit(0x00000110, b"\x01\x00") + implicit(0x00000700, b"\x00\x00")
         + implicit(0x00000800, b"\x00\x00") + implicit(0x00001000, b"1.2.3\0"))


@pytest.mark.parametrize(("context_id", "command"), [(1, NO_COMMAND_FIELD), (99, STORE)], ids=["no-command-field",
                                                                                            "context-not-accepted"])
def test_a_command_set_pynetdicom_cannot_decode_is_malformed(context_id: int, command: bytes, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", True)  # as the receiver has it (node.receive.scp)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    message = DIMSEMessage()
    primitive = netcompat.decode_pdu(command_pdu(context_id, command)).to_primitive()
    with pytest.raises(netcompat.MalformedPDU, match="^malformed DIMSE message: "):
        netcompat.decode_message(message, primitive, fuzzing.Association())


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # pynetdicom drops the aborted socket
@pytest.mark.parametrize(("pdu", "said"), [
    (command_pdu(1, NO_COMMAND_FIELD), "malformed DIMSE message: "),
    (command_pdu(99, STORE), "malformed DIMSE message: "),
    (BAD_PDUS["PDV past the PDU (AssertionError)"], "malformed P-DATA-TF PDU: "),
], ids=["no-command-field", "context-not-accepted", "pdv-past-pdu"])
def test_a_malformed_message_is_aborted_with_one_line_and_no_traceback(node: Node, pdu: bytes, said: str) -> None:  # noqa: F811
    assoc = associated(node)
    raw = netcompat.raw_socket(assoc)  # type: ignore[arg-type]
    assert raw is not None
    raw.sendall(pdu)
    until(lambda: not assoc.is_established, "the association to be aborted")  # type: ignore[attr-defined]
    assert assoc.is_aborted  # type: ignore[attr-defined]
    until(lambda: said in node.logs(), f"{said!r} in the log")
    assert "Traceback" not in node.logs()
    assert served_within_5_s(node)


@pytest.mark.parametrize(("name", "ours"), [("unknown item (KeyError)", False),
                                            ("item past the PDU (AssertionError)", True)])
def test_a_malformed_a_associate_rq_is_aborted_with_one_line_and_no_traceback(node: Node, name: str,  # noqa: F811
                                                                              ours: bool) -> None:
    """An item past the end of what holds it is aborted by our own reader, which pynetdicom need not be loaded for;
    an unknown item (which our reader leaves to pynetdicom, as any request it does not read plainly) by pynetdicom."""
    sock = attacker(node)
    sock.sendall(BAD_PDUS[name])
    answer = closed(sock, 10.0)
    assert answer is not None and answer.startswith(netcompat.a_abort(netcompat.INVALID_PARAMETER))
    until(lambda: "malformed A-ASSOCIATE-RQ PDU: " in node.logs(), "the refusal in the log")
    assert "Traceback" not in node.logs()
    assert served_within_5_s(node)
    assert ("loading pynetdicom" in node.logs()) is not ours
