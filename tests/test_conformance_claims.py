"""The conformance statement's claims, read back against what the node does: the keys the configuration
parser accepts, the profiles ``burn`` writes and ``check`` / ``import`` read, the codes written into the
files of a medium. Each test is driven by the statement's own tables and by the code's, so a key, a
profile or a code added later is checked too."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pydicom
import pytest
import yaml
from pynetdicom import AE

from node import conformance
from node.conformance import front
from node.config import parse_config
from node.errors import ConfigError
from tests.conftest import StoreSCP, cli, ct_series
from tests.test_conformance import claimed_identity, rows
from tests.test_serve import Node

PROBE = "zzz_probe"


@pytest.fixture(scope="module")
def statement() -> str:
    return conformance.render()


# -- configuration keys -----------------------------------------------------------------------------------


def _refusal(doc: object) -> str:
    """The message :func:`node.config.parse_config` refuses ``doc`` with ("" when it takes it)."""
    try:
        parse_config(yaml.safe_dump(doc), source="probe.yaml")
    except ConfigError as refused:
        return str(refused)
    return ""


def _nest(path: list[str], leaf: dict[str, object]) -> object:
    """The document that puts ``leaf`` at ``path`` (``[]`` a list item, ``output{kind}`` an output mapping)."""
    doc: object = leaf
    for part in reversed(path):
        kind = re.fullmatch(r"(\w+)\{(\w+)\}", part)
        if part == "[]":
            doc = [doc]
        elif kind:
            doc = {kind.group(1): {"kind": kind.group(2), **doc}} if isinstance(doc, dict) else doc
        else:
            doc = {part: doc}
    return doc


def _dotted(path: list[str]) -> str:
    return ".".join(path).replace(".[]", "[]")


def _spot(path: list[str]) -> str:
    """How the parser's messages name ``path``: list items numbered, output kinds left out."""
    return re.escape(re.sub(r"\{\w+\}", "", _dotted(path).replace("[]", "[0]")))


def accepted_keys(path: list[str] | None = None, given: dict[str, object] | None = None) -> set[str]:
    """Every key path the parser accepts under ``path`` (a mapping holding ``given``), found by asking it: a
    mapping with an unknown key is refused with the list of known ones, and an output mapping without ``kind``
    with the kinds."""
    path = path or []
    found: set[str] = set()
    message = _refusal(_nest(path, {**(given or {}), PROBE: 1}))
    known = re.search(rf"(?:^|\s){_spot(path)}{'.' if path else ''}{PROBE}: unknown key \(known: ([^)]*)\)", message)
    assert known, f"{_dotted(path)}: {message}"
    for key in known.group(1).split(", "):
        below = [*path, key]
        found.add(_dotted(below))
        if given:  # a compression's settings: values, and a mapping under them would be one by modality
            continue
        # a compression is a mapping only with its ``syntax`` (a bare mapping is one by modality)
        for attempt, leaf in ((below, {}), ([*below, "[]"], {}), (below, {"syntax": "none"})):
            message = _refusal(_nest(attempt, {**leaf, PROBE: 1}))
            spot = _spot(attempt)
            if re.search(rf"(?:^|\s){spot}\.{PROBE}: unknown key", message):
                found |= accepted_keys(attempt, leaf)
                break
            kinds = re.search(rf"(?:^|\s){spot}\.kind: required key is missing \(one of ([^)]*)\)", message)
            if kinds:
                for kind in kinds.group(1).split(", "):
                    found |= accepted_keys([*path, f"{key}{{{kind}}}"])
                break
    return found


def as_listed(key: str) -> str:
    """A probed key as the statement's Parameters name it: an output's keys are ``output[KIND].KEY``."""
    kind = re.search(r"\w+\{(\w+)\}\.(\w+)$", key)
    if kind:
        return "output.kind" if kind.group(2) == "kind" else f"output[{kind.group(1)}].{kind.group(2)}"
    return key


