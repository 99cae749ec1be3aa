"""What the media pipeline does to an instance, found by running it on small samples made here, so the
statement's media tables are the code's behaviour rather than a description of it.

:func:`compression_coercions` compresses sample images in every syntax and compares (seed Appendix B),
:func:`fallback_examples` asks :func:`node.media.compress.choose_syntax`, :func:`created_attributes` captures
sample files twice and traces each value to its source (Appendix A), :func:`uid_coercions` remaps a
sample under each UID map (Appendix C), :func:`private_block` reads the block ``new_uids`` writes, and
:func:`written_codes` collects the codes compression and de-identification write.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import struct
import tempfile
import zlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRLittleEndian

from node import dicom, pixels, profiles
from node.conformance.markdown import tag_name_of
from node.config import NodeIdentity
from node.media import capture, compress, deidentify, series, uids
from node.media.basic_profile import BASIC_PROFILE
from node.syntaxes import SYNTAXES, by_name, by_uid
from node.tags import PIXEL_DATA


def _value(elem: Any) -> str:
    """An element's value as the statement shows it; a sequence or bulk data shows no value."""
    if elem.VR == "SQ" or elem.VR.startswith("O") or elem.VR == "UN":
        return ""
    value = elem.value
    if value is None:
        return ""
    return "\\".join(str(v) for v in value) if isinstance(value, (MultiValue, list)) else str(value)


def _sample_images() -> list[tuple[str, Any]]:
    """Small decoded images that between them meet every branch of the compression coercion:
    signed CT with a rescale and pixel value bounds, unsigned 16-bit without a rescale, colour stored
    plane by plane, and a palette. 32 x 32: the least JPEG 2000 takes (:data:`node.media.compress.J2K_MIN_SIZE`)."""
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
               LargestImagePixelValue=2047, SmallestPixelValueInSeries=-1024, LargestPixelValueInSeries=2047)
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
    found: dict[int, Coerced] = {}
    written = [s.uid for s in SYNTAXES if s.compress]
    everything = frozenset(written)
    policy = compress.Policy(bit_reduction=True)
    for _, sample in _sample_images():
        for ts in written:
            choice = compress.choose_syntax(ts, compress.ImageInfo.from_dataset(sample), everything, policy)
            if choice.transfer_syntax != ts:
                continue
            ds = copy.deepcopy(sample)
            compress.compress(ds, choice, new_sop_uid="2.25.2" if choice.lossy else None)
            if choice.lossy and "SmallestImagePixelValue" in ds:  # a series of this image alone
                series.set_bounds(ds, int(ds.SmallestImagePixelValue), int(ds.LargestImagePixelValue))
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



def fallback_examples() -> list[tuple[str, str, str, str, str, str]]:
    """(image, profile, asked, consent, written as, reason) for a few images that cannot be written
    as asked, each decided by :func:`node.media.compress.choose_syntax` itself."""
    def info(modality: str, rows: int, samples: int, allocated: int, stored: int, signed: int,
             photometric: str = "MONOCHROME2", sop: str = "1.2.840.10008.5.1.4.1.1.7") -> Any:
        return compress.ImageInfo(sop, modality, rows, rows, samples, allocated, stored, signed, photometric)

    ct = info("CT", 512, 1, 16, 16, 1)
    mammogram = info("MG", 512, 1, 16, 12, 0, sop=min(compress.MAMMOGRAPHY))
    cases = [
        ("CT, 16 bits stored", ct, "STD-GEN-DVD-JPEG", "jpeg-extended", compress.Policy()),
        ("CT, 16 bits stored", ct, "STD-GEN-DVD-JPEG", "jpeg-extended", compress.Policy(bit_reduction=True)),
        ("RGB, 8 bits", info("XC", 512, 3, 8, 8, 0, "RGB"), "STD-GEN-DVD-JPEG", "jpeg-extended", compress.Policy()),
        ("mammogram, 12 bits stored", mammogram, "STD-GEN-DVD-JPEG", "jpeg-extended", compress.Policy()),
        ("mammogram, 12 bits stored", mammogram, "STD-GEN-DVD-JPEG", "jpeg-extended",
         compress.Policy(lossy_mammography=True)),
        ("16 x 16 grey", info("NM", 16, 1, 16, 16, 0), "STD-GEN-DVD-J2K", "j2k-lossy", compress.Policy()),
        ("16 x 16 grey", info("NM", 16, 1, 16, 16, 0), "AUG-GEN-CD", "j2k-lossy", compress.Policy()),
        ("1 bit stored", info("OT", 512, 1, 8, 1, 0), "AUG-GEN-CD", "jpeg-lossless", compress.Policy()),
        ("32 bits allocated", info("RTDOSE", 512, 1, 32, 32, 0), "AUG-GEN-CD", "rle", compress.Policy()),
    ]
    rows = []
    for what, image, profile, asked, policy in cases:
        choice = compress.choose_syntax(by_name(asked).uid, image, profiles.PROFILES[profile].image_syntaxes, policy)
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


