"""Our DICOM Conformance Statement (PS3.2), generated from the code's own tables.

Every table is read from the module that owns the behaviour: identity, statuses, record types and
keys from :mod:`node.dicom`; profiles from :mod:`node.profiles`; what the Storage SCP accepts from
the AE :func:`node.receive.scp.make_ae` builds; what the import SCU proposes from
:mod:`node.read.sender`; configuration keys from :mod:`node.config`'s dataclasses and their ``#:``
comments. So the statement cannot drift from the code: ``tests/test_conformance.py`` regenerates
``docs/conformance-statement.md`` and compares. Prose that no table holds (purpose, remarks) is
written here.

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
        if ts in dicom.NATIVE:
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
    compress_rows = [
        (f"`{name}`", syntaxes([ts]) if ts else "(none)",
         ", ".join(p for p in names if name in profiles.compressions(p)))
        for name, ts in profiles.COMPRESS.items()
    ]
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
### Augmented and Private Application Profiles

The augmented profiles (modelled on the seed's AUG-GEN-DRS-CD and AUG-GEN-DRS-DVD-RAM) keep image
instances in any syntax of the seed's Table 6 and hold private SOP classes as PRIVATE records:

{table(("Profile", "Image syntaxes kept"),
       [(p.name, syntaxes(sorted(p.image_syntaxes))) for p in profiles.PROFILES.values() if p.augmented])}
There are no private application profiles.

### Media Configuration

`routes[].compress` (and `burn --compress`) names a compression; the values each profile allows:

{table(("Value", "Transfer syntax", "Profiles"), compress_rows)}
In this version media are written without compression (`none`); the other values are checked but not
yet applied. Media keys: `burn.*` and `routes[].*` in [Parameters](#parameters).
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


def security() -> str:
    tls = ", ".join(f"`node.tls.{f.name}`" for f in dataclasses.fields(config.TLS))
    return (
        "## Security\n\n"
        "### Security Profiles\n\n"
        f"With `node.tls` ({tls}) the Storage SCP speaks TLS (PS3.15 B.1, the Basic TLS Secure Transport "
        "Connection Profile): its certificate and key are presented, and with `ca` every caller must "
        "present a certificate that CA signed. The import SCU does not use TLS in this version.\n\n"
        "### Association Level Security\n\n"
        "The called AE title must be the node's or a route's; `node.allowed_calling_aets` restricts the "
        "calling AE titles. Refused associations are logged.\n\n"
        "### Application Level Security\n\n"
        "The audit log, `data_dir/audit.jsonl`, gets one JSON line per refused association, received "
        "study, burned volume and medium imported (who, what, when). Media are read without mounting "
        "them; nothing on them is executed, and a Referenced File ID escaping the medium's root is refused.\n"
    )


def annexes() -> str:
    from node.read import coerce

    coerced = [(tag(t), tag_name(t), f"`import.coerce` ({vr})") for t, vr in coerce.ATTRIBUTES.values()]
    original = (f"one item appended per coerced instance: old values, time, Modifying System "
                f"`{coerce.MODIFYING_SYSTEM}`, reason `{coerce.REASON}`")
    coerced += [
        ("(0400,0561)", tag_name(0x04000561), original),
        ("(0010,0020)", tag_name(0x00100020), "`burn --invent-patient-id`, when two patients share one ID"),
        ("(0010,1002)", tag_name(0x00101002), "`burn --invent-patient-id`: the old ID, as an item"),
    ]
    return f"""## Annexes

### IOD Contents

#### Created SOP Instances

The File-set Creator creates one Media Storage Directory Storage instance (Basic Directory IOD, PS3.3
F.3) per medium, in Explicit VR Little Endian, with the identity of
[Implementation Identifying Information](#implementation-identifying-information). Instances converted to
Explicit VR Little Endian keep their SOP Class and Instance UIDs.

#### Usage of Attributes from Received IODs

The Storage SCP reads only what [SOP Specific Conformance](#sop-specific-conformance-for-storage-sop-classes)
lists; the File-set Creator reads the DICOMDIR keys of [DICOMDIR Keys](#dicomdir-keys).

#### Coerced/Modified Fields

The Storage SCP coerces nothing. These attributes are changed, only where configured or asked for:

{table(("Tag", "Attribute", "When"), coerced)}
A coerced instance is re-encoded (never sent as its own bytes). A DICOMDIR key whose date or time is in
the ACR-NEMA form (1997.04.24, 14:04:38) is written in the DA/TM form; an invalid one is left out.

### Data Dictionary of Private Attributes

medianode writes no private attributes.

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