def test_every_key_the_parser_accepts_is_documented_with_a_meaning(statement: str) -> None:
    accepted = {as_listed(k) for k in accepted_keys()}
    documented = {r[0].strip("`"): r[2] for r in rows(statement, "Parameters", "Key")}
    assert {"node.ae_title", "routes[].match.called_aet", "output[xorriso].device", "audit.syslog.host"} <= accepted
    assert accepted - set(documented) == set(), "accepted by the parser but not in the statement"
    assert set(documented) - accepted == set(), "in the statement but refused by the parser"
    assert [k for k, meaning in documented.items() if not meaning.strip()] == [], "keys without a meaning"


def test_the_statement_speaks_of_the_product_only(statement: str) -> None:
    assert re.findall(r"(?i)\b(issues?|tickets?|helpers?|todo)\b", statement) == []
    assert re.findall(r":\w+:`", statement) == [], "no Sphinx roles"
    workers = next(r for r in rows(statement, "Parameters", "Key") if r[0] == "`node.workers`")
    assert "SO_REUSEPORT" not in workers[2] and "one listening socket" in workers[2]


# -- coded terminology ------------------------------------------------------------------------------------


def _codes_in(ds: pydicom.Dataset) -> set[tuple[str, str]]:
    found = set()
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                if "CodeValue" in item:
                    found.add((str(item.CodeValue), str(item.CodingSchemeDesignator)))
                found |= _codes_in(item)
    return found


def test_a_burn_writes_exactly_the_codes_the_statement_lists(statement: str, tmp_path: Path) -> None:
    standard = rows(statement, "Context Groups", "Context Group")
    private = rows(statement, "Private Code Definitions", "Coding Scheme Designator")
    listed = {(r[1].strip("`"), r[2]) for r in standard} | {(r[1].strip("`"), r[0]) for r in private}
    [src] = ct_series(tmp_path / "ct", 1, size=32)
    ds = pydicom.dcmread(src)
    received = pydicom.Dataset()
    received.CodeValue, received.CodingSchemeDesignator, received.CodeMeaning = "X1", "99PEER", "a peer's code"
    for row in private:  # each sequence whose codes the statement says a dummy replaces
        for where in re.findall(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)", row[3]):
            ds.add_new(int("".join(where), 16), "SQ", [received])
    ds.save_as(src)
    lossy = next(r[0].strip("`") for r in rows(statement, "Compression", "Value")
                 if r[2] == "lossy" and "STD-GEN-DVD-J2K" in r[4])
    result = cli("burn", tmp_path / "ct", "--out", tmp_path / "out", "--format", "folder", "--profile",
                 "STD-GEN-DVD-J2K", "--compress", lossy, "--deidentify", "--json")
    assert result.code == 0, result.err
    written: set[tuple[str, str]] = set()
    for path in (tmp_path / "out" / "DICOM").rglob("*"):
        if path.is_file():
            written |= _codes_in(pydicom.dcmread(path))
    assert written == listed


# -- media: the profiles each role takes ------------------------------------------------------------------


