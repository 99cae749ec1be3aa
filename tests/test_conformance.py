"""The conformance statement says what the code does: it is regenerated and compared, its tables are
checked against the SCP's AE, the profiles, the statuses and the sender, and real DCMTK peers see the
identity it claims."""

from __future__ import annotations

import ast
import json
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest

from node import config, conformance, dicom
from node.config import Config
from node.conformance.markdown import tag
from node.conformance.media_options import OUTPUT_VERIFICATION
from node.media import capture, compress, deidentify
from node.media import uids as media_uids
from node.profiles import PDI_ROOT_FILES, PDI_WEB_FOLDER, PROFILES, compressions
from node.read import sender
from node.receive import scp, storage
from node.syntaxes import COMPRESS, NO_COMPRESSION, by_name, by_uid
from tests.conftest import PEER_ENV, bundled, cli, ct_series, free_port, need, wait_listening
from tests.test_serve import Node

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "conformance-statement.md"
REGENERATE = "medianode conformance --out docs/conformance-statement.md"


@pytest.fixture(scope="module")
def statement() -> str:
    return conformance.render()


def rows(text: str, heading: str, column: str = "") -> list[list[str]]:
    """The body cells of the first table under the heading titled ``heading`` (its number ignored)
    whose first column is ``column`` (any, when empty)."""
    match = re.search(rf"^#+ [\d.]+ {re.escape(heading)}\n(.*?)(?=^#)", text, re.MULTILINE | re.DOTALL)
    assert match, f"no heading {heading!r}"
    for block in re.findall(r"^\|.*?(?=^[^|]|\Z)", match.group(1), re.MULTILINE | re.DOTALL):
        lines = block.splitlines()
        if lines[0].startswith(f"| {column}"):
            return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[2:]]
    raise AssertionError(f"no table under {heading!r} with first column {column!r}")


def uids(cell: str) -> list[str]:
    return re.findall(r"`([\d.]+)`", cell)


def test_the_committed_statement_is_what_the_code_says(statement: str) -> None:
    assert COMMITTED.read_text(encoding="utf-8") == statement, (
        f"{COMMITTED.relative_to(ROOT)} is out of date: regenerate it with `{REGENERATE}` and commit it")


def test_every_storage_class_the_scp_accepts_is_in_the_statement(statement: str) -> None:
    ae = scp.make_ae(Config())
    contexts = {str(cx.abstract_syntax): [str(ts) for ts in cx.transfer_syntax] for cx in ae.supported_contexts}
    storage = {u: ts for u, ts in contexts.items() if u != "1.2.840.10008.1.1"}  # all but Verification
    listed = {uids(r[1])[0] for r in rows(statement, "SOP Classes of the Storage SCP")}
    assert listed == set(storage)
    accepted = rows(statement, "Accepted Presentation Contexts")
    by_syntaxes = {tuple(uids(r[1])): r[0] for r in accepted}
    assert set(map(tuple, storage.values())) | {tuple(contexts["1.2.840.10008.1.1"])} == set(by_syntaxes)
    assert f"the {len(storage)} storage SOP classes" in by_syntaxes[tuple(scp.TRANSFER_SYNTAXES)]
    assert by_syntaxes[scp.VERIFICATION_SYNTAXES].startswith("Verification SOP Class `1.2.840.10008.1.1`")


def test_every_profile_appears_with_its_syntaxes(statement: str) -> None:
    table = {r[0]: r for r in rows(statement, "SOP Classes and Transfer Syntaxes")}
    assert set(table) == set(PROFILES)
    for name, profile in PROFILES.items():
        image, other, private = table[name][1:]
        assert set(uids(image)) == {dicom.EXPLICIT_VR_LE, *profile.image_syntaxes}, name
        assert uids(other) == [dicom.EXPLICIT_VR_LE]
        assert (private == "PRIVATE records") == profile.augmented
    overview = {r[0] for r in rows(statement, "Media Services")}
    assert overview == set(PROFILES)


def test_the_c_store_status_table_is_what_the_scp_answers(statement: str) -> None:
    table = {int(r[0], 16): (r[1], r[2])
             for r in rows(statement, "SOP Specific Conformance for Storage SOP Classes", "Status")}
    assert table == scp.STORE_STATUSES
    named = {value for name, value in vars(dicom).items() if name.isupper() and isinstance(value, int)}
    assert set(table) <= named, "every status is one of node/dicom.py's named statuses"
    # the statuses the C-STORE's functions answer with (every int dicom.NAME they use, in storage.py where both data
    # paths keep an instance, and in scp.py) are the table's, no more, no less
    functions = [f for source in (scp.__file__, storage.__file__)
                 for f in ast.walk(ast.parse(Path(source).read_text())) if isinstance(f, ast.FunctionDef)]
    used = {getattr(dicom, n.attr) for f in functions for n in ast.walk(f)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "dicom"
            and isinstance(getattr(dicom, n.attr), int)}
    assert used == set(table), f"answered but not in the statement: {used - set(table)}; never answered: {set(table) - used}"


