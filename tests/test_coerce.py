"""``import.coerce``: Issuer of Patient ID, Patient ID prefix and map, into a real DCMTK storescp.

Each received instance is read back with pydicom from storescp's folder: the
new values, one Original Attributes Sequence item exactly as PS3.3 C.12.1
requires (the old values, when, who, from which medium, why), everything else
as in the source, pixel data byte for byte. An instance the coercion leaves
alone arrives as its own bytes; a compressed one is coerced without being
decompressed when the destination takes its syntax. dciodvfy finds no error in
a coerced instance that its source did not have.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from node import pixels
from node.config import Coercion, parse_config
from node.errors import EXIT_USAGE, ConfigError
from node.intake import ImportRunner
from node.index import Index
from node.read.header import data_set_offset
from node.read.importer import CoercedAttribute, ImportReport, import_medium
from node.read.watcher import Ready
from tests.conftest import StoreSCP, bundled, cli, ct_series
from tests.test_burn import dciodvfy_errors
from tests.test_check import dcmmkdir
from tests.test_import import received, to, uid_of

RECORD = {"ModifiedAttributesSequence", "AttributeModificationDateTime", "ModifyingSystem", "SourceOfPreviousValues",
          "ReasonForTheAttributeModification"}
#: Own syntax kept when the destination accepts it: compressed, big endian, deflated.
OWN_SYNTAX = ["JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_jpeg_gdcm.dcm", "MR_small_RLE.dcm",
              "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm"]


# -- helpers -----------------------------------------------------------------------------------


def data_set(path: Path) -> bytes:
    """A file's data set as encoded, File Meta aside: what a raw C-STORE carries."""
    with open(path, "rb") as fp:
        fp.seek(data_set_offset(fp))
        return fp.read()


def medium(root: Path, *groups: list[Path]) -> dict[str, Path]:
    """DICOM/IMn copies of the sources with a DCMTK DICOMDIR; SOP Instance UID -> source."""
    (root / "DICOM").mkdir(parents=True)
    sources = [p for group in groups for p in group]
    for n, source in enumerate(sources, 1):
        shutil.copyfile(source, root / "DICOM" / f"IM{n}")
    dcmmkdir(root)
    return {uid_of(p): p for p in sources}


def rewrite(path: Path, change: Callable[[Dataset], None]) -> None:
    ds = dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)


def earlier_record(ds: Dataset) -> None:
    """An Original Attributes Sequence item left by an earlier system, which must be kept."""
    old = Dataset()
    old.PatientName = "EARLIER^NAME"
    item = Dataset()
    item.ModifiedAttributesSequence = Sequence([old])
    item.AttributeModificationDateTime = "20200101120000"
    item.ModifyingSystem = "OTHER PACS"
    item.SourceOfPreviousValues = "OUTSIDE"
    item.ReasonForTheAttributeModification = "CORRECT"
    ds.OriginalAttributesSequence = Sequence([item])


def assert_coerced(got: Path, source: Path, old: dict[str, str | None], *, new: dict[str, str], source_label: str,
                   since: datetime, decoded: bool = False) -> None:
    """``got`` is ``source`` with ``new`` values, and one more Original Attributes item holding ``old`` ones."""
    a, b = dcmread(got), dcmread(source)
    for keyword, value in new.items():
        assert a[keyword].value == value, keyword
    earlier = list(b.get("OriginalAttributesSequence", []))
    assert list(a.OriginalAttributesSequence)[:-1] == earlier  # what was there is kept, ours appended
    record = a.OriginalAttributesSequence[-1]
    assert {e.keyword for e in record} == RECORD
    assert len(record.ModifiedAttributesSequence) == 1
    assert {e.keyword: e.value for e in record.ModifiedAttributesSequence[0]} == {
        k: "" if v is None else v for k, v in old.items()}  # an absent attribute: recorded with no value
    assert set(old) == set(new)
    assert record["AttributeModificationDateTime"].VR == "DT"
    when = datetime.strptime(record.AttributeModificationDateTime, "%Y%m%d%H%M%S.%f%z")
    assert since <= when <= datetime.now().astimezone()
    assert (record.ModifyingSystem, record.SourceOfPreviousValues, record.ReasonForTheAttributeModification) == (
        "MEDIANODE", source_label, "COERCE")
    changed = {*new, "OriginalAttributesSequence"}
    if decoded:
        pixels.register()
        pixels.decompress(b)
        changed |= {"PixelData", "PhotometricInterpretation", "PlanarConfiguration", "LossyImageCompression"}
        assert (a.pixel_array == b.pixel_array).all()
    else:
        assert a.file_meta.TransferSyntaxUID == b.file_meta.TransferSyntaxUID
        assert a.PixelData == b.PixelData  # the very bytes, compressed or not
        changed.add("PixelData")  # storescp writes encapsulated Pixel Data as OB (PS3.5 A.4), whatever VR came
    for element in b:
        if element.keyword not in changed and element.tag != 0xFFFCFFFC:
            assert a[element.tag] == element, element.keyword
    assert {e.keyword for e in a} - {e.keyword for e in b} <= changed


