"""Our DICOM Conformance Statement (PS3.2), generated from the code's own tables.

Every table is read from the module that owns the behaviour: identity, statuses, record types and
keys from :mod:`node.dicom`; profiles from :mod:`node.profiles`; what the Storage SCP accepts from
the AE :func:`node.receive.scp.make_ae` builds; what the import SCU proposes from
:mod:`node.read.sender`; configuration keys from :mod:`node.config`'s dataclasses and their ``#:``
comments. What the media pipeline does to an instance is found by running it on small samples made
here: :func:`compression_coercions` compresses sample images in every syntax and compares (seed
Appendix B), :func:`created_attributes` captures sample files twice and traces each value to its
source (Appendix A), :func:`uid_coercions` remaps a sample under each UID map (Appendix C),
:func:`fallback_examples` asks :func:`node.media.compress.choose_syntax`. So the statement cannot drift from
the code: ``tests/test_conformance.py`` regenerates ``docs/conformance-statement.md`` and compares,
and checks the tables against real burns and captures. Prose that no table holds is written here.

The layout is PS3.2 Annex A's: 1 Overview, 2 Table of Contents, 3 Introduction, 4 Networking,
5 Media Interchange, 6 Character Sets, 7 Security, 8 Annexes. A section is one function returning
Markdown whose headings carry no numbers (``##`` a section, ``###`` a subsection, ...), listed in
:data:`SECTIONS`; :func:`render` numbers the headings and builds the table of contents. The output
is deterministic: no dates, tables sorted, the version from ``node.__version__``.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from node import __version__, config, dicom, profiles
from node.syntaxes import NATIVE, NO_COMPRESSION, SYNTAXES, by_name, by_uid
from node.tags import PATIENT_ID, PIXEL_DATA

TITLE = "medianode DICOM Conformance Statement"
_CONTENTS = "\x00contents\x00"  # where the table of contents goes, once the headings are numbered


# -- Markdown helpers ------------------------------------------------------------------------


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", "<br>")


def table(head: Sequence[str], rows: Iterable[Sequence[object]], *, sort: bool = True) -> str:
    """A Markdown table; rows sorted unless their order means something."""
    cells = [[_cell(v) for v in row] for row in rows]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in (sorted(cells) if sort else cells)]
    return "\n".join(lines) + "\n"


def uid_name(uid: str) -> str:
    """pydicom's name for a UID, or the UID itself for one it does not know (a private class)."""
    from pydicom.uid import UID

    return str(UID(uid).name)


def syntaxes(uids: Iterable[str]) -> str:
    """Transfer syntaxes as one cell: ``Name `uid` `` per line, in the order given."""
    return "<br>".join(f"{uid_name(u)} `{u}`" for u in uids)


def tag(value: int) -> str:
    return f"({value >> 16:04X},{value & 0xFFFF:04X})"


def tag_name(value: int) -> str:
    from pydicom.datadict import dictionary_description

    return str(dictionary_description(value))


# -- What the code does, read from its tables ------------------------------------------------


def scp_contexts() -> dict[tuple[str, ...], list[str]]:
    """The Storage SCP's supported presentation contexts, grouped: transfer syntaxes -> SOP classes.

    Read from the AE the receivers run (default configuration: ``node.extra_sop_classes`` adds more).
    """
    from node.receive.scp import make_ae

    groups: dict[tuple[str, ...], list[str]] = {}
    for cx in make_ae(config.Config()).supported_contexts:
        groups.setdefault(tuple(str(ts) for ts in cx.transfer_syntax), []).append(str(cx.abstract_syntax))
    return {k: sorted(v) for k, v in groups.items()}


def storage_classes() -> list[str]:
    """Every storage SOP class the SCP accepts with the default configuration."""
    from node.receive.scp import storage_classes as accepted

    return accepted(config.Config())


@dataclasses.dataclass(frozen=True)
class ConfigKey:
    """One key of the YAML configuration: its path, default and the ``#:`` comment of its field."""

    path: str
    default: str
    meaning: str


#: YAML section -> the dataclass it becomes (node/config.py); keys are the dataclasses' fields.
CONFIG_SECTIONS: tuple[tuple[str, type[Any]], ...] = (
    ("node", config.NodeConfig),
    ("node.tls", config.TLS),
    ("burn", config.BurnConfig),
    ("routes[]", config.Route),
    ("routes[].match", config.Match),
    ("import", config.ImportConfig),
    ("import.destination", config.Destination),
    ("import.coerce", config.Coercion),
    *((f"output[{kind}]", cls) for kind, (cls, _, _) in config.OUTPUTS.items() if cls is not None),
)
#: Fields that are no YAML key (where a route was written, for logs).
_NOT_KEYS = {(config.Route, "where")}
#: Defaults the loader supplies for fields its dataclass requires (node/config.py ``_route``).
_LOADER_DEFAULTS = {(config.Route, "match"): "(matches every instance)"}


def config_keys() -> list[ConfigKey]:
    """Every key of the YAML configuration, sorted by path."""
    comments = _field_comments(Path(config.__file__).read_text())
    keys = []
    for section, cls in CONFIG_SECTIONS:
        for f in dataclasses.fields(cls):
            if (cls, f.name) in _NOT_KEYS:
                continue
            if (cls, f.name) in _LOADER_DEFAULTS:
                default = _LOADER_DEFAULTS[(cls, f.name)]
            elif f.default is not dataclasses.MISSING:
                default = _shown(f.default)
            else:
                default = "required"
            keys.append(ConfigKey(f"{section}.{f.name}", default, comments.get((cls.__name__, f.name), "")))
    return sorted(keys, key=lambda k: k.path)


def _shown(value: object) -> str:
    if value is None or value == ():
        return "(none)"
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, Path):
        return f"./{value}" if not value.is_absolute() else str(value)
    return str(value)


def _field_comments(source: str) -> dict[tuple[str, str], str]:
    """(class, field) -> the ``#:`` comment lines right above the field, joined."""
    lines = source.splitlines()
    found: dict[tuple[str, str], str] = {}
    for cls in ast.parse(source).body:
        if not isinstance(cls, ast.ClassDef):
            continue
        for stmt in cls.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                above: list[str] = []
                row = stmt.lineno - 2
                while row >= 0 and lines[row].strip().startswith("#:"):
                    above.insert(0, lines[row].strip()[2:].strip())
                    row -= 1
                found[(cls.name, stmt.target.id)] = " ".join(above)
    return found


# -- What the media pipeline does, read by running it on small samples --------------------------


def _value(elem: Any) -> str:
    """An element's value as the statement shows it; a sequence or bulk data shows no value."""
    if elem.VR == "SQ" or elem.VR.startswith("O") or elem.VR == "UN":
        return ""
    from pydicom.multival import MultiValue

    value = elem.value
    if value is None:
        return ""
    return "\\".join(str(v) for v in value) if isinstance(value, (MultiValue, list)) else str(value)


