"""PS3.2 section 5, Media Interchange: the File-set Creator and Reader, the application profiles of
:mod:`node.profiles`, the File-set, directory records and DICOMDIR keys of :mod:`node.dicom`."""

from __future__ import annotations

from node import dicom, pixels, profiles
from node.conformance.markdown import syntaxes, table, tag, tag_name
from node.conformance.media_options import captures, compression, ihe_pdi, new_uids, outputs
from node.conformance.probes import readable_profiles
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


def _augmented(p: profiles.Profile, unreadable: str) -> str:
    """One augmented profile as PS3.11 describes one: its SOP classes and transfer syntaxes, FSC and FSR."""
    reads = "No" if unreadable else "Yes"
    image = sorted({dicom.EXPLICIT_VR_LE, *p.image_syntaxes})
    rows = [
        ("Basic Directory", "`1.2.840.10008.1.3.10`", syntaxes([dicom.EXPLICIT_VR_LE]), "Mandatory", reads),
        ("every storage SOP class of an IMAGE record, and any instance with Pixel Data",
         "[Directory Record Types](#directory-record-types)", syntaxes(image), "Optional", reads),
        ("every other standard storage SOP class", "[Directory Record Types](#directory-record-types)",
         syntaxes([dicom.EXPLICIT_VR_LE]), "Optional", reads),
        ("private SOP classes", "any", syntaxes([dicom.EXPLICIT_VR_LE]), "Optional (PRIVATE records)", reads),
    ]
    private = dicom.PRIVATE_RECORD_UID
    return f"""##### {p.name}

{table(("IOD", "SOP Class UID", "Transfer Syntaxes", "FSC", "FSR"), rows, sort=False)}
Directory: a private SOP class gets a PRIVATE record holding {tag_name(private.tag)} {tag(private.tag)};
file system and capacity are those of the File-set Creator's table.
"""


#: The keys of ``routes[]`` that shape a medium (the others match, group and act).
MEDIA_ROUTE_KEYS = ("profile", "compress", "lossy_mammography", "bit_reduction", "new_uids", "deidentify",
                    "burned_in_annotation", "pdi", "web", "viewer", "output", "copies", "label")


def section() -> str:
    """PS3.2 section 5: the File-set Creator and Reader, their profiles, File-set, records and keys, and
    what a route asks of a medium (:mod:`node.conformance.media_options`)."""
    readable = readable_profiles()
    creator_rows = [(p.name, "Create medium", "FSC", "Interchange", FILE_SYSTEMS[p.file_system], _capacity(p))
                    for p in profiles.PROFILES.values()]
    reader_rows = [(name, activity, "FSR", "Interchange")
                   for name, why in readable.items() if not why for activity in ("Check medium", "Import medium")]
    unread = sorted({why for why in readable.values() if why})
    unreadable = "".join(
        f"Media of {', '.join(n for n, w in readable.items() if w == why)} are not read: {why}.\n" for why in unread)
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
  mounting it or executing anything, reconciles its DICOMDIR with a scan of its files, and reports; to
  import, it sends the instances found with the [Import SCU AE](#import-scu-ae).

#### Sequencing of Real-World Activities

- **Create medium**: `medianode burn` creates one at once. In `serve`, a study that matched a burn route
  becomes a job once no instance of it has arrived for `burn.study_stable_seconds`; jobs are built one at a
  time and handed to their route's output, each output delivering its own in order ([Outputs](#outputs)).
- **Check medium**: `medianode check`, on demand.
- **Import medium**: `medianode import`, or `serve`'s watcher once a medium in `import.inbox`, under
  `import.mount_roots` or in one of `import.drives` has not changed for `import.settle_seconds`. The
  medium is checked first (Check medium); with `import.reconcile` its patients are then reconciled; then
  every instance found is sent, DICOMDIR-referenced or not, and the report keeps what was sent and what
  was not.

#### File Meta Information Options

Every file the File-set Creator writes, the DICOMDIR included, carries in its File Meta Information the
Implementation Class UID and Version Name of
[Implementation Identifying Information](#implementation-identifying-information), and no Source
Application Entity Title (0002,0016).

### AE Specifications

#### File-set Creator

{table(("Application Profile", "Real-World Activity", "Role", "SC Option", "File System", "Capacity"),
       creator_rows)}
UDF images are UDF 1.50 on DVD-RAM (PS3.12 Annex J forbids a later revision, the Virtual Allocation
Table and sparing tables: one Type 1 partition, File Entries) and UDF 2.60 on BD (PS3.12 Annex Y:
a metadata partition, Extended File Entries); neither has an ISO 9660 bridge.

##### Real-World Activity: Create medium

The profile is `burn --profile` or `routes[].profile` (default {profiles.DEFAULT_PROFILE}). Options of the
activity, each below: compression (`compress`), new UIDs and de-identification (`new_uids`,
`deidentify`), captures of non-DICOM files (`burn` only), IHE PDI content (`pdi`, `web`, `viewer`), and
where the medium goes (`output`, `copies`).

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
#### File-set Reader

{table(("Application Profile", "Real-World Activity", "Role", "SC Option"), reader_rows)}
{unreadable}
##### Real-World Activity: Check medium

`medianode check PATH` reads a folder, an image or a drive (ISO 9660, with or without a UDF bridge, or UDF
1.02 to 2.60 alone: Type 1, virtual, sparable and metadata partitions), and reports what breaks reading
or importing (a missing, corrupt, escaping or mismatched file; a DICOM file no record references) as
problems, and what is merely there (README.TXT, INDEX.HTM, IHE_PDI/, a viewer, lower-case names) as notes;
exit 0 without problems, 1 otherwise. Option: `--profile NAME` also checks File IDs and transfer syntaxes
against that profile; without it, the report names the standard profiles the medium keeps to. `--json`
prints the report as one JSON object.

##### Real-World Activity: Import medium

`medianode import PATH --to AET@HOST:PORT`, or `import.destination` for the watcher: every instance of
the medium, DICOMDIR-referenced or not, is sent with the [Import SCU AE](#import-scu-ae). Options:
`import.coerce` (Patient ID and Issuer of Patient ID changed, [Coerced/Modified Fields](#coercedmodified-fields))
or `import.reconcile` ([Reconciliation C-FIND SCU AE](#reconciliation-c-find-scu-ae)); `import.eject`
after a drive's import.

### Augmented and Private Application Profiles

#### Augmented Application Profiles

Each in the form of a PS3.11 profile: the SOP classes and transfer syntaxes it holds, and what the File-set
Creator and Reader do with them.

{chr(10).join(_augmented(p, readable[p.name]) for p in profiles.PROFILES.values() if p.augmented)}
#### Private Application Profiles

None.

### Media Configuration

Media keys: `burn.*` and `routes[].*` in [Parameters](#parameters); the route keys of media are
{route_keys}.
"""