def assert_raw(report: ImportReport, got: Path, source: Path) -> None:
    """Sent as its own bytes (the raw path's reason, no coercion), and storescp wrote the source's data set."""
    uid = uid_of(source)
    assert [o.reason for o in report.outcomes if o.sop_instance_uid == uid] == ["stored"]
    assert uid not in {c.sop_instance_uid for c in report.coercions}
    assert data_set(got) == data_set(source)


def coerced(report: ImportReport) -> dict[str, dict[str, tuple[str | None, str]]]:
    """SOP Instance UID -> {attribute: (old, new)}, from the report's ``coercions``."""
    found: dict[str, dict[str, tuple[str | None, str]]] = {}
    for c in report.coercions:
        found.setdefault(c.sop_instance_uid, {})[c.attribute] = (c.old, c.new)
    return found


# -- each option -----------------------------------------------------------------------------


def test_issuer_of_patient_id(tmp_path: Path, storescp: StoreSCP) -> None:
    absent = ct_series(tmp_path / "a", 2, patient_id="P1")
    other = ct_series(tmp_path / "b", 1, patient_id="P2", IssuerOfPatientID="OTHER")
    rewrite(other[0], earlier_record)
    same = ct_series(tmp_path / "c", 1, patient_id="P3", IssuerOfPatientID="HOSPITAL")
    sources = medium(tmp_path / "DISC1", absent, other, same)
    since = datetime.now().astimezone()
    report = import_medium(tmp_path / "DISC1", destination=to(storescp),
                           coerce=Coercion(issuer_of_patient_id="HOSPITAL"))
    assert (report.ok, report.sent, report.failed) == (True, 4, 0), report.outcomes
    got = received(storescp.folder)
    assert set(got) == set(sources)
    for path in absent:
        assert_coerced(got[uid_of(path)], path, {"IssuerOfPatientID": None}, new={"IssuerOfPatientID": "HOSPITAL"},
                       source_label="DISC1", since=since)
    assert_coerced(got[uid_of(other[0])], other[0], {"IssuerOfPatientID": "OTHER"},
                   new={"IssuerOfPatientID": "HOSPITAL"}, source_label="DISC1", since=since)
    assert len(dcmread(got[uid_of(other[0])]).OriginalAttributesSequence) == 2
    assert_raw(report, got[uid_of(same[0])], same[0])  # already right: not changed, sent as it is
    assert coerced(report) == {
        **{uid_of(p): {"IssuerOfPatientID": (None, "HOSPITAL")} for p in absent},
        uid_of(other[0]): {"IssuerOfPatientID": ("OTHER", "HOSPITAL")},
    }
    reasons = {o.sop_instance_uid: o.reason for o in report.outcomes}
    assert reasons[uid_of(other[0])] == ("stored re-encoded in its own Explicit VR Little Endian; "
                                         "coerced: IssuerOfPatientID 'OTHER' -> 'HOSPITAL'")


def test_patient_id_prefix_over_several_associations(tmp_path: Path, storescp: StoreSCP) -> None:
    """30 instances: sent by two worker processes, each coercing what it claims."""
    many = ct_series(tmp_path / "a", 30, patient_id="P1", size=16)
    spaced = ct_series(tmp_path / "b", 1, patient_id=" 77 ")  # LO: leading and trailing spaces are not significant
    empty = ct_series(tmp_path / "c", 1, patient_id="")
    sources = medium(tmp_path / "DISC2", many, spaced, empty)
    since = datetime.now().astimezone()
    report = import_medium(tmp_path / "DISC2", destination=to(storescp), associations=2,
                           coerce=Coercion(patient_id_prefix="EXT-"))
    assert (report.ok, report.sent) == (True, 32), report.outcomes
    got = received(storescp.folder)
    assert set(got) == set(sources)
    for path in many:
        assert_coerced(got[uid_of(path)], path, {"PatientID": "P1"}, new={"PatientID": "EXT-P1"},
                       source_label="DISC2", since=since)
    old_spaced = dcmread(spaced[0]).PatientID
    assert_coerced(got[uid_of(spaced[0])], spaced[0], {"PatientID": old_spaced}, new={"PatientID": "EXT-77"},
                   source_label="DISC2", since=since)
    assert_raw(report, got[uid_of(empty[0])], empty[0])  # an empty ID is never prefixed
    assert len(report.coercions) == 31
    expected = CoercedAttribute(f"DICOM/IM{len(many) + 1}", uid_of(spaced[0]), "PatientID", old_spaced, "EXT-77")
    assert expected in report.coercions