def test_the_scu_table_is_what_the_sender_proposes(statement: str) -> None:
    def item(sop: str, ts: str) -> sender.Item:
        return sender.Item("x.dcm", sop, dicom.new_uid(), ts, 0, True)

    ct, private = "1.2.840.10008.5.1.4.1.1.2", "1.3.6.1.4.1.9590.100.1.2.1"
    items = [item(ct, dicom.JPEG_BASELINE), item(ct, dicom.EXPLICIT_VR_LE), item(private, dicom.IMPLICIT_VR_LE)]
    proposed = [c for g in sender.plan_groups(items) for c in g.contexts]
    table = rows(statement, "Proposed Presentation Contexts")
    fallback = tuple(uids(table[1][1]))
    assert fallback == sender.FALLBACK_SYNTAXES
    for sop in (ct, private):
        own = sorted(i.transfer_syntax_uid for i in items if i.sop_class_uid == sop)
        # one context per syntax its instances are in (row 1), then the fallback (row 2)
        assert [ts for s, ts in proposed if s == sop] == [*((t,) for t in own), fallback]
    assert all(r[2] == "SCU" for r in table)


def claimed_identity(statement: str) -> tuple[str, str]:
    table = {r[0]: r[1].strip("`") for r in rows(statement, "Implementation Identifying Information")}
    return table["Implementation Class UID"], table["Implementation Version Name"]


def their_identity(dcmtk_debug_output: str) -> tuple[str, str]:
    """The peer's Implementation Class UID and Version Name as DCMTK's ``-d`` prints them."""
    uid = [v for v in re.findall(r"Their Implementation Class UID:\s*(\S*)", dcmtk_debug_output) if v]
    name = [v for v in re.findall(r"Their Implementation Version Name:\s*(\S*)", dcmtk_debug_output) if v]
    assert uid and name, dcmtk_debug_output[-2000:]
    return uid[-1], name[-1]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    need("echoscu", "storescu")
    n = Node(tmp_path, routes="routes: []\n")
    n.start()
    yield n
    n.stop()


def test_dcmtk_sees_the_identity_the_statement_claims_from_serve(statement: str, node: Node, tmp_path: Path) -> None:
    claimed = claimed_identity(statement)
    echo = subprocess.run(["echoscu", "-d", "-aec", "MEDIANODE", "127.0.0.1", str(node.port)],
                          check=False, capture_output=True, text=True, env=PEER_ENV, timeout=60)
    assert echo.returncode == 0, echo.stdout + echo.stderr
    assert their_identity(echo.stdout + echo.stderr) == claimed
    [ct] = ct_series(tmp_path / "ct", 1, size=8)
    store = subprocess.run(["storescu", "-d", "-aec", "MEDIANODE", "127.0.0.1", str(node.port), str(ct)],
                           check=False, capture_output=True, text=True, env=PEER_ENV, timeout=60)
    assert store.returncode == 0, store.stdout + store.stderr
    assert their_identity(store.stdout + store.stderr) == claimed