#: Values computed from two identity keys, which a comparison of two captures cannot name.
_DERIVED = {0x00101010: "from `birth_date` and `study_date`, when both are known"}


def created_attributes() -> dict[str, list[Created]]:
    """Every attribute :func:`node.media.capture.capture` writes into a Secondary Capture (from a JPEG or
    a PNG) and an Encapsulated PDF, with where its value comes from: found by capturing two different
    files of each kind with two different identities, times and sidecar values, and comparing."""
    ids = [capture.Identity("ONE^PATIENT", "ID-ONE", "19500101", "F", "2.25.11", "20200101", "101010", "ONE STUDY",
                        "ACC-ONE", "ONE^REFERRER", "ONE HOSPITAL", "SID-ONE"),
           capture.Identity("TWO^PATIENT", "ID-TWO", study_uid="2.25.12")]
    extras = [{"series_description": "ONE SERIES", "document_title": "ONE TITLE", "burned_in_annotation": "NO"}, {}]
    nows = [datetime(2021, 2, 3, 4, 5, 6), datetime(2022, 3, 4, 5, 6, 7)]
    mtimes = [datetime(2019, 1, 2, 3, 4, 5), datetime(2018, 6, 7, 8, 9, 10)]
    places = [{"series_uid": "2.25.21", "series_number": 3, "instance_number": 5},
              {"series_uid": "2.25.22", "series_number": 4, "instance_number": 6}]
    nodes = [{"station_name": "STATION-ONE", "manufacturer_model_name": "MODEL ONE", "device_serial_number": "SN-ONE",
              "department": "DEPARTMENT ONE", "institution_address": "ADDRESS ONE"},
             {"station_name": "STATION-TWO", "manufacturer_model_name": "MODEL TWO", "device_serial_number": "SN-TWO",
              "department": "DEPARTMENT TWO", "institution_address": "ADDRESS TWO"}]
    equipment = [capture.Equipment(NodeIdentity(**nodes[n]), f"INSTITUTION {n}") for n in range(2)]
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
                capture.capture(src, dest, ids[n], extras=extras[n], now=nows[n], equipment=equipment[n],
                                **places[n])  # type: ignore[arg-type]
                runs.append(dcmread(dest))
            one, two = runs
            fields = [{**dataclasses.asdict(ids[n]), **extras[n], **places[n], "burn.institution": equipment[n].institution,
                       **{f"node.identity.{k}": v for k, v in nodes[n].items()}} for n in range(2)]
            rows = []
            for elem in one:
                other = two.get(elem.tag)
                source = _DERIVED.get(int(elem.tag)) or _source(elem, other, fields, nows[0], mtimes[0],
                                                                os.path.join(tmp, f"{kind}1"))
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
    ds = sample()
    before = read(ds)
    uids.remap(ds, uid_map)
    return "renamed" if read(ds) != before else "kept"


def private_block() -> list[tuple[str, str, str, str]]:
    """(tag, name, VR, VM) of each element :func:`node.media.uids.keep_original_uids` writes, creator first."""
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