def test_patient_id_map(tmp_path: Path, storescp: StoreSCP) -> None:
    mapped = ct_series(tmp_path / "a", 2, patient_id="0123")
    unmapped = ct_series(tmp_path / "b", 2, patient_id="P2")
    sources = medium(tmp_path / "DISC3", mapped, unmapped)
    since = datetime.now().astimezone()
    rules = parse_config("import:\n  coerce:\n    patient_id_map: {0123: LOCAL-9, P9: X}\n", source="c.yaml")
    report = import_medium(tmp_path / "DISC3", destination=to(storescp), coerce=rules.imports.coerce)
    assert (report.ok, report.sent) == (True, 4), report.outcomes
    got = received(storescp.folder)
    assert set(got) == set(sources)
    for path in mapped:
        assert_coerced(got[uid_of(path)], path, {"PatientID": "0123"}, new={"PatientID": "LOCAL-9"},
                       source_label="DISC3", since=since)
    for path in unmapped:
        assert_raw(report, got[uid_of(path)], path)
    assert coerced(report) == {uid_of(p): {"PatientID": ("0123", "LOCAL-9")} for p in mapped}


def test_map_prefix_and_issuer_together(tmp_path: Path, storescp: StoreSCP) -> None:
    """A mapped ID is not also prefixed; both old values in one Modified Attributes item."""
    mapped = ct_series(tmp_path / "a", 1, patient_id="A1", IssuerOfPatientID="THEIRS")
    prefixed = ct_series(tmp_path / "b", 1, patient_id="B2")
    latin = ct_series(tmp_path / "c", 1, patient_id="MÜLLER", SpecificCharacterSet="ISO_IR 100")
    medium(tmp_path / "DISC4", mapped, prefixed, latin)
    since = datetime.now().astimezone()
    rules = Coercion(issuer_of_patient_id="OURS", patient_id_prefix="X", patient_id_map=(("A1", "LOCAL1"),))
    report = import_medium(tmp_path / "DISC4", destination=to(storescp), coerce=rules)
    assert (report.ok, report.sent) == (True, 3), report.outcomes
    got = received(storescp.folder)
    assert_coerced(got[uid_of(mapped[0])], mapped[0], {"PatientID": "A1", "IssuerOfPatientID": "THEIRS"},
                   new={"PatientID": "LOCAL1", "IssuerOfPatientID": "OURS"}, source_label="DISC4", since=since)
    assert_coerced(got[uid_of(prefixed[0])], prefixed[0], {"PatientID": "B2", "IssuerOfPatientID": None},
                   new={"PatientID": "XB2", "IssuerOfPatientID": "OURS"}, source_label="DISC4", since=since)
    # ISO_IR 100: the old value and the new one are written in the instance's own character set
    assert_coerced(got[uid_of(latin[0])], latin[0], {"PatientID": "MÜLLER", "IssuerOfPatientID": None},
                   new={"PatientID": "XMÜLLER", "IssuerOfPatientID": "OURS"}, source_label="DISC4", since=since)
    assert b"XM\xdcLLER" in data_set(got[uid_of(latin[0])])
    reason = next(o.reason for o in report.outcomes if o.sop_instance_uid == uid_of(mapped[0]))
    assert reason.endswith("; coerced: PatientID 'A1' -> 'LOCAL1', IssuerOfPatientID 'THEIRS' -> 'OURS'")


def test_without_coercion_nothing_changes(tmp_path: Path, storescp: StoreSCP) -> None:
    sources = medium(tmp_path / "DISC5", ct_series(tmp_path / "a", 2))
    report = import_medium(tmp_path / "DISC5", destination=to(storescp))
    assert (report.ok, report.coercions, report.to_dict()["coercions"]) == (True, [], [])
    got = received(storescp.folder)
    for uid, source in sources.items():
        assert_raw(report, got[uid], source)