def _sample_images() -> list[tuple[str, Any]]:
    """Small decoded images that between them meet every branch of the compression coercion:
    signed CT with a rescale and pixel value bounds, unsigned 16-bit without a rescale, colour stored
    plane by plane, and a palette. 32 x 32: the least JPEG 2000 takes (:data:`node.media.compress.J2K_MIN_SIZE`)."""
    import numpy as np
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian

    size = 32
    ramp = np.arange(size * size).reshape(size, size)

    def image(modality: str, arr: Any, photometric: str, stored: int, signed: bool, **extra: Any) -> Any:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        ds.SOPInstanceUID = "2.25.1"
        ds.file_meta.MediaStorageSOPInstanceUID = UID("2.25.1")
        ds.Modality, ds.ImageType = modality, ["ORIGINAL", "PRIMARY"]
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel = 3 if arr.ndim == 3 else 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8 * arr.itemsize, stored, stored - 1
        ds.PixelRepresentation = int(signed)
        for keyword, value in extra.items():
            setattr(ds, keyword, value)
        ds.PixelData = arr.tobytes()
        return ds

    ct = image("CT", (ramp * 3 - 1024).astype("<i2"), "MONOCHROME2", 12, True, RescaleSlope="1",
               RescaleIntercept="-1024", PixelPaddingValue=-2000, SmallestImagePixelValue=-1024,
               LargestImagePixelValue=2047)
    mr = image("MR", (ramp * 61).astype("<u2"), "MONOCHROME2", 16, False)
    planes = np.stack([ramp % 256, ramp // 4 % 256, 255 - ramp % 256]).astype("u1")  # plane by plane
    rgb = image("XC", planes, "RGB", 8, False, PlanarConfiguration=1)
    rgb.SamplesPerPixel = 3
    lut = bytes(range(256)) * 2  # 256 entries of 16 bits
    palette = image("OT", (ramp % 256).astype("u1"), "PALETTE COLOR", 8, False, **{
        f"{c}PaletteColorLookupTableDescriptor": [256, 0, 16] for c in ("Red", "Green", "Blue")}, **{
        f"{c}PaletteColorLookupTableData": lut for c in ("Red", "Green", "Blue")})
    return [("signed CT with a rescale", ct), ("unsigned 16-bit MR", mr), ("colour, plane by plane", rgb),
            ("palette colour", palette)]


@dataclasses.dataclass
class Coerced:
    """One attribute that compression changed in at least one sample: what it became, per kind of output."""

    tag: int
    keyword: str
    vr: str
    #: "lossless" / "lossy" -> the changes seen ("removed", "added", "changed"), and the values they left.
    changes: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    values: dict[str, set[str]] = dataclasses.field(default_factory=dict)


def compression_coercions() -> list[Coerced]:
    """What :func:`node.media.compress.compress` changes, found by compressing :func:`_sample_images`
    in every syntax a ``--compress`` value names that they can be written in as asked, and comparing."""
    import copy

    from node.media import compress as c

    found: dict[int, Coerced] = {}
    written = [s.uid for s in SYNTAXES if s.compress]
    everything = frozenset(written)
    policy = c.Policy(bit_reduction=True)
    for _, sample in _sample_images():
        for ts in written:
            choice = c.choose_syntax(ts, c.ImageInfo.from_dataset(sample), everything, policy)
            if choice.transfer_syntax != ts:
                continue
            ds = copy.deepcopy(sample)
            c.compress(ds, choice, new_sop_uid="2.25.2" if choice.lossy else None)
            kind = "lossy" if choice.lossy else "lossless"
            for before, after in ((sample.file_meta, ds.file_meta), (sample, ds)):
                for tag in sorted({*before.keys(), *after.keys()} - {PIXEL_DATA}):
                    old, new = before.get(tag), after.get(tag)
                    change = ("added" if old is None else "removed" if new is None
                              else "changed" if old.value != new.value else "")
                    if change:
                        entry = found.setdefault(int(tag), Coerced(int(tag), (new or old).keyword, (new or old).VR))
                        entry.changes.setdefault(kind, set()).add(change)
                        entry.values.setdefault(kind, set()).add(_value(new) if new is not None else "")
    return sorted(found.values(), key=lambda e: e.tag)


def _coercion_cell(entry: Coerced, kind: str) -> str:
    changes, values = entry.changes.get(kind, set()), entry.values.get(kind, set()) - {""}
    if not changes:
        return "kept"
    what = " or ".join(sorted(changes))
    shown = entry.vr not in ("UI", "DS")  # UIDs and rescale values are the samples', not the rule's
    if shown and changes != {"removed"} and values and len(values) <= 3 and all(len(v) <= 24 for v in values):
        what += " to " + " or ".join(f"`{v}`" for v in sorted(values))
    return what


#: Why compression changes each attribute (seed Appendix B; PS3.3 sections). Every attribute that
#: :func:`compression_coercions` finds changed needs its reason here (tests/test_conformance.py).
COERCION_REASONS = {
    "TransferSyntaxUID": "the syntax written (PS3.10 7.1)",
    "MediaStorageSOPInstanceUID": "follows the SOP Instance UID (PS3.10 7.1)",
    "SOPInstanceUID": "a lossy image is a new instance (PS3.3 C.7.6.1.1.5); every reference on the medium follows",
    "ImageType": "first value DERIVED (PS3.3 C.7.6.1.1.2)",
    "DerivationDescription": "a first line `{prefix} lossy <syntax> compression, ratio <r>:1`, the old text kept below",
    "SourceImageSequence": "an item appended naming the original, purpose 121320 (DCM, \"Uncompressed predecessor\")",
    "DerivationCodeSequence": "an item appended: 113040 (DCM, \"Lossy Compression\")",
    "LossyImageCompression": "`01`, never reset afterwards (PS3.3 C.7.6.1.1.5)",
    "LossyImageCompressionRatio": "one value appended per lossy step, the ratio achieved",
    "LossyImageCompressionMethod": "one value appended per lossy step, parallel to the ratio (PS3.3 C.7.6.1.1.5.1)",
    "PlanarConfiguration": "colour by pixel, as the compressed syntaxes carry it (PS3.5 8.2)",
    "PhotometricInterpretation": "the colour space of the codestream (PS3.5 8.2): YBR_RCT for reversible "
                                 "JPEG 2000 of RGB, YBR_ICT for irreversible, YBR_FULL_422 for JPEG baseline; "
                                 "a palette becomes RGB",
    "SamplesPerPixel": "3 once a palette is expanded",
    "BitsAllocated": "the container of the values encoded",
    "BitsStored": "the precision of the values encoded: 8 (baseline), 12 (extended) or the LUT's",
    "HighBit": "Bits Stored - 1",
    "PixelRepresentation": "JPEG 1 and 4 encode unsigned values: signed ones are offset, and the rescale says so",
    "RescaleSlope": "maps the offset or scaled values back to the same modality values (PS3.3 C.11.1.1.2)",
    "RescaleIntercept": "maps the offset or scaled values back to the same modality values (PS3.3 C.11.1.1.2)",
    "RescaleType": "`US` (unspecified) where a rescale is added to an image that had none and is not CT (PS3.3 C.11.1)",
    "PixelPaddingValue": "the values changed: padding no longer holds",
    "PixelPaddingRangeLimit": "the values changed: padding no longer holds",
    "SmallestImagePixelValue": "the values changed: the bounds no longer hold",
    "LargestImagePixelValue": "the values changed: the bounds no longer hold",
    "SmallestPixelValueInSeries": "the values changed: the bounds no longer hold",
    "LargestPixelValueInSeries": "the values changed: the bounds no longer hold",
    **{f"{c}PaletteColorLookupTable{w}": "the palette is applied: the values are RGB (seed B.1)"
       for c in ("Red", "Green", "Blue") for w in ("Descriptor", "Data")},
    "ModalityLUTSequence": "the Modality LUT is applied to the values encoded (seed B.2)",
}


def fallback_examples() -> list[tuple[str, str, str, str, str, str]]:
    """(image, profile, asked, consent, written as, reason) for a few images that cannot be written
    as asked, each decided by :func:`node.media.compress.choose_syntax` itself."""
    from node.media import compress as c

    def info(modality: str, rows: int, samples: int, allocated: int, stored: int, signed: int,
             photometric: str = "MONOCHROME2", sop: str = "1.2.840.10008.5.1.4.1.1.7") -> Any:
        return c.ImageInfo(sop, modality, rows, rows, samples, allocated, stored, signed, photometric)

    ct = info("CT", 512, 1, 16, 16, 1)
    mammogram = info("MG", 512, 1, 16, 12, 0, sop=min(c.MAMMOGRAPHY))
    cases = [
        ("CT, 16 bits stored", ct, "STD-GEN-DVD-JPEG", "jpeg-extended", c.Policy()),
        ("CT, 16 bits stored", ct, "STD-GEN-DVD-JPEG", "jpeg-extended", c.Policy(bit_reduction=True)),
        ("RGB, 8 bits", info("XC", 512, 3, 8, 8, 0, "RGB"), "STD-GEN-DVD-JPEG", "jpeg-extended", c.Policy()),
        ("mammogram, 12 bits stored", mammogram, "STD-GEN-DVD-JPEG", "jpeg-extended", c.Policy()),
        ("mammogram, 12 bits stored", mammogram, "STD-GEN-DVD-JPEG", "jpeg-extended",
         c.Policy(lossy_mammography=True)),
        ("16 x 16 grey", info("NM", 16, 1, 16, 16, 0), "STD-GEN-DVD-J2K", "j2k-lossy", c.Policy()),
        ("16 x 16 grey", info("NM", 16, 1, 16, 16, 0), "AUG-GEN-CD", "j2k-lossy", c.Policy()),
        ("1 bit stored", info("OT", 512, 1, 8, 1, 0), "AUG-GEN-CD", "jpeg-lossless", c.Policy()),
        ("32 bits allocated", info("RTDOSE", 512, 1, 32, 32, 0), "AUG-GEN-CD", "rle", c.Policy()),
    ]
    rows = []
    for what, image, profile, asked, policy in cases:
        choice = c.choose_syntax(by_name(asked).uid, image, profiles.PROFILES[profile].image_syntaxes, policy)
        consent = ", ".join(f"`{f.name}`" for f in dataclasses.fields(policy) if getattr(policy, f.name)) or "none"
        written = by_uid(choice.transfer_syntax).label + (", values scaled to fit" if choice.reduce_bits else "")
        rows.append((what, profile, f"`{asked}`", consent, written, choice.reason or "(as asked)"))
    return rows


@dataclasses.dataclass(frozen=True)
class Created:
    """One attribute of an instance made from a file: its tag, VR and where its value comes from."""

    tag: int
    vr: str
    source: str


#: What the values :func:`created_attributes` traces come from, beside the identity keys.
_PLACE = {"series_uid": "a new Series Instance UID per modality and study", "series_number": "the next in the study",
          "instance_number": "the file's place in its series"}


def created_attributes() -> dict[str, list[Created]]:
    """Every attribute :func:`node.media.capture.capture` writes into a Secondary Capture (from a JPEG or
    a PNG) and an Encapsulated PDF, with where its value comes from: found by capturing two different
    files of each kind with two different identities, times and sidecar values, and comparing."""
    import os
    import tempfile
    from datetime import datetime

    from pydicom import dcmread

    from node.media import capture as cap

    ids = [cap.Identity("ONE^PATIENT", "ID-ONE", "19500101", "F", "2.25.11", "20200101", "101010", "ONE STUDY",
                        "ACC-ONE", "ONE^REFERRER", "ONE HOSPITAL", "SID-ONE"),
           cap.Identity("TWO^PATIENT", "ID-TWO", study_uid="2.25.12")]
    extras = [{"series_description": "ONE SERIES", "document_title": "ONE TITLE", "burned_in_annotation": "NO"}, {}]
    nows = [datetime(2021, 2, 3, 4, 5, 6), datetime(2022, 3, 4, 5, 6, 7)]
    mtimes = [datetime(2019, 1, 2, 3, 4, 5), datetime(2018, 6, 7, 8, 9, 10)]
    places = [{"series_uid": "2.25.21", "series_number": 3, "instance_number": 5},
              {"series_uid": "2.25.22", "series_number": 4, "instance_number": 6}]
    found: dict[str, list[Created]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, what in (("jpeg", "Secondary Capture"), ("png", "Secondary Capture"), ("pdf", "Encapsulated PDF")):
            runs = []
            for n in range(2):
                src = os.path.join(tmp, f"{kind}{n}.{kind}")
                with open(src, "wb") as f:
                    f.write(_sample_file(kind, 8 + 8 * n, colour=(n == 1) == (kind == "jpeg")))
                os.utime(src, (mtimes[n].timestamp(), mtimes[n].timestamp()))
                dest = os.path.join(tmp, f"{kind}{n}.dcm")
                cap.capture(src, dest, ids[n], extras=extras[n], now=nows[n], **places[n])  # type: ignore[arg-type]
                runs.append(dcmread(dest))
            one, two = runs
            fields = [{**dataclasses.asdict(ids[n]), **extras[n], **places[n]} for n in range(2)]
            rows = []
            for elem in one:
                other = two.get(elem.tag)
                source = _source(elem, other, fields, nows[0], mtimes[0], os.path.join(tmp, f"{kind}1"))
                rows.append(Created(int(elem.tag), elem.VR, source))
            rows += [Created(int(e.tag), e.VR, "from the file") for e in two if e.tag not in one]
            if what not in found:
                found[what] = rows
                continue
            # a second kind of file for the same IOD (PNG after JPEG): what differs comes from the file
            mine, theirs = {r.tag: r for r in rows}, {r.tag: r for r in found[what]}
            found[what] = [
                dataclasses.replace(r, source=f"{r.source} (a {kind_of.upper()} source)")
                if tag not in mine or tag not in theirs else
                r if r.source == mine[tag].source else dataclasses.replace(r, source="from the file")
                for tag, r, kind_of in [*((t, r, "jpeg") for t, r in theirs.items()),
                                        *((t, r, kind) for t, r in mine.items() if t not in theirs)]]
    return {what: sorted(rows, key=lambda r: r.tag) for what, rows in found.items()}


def _source(elem: Any, other: Any, fields: list[dict[str, Any]], now: Any, mtime: Any, second_stem: str) -> str:
    """Where an attribute of the first capture got its value, judged against the second (see
    :func:`created_attributes`)."""
    one, two = _value(elem), _value(other) if other is not None else None
    if elem.VR != "SQ" and not elem.VR.startswith("O") and one == two:
        return f"`{one}`" if one else "empty"
    if elem.VR == "SQ" and other is not None and len(elem.value) == len(other.value) == 0:
        return "empty"
    for key, value in fields[0].items():
        if value and one == str(value):
            if key in _PLACE:
                return _PLACE[key]
            if two is None:
                return f"`{key}`, when known"
            if key not in fields[1]:
                default = "the file's name" if two == second_stem.rsplit("/", 1)[-1] else f"`{two}`"
                return f"`{key}` of the sidecar, else {default}"
            return f"`{key}`" if fields[1].get(key) else f"`{key}`, empty when unknown"
    formats = {"DA": "%Y%m%d", "TM": "%H%M%S"}
    if elem.VR in formats and one == now.strftime(formats[elem.VR]):
        return "the conversion's date" if elem.VR == "DA" else "the conversion's time"
    if elem.VR in formats and one == mtime.strftime(formats[elem.VR]):
        return "the file's modification date" if elem.VR == "DA" else "the file's modification time"
    if elem.VR == "UI":
        return "a new UID"
    return "from the file"


def _sample_file(kind: str, size: int, *, colour: bool) -> bytes:
    """A small JPEG (8-bit grey or colour), PNG (8-bit colour or 16-bit grey) or one-page PDF, ``size``
    pixels (or points) a side."""
    import struct
    import zlib

    import numpy as np

    from node import pixels

    grey = (np.arange(size * size) % 251).reshape(size, size).astype("u1")
    if kind == "jpeg" and colour:
        rgb = np.stack([grey, grey[::-1], grey.T], axis=-1)
        return pixels.encode_frame(rgb, dicom.JPEG_BASELINE, bits_stored=8, photometric="YBR_FULL_422")
    if kind == "jpeg":
        return pixels.encode_frame(grey, dicom.JPEG_BASELINE, bits_stored=8, photometric="MONOCHROME2")
    if kind == "png":  # ISO/IEC 15948: signature, IHDR, one IDAT, IEND; 8-bit RGB or 16-bit grey
        def chunk(name: bytes, data: bytes) -> bytes:
            return struct.pack(">L", len(data)) + name + data + struct.pack(">L", zlib.crc32(name + data))

        samples = np.stack([grey] * 3, axis=-1) if colour else grey.astype(">u2") * 257
        rows = b"".join(b"\0" + row.tobytes() for row in samples)
        header = struct.pack(">LLBBBBB", size, size, 8 if colour else 16, 2 if colour else 0, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [3 0 R] "
            b"/Count 1 >> endobj\n3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 " + str(size).encode()
            + b" " + str(size).encode() + b"] >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")


def uid_coercions() -> list[tuple[str, str, str]]:
    """(UID, with lossy compression, with ``new_uids`` or ``deidentify``): which UIDs
    :func:`node.media.uids.remap` renames, found by remapping one sample data set under each map."""
    from pydicom import Dataset

    from node.media import uids

    lossy, other, external = "2.25.100", "2.25.200", "2.25.300"
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", lossy
    pre = Dataset()
    pre.ReferencedSOPClassUID, pre.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", lossy
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = uids.PREDECESSOR_CODE
    pre.PurposeOfReferenceCodeSequence = [code]
    other_ref = Dataset()
    other_ref.ReferencedSOPClassUID, other_ref.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", external
    scheme = Dataset()
    scheme.CodingSchemeUID = "2.16.840.1.113883.6.96"  # SNOMED CT's: a kind of thing, not under the DICOM root
    samples: list[tuple[str, Callable[[Any], str]]] = [
        ("SOP Instance UID of an image compressed lossily, and every reference to it (Referenced SOP Instance UID)",
         lambda ds: str(ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID)),
        (("Referenced SOP Instance UID of a lossy image's Source Image Sequence item naming its uncompressed "
          "predecessor (purpose 121320, DCM)"), lambda ds: str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID)),
        ("Study, Series, SOP Instance, Frame of Reference and every other UID naming data, and references to them",
         lambda ds: str(ds.StudyInstanceUID)),
        ("a reference to an object not on the medium", lambda ds: str(ds.ReferencedStudySequence[0]
                                                                        .ReferencedSOPInstanceUID)),
        ("UIDs under the DICOM root `1.2.840.10008` (SOP classes, transfer syntaxes, well-known instances)",
         lambda ds: str(ds.SOPClassUID)),
        ("the attributes of [Attributes Never Renamed](#attributes-never-renamed), whatever their value",
         lambda ds: str(ds.CodingSchemeIdentificationSequence[0].CodingSchemeUID)),
        ("UIDs in private elements (their meaning is their creator's)",
         lambda ds: str(ds[(uids.PRIVATE_GROUP + 2) << 16 | 0x1010].value)),
    ]

    def sample() -> Dataset:
        ds = Dataset()
        ds.SOPClassUID, ds.StudyInstanceUID = "1.2.840.10008.5.1.4.1.1.2", other
        ds.ReferencedImageSequence, ds.SourceImageSequence = [ref], [pre]
        ds.ReferencedStudySequence, ds.CodingSchemeIdentificationSequence = [other_ref], [scheme]
        ds.private_block(uids.PRIVATE_GROUP + 2, "SOMEONE ELSE", create=True).add_new(0x10, "UI", lossy)
        return ds

    maps = [uids.UidMap("salt", changes=frozenset({lossy})), uids.UidMap("salt", everything=True)]
    rows = []
    for what, read in samples:
        lossy_map, renaming = (_renamed_by(m, sample, read) for m in maps)
        rows.append((what, lossy_map, renaming))
    return rows


def _renamed_by(uid_map: Any, sample: Callable[[], Any], read: Callable[[Any], str]) -> str:
    """Whether remapping a fresh ``sample()`` with ``uid_map`` changes the UID ``read`` picks out."""
    from node.media.uids import remap

    ds = sample()
    before = read(ds)
    remap(ds, uid_map)
    return "renamed" if read(ds) != before else "kept"


def private_block() -> list[tuple[str, str, str, str]]:
    """(tag, name, VR, VM) of each element :func:`node.media.uids.keep_original_uids` writes, creator first."""
    from pydicom import Dataset

    from node.media import uids

    ds = Dataset()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = "2.25.1", "2.25.2", "2.25.3"
    uids.keep_original_uids(ds, uids.identity(ds))
    rows = []
    for elem in ds:
        if elem.tag.group != uids.PRIVATE_GROUP:
            continue
        if elem.tag.element < 0x100:  # the Private Creator reserving block xx (PS3.5 7.8.1)
            rows.append((f"({uids.PRIVATE_GROUP:04X},00xx)", f"Private Creator `{elem.value}`", elem.VR, "1"))
        else:
            keyword = next(k for k in uids.IDENTITY if str(ds[k].value) == str(elem.value))
            rows.append((f"({uids.PRIVATE_GROUP:04X},xx{elem.tag.element & 0xFF:02X})", f"Original {tag_name_of(keyword)}",
                         elem.VR, str(elem.VM)))
    return rows


def tag_name_of(keyword: str) -> str:
    from pydicom.datadict import dictionary_description, tag_for_keyword

    found = tag_for_keyword(keyword)
    return str(dictionary_description(found)) if found is not None else keyword


# -- The sections -----------------------------------------------------------------------------


def overview() -> str:
    accepted = storage_classes()
    listed = (f"Storage: the {len(accepted)} storage SOP classes of [SOP Classes of the Storage SCP]"
              "(#sop-classes-of-the-storage-scp), and those of `node.extra_sop_classes`")
    network = table(
        ("SOP Classes", "User of Service (SCU)", "Provider of Service (SCP)"),
        [
            ("Verification", "No", "Yes"),
            (listed, "Yes (import of media)", "Yes"),
            ("Storage: any other storage SOP class found on a medium, private ones included",
             "Yes (import of media)", "No"),
        ],
        sort=False,
    )
    media = table(
        ("Media Storage Application Profile", "Write Files (FSC or FSU)", "Read Files (FSR)"),
        [(name, "FSC", "Yes") for name in profiles.PROFILES],
    )
    return (
        "## Conformance Statement Overview\n\n"
        "medianode is a DICOM node that bridges the network and removable media. Its Storage SCP "
        "receives instances from modalities and PACS (C-ECHO, C-STORE) and makes each durable before it "
        "answers success; configured routes turn the studies received into media (CD, DVD, BD images or "
        "USB folder trees with a DICOMDIR) as a File-set Creator. As a File-set Reader it checks media "
        "against their DICOMDIR and imports their instances into a Storage SCP as a C-STORE SCU.\n\n"
        "### Network Services\n\n" + network + "\n"
        "### Media Services\n\n" + media + "\n"
        "medianode never updates a medium (no FSU role).\n"
    )


def contents() -> str:
    return "## Table of Contents\n\n" + _CONTENTS + "\n"


def introduction() -> str:
    terms = table(
        ("Term", "Meaning"),
        [
            ("AE", "Application Entity"),
            ("AET", "Application Entity Title"),
            ("DICOMDIR", "the Basic Directory IOD file of a File-set (PS3.10, PS3.3 F)"),
            ("FSC / FSR / FSU", "File-set Creator / Reader / Updater (PS3.10)"),
            ("PDU", "Protocol Data Unit (PS3.8)"),
            ("SCP / SCU", "Service Class Provider / User"),
            ("SOP", "Service-Object Pair"),
            ("TLS", "Transport Layer Security (PS3.15 B.1)"),
            ("spool", "the folder under `node.data_dir` where received instances are kept until burned"),
            ("route", "a rule of the configuration: what a received study becomes (burn, store, reject)"),
        ],
    )
    return (
        "## Introduction\n\n"
        "### Revision History\n\n"
        + table(("Version", "Remarks"), [(__version__, "generated from the code by `medianode conformance`")])
        + "\n### Audience\n\n"
        "Integrators and buyers who connect medianode to modalities, PACS and media, and who know the "
        "DICOM Standard.\n\n"
        "### Remarks\n\n"
        "This statement is generated from the tables the program itself runs on (`medianode conformance`), "
        "and a test regenerates it and compares, so it describes this version exactly. It does not replace "
        "testing against the peers of a site. Where a table says \"default configuration\", the "
        "configuration keys of [Configuration](#configuration) change it.\n\n"
        "### Terms and Definitions\n\n" + terms
    )


def networking() -> str:
    from node.read import sender
    from node.receive import instance, scp
    from node.receive.scp import make_ae

    node = config.NodeConfig()
    ae = make_ae(config.Config())
    groups = scp_contexts()
    storage = set(storage_classes())
    accepted_rows = []
    for ts, classes in groups.items():
        if len(classes) == 1:
            what = f"{uid_name(classes[0])} `{classes[0]}`"
        else:
            what = f"the {len(classes)} storage SOP classes of [SOP Classes](#sop-classes-of-the-storage-scp)"
        accepted_rows.append((what, syntaxes(ts), "SCP", "None"))
    reject_rows = [(f"{r}", f"{s}", f"{d}", why) for (r, s, d), why in scp.REJECT_REASONS.items()]
    status_rows = [(f"0x{code:04X}", meaning, when) for code, (meaning, when) in scp.STORE_STATUSES.items()]
    named = sorted(((uid_name(u), u) for u in storage), key=lambda n: (n[0] == n[1], n))  # unnamed last
    class_table = table(("SOP Class Name", "SOP Class UID", "SCU", "SCP"),
                    [(name if name != u else "(no name in pydicom)", f"`{u}`", "Yes", "Yes") for name, u in named],
                    sort=False)
    read = table(("Attribute", "Tag"), [(tag_name(t), tag(t)) for t in instance.READ_VRS])
    scu_rows = [
        ("every storage SOP class of the instances to import",
         "each transfer syntax its instances are in, one context per syntax", "SCU", "None"),
        ("the same SOP class, once more", syntaxes(sender.FALLBACK_SYNTAXES), "SCU", "None"),
    ]
    return f"""## Networking

### Implementation Model

#### Application Data Flow

```
modality / PACS --C-ECHO, C-STORE--> Storage SCP --fsync'd--> spool + index
                                         index --(study stable, route matched)--> burn job --> medium (FSC)
medium (disc, USB, .iso) --> check (FSR) --> import SCU --C-STORE--> destination Storage SCP
```

#### Functional Definition of AEs

- **Storage SCP** (`medianode serve`, AE title `node.ae_title`, default `{node.ae_title}`, and every called AE
  title a route matches): answers C-ECHO; stores each C-STORE in the spool (fsync'd file and folder) and
  indexes it before answering success; a route may refuse it. Several receiver processes
  (`node.workers`, default {node.workers}) share the listening port.
- **Import SCU** (`medianode import`, and `serve` for media its watcher finds; AE title `import.calling_aet`,
  default `node.ae_title`, or `--calling-aet`, default `MEDIANODE`): sends every instance of a medium to
  the destination Storage SCP.

#### Sequencing of Real-World Activities

A study is burned once no instance of it has arrived for `burn.study_stable_seconds` (default
{config.BurnConfig().study_stable_seconds:g} s). An instance arriving after its study was burned makes a new
volume with the whole study, which supersedes the earlier one.

### AE Specifications

#### Storage SCP AE

##### SOP Classes of the Storage SCP

Verification `1.2.840.10008.1.1` (SCP only), and these storage SOP classes, SCP and, for the media it
imports, SCU (every storage class pynetdicom knows, the retired classes of the seed's Table 5 included):

{class_table}
Private SOP classes are accepted when listed in `node.extra_sop_classes`.

##### Association Policies

###### General

The DICOM Application Context Name `1.2.840.10008.3.1.1.1` is the only one proposed and accepted. The
maximum PDU length received is `node.max_pdu` (default {node.max_pdu or "0: unlimited"}). Timeouts: ACSE
{ae.acse_timeout} s, DIMSE {ae.dimse_timeout} s, network (idle) {ae.network_timeout} s.

###### Number of Associations

At most `node.max_associations` (default {node.max_associations}) associations per receiver process, and
`node.workers` (default {node.workers}) processes: {node.max_associations * node.workers} at once by default.
One more is rejected (result 2, source 3, reason 2).

###### Asynchronous Nature

Not supported: no Asynchronous Operations Window is negotiated; one operation at a time per association.

###### Implementation Identifying Information

{_identity()}
##### Association Acceptance Policy

An association is rejected (A-ASSOCIATE-RJ, PS3.8 9.3.4), logged and written to the audit log
(`data_dir/audit.jsonl`) for these reasons:

{table(("Result", "Source", "Reason/Diagnosis", "When"), reject_rows)}
The called AE title must be `node.ae_title` or one a route matches (`routes[].match.called_aet`); the
calling AE title must be one of `node.allowed_calling_aets` when that list is not empty.

###### Accepted Presentation Contexts

{table(("Abstract Syntax", "Transfer Syntaxes", "Role", "Extended Negotiation"), accepted_rows)}
When one proposed context offers several of these transfer syntaxes, the SCP accepts the first in the order
listed here; it stores each instance as it arrived, in the syntax accepted.

###### SOP Specific Conformance for Storage SOP Classes

Conformance level 2 (PS3.4 B.4.1): all Type 1, 2 and 3 attributes, private ones included, are stored as
received; nothing is coerced. The receiver reads these attributes of each instance, to check it and
index it:

{read}
C-STORE statuses returned:

{table(("Status", "Meaning (PS3.4 B.2.3, PS3.7 C)", "When"), status_rows)}
An instance stored twice (same SOP Instance UID) replaces the earlier copy. Every refusal stores nothing.

###### SOP Specific Conformance for Verification

C-ECHO is answered with Success (0x0000).

#### Import SCU AE

##### Association Initiation Policy

The import opens associations to the destination of `import.destination` (or `--to AET@HOST:PORT`), up to
one per worker process (from 2 to 4, one per core), each sending a share of the instances.

###### Proposed Presentation Contexts

{table(("Abstract Syntax", "Transfer Syntaxes", "Role", "Extended Negotiation"), scu_rows, sort=False)}
At most {sender.MAX_CONTEXTS} presentation contexts per association (PS3.8 9.3.2.2); beyond, the SOP classes
are spread over several associations. An instance goes out as its own bytes when its syntax was
accepted; otherwise it is decoded (decompressed if need be) and sent in Explicit, else Implicit VR
Little Endian.

###### Association Policies of the SCU

Timeouts: connection {sender.CONNECT_TIMEOUT:g} s, ACSE {sender.ACSE_TIMEOUT:g} s, C-STORE response
{sender.DIMSE_TIMEOUT:g} s. An association that cannot be had is retried after
{", ".join(f"{d:g}" for d in sender.RETRY_DELAYS)} s; one lost during an instance's transfer is re-opened,
and an instance lost {sender.MAX_DROPS} times fails. The same Implementation Class UID and Version Name as the
SCP's are sent.

###### SOP Specific Conformance for the Storage SCU

A Success status marks the instance sent; a Warning (0xB000, 0xB006, 0xB007) marks it sent and keeps the
warning in the report; any other status fails it, and the import goes on with the other instances. The
import exits 0 only when every instance was stored.

### Network Interfaces

#### Physical Network Interface

TCP/IP (PS3.8): IPv4, or IPv6 when `node.host` is an IPv6 address.
TCP_NODELAY is set on every connection, in both roles.

### Configuration

#### AE Title/Presentation Address Mapping

The Storage SCP listens on `node.host`:`node.port` (default `{node.host}:{node.port}`) as `node.ae_title`;
import destinations are `import.destination` (`ae_title`, `host`, `port`).

#### Parameters

{table(("Key", "Default", "Meaning"), [(f"`{k.path}`", k.default, k.meaning) for k in config_keys()], sort=False)}"""


def _identity() -> str:
    return table(
        ("Attribute", "Value"),
        [("Implementation Class UID", f"`{dicom.IMPLEMENTATION_CLASS_UID}`"),
         ("Implementation Version Name", f"`{dicom.IMPLEMENTATION_VERSION_NAME}`")],
    )


#: What each file system of :data:`node.profiles.FileSystem` is on the medium (PS3.12).
FILE_SYSTEMS = {
    "iso9660": "ISO 9660 level 1 image (ECMA-119), PS3.12",
    "udf": "UDF 2.60 image (PS3.12 Annex Y)",
    "folder": "folder tree on the target (USB, PS3.12 Annex V)",
}


def _capacity(p: profiles.Profile) -> str:
    if p.capacity_sectors is None:
        return "free space of the target"
    return f"{p.capacity_sectors:,} sectors ({p.capacity_sectors * profiles.SECTOR / 1e6:,.0f} MB)"


#: The keys of ``routes[]`` that shape a medium (the others match, group and act).
MEDIA_ROUTE_KEYS = ("profile", "compress", "lossy_mammography", "bit_reduction", "new_uids", "deidentify",
                    "burned_in_annotation", "pdi", "web", "viewer", "output", "copies", "label")


def media() -> str:
    from node import pixels
    from node.receive.scp import TRANSFER_SYNTAXES

    profile_rows = [
        (p.name, "Create medium", "FSC, FSR", "Interchange", FILE_SYSTEMS[p.file_system], _capacity(p))
        for p in profiles.PROFILES.values()
    ]
    syntax_rows = [
        (p.name, syntaxes(sorted({dicom.EXPLICIT_VR_LE, *p.image_syntaxes})), syntaxes([dicom.EXPLICIT_VR_LE]),
         "PRIVATE records" if p.augmented else "refused")
        for p in profiles.PROFILES.values()
    ]

    def conversion(ts: str) -> str:
        if ts == dicom.EXPLICIT_VR_LE:
            return "never converted"
        if ts in NATIVE:
            return "re-encoded"
        return "pixel data decoded" if pixels.can_decode(ts) else "refused: cannot be decoded"

    names = list(profiles.PROFILES)
    matrix = [
        (syntaxes([ts]), conversion(ts),
         *("kept" if p.allows(ts, record_type="IMAGE") else "converted" for p in profiles.PROFILES.values()))
        for ts in TRANSFER_SYNTAXES
    ]
    by_record: dict[str, list[str]] = {}
    for sop, record in dicom.SOP_CLASS_RECORD_TYPE.items():
        by_record.setdefault(record, []).append(sop)
    record_rows = [(record, syntaxes(sorted(uids)), "") for record, uids in by_record.items()]
    record_rows += [
        ("IMAGE", "every other standard storage SOP class, and any class whose instance has Pixel Data", ""),
        ("PRIVATE", "any other SOP class", "augmented profiles only"),
    ]
    keys = []
    for record, record_keys in dicom.RECORD_KEYS.items():
        rows = [(tag(k.tag), tag_name(k.tag), k.vr, k.type) for k in record_keys]
        keys.append(f"###### {record} Keys\n\n" + table(("Tag", "Attribute", "VR", "Type"), rows))
    leaf = [(tag(k.tag), tag_name(k.tag), k.vr, k.type) for k in dicom.LEAF_KEYS]
    private = dicom.PRIVATE_RECORD_UID
    leaf.append((tag(private.tag), tag_name(private.tag), private.vr, f"{private.type} (PRIVATE records)"))
    route_keys = ", ".join(f"`{k}`" for k in MEDIA_ROUTE_KEYS)
    return f"""## Media Interchange

### Implementation Model

#### Application Data Flow

```
studies received (routes) or files (medianode burn) --> File-set Creator --> ISO 9660 / UDF image, or folder
medium (disc, /dev/sr0, .iso, folder) --> File-set Reader --> check report; import (C-STORE SCU)
```

#### Functional Definition of AEs

- **File-set Creator** (`medianode burn`, and `serve`'s burn jobs): writes the instances of one or more
  whole studies, a DICOMDIR and nothing else a profile forbids, into a new image or folder published
  atomically under its final name. A study is never split across media; one too big for the medium fails.
- **File-set Reader** (`medianode check`, `medianode import`, `serve`'s watcher): reads a medium without
  mounting it or executing anything, reconciles its DICOMDIR with a scan of its files, and reports.

### AE Specifications

#### File-set Creator and Reader

Application profiles, real-world activities and roles:

{table(("Application Profile", "Real-World Activity", "Role", "SC Option", "File System", "Capacity"),
       profile_rows)}
The reader reads media of every profile, and more: `medianode check --profile NAME` also checks that a
medium keeps to one.

##### File-set

File IDs are `DICOM/PAnnnnnn/STnnnnnn/SEnnnnnn/IMnnnnnn`: at most {dicom.MAX_FILE_ID_COMPONENTS} components of
1 to 8 characters `A-Z 0-9 _` (PS3.10 8.2), no extension. The DICOMDIR has one PATIENT, STUDY and SERIES
record per entity and one leaf record per instance; no Multi-Referenced File records, no Icon Image
Sequence, File-set Consistency Flag 0. The File-set ID is the volume label cut to 16 characters.

##### SOP Classes and Transfer Syntaxes

{table(("Application Profile", "Image records", "Other records", "Unknown (private) SOP classes"), syntax_rows)}
An instance in a transfer syntax its profile does not keep is converted to Explicit VR Little Endian,
same SOP Instance UID (its content is unchanged):

{table(("Transfer syntax received", "Conversion", *names), matrix, sort=False)}
##### Directory Record Types

{table(("Record Type", "SOP Classes", "Remark"), record_rows)}
##### DICOMDIR Keys

Every leaf record holds:

{table(("Tag", "Attribute", "VR", "Type"), leaf, sort=False)}
and Specific Character Set (0008,0005) whenever one of its values is not ASCII. Type 1 keys an instance
lacks refuse it (absent Content Date and Time are taken from the instance's other dates and times or its
study's, and reported), Type 2 keys are
written empty, Type 3 keys only when present. Rarer leaf record types (REGISTRATION, FIDUCIAL, ...) hold
the GENERIC keys.

{chr(10).join(keys)}
{_compression()}
{_new_uids()}
{_capture()}
{_pdi()}
{_outputs()}
### Augmented and Private Application Profiles

The augmented profiles (modelled on the seed's AUG-GEN-DRS-CD and AUG-GEN-DRS-DVD-RAM) keep image
instances in any syntax of the seed's Table 6 and hold private SOP classes as PRIVATE records:

{table(("Profile", "Image syntaxes kept"),
       [(p.name, syntaxes(sorted(p.image_syntaxes))) for p in profiles.PROFILES.values() if p.augmented])}
There are no private application profiles.

### Media Configuration

Media keys: `burn.*` and `routes[].*` in [Parameters](#parameters); the route keys of media are
{route_keys}.
"""


def _encoder(ts: str) -> str:
    """How :func:`node.pixels.encode_frame` writes a syntax, with the settings it uses."""
    from node import pixels

    settings = {
        dicom.JPEG_BASELINE: f"libjpeg-turbo, quality {pixels.JPEG_QUALITY}; colour as YBR_FULL_422",
        dicom.JPEG_EXTENDED: f"libjpeg-turbo, quality {pixels.JPEG_QUALITY}; grey only",
        dicom.JPEG_LOSSLESS_SV1: "libjpeg-turbo, predictor 1",
        dicom.JPEG_LOSSLESS_P14: f"libjpeg-turbo, predictor {pixels.P14_PREDICTOR}",
        dicom.J2K_LOSSLESS: "OpenJPEG, reversible; RGB as YBR_RCT",
        dicom.J2K: f"OpenJPEG, irreversible, ratio {pixels.J2K_RATIO:g}:1; RGB as YBR_ICT",
        dicom.RLE_LOSSLESS: "imagecodecs PackBits, row by row (PS3.5 G.3.1)",
    }
    return settings[ts]  # a syntax pixels.py learns to encode fails the render here until it is described


def _compression() -> str:
    from node.media import compress

    def allowed_by(name: str) -> str:
        return ", ".join(p for p in profiles.PROFILES if name in profiles.compressions(p))

    values = [(f"`{NO_COMPRESSION}`", "(none)", "", "", allowed_by(NO_COMPRESSION))] + [
        (f"`{s.compress}`", syntaxes([s.uid]), "lossy" if s.writes_lossy else "lossless", _encoder(s.uid),
         allowed_by(s.compress))
        for s in SYNTAXES if s.compress
    ]
    order = [(family, " then ".join(by_uid(ts).label for ts in chain))
             for family, chain in compress.FALLBACK.items()]
    mammography = ", ".join(f"{uid_name(u)} `{u}`" for u in sorted(compress.MAMMOGRAPHY))
    return f"""##### Compression

`routes[].compress` and `burn --compress` name a compression, per modality if need be
(`compress: {{default: jpeg-lossless, MG: none}}`); a value the profile does not allow is a configuration
or usage error (exit 2). The values, what each writes, and the profiles that allow it:

{table(("Value", "Transfer syntax", "Kind", "Encoder and settings", "Profiles"), values, sort=False)}
Which images: instances of IMAGE records that hold Pixel Data. An image already compressed in a syntax
its profile allows is never recompressed (it is written as it is); any other image is decoded, then
compressed as asked. Other instances are written as
[SOP Classes and Transfer Syntaxes](#sop-classes-and-transfer-syntaxes) says. A lossy image becomes a new
instance, with the attributes of [Attribute Coercion for Compression](#attribute-coercion-for-compression).

An image the asked syntax cannot carry is written in the first lossless syntax of its family's list that
the profile allows and that can carry it, else uncompressed (Explicit VR Little Endian); the burn report
names each such image with the reason. The lists:

{table(("Asked family", "Lossless syntaxes tried, in order"), order, sort=False)}
Lossy compression of mammography (Modality MG, or one of {mammography}) needs the route's
`lossy_mammography: true`; values beyond the process's precision (8 bits for JPEG baseline, 12 for JPEG
extended) need `bit_reduction: true`, which scales them into it with Rescale Slope and Intercept to match.
Examples, each decided by the code that decides a burn:

{table(("Image", "Profile", "Asked", "Route consents", "Written as", "Reason in the burn report"),
       fallback_examples(), sort=False)}"""


def _new_uids() -> str:
    from node.media import uids

    rows = uid_coercions()
    return f"""##### New UIDs and De-identification

Lossy compression gives each image it compresses a new SOP Instance UID; `routes[].new_uids` (and
`burn --new-uids`) gives every instance, series, study and other data a new UID, and keeps the originals
in the private block of [Data Dictionary of Private Attributes](#data-dictionary-of-private-attributes);
`routes[].deidentify` (`burn --deidentify`) applies the
[Basic Application Level Confidentiality Profile](#basic-application-level-confidentiality-profile), with
new UIDs and no private block. A new UID is `{dicom.UID_ROOT}` followed by the integer of a version-8 UUID
made from a SHA-256 of a secret salt of the burn and the old UID (PS3.5 B.2): every file of the medium agrees
on it, and nobody can compute it from the old UID. Which UIDs change:

{table(("UID", "Lossy compression", "`new_uids` or `deidentify`"), rows, sort=False)}
###### Attributes Never Renamed

They name a kind of thing, not data:

{table(("Tag", "Attribute"), [(tag(t), tag_name(t)) for t in sorted(uids.KIND_TAGS)])}"""


def _capture() -> str:
    from node.media import capture

    keys = ", ".join(f"`{k}`" for k in capture.IDENTITY_RULES)
    extras = ", ".join(f"`{k}`" for k in capture.SIDECAR_RULES if k not in capture.IDENTITY_RULES)
    return f"""##### Secondary Capture and Encapsulated PDF

`medianode burn` turns the JPEG, PNG and TIFF files among its sources into
{uid_name(capture.SECONDARY_CAPTURE)} `{capture.SECONDARY_CAPTURE}` instances (Conversion Type WSD, PS3.3
A.8.1) and PDF files into {uid_name(capture.ENCAPSULATED_PDF)} `{capture.ENCAPSULATED_PDF}` instances (PS3.3
A.45.1), recognised by their first bytes, not their names. Whose file it is comes, in this order, from a
sidecar `NAME.yaml` (or `.yml`, `.json`) beside the file, a `capture.yaml` in its folder, the burn's flags
(`--patient-id`, ...), or the one DICOM study of the same burn; a file no source names a patient for is a
usage error (exit 2), never an invented patient. Identity keys: {keys}; a sidecar may also say {extras}.
Captures join their study in a new series per modality. The attributes written are those of
[Created SOP Instances](#created-sop-instances).
"""


def _pdi() -> str:
    from node import pixels
    from node.media import label, pdi, publisher

    root = [
        ("`DICOMDIR`", "always", "the File-set's index (PS3.10)"),
        ("`DICOM/`", "always", "the DICOM files, File IDs of [File-set](#file-set)"),
        (f"`{pdi.README}`", "always", ("what is on the medium (patients, studies), who made it (`burn.institution`, "
         "`burn.contact`), the creating application and version, how to read it; UTF-8, CRLF")),
        (f"`{pdi.INDEX}`", "`web: true`", "XHTML 1.0 Strict: the patients, their studies and series"),
        (f"`{profiles.PDI_WEB_FOLDER}/`", "`web: true`", (f"one XHTML page per series, with at most "
         f"{pdi.MAX_RENDITIONS} JPEG renditions (quality {pixels.JPEG_QUALITY}, at most {pdi.JPEG_MAX} pixels a "
         "side), evenly spread over the series")),
        ("a viewer folder", "`viewer: DIR`", ("copied as it is under ISO 9660 8.3 upper-case names; never "
         "started by the medium (no autorun)")),
    ]
    allowed = ", ".join(p.name for p in profiles.PROFILES.values() if p.pdi)
    fields = ", ".join(f"`{f}`" for f in publisher.LABEL_FIELDS)
    return f"""##### IHE PDI

Media of {allowed} are IHE PDI media (IHE RAD TF-3 4.47, Portable Media
Creator) unless `routes[].pdi: false` (default `burn.pdi`); PDI on another profile is a configuration
error. The root holds nothing but:

{table(("Entry", "When", "What"), root, sort=False)}
Web content shows the DICOM content and nothing else, with relative links and no script. The label record
(for a publisher's label fields: {fields}) says `{label.DICOM_ONLY}` or `{label.DICOM_PLUS_WEB}`.
"""


#: How each output kind checks what it wrote (node.media.outputs, node.media.publisher, node.media.folder).
OUTPUT_VERIFICATION = {
    "folder": "the image (or tree) is written under a temporary name, fsync'd and renamed: never visible half-written",
    "xorriso": "with `verify` (default on) the image's length is read back from the drive and its SHA-256 compared; "
               "a written disc is never blanked",
    "publisher": "the robot's renaming of the job file (done, or failed with its reason); not verified on hardware",
    "usb": "every file written, fsync'd and compared byte for byte, then the DICOMDIR written last and renamed "
           "into place; a volume that holds a DICOMDIR already, or lacks room, is refused",
}


def _outputs() -> str:
    rows = []
    for kind, (cls, keys, required) in config.OUTPUTS.items():
        what = (cls.__doc__ or "").split("``: ", 1)[-1].split(" (")[0] if cls else "a folder of images (or trees)"
        shown = ", ".join(f"`{k}`" + (" (required)" if k in required else "") for k in keys)
        rows.append((f"`{kind}`", what, shown, OUTPUT_VERIFICATION[kind]))
    return f"""##### Outputs

`burn.output` and `routes[].output` say where a medium goes, `routes[].copies` times: a path (a folder),
or a mapping whose `kind` names the output. A copy that fails is tried again `retries` times, each after
`retry_wait_seconds`, and the job keeps its studies until it succeeds.

{table(("Kind", "What", "Keys", "Verification"), rows, sort=False)}
A USB profile needs a `folder` or `usb` output; a disc profile any other. The keys, their defaults and
meaning are `output[KIND].KEY` in [Parameters](#parameters).
"""


def character_sets() -> str:
    from pydicom.charset import python_encoding

    known = ", ".join(f"`{c}`" for c in sorted(python_encoding) if c)
    return (
        "## Support of Character Sets\n\n"
        "Received instances are stored as they arrived, whatever their Specific Character Set (0008,0005). "
        "Patient's Name and Patient ID are decoded for the index, the logs and the reports with these "
        f"character sets (the default repertoire when absent): {known}. "
        "A value that cannot be decoded never refuses an instance.\n\n"
        "A DICOMDIR record copies the instance's Specific Character Set when one of its keys holds a value "
        "beyond ASCII. The values medianode writes itself (coerced Patient IDs, Issuer of Patient ID, "
        "labels) are of the default repertoire.\n"
    )


#: PS3.15 Table E.1-1's actions (its legend), and how :func:`node.media.deidentify.deidentify` carries each out.
DEIDENTIFY_ACTIONS = {
    "X": ("remove", "removed"),
    "Z": ("zero length, or a dummy", ("emptied (a sequence loses its items); Study Date, Study Time and Study ID "
                                      "get a dummy, since the DICOMDIR's STUDY record needs them (PS3.3 F.5)")),
    "D": ("a dummy value", ("a dummy of its VR; a sequence keeps its items, de-identified inside, except free "
                            "text, name and date content items; a sequence of codes becomes one dummy code; "
                            "Patient's Name and Patient ID get a pseudonym from the burn's salt and the patient, "
                            "the same for one patient on the medium")),
    "U": ("a new UID, consistent in the instance set", "renamed through the medium's UID map"),
    "Z/D": ("Z, or D for Type 1", "D: the IOD's Type is not known, and a dummy suits every Type"),
    "X/D": ("X, or D for Type 1", "D"),
    "X/Z": ("X, or Z for Type 2", "Z"),
    "X/Z/D": ("X, Z for Type 2, or D for Type 1", "D"),
    "X/Z/U*": ("X, Z, or U* (UIDs renamed) for a sequence of references", "U*: kept, every UID in it renamed"),
}
#: The options of PS3.15 Table E.1-1 beside the Basic Profile: none is offered.
DEIDENTIFY_OPTIONS = (
    "Retain Safe Private", "Retain UIDs", "Retain Device Identity", "Retain Institution Identity",
    "Retain Patient Characteristics", "Retain Longitudinal Temporal Information with Full Dates",
    "Retain Longitudinal Temporal Information with Modified Dates", "Clean Descriptors",
    "Clean Structured Content", "Clean Graphics", "Clean Pixel Data", "Clean Recognizable Visual Features",
)


def _confidentiality() -> str:
    from collections import Counter

    from node.media import deidentify as de

    counts = Counter(de.BASIC_PROFILE.values())
    rows = [(f"`{a}`", meaning, done, counts[a]) for a, (meaning, done) in DEIDENTIFY_ACTIONS.items()]
    burns = [(uid_name(u), f"`{u}`") for u in sorted(de.BURNS_TEXT)]
    code, scheme, meaning = de.METHOD_CODE
    return f"""#### Basic Application Level Confidentiality Profile

`routes[].deidentify` (`burn --deidentify`) applies PS3.15 Annex E's Basic Application Level
Confidentiality Profile (the Basic Profile column of PS3.15 2026c Table E.1-1) to every instance of the
medium, at every depth of its sequences. The attributes of the table, by action:

{table(("Action", "PS3.15 meaning", "What medianode does", "Attributes"), rows, sort=False)}
Besides the table: every private element is removed; Curve Data (50xx) is removed, and so is an overlay
(60xx) whose Overlay Data or Comments the table removes; Patient Identity Removed (0012,0062) is set to
`YES`, De-identification Method (0012,0063) to `{de.METHOD}`, De-identification Method Code Sequence
(0012,0064) to ({code}, {scheme}, "{meaning}"), and Longitudinal Temporal Information Modified
(0028,0303) to `REMOVED`.

Options not supported: {", ".join(DEIDENTIFY_OPTIONS)}. Since pixels are not cleaned, an image whose
pixels may show the patient is refused, and the burn fails naming it, unless the route sets
`burned_in_annotation: true`: an image with Burned In Annotation (0028,0301) `YES`, or one of these screen
captures without the attribute:

{table(("SOP Class", "UID"), burns)}"""


def security() -> str:
    tls = ", ".join(f"`node.tls.{f.name}`" for f in dataclasses.fields(config.TLS))
    return (
        "## Security\n\n"
        "### Security Profiles\n\n"
        f"With `node.tls` ({tls}) the Storage SCP speaks TLS (PS3.15 B.1, the Basic TLS Secure Transport "
        "Connection Profile): its certificate and key are presented, and with `ca` every caller must "
        "present a certificate that CA signed. The import SCU does not use TLS in this version.\n\n"
        + _confidentiality() + "\n"
        "### Association Level Security\n\n"
        "The called AE title must be the node's or a route's; `node.allowed_calling_aets` restricts the "
        "calling AE titles. Refused associations are logged.\n\n"
        "### Application Level Security\n\n"
        "The audit log, `data_dir/audit.jsonl`, gets one JSON line per refused association, received "
        "study, burned volume and medium imported (who, what, when). Media are read without mounting "
        "them; nothing on them is executed, and a Referenced File ID escaping the medium's root is refused.\n"
    )


def _created() -> str:
    """Seed Appendix A: the attributes of each instance made from a file."""
    found = created_attributes()
    iods = list(found)
    sources = {what: {r.tag: r for r in rows} for what, rows in found.items()}
    tags = sorted({t for rows in sources.values() for t in rows})
    rows = [(tag(t), tag_name(t), next(sources[w][t].vr for w in iods if t in sources[w]),
             *(sources[w][t].source if t in sources[w] else "" for w in iods)) for t in tags]
    return f"""##### Secondary Capture and Encapsulated PDF Instances

The attributes of each instance made from a file
([Secondary Capture and Encapsulated PDF](#secondary-capture-and-encapsulated-pdf); seed Appendix A), in
Explicit VR Little Endian (a JPEG kept as it is: JPEG Baseline). A key in backquotes is the identity or
sidecar key the value comes from (`study_id` only from a joined study); Specific Character Set (0008,0005)
is added, `ISO_IR 192`, when a value is beyond ASCII, or copied from a joined study.

{table(("Tag", "Attribute", "VR", *iods), rows, sort=False)}"""


def _coercion() -> str:
    """Seed Appendices B and C: what compression and new UIDs change."""
    from node.media import compress

    rows = []
    for entry in compression_coercions():
        why = COERCION_REASONS.get(entry.keyword, "").replace("{prefix}", compress.DERIVATION_PREFIX)
        rows.append((tag(entry.tag), tag_name(entry.tag), _coercion_cell(entry, "lossless"),
                     _coercion_cell(entry, "lossy"), why))
    stale = ", ".join(f"{tag_name_of(k)}" for k in compress.STALE)
    return f"""##### Attribute Coercion for Compression

What [Compression](#compression) changes in an image (seed Appendix B), found by compressing sample images
(signed CT with a rescale, unsigned 16-bit MR, colour, palette colour) in every syntax and comparing:

{table(("Tag", "Attribute", "Lossless", "Lossy", "Why"), rows, sort=False)}
Lossy output also loses every one of {stale} it holds, and a Modality LUT Sequence is applied to the values
and removed. Pixel Data is replaced by the encapsulated frames (PS3.5 A.4), with a Basic Offset Table, or
the Extended Offset Table beyond 4 GiB.

##### UID Coercion

Which UIDs a medium's instances get new values for is in [New UIDs and De-identification](#new-uids-and-de-identification)
(seed Appendix C); every reference to a renamed UID on the medium, DICOMDIR included, follows it.
"""


def annexes() -> str:
    from node.media import uids
    from node.read import coerce

    coerced = [(tag(t), tag_name(t), f"`import.coerce` ({vr})") for t, vr in coerce.ATTRIBUTES.values()]
    original = (f"one item appended per coerced instance: old values, time, Modifying System "
                f"`{coerce.MODIFYING_SYSTEM}`, reason `{coerce.REASON}`")
    coerced += [
        ("(0400,0561)", tag_name(0x04000561), original),
        ("(0010,0020)", tag_name(PATIENT_ID), "`burn --invent-patient-id`, when two patients share one ID"),
        ("(0010,1002)", tag_name(0x00101002), "`burn --invent-patient-id`: the old ID, as an item"),
    ]
    return f"""## Annexes

### IOD Contents

#### Created SOP Instances

The File-set Creator creates one Media Storage Directory Storage instance (Basic Directory IOD, PS3.3
F.3) per medium, in Explicit VR Little Endian, with the identity of
[Implementation Identifying Information](#implementation-identifying-information). Instances converted to
Explicit VR Little Endian or compressed losslessly keep their SOP Class and Instance UIDs; an image
compressed lossily is a new instance of the same SOP class
([Attribute Coercion for Compression](#attribute-coercion-for-compression)).

{_created()}
#### Usage of Attributes from Received IODs

The Storage SCP reads only what [SOP Specific Conformance](#sop-specific-conformance-for-storage-sop-classes)
lists; the File-set Creator reads the DICOMDIR keys of [DICOMDIR Keys](#dicomdir-keys).

#### Coerced/Modified Fields

The Storage SCP coerces nothing. On import, these attributes are changed, only where configured or asked
for:

{table(("Tag", "Attribute", "When"), coerced)}
A coerced instance is re-encoded (never sent as its own bytes). A DICOMDIR key whose date or time is in
the ACR-NEMA form (1997.04.24, 14:04:38) is written in the DA/TM form; an invalid one is left out. On
media, what compression and new UIDs change:

{_coercion()}
### Data Dictionary of Private Attributes

With `new_uids` (never with `deidentify`), each instance keeps its original identity in this block of
group {uids.PRIVATE_GROUP:04X} (PS3.5 7.8.1: `xx` is the block its Private Creator reserves); a block that holds
originals already keeps them, so a copy of a copy names the very first instance:

{table(("Tag", "Attribute", "VR", "VM"), private_block(), sort=False)}

### Coded Terminology and Templates

None used.

### Grayscale Image Consistency

Not applicable: medianode displays no images.

### Standard Extended / Specialized / Private SOP Classes

Private storage SOP classes are accepted by the Storage SCP when listed in `node.extra_sop_classes`, and
written to media of augmented profiles as PRIVATE records with their Private Record UID.

### Private Transfer Syntaxes

None.
"""


#: The sections in order; each returns its Markdown. Add a section by adding its function here.
SECTIONS: list[Callable[[], str]] = [
    overview, contents, introduction, networking, media, character_sets, security, annexes,
]


# -- Numbering and the table of contents --------------------------------------------------------


_HEADING = re.compile(r"^(#{2,6}) (.+)$", re.MULTILINE)


def slug(text: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def render() -> str:
    """The whole statement, as Markdown."""
    text = "\n".join(section() for section in SECTIONS)
    counters = [0] * 5
    entries: list[str] = []

    def number(match: re.Match[str]) -> str:
        level = len(match.group(1)) - 2
        counters[level] += 1
        counters[level + 1:] = [0] * (len(counters) - level - 1)
        numbered = ".".join(str(c) for c in counters[: level + 1]) + " " + match.group(2)
        if level < 2:
            entries.append(f"{'  ' * level}- [{numbered}](#{slug(numbered)})")
        return f"{match.group(1)} {numbered}"

    text = _HEADING.sub(number, text)
    text = _link_anchors(text)
    return f"# {TITLE}\n\nmedianode {__version__}\n\n" + text.replace(_CONTENTS, "\n".join(entries) + "\n")


def _link_anchors(text: str) -> str:
    """Point ``](#title)`` links at the numbered heading whose title it is."""
    anchors: dict[str, list[str]] = {}
    for m in _HEADING.finditer(text):
        anchors.setdefault(slug(m.group(2).split(" ", 1)[1]), []).append(slug(m.group(2)))

    def fix(match: re.Match[str]) -> str:
        targets = anchors.get(match.group(1), [])
        if len(targets) != 1:
            raise ValueError(f"a link to #{match.group(1)} must name exactly one heading, not {len(targets)}")
        return f"](#{targets[0]})"

    return re.sub(r"\]\(#([\w-]+)\)", fix, text)
