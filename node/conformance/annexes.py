"""PS3.2 section 8, Annexes: the instances created (seed Appendix A), the attributes coerced on import and
on media (seed Appendices B and C), and the private attributes of ``new_uids``; each table found by the
probes of :mod:`node.conformance.probes`."""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword

from node.conformance.markdown import table, tag, tag_name, tag_name_of
from node.conformance.probes import Coerced, compression_coercions, created_attributes, private_block, written_codes
from node.media import compress, uids
from node.read import coerce
from node.tags import PATIENT_ID


def _coercion_cell(entry: Coerced, kind: str) -> str:
    """What one kind of output ("lossless", "lossy") did to an attribute, with its values when they are the rule's."""
    changes, values = entry.changes.get(kind, set()), entry.values.get(kind, set()) - {""}
    if not changes:
        return "kept"
    what = " or ".join(sorted(changes))
    shown = entry.vr not in ("UI", "DS")  # UIDs and rescale values are the samples', not the rule's
    if shown and changes != {"removed"} and values and len(values) <= 3 and all(len(v) <= 24 for v in values):
        what += " to " + " or ".join(f"`{v}`" for v in sorted(values))
    return what


#: Why compression changes each attribute (seed Appendix B; PS3.3 sections). Every attribute that
#: :func:`~node.conformance.probes.compression_coercions` finds changed needs its reason here
#: (tests/test_conformance.py).
COERCION_REASONS = {
    "TransferSyntaxUID": "the syntax written (PS3.10 7.1)",
    "MediaStorageSOPInstanceUID": "follows the SOP Instance UID (PS3.10 7.1)",
    "SOPInstanceUID": "a lossy image is a new instance (PS3.3 C.7.6.1.1.5); every reference on the medium follows",
    "ImageType": "first value DERIVED (PS3.3 C.7.6.1.1.2)",
    "DerivationDescription": "a first line `{prefix} lossy <syntax> compression, ratio <r>:1`, the old text kept below",
    "SourceImageSequence": "an item appended naming the original, purpose 121320 (DCM, \"Uncompressed predecessor\"; "
                           "context 7202, DCMR, version 20020904, extension N)",
    "DerivationCodeSequence": "an item appended: 113040 (DCM, \"Lossy Compression\"; context 7203, DCMR, version "
                              "20020904, extension N)",
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
    "SmallestImagePixelValue": "recomputed from the decoded image, US or SS as the Pixel Representation written; "
                               "removed from colour",
    "LargestImagePixelValue": "recomputed from the decoded image, US or SS as the Pixel Representation written; "
                              "removed from colour",
    "SmallestPixelValueInSeries": "recomputed over every image of the series on the medium, US or SS as the Pixel "
                                  "Representation written; removed when they do not store values alike (seed B.2)",
    "LargestPixelValueInSeries": "recomputed over every image of the series on the medium, US or SS as the Pixel "
                                 "Representation written; removed when they do not store values alike (seed B.2)",
    **{f"{c}PaletteColorLookupTable{w}": "the palette is applied: the values are RGB (seed B.1)"
       for c in ("Red", "Green", "Blue") for w in ("Descriptor", "Data")},
    "ModalityLUTSequence": "the Modality LUT is applied to the values encoded (seed B.2)",
}


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


#: The context group (PS3.16) of each code sequence the media pipeline writes a standard code into, as
#: PS3.3 names it for that attribute. A code :func:`~node.conformance.probes.written_codes` finds in another
#: sequence fails the render until its group is named here.
CONTEXT_GROUPS = {
    "DerivationCodeSequence": "CID 7203 Image Derivation",
    "PurposeOfReferenceCodeSequence": "CID 7202 Source Image Purposes of Reference",
    "DeidentificationMethodCodeSequence": "CID 7050 De-identification Method",
}


def _attribute(keywords: tuple[str, ...]) -> str:
    """A nested attribute as PS3.3 writes it: ``Outer Sequence (gggg,eeee) > Inner (gggg,eeee)``."""
    return " > ".join(f"{tag_name_of(k)} {tag(int(tag_for_keyword(k) or 0))}" for k in keywords)


def _coded_terminology() -> str:
    """PS3.2 8.1.3: the codes written into instances on media, their context groups, private codes."""
    standard, private = [], []
    for code in written_codes():
        if code.scheme.startswith("99"):  # a private coding scheme (PS3.16 8.2)
            private.append((code.scheme, f"`{code.value}`", code.meaning, f"{code.when}: replaces the items of a "
                            f"code sequence the Basic Profile gives a dummy (D), such as {_attribute(code.where)}"))
        else:
            group = CONTEXT_GROUPS.get(code.where[-1])
            if group is None:
                raise ValueError(f"{code.value} ({code.scheme}) is written in {code.where[-1]}: name its context "
                                 "group in CONTEXT_GROUPS (node/conformance/annexes.py)")
            standard.append((group, f"`{code.value}`", code.scheme, code.meaning, _attribute(code.where), code.when))
    return f"""### Coded Terminology and Templates

#### Context Groups

The codes medianode writes into the instances of a medium; it writes no other. Of the codes it receives, it
reads only {_attribute(("SourceImageSequence", "PurposeOfReferenceCodeSequence"))} `{uids.PREDECESSOR_CODE[0]}`
({uids.PREDECESSOR_CODE[1]}), to
keep the reference of a lossy image to its uncompressed predecessor. The codes of the audit messages are in
[Audit Trail](#audit-trail).

{table(("Context Group", "Code Value", "Coding Scheme", "Code Meaning", "Attribute", "Written in"), standard)}
No context group is extended.

#### Template Specifications

None: medianode creates no Structured Reports.

#### Private Code Definitions

{table(("Coding Scheme Designator", "Code Value", "Code Meaning", "Use"), private)}"""


def section() -> str:
    """PS3.2 section 8: the IOD contents of what medianode creates and coerces, its private attributes."""
    coerced = [(tag(t), tag_name(t), f"`import.coerce` ({vr})") for t, vr in coerce.ATTRIBUTES.values()]
    original = (f"one item appended per coerced instance: old values, time, Modifying System "
                f"`{coerce.MODIFYING_SYSTEM}`, reason `{coerce.REASON}`")
    coerced += [
        ("(0400,0561)", tag_name(0x04000561), original),
        ("(0400,0561)", tag_name(0x04000561), "`repair` (burn): one item per corrected value, reason `CORRECT`, its "
                                              "old bytes in Nonconforming Modified Attributes Sequence; one for the "
                                              "Type 2 attributes added"),
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

{_coded_terminology()}
### Grayscale Image Consistency

Not applicable: medianode displays no images.

### Standard Extended / Specialized / Private SOP Classes

Private storage SOP classes are accepted by the Storage SCP when listed in `node.extra_sop_classes`, and
written to media of augmented profiles as PRIVATE records with their Private Record UID.

### Private Transfer Syntaxes

None.
"""