@dataclasses.dataclass(frozen=True)
class Written:
    """One coded entry the media pipeline writes: the code, and the sequences it sits in (keywords, outer first)."""

    value: str
    scheme: str
    meaning: str
    where: tuple[str, ...]
    when: str


def written_codes() -> list[Written]:
    """The codes lossy compression and de-identification write into an instance, found by running
    :func:`node.media.compress.compress` and :func:`node.media.deidentify.deidentify` on samples and
    collecting every coded entry that was not there before."""
    found: list[Written] = []
    everything = frozenset(s.uid for s in SYNTAXES if s.compress)
    for _, sample in _sample_images():
        lossy = [s.uid for s in SYNTAXES if s.compress and s.writes_lossy]
        choices = [compress.choose_syntax(ts, compress.ImageInfo.from_dataset(sample), everything, compress.Policy())
                   for ts in lossy]
        choice = next((c for c in choices if c.lossy), None)
        if choice is not None:
            ds = copy.deepcopy(sample)
            compress.compress(ds, choice, new_sop_uid="2.25.2")
            found += _new_codes(sample, ds, "an image compressed lossily")
            break
    coded = next(t for t in sorted(BASIC_PROFILE) if deidentify.action(t) not in ("X", "Z", "X/Z", "U")
                 and dictionary_VR(t) == "SQ" and (keyword_for_tag(t) or "").endswith("CodeSequence"))
    sample = Dataset()
    sample.SOPClassUID, sample.SOPInstanceUID, sample.PatientID = "1.2.840.10008.5.1.4.1.1.2", "2.25.3", "P"
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "C", "99SAMPLE", "a code of the instance"
    sample.add_new(coded, "SQ", [item])
    ds = copy.deepcopy(sample)
    deidentify.deidentify(ds, uids.UidMap("salt", everything=True), allow_burned_in=True)
    return found + _new_codes(sample, ds, "an instance de-identified")


def _codes(ds: Any, where: tuple[str, ...] = ()) -> set[tuple[str, str, str, tuple[str, ...]]]:
    """Every coded entry in ``ds``, at any depth: (value, scheme, meaning, sequence keywords)."""
    found = set()
    for elem in ds:
        if elem.VR != "SQ":
            continue
        for item in elem.value:
            inside = (*where, elem.keyword)
            if "CodeValue" in item and "CodingSchemeDesignator" in item:
                found.add((str(item.CodeValue), str(item.CodingSchemeDesignator), str(item.get("CodeMeaning", "")),
                           inside))
            found |= _codes(item, inside)
    return found


def _new_codes(before: Any, after: Any, when: str) -> list[Written]:
    return [Written(*code, when) for code in sorted(_codes(after) - _codes(before))]


def readable_profiles() -> dict[str, str]:
    """Profile -> "" when a medium :func:`node.media.build.burn` writes in it is read back whole by
    :func:`node.read.check.check_medium` (what ``check`` and ``import`` read), else why not."""
    from node.errors import MediumError
    from node.media.build import burn
    from node.read.check import check_medium

    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "source")
        os.mkdir(source)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID("2.25.11")
        ds.StudyInstanceUID, ds.SeriesInstanceUID = "2.25.12", "2.25.13"
        ds.PatientName, ds.PatientID, ds.StudyDate, ds.StudyTime, ds.StudyID = "DOE^J", "P1", "20260101", "1010", "1"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.ConversionType = "OT", "1", "1", "WSD"
        ds.save_as(os.path.join(source, "sample.dcm"), enforce_file_format=True)
        for name, profile in profiles.PROFILES.items():
            out = os.path.join(tmp, name)
            burn([source], out=out, profile=profile, fmt="folder" if profile.file_system == "folder" else "iso")
            try:
                report = check_medium(out)
            except MediumError as exc:
                found[name] = str(exc).removeprefix(out).lstrip(": ")
                continue
            found[name] = "" if report.ok and report.instances == 1 else "; ".join(p.problem for p in report.problems)
    return found