def test_each_profile_is_written_and_read_as_the_statement_says(statement: str, storescp: StoreSCP,
                                                               tmp_path: Path) -> None:
    creator = {r[0]: r for r in rows(statement, "File-set Creator", "Application Profile")}
    reader = rows(statement, "File-set Reader", "Application Profile")
    checked = {r[0] for r in reader if r[1] == "Check medium"}
    imported = {r[0] for r in reader if r[1] == "Import medium"}
    assert all(r[1:3] == ["Create medium", "FSC"] for r in creator.values())
    refused = cli("burn", tmp_path, "--out", tmp_path / "x.iso", "--profile", "STD-GEN-NONE")
    assert refused.code == 2 and all(name in refused.err for name in creator), refused.err
    ct_series(tmp_path / "ct", 1, size=16)
    for name, row in creator.items():
        out = tmp_path / name / ("medium" if "folder" in row[4] else "medium.iso")
        out.parent.mkdir()
        burned = cli("burn", tmp_path / "ct", "--out", out, "--profile", name)
        assert burned.code == 0, f"{name}: {burned.err}"
        check = cli("check", out, "--json")
        if name in checked:
            assert check.code == 0 and json.loads(check.out)["instances"] == 1, f"{name}: {check.out}{check.err}"
        else:  # refused with the reason the statement gives
            [problem] = json.loads(check.out)["problems"]
            reason = problem["problem"].removeprefix(f"{out}: ")
            assert check.code == 1 and f"not read: {reason}" in statement, f"{name}: {check.out}"
        sent = cli("import", out, "--to", f"{storescp.aet}@127.0.0.1:{storescp.port}", "--json")
        assert (sent.code == 0 and json.loads(sent.out)["sent"] == 1) == (name in imported), f"{name}: {sent.err}"
    assert len(storescp.received()) == (1 if imported else 0)  # the same instance from every medium


# -- references -------------------------------------------------------------------------------------------


def test_the_references_are_the_documents_the_statement_cites(statement: str) -> None:
    listed = rows(statement, "References", "Document")
    body = statement.replace(statement.split("References\n", 1)[1].split("\n## ", 1)[0], "")
    for document, _ in listed:
        pattern = next(p for p, (name, _) in front.DOCUMENTS.items() if name == document)
        assert re.search(pattern, body), f"{document} is listed but never cited"
    assert {"DICOM PS3.2", "DICOM PS3.11", "DICOM PS3.15", "seed"} <= {d for d, _ in listed}


def test_a_citation_of_an_unknown_document_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conformance, "SECTIONS", [front.introduction, lambda: "## A\n\nAs PS3.99 says.\n"])
    with pytest.raises(ValueError, match=r"cited but not in DOCUMENTS .*: PS3\.99"):
        conformance.render()


# -- the Storage SCP's statuses ---------------------------------------------------------------------------


def test_the_scp_answers_the_statuses_the_statement_lists_for_what_happened(statement: str, tmp_path: Path) -> None:
    table = {int(r[0], 16): r[2] for r in rows(statement, "SOP Specific Conformance for Storage SOP Classes", "Status")}
    node = Node(tmp_path, routes="routes:\n  - {match: {called_aet: REJECT}, action: reject}\n"
                                 "  - {match: {called_aet: MEDIANODE}, action: store}\n")
    [ct] = ct_series(tmp_path / "ct", 1, size=8)
    ds = pydicom.dcmread(ct)
    node.start()
    try:
        answered = {}
        for called in ("MEDIANODE", "REJECT"):
            ae = AE(ae_title="CT1")
            ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
            assoc = ae.associate("127.0.0.1", node.port, ae_title=called)
            assert assoc.is_established, called
            answered[called] = int(assoc.send_c_store(ds).Status)
            assoc.release()
    finally:
        node.stop()
    assert set(answered.values()) <= set(table)
    assert "spool" in table[answered["MEDIANODE"]] and "reject route" in table[answered["REJECT"]]


def test_every_file_written_carries_the_identity_the_statement_claims(statement: str, tmp_path: Path) -> None:
    assert "Every file the File-set Creator writes, the DICOMDIR included" in statement
    ct_series(tmp_path / "ct", 2, size=8)
    assert cli("burn", tmp_path / "ct", "--out", tmp_path / "out", "--format", "folder").code == 0
    files = [tmp_path / "out" / "DICOMDIR", *(p for p in (tmp_path / "out" / "DICOM").rglob("*") if p.is_file())]
    assert len(files) == 3  # the DICOMDIR and two instances
    for path in files:
        meta = pydicom.dcmread(path).file_meta
        assert (meta.ImplementationClassUID, meta.ImplementationVersionName) == claimed_identity(statement), path
        assert "SourceApplicationEntityTitle" not in meta
