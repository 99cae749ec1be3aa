"""PS3.2 section 5, Media Interchange: the File-set Creator and Reader, the application profiles of
:mod:`node.profiles`, the File-set, directory records and DICOMDIR keys of :mod:`node.dicom`."""

from __future__ import annotations

from node import dicom, pixels, profiles
from node.conformance.markdown import syntaxes, table, tag, tag_name
from node.conformance.media_options import captures, compression, ihe_pdi, new_uids, outputs
from node.receive.scp import TRANSFER_SYNTAXES
from node.syntaxes import NATIVE

#: What each file system of :data:`node.profiles.FileSystem` is on the medium (PS3.12).
FILE_SYSTEMS = {
    "iso9660": "ISO 9660 level 1 image (ECMA-119), PS3.12",
    "udf-1.50": "UDF 1.50 image (PS3.12 Annex J): no VAT, no sparing table",
    "udf-2.60": "UDF 2.60 image (PS3.12 Annex Y)",
    "folder": "folder tree on the target (USB, PS3.12 Annex V)",
}


def _capacity(p: profiles.Profile) -> str:
    if p.capacity_sectors is None:
        return "free space of the target"
    return f"{p.capacity_sectors:,} sectors ({p.capacity_sectors * profiles.SECTOR / 1e6:,.0f} MB)"


#: The keys of ``routes[]`` that shape a medium (the others match, group and act).
MEDIA_ROUTE_KEYS = ("profile", "compress", "lossy_mammography", "bit_reduction", "new_uids", "deidentify",
                    "burned_in_annotation", "pdi", "web", "viewer", "output", "copies", "label")


def section() -> str:
    """PS3.2 section 5: the File-set Creator and Reader, their profiles, File-set, records and keys, and
    what a route asks of a medium (:mod:`node.conformance.media_options`)."""
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
UDF images are UDF 1.50 on DVD-RAM (PS3.12 Annex J forbids a later revision, the Virtual Allocation
Table and sparing tables: one Type 1 partition, File Entries) and UDF 2.60 on BD (PS3.12 Annex Y:
a metadata partition, Extended File Entries); neither has an ISO 9660 bridge.
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
{compression()}
{new_uids()}
{captures()}
{ihe_pdi()}
{outputs()}
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