def test_dcmtk_sees_the_same_identity_from_the_import_scu(statement: str, tmp_path: Path) -> None:
    need("storescp")
    port, log = free_port(), tmp_path / "storescp.log"
    (tmp_path / "in").mkdir()
    with open(log, "wb") as out:
        proc = subprocess.Popen(["storescp", "-d", "-aet", "STORESCP", "-od", str(tmp_path / "in"), str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=PEER_ENV)
        try:
            wait_listening(proc, port, "storescp")
            ct_series(tmp_path / "medium", 1, size=8)
            result = cli("import", tmp_path / "medium", "--to", f"STORESCP@127.0.0.1:{port}")
            assert result.code == 0, result.out + result.err
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert their_identity(log.read_text(errors="replace")) == claimed_identity(statement)


def test_the_command_prints_or_writes_the_statement(statement: str, tmp_path: Path) -> None:
    printed = cli("conformance")
    assert (printed.code, printed.out) == (0, statement)
    written = cli("conformance", "--out", tmp_path / "cs.md")
    assert (written.code, written.out) == (0, "")
    assert (tmp_path / "cs.md").read_text(encoding="utf-8") == statement


def test_an_output_that_cannot_be_written_is_exit_1_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    result = cli("conformance", "--out", tmp_path / "file" / "cs.md")
    assert result.code == 1
    assert result.err.startswith("medianode conformance: --out ") and "cannot write" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    assert (tmp_path / "file").read_text() == "not a folder"


def test_a_new_section_is_one_function(monkeypatch: pytest.MonkeyPatch) -> None:
    def extra() -> str:
        return "## Extra Things\n\n### Detail\n\nSee [Extra Things](#extra-things).\n"

    monkeypatch.setattr(conformance, "SECTIONS", [*conformance.SECTIONS, extra])
    text = conformance.render()
    number = len(conformance.SECTIONS)
    assert f"## {number} Extra Things\n" in text and f"### {number}.1 Detail\n" in text
    assert f"- [{number} Extra Things](#{number}-extra-things)" in text  # in the table of contents
    assert f"See [Extra Things](#{number}-extra-things)." in text


def test_a_link_to_no_heading_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conformance, "SECTIONS", [lambda: "## A\n\nSee [B](#b).\n"])
    with pytest.raises(ValueError, match="#b must name exactly one heading, not 0"):
        conformance.render()


# -- Media: compression, coercion, UIDs, de-identification, captures, PDI, outputs -----------------------


def test_every_compress_value_is_listed_with_its_syntax_kind_and_profiles(statement: str) -> None:
    table = {r[0].strip("`"): r for r in rows(statement, "Compression", "Value")}
    assert list(table) == list(COMPRESS)
    for value in COMPRESS:
        _, syntax, kind, _, allowed = table[value]
        row = None if value == NO_COMPRESSION else by_name(value)
        assert uids(syntax) == ([row.uid] if row else [])
        assert kind == ("" if row is None else "lossy" if row.writes_lossy else "lossless")
        assert set(allowed.split(", ")) == {p for p in PROFILES if value in compressions(p)}, value


def test_the_fallback_lists_are_the_code_s(statement: str) -> None:
    table = {r[0]: r[1].split(" then ") for r in rows(statement, "Compression", "Asked family")}
    assert table == {family: [by_uid(ts).label for ts in chain] for family, chain in compress.FALLBACK.items()}


def test_a_burn_reports_the_fallback_reason_the_statement_gives(statement: str, tmp_path: Path) -> None:
    example = next(r for r in rows(statement, "Compression", "Image")
                   if r[0] == "CT, 16 bits stored" and r[3] == "none")
    ct_series(tmp_path / "ct", 1, size=32)  # signed, 16 bits stored
    result = cli("burn", tmp_path / "ct", "--out", tmp_path / "out.iso", "--profile", example[1],
                 "--compress", example[2].strip("`"), "--json")
    assert result.code == 0, result.err
    [fallback] = json.loads(result.out)["fallbacks"]
    assert fallback["reason"] == example[5]


def test_a_lossy_burn_changes_only_what_appendix_b_lists(statement: str, tmp_path: Path) -> None:
    table = {r[0]: r for r in rows(statement, "Attribute Coercion for Compression", "Tag")}
    assert all(r[4] for r in table.values()), "every coerced attribute says why"
    [src] = ct_series(tmp_path / "ct", 1, size=32)
    ds = pydicom.dcmread(src)  # 12 bits stored: JPEG extended takes it as it is, with the pixel value bounds
    ds.BitsStored, ds.HighBit = 12, 11
    ds.add_new(0x00280106, "SS", -1000)  # Smallest Image Pixel Value
    ds.add_new(0x00280107, "SS", 1999)  # Largest Image Pixel Value
    ds.save_as(src)
    result = cli("burn", tmp_path / "ct", "--out", tmp_path / "out", "--format", "folder",
                 "--profile", "STD-GEN-DVD-JPEG", "--compress", "jpeg-extended", "--json")
    assert result.code == 0, result.err
    [written] = [p for p in (tmp_path / "out" / "DICOM").rglob("*") if p.is_file()]
    before, after = pydicom.dcmread(src), pydicom.dcmread(written)
    assert after.file_meta.TransferSyntaxUID == dicom.JPEG_EXTENDED
    changed = {t for t in {*before.keys(), *after.keys()} - {0x7FE00010}
               if before.get(t) is None or after.get(t) is None or before[t].value != after[t].value}
    changed |= {t for t in (0x00020003, 0x00020010) if before.file_meta[t].value != after.file_meta[t].value}
    assert {tag(t) for t in changed} <= {k for k, r in table.items() if r[3] != "kept"}
    for t in changed:
        expected = table[tag(t)][3]
        assert ("removed" in expected) == (t not in after and t not in after.file_meta), tag(t)
    decoded = after.pixel_array  # the bounds are the compressed image's own, not the source's -1000 and 1999
    assert (after.SmallestImagePixelValue, after.LargestImagePixelValue) == (decoded.min(), decoded.max())
    assert (after.SmallestPixelValueInSeries, after.LargestPixelValueInSeries) == (decoded.min(), decoded.max())
    assert after.LossyImageCompressionMethod == by_uid(dicom.JPEG_EXTENDED).method
    assert str(after.DerivationDescription).startswith(compress.DERIVATION_PREFIX)