def test_a_coercion_that_cannot_be_made_fails_that_instance_alone(tmp_path: Path, storescp: StoreSCP) -> None:
    """A prefixed ID past 64 characters (LO): not sent at all, coerced or not; the others arrive."""
    short = ct_series(tmp_path / "a", 1, patient_id="P1")
    long = ct_series(tmp_path / "b", 1, patient_id="1234567890")
    medium(tmp_path / "DISC6", short, long)
    report = import_medium(tmp_path / "DISC6", destination=to(storescp),
                           coerce=Coercion(patient_id_prefix="P" * 55))
    assert (report.ok, report.sent, report.failed) == (False, 1, 1)
    failed = next(o for o in report.outcomes if o.result == "failed")
    assert failed.sop_instance_uid == uid_of(long[0])
    assert failed.reason.startswith("not sent: cannot coerce it: the coerced Patient ID ")
    assert failed.reason.endswith(" would be longer than 64 characters (PS3.5 6.2: LO)")
    assert set(received(storescp.folder)) == {uid_of(short[0])}
    assert [c.sop_instance_uid for c in report.coercions] == [uid_of(short[0])]


# -- compressed and other syntaxes -------------------------------------------------------------


@pytest.mark.parametrize("name", OWN_SYNTAX)
def test_coerced_in_its_own_syntax_when_accepted(name: str, tmp_path: Path, storescp: StoreSCP) -> None:
    """storescp +xa takes every syntax: compressed pixel data are not decompressed, not one byte changes."""
    source = Path(bundled(name))
    root = tmp_path / "DISC7"
    (root / "DICOM").mkdir(parents=True)
    shutil.copyfile(source, root / "DICOM" / "IM1")
    since = datetime.now().astimezone()
    report = import_medium(root, destination=to(storescp),
                           coerce=Coercion(issuer_of_patient_id="HOSPITAL", patient_id_prefix="EXT-"))
    assert (report.ok, report.sent) == (True, 1), report.outcomes
    old = dcmread(source, stop_before_pixels=True).PatientID
    new = {"IssuerOfPatientID": "HOSPITAL", **({"PatientID": f"EXT-{old}"} if old else {})}
    before = {"IssuerOfPatientID": None, **({"PatientID": old} if old else {})}
    got = received(storescp.folder)[uid_of(source)]
    assert_coerced(got, source, before, new=new, source_label="DISC7", since=since)
    syntax = dcmread(source, stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert report.outcomes[0].reason.startswith(f"stored re-encoded in its own {syntax.name}; coerced: ")


def test_coerced_and_decompressed_for_an_uncompressed_only_destination(
    tmp_path: Path, storescp_with: Callable[..., StoreSCP]
) -> None:
    plain = storescp_with()  # storescp's default: uncompressed syntaxes only
    sources = [Path(bundled(n)) for n in ("JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm")]
    root = tmp_path / "DISC8"
    (root / "DICOM").mkdir(parents=True)
    for n, source in enumerate(sources, 1):
        shutil.copyfile(source, root / "DICOM" / f"IM{n}")
    since = datetime.now().astimezone()
    report = import_medium(root, destination=to(plain), coerce=Coercion(patient_id_prefix="EXT-"))
    assert (report.ok, report.sent) == (True, 2), report.outcomes
    got = received(plain.folder)
    for source in sources:
        old = dcmread(source, stop_before_pixels=True).PatientID
        assert_coerced(got[uid_of(source)], source, {"PatientID": old}, new={"PatientID": f"EXT-{old}"},
                       source_label="DISC8", since=since, decoded=True)
    assert all(o.reason.startswith("stored after decompressing ") and "; coerced: PatientID " in o.reason
               for o in report.outcomes)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "ct_series"])
def test_dciodvfy_finds_no_new_error(name: str, tmp_path: Path, storescp: StoreSCP) -> None:
    source = ct_series(tmp_path / "src", 1)[0] if name == "ct_series" else Path(bundled(name))
    root = tmp_path / "DISC9"
    (root / "DICOM").mkdir(parents=True)
    shutil.copyfile(source, root / "DICOM" / "IM1")
    rules = Coercion(issuer_of_patient_id="HOSPITAL", patient_id_prefix="EXT-")
    report = import_medium(root, destination=to(storescp), coerce=rules)
    assert (report.ok, len(report.coercions)) == (True, 2)
    got = received(storescp.folder)[uid_of(source)]
    assert dciodvfy_errors(got) <= dciodvfy_errors(source)