def test_the_uid_tables_are_the_uid_map_s(statement: str) -> None:
    never = {r[0] for r in rows(statement, "Attributes Never Renamed", "Tag")}
    assert never == {tag(t) for t in media_uids.KIND_TAGS}
    table = rows(statement, "New UIDs and De-identification", "UID")
    assert all(set(r[1:]) <= {"renamed", "kept"} for r in table)
    root = next(r for r in table if "`1.2.840.10008`" in r[0])
    assert root[1:] == ["kept", "kept"]


def test_the_private_block_is_the_one_new_uids_writes(statement: str) -> None:
    table = rows(statement, "Data Dictionary of Private Attributes", "Tag")
    assert table[0][1] == f"Private Creator `{media_uids.PRIVATE_CREATOR}`"
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    originals = media_uids.identity(ds)
    media_uids.keep_original_uids(ds, originals)
    block = ds.private_block(media_uids.PRIVATE_GROUP, media_uids.PRIVATE_CREATOR)
    written = {f"({media_uids.PRIVATE_GROUP:04X},xx{e:02X})": ds[block.get_tag(e)] for e in range(0x10, 0x100)
               if e in block}
    assert [r[0] for r in table[1:]] == sorted(written)
    for tag_, name, vr, _ in table[1:]:
        assert written[tag_].VR == vr and name.startswith("Original ")
        assert str(written[tag_].value) in originals.values()


def test_every_basic_profile_action_is_counted(statement: str) -> None:
    table = {r[0].strip("`"): int(r[3]) for r in rows(statement, "Basic Application Level Confidentiality Profile",
                                                      "Action")}
    assert table == Counter(deidentify.BASIC_PROFILE.values())
    burns = {r[1].strip("`") for r in rows(statement, "Basic Application Level Confidentiality Profile", "SOP Class")}
    assert burns == deidentify.BURNS_TEXT


def test_a_capture_writes_the_attributes_appendix_a_lists(statement: str, tmp_path: Path) -> None:
    table = rows(statement, "Secondary Capture and Encapsulated PDF Instances", "Tag")
    sc = {r[0] for r in table if r[3] and "(a JPEG source)" not in r[3]}
    pdf = {r[0] for r in table if r[4]}
    png, doc = tmp_path / "a.png", tmp_path / "b.pdf"
    png.write_bytes(imagecodecs.png_encode(np.full((8, 8, 3), 7, np.uint8)))
    doc.write_bytes(b"%PDF-1.4\ntrailer << >>\n%%EOF\n")
    identity = capture.Identity("DOE^JO", "P1", "19800101", "M", "2.25.5", "20200101", "101010", "X", "A1", "R^R",
                                "H", "S1")
    node = capture.Equipment(config.NodeIdentity("S1", "MODEL", "SN1", "DEPARTMENT", "ADDRESS"), "INSTITUTION")
    for src, expected in ((png, sc), (doc, pdf)):
        capture.capture(str(src), str(tmp_path / "out.dcm"), identity, series_uid="2.25.6", equipment=node)
        written = pydicom.dcmread(tmp_path / "out.dcm")
        assert {tag(int(e.tag)) for e in written} == expected, src.name


def test_the_pdi_root_and_the_output_kinds_are_the_code_s(statement: str) -> None:
    root = {r[0].strip("`") for r in rows(statement, "IHE PDI", "Entry")}
    assert PDI_ROOT_FILES | {f"{PDI_WEB_FOLDER}/"} <= root
    outputs = {r[0].strip("`"): r for r in rows(statement, "Outputs", "Kind")}
    assert set(outputs) == set(config.OUTPUTS) == set(OUTPUT_VERIFICATION)
    for kind, (_, keys, required) in config.OUTPUTS.items():
        listed = [k.split("`")[1] for k in outputs[kind][2].split(", ")]
        assert listed == list(keys)
        assert {k.split("`")[1] for k in outputs[kind][2].split(", ") if "(required)" in k} == set(required)