# -- configuration -------------------------------------------------------------------------------


def test_the_configuration() -> None:
    text = """\
import:
  coerce:
    issuer_of_patient_id: HOSPITAL
    patient_id_prefix: 'EXT '
    patient_id_map:
      0123: 00456
      yes: NO
      A-1: B 2
"""
    assert parse_config(text, source="c.yaml").imports.coerce == Coercion(
        issuer_of_patient_id="HOSPITAL", patient_id_prefix="EXT ",
        patient_id_map=(("0123", "00456"), ("yes", "NO"), ("A-1", "B 2")))  # text as written, in order
    assert parse_config("import: {inbox: in}", source="c.yaml").imports.coerce is None
    assert parse_config("import: {coerce: ~}", source="c.yaml").imports.coerce is None
    assert parse_config("import: {coerce: {}}", source="c.yaml").imports.coerce is None  # empty: off, as absent


LONG = "x" * 65
KEYS = "issuer_of_patient_id, patient_id_prefix, patient_id_map"
TOO_LONG = "is longer than 64 characters (PS3.5 6.2: LO)"
BACKSLASH = "holds a backslash, which separates values in LO (PS3.5 6.2)"
NOT_ASCII = "holds a character outside the default repertoire (PS3.5 6.1.2.1: printable ASCII)"
SPACE = "has a leading or trailing space, which is not significant in LO (PS3.5 6.2)"
NOT_A_MAP = "expected a mapping of old to new Patient IDs (OLD: NEW)"
ERRORS = {  # id: (text, message)
    "too long": ("import:\n  coerce:\n    patient_id_prefix: " + LONG,
                 f"c.yaml:3 import.coerce.patient_id_prefix: '{'x' * 37}...' {TOO_LONG}"),
    "backslash": ("import:\n  coerce:\n    issuer_of_patient_id: 'A\\B'\n",
                  f"c.yaml:3 import.coerce.issuer_of_patient_id: 'A\\\\B' {BACKSLASH}"),
    "not ASCII": ("import:\n  coerce:\n    issuer_of_patient_id: HÔPITAL\n",
                  f"c.yaml:3 import.coerce.issuer_of_patient_id: 'HÔPITAL' {NOT_ASCII}"),
    "leading space": ("import:\n  coerce: {issuer_of_patient_id: ' H'}\n",
                      f"c.yaml:2 import.coerce.issuer_of_patient_id: ' H' {SPACE}"),
    "prefix leading space": ("import:\n  coerce: {patient_id_prefix: ' X'}\n",
                             f"c.yaml:2 import.coerce.patient_id_prefix: ' X' {SPACE}"),
    "empty": ("import:\n  coerce:\n    patient_id_prefix: ''\n",
              "c.yaml:3 import.coerce.patient_id_prefix: '' is not a Long String (LO): it is empty"),
    "null": ("import:\n  coerce:\n    issuer_of_patient_id:\n",
             "c.yaml:3 import.coerce.issuer_of_patient_id: expected a Long String (LO), got an empty value"),
    "unknown key": ("import:\n  coerce:\n    prefix: X\n",
                    f"c.yaml:3 import.coerce.prefix: unknown key (known: {KEYS})"),
    "a boolean": ("import: {coerce: yes}",
                  f"c.yaml:1 import.coerce: expected a mapping of keys ({KEYS}), got 'yes' (a boolean)"),
    "map a list": ("import:\n  coerce:\n    patient_id_map: [A, B]\n",
                   f"c.yaml:3 import.coerce.patient_id_map: {NOT_A_MAP}, got a list"),
    "map empty": ("import:\n  coerce:\n    patient_id_map:\n",
                  f"c.yaml:3 import.coerce.patient_id_map: {NOT_A_MAP}, got an empty value"),
    "map twice": ("import:\n  coerce:\n    patient_id_map:\n      A: B\n      C: D\n      A: E\n",
                  "c.yaml:6 import.coerce.patient_id_map.A: duplicate Patient ID (first on line 4)"),
    "map value long": ("import:\n  coerce:\n    patient_id_map:\n      A: " + LONG + "\n",
                       f"c.yaml:4 import.coerce.patient_id_map.A: '{'x' * 37}...' {TOO_LONG}"),
    "map value empty": ("import:\n  coerce:\n    patient_id_map:\n      A:\n",
                        "c.yaml:4 import.coerce.patient_id_map.A: expected a Long String (LO), got an empty value"),
    "map key a list": ("import:\n  coerce:\n    patient_id_map:\n      [A]: B\n",
                       "c.yaml:4 import.coerce.patient_id_map: expected a Long String (LO), got a list"),
    "map key backslash": ("import:\n  coerce:\n    patient_id_map:\n      'A\\B': C\n",
                          f"c.yaml:4 import.coerce.patient_id_map: 'A\\\\B' {BACKSLASH}"),
}


@pytest.mark.parametrize("text, message", list(ERRORS.values()), ids=list(ERRORS))
def test_configuration_errors_name_file_line_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="c.yaml")
    assert (str(info.value), info.value.exit_code) == (message, EXIT_USAGE)


# -- the command line and serve ---------------------------------------------------------------


def test_command_line_applies_coerce_only_with_config(tmp_path: Path, storescp: StoreSCP) -> None:
    series = ct_series(tmp_path / "a", 2, patient_id="P1")
    medium(tmp_path / "DISC10", series)
    config = tmp_path / "medianode.yaml"
    config.write_text(f"node: {{data_dir: {tmp_path / 'var'}}}\nimport:\n  coerce:\n    patient_id_map: {{P1: LOCAL1}}\n")
    destination = f"{storescp.aet}@127.0.0.1:{storescp.port}"

    plain = cli("import", tmp_path / "DISC10", "--to", destination, "--json")
    assert plain.code == 0, plain.err
    assert json.loads(plain.out)["coercions"] == []

    shown = cli("import", tmp_path / "DISC10", "--to", destination, "--config", config, "--json")
    assert shown.code == 0, shown.err
    assert sorted(json.loads(shown.out)["coercions"], key=lambda c: c["path"]) == [
        {"path": f"DICOM/IM{n}", "sop_instance_uid": uid_of(p), "attribute": "PatientID", "old": "P1", "new": "LOCAL1"}
        for n, p in enumerate(series, 1)
    ]
    text = cli("import", tmp_path / "DISC10", "--to", destination, "--config", config, "--force")  # imported before
    assert text.code == 0, text.err
    assert "  coerced: DICOM/IM1: PatientID 'P1' -> 'LOCAL1'\n" in text.out
    assert {dcmread(p).PatientID for p in received(storescp.folder).values()} == {"LOCAL1"}

    config.write_text(f"node: {{data_dir: {tmp_path / 'var'}}}\nimport:\n  coerce:\n    patient_id_map: {{P1: 'a\\b'}}\n")
    bad = cli("import", tmp_path / "DISC10", "--to", destination, "--config", config)
    assert (bad.code, bad.out) == (EXIT_USAGE, "")
    assert bad.err == (f"medianode import: {config}:4 import.coerce.patient_id_map.P1: 'a\\\\b' holds a backslash, "
                       "which separates values in LO (PS3.5 6.2)\n")


def test_serve_import_runner_passes_the_coercion(tmp_path: Path, storescp: StoreSCP) -> None:
    series = ct_series(tmp_path / "src", 2, patient_id="P1")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    made = cli("burn", tmp_path / "src", "--out", inbox / "disc.iso", "--label", "OUTSIDE1")
    assert made.code == 0, made.err
    config = parse_config(f"""\
node: {{ae_title: READER, data_dir: {tmp_path / "var"}}}
import:
  inbox: {inbox}
  destination: {{ae_title: {storescp.aet}, host: 127.0.0.1, port: {storescp.port}}}
  coerce: {{issuer_of_patient_id: HOSPITAL}}
""", source=str(tmp_path / "medianode.yaml"))
    config.node.data_dir.mkdir()
    since = datetime.now().astimezone()
    index = Index(config.node.data_dir / "index.sqlite")
    try:
        ImportRunner(index, lambda: config, stop=threading.Event()).handle(Ready("inbox", inbox / "disc.iso"))
        record = index.imports()[0]
    finally:
        index.close()
    assert (record["state"], record["sent"]) == ("done", 2)
    kept = json.loads(Path(str(record["report"])).read_text())
    assert {(c["attribute"], c["old"], c["new"]) for c in kept["coercions"]} == {("IssuerOfPatientID", None, "HOSPITAL")}
    assert len(kept["coercions"]) == 2
    got = received(storescp.folder)
    for source in series:
        assert_coerced(got[uid_of(source)], source, {"IssuerOfPatientID": None},
                       new={"IssuerOfPatientID": "HOSPITAL"}, source_label="OUTSIDE1", since=since)
