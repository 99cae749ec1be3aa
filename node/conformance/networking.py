"""PS3.2 section 4, Networking: the Storage SCP AE (:mod:`node.receive.scp`), the import SCU AE
(:mod:`node.read.sender`), the reconciliation C-FIND SCU (:mod:`node.read.query`), and the configuration
keys that change them."""

from __future__ import annotations

from node import config, dicom
from node.conformance.markdown import syntaxes, table, tag, tag_name, uid_name
from node.conformance.media_creation import section as media_creation_section
from node.conformance.tables import config_keys, default_storage_classes, scp_contexts
from node.read import coerce, query, sender
from node.receive import instance, scp


def section() -> str:
    """PS3.2 section 4: the Storage SCP and import SCU AEs, their associations and configuration."""
    node = config.NodeConfig()
    ae = scp.make_ae(config.Config())
    groups = scp_contexts()
    storage = set(default_storage_classes())
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
         "each transfer syntax its instances are in, one context per syntax (from the DICOMDIR's records while "
         "the medium is read; a class or syntax they do not name, on a later association)", "SCU", "None"),
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
- **Reconciliation C-FIND SCU** (with `import.reconcile`; the Import SCU's AE title): asks a Modality
  Worklist SCP and the local archive's Query/Retrieve SCP for the local identity of a medium's patients, in
  the manner of IHE Import Reconciliation (not IHE IRWF itself: no PDQ, no MPPS).

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
maximum PDU length received is `node.max_pdu` (default 0: {node.pdu_limit} bytes; never unlimited); a longer
PDU is answered with A-ABORT unread. Timeouts: an A-ASSOCIATE-RQ must arrive whole within
`node.artim_seconds` ({node.artim_seconds:g} s, ARTIM), each later PDU within `node.pdu_seconds`
({node.pdu_seconds:g} s) of its first byte; an association silent for `node.idle_seconds`
({node.idle_seconds:g} s) is released; DIMSE {ae.dimse_timeout} s.

###### Number of Associations

At most `node.max_associations` (default {node.max_associations}) associations per receiver process, and
`node.workers` (default {node.workers}) processes: {node.max_associations * node.workers} at once by default.
One more is rejected (result 2, source 3, reason 2).

###### Asynchronous Nature

Not supported: no Asynchronous Operations Window is negotiated; one operation at a time per association.

###### Implementation Identifying Information

{_identity()}
##### Association Initiation Policy

None: the Storage SCP AE never initiates an association. Media are imported by the
[Import SCU AE](#import-scu-ae).

##### Association Acceptance Policy

An association is rejected (A-ASSOCIATE-RJ, PS3.8 9.3.4), logged and written to the audit log
(`data_dir/audit.jsonl`) for these reasons:

{table(("Result", "Source", "Reason/Diagnosis", "When"), reject_rows)}
The called AE title must be `node.ae_title` or one a route matches (`routes[].match.called_aet`); the
calling AE title must be one of `node.allowed_calling_aets` when that list is not empty.

Routing (`routes[]`): each instance tries the routes in the order of the configuration file; the first
matching `reject` route refuses it (0x0124), a matching `store` route ends the trying, and every matching
`burn` route before that is recorded with the instance. Once quiet, a study is burned by the recorded burn
route that comes first in the file, plus every later recorded one with `also: true`; each medium holds
the whole study, and the order in which its instances arrive does not change the outcome.

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

Level of Digital Signature support (PS3.4 B.4.2): none. Signatures are neither verified nor created; a
Digital Signatures Sequence (FFFA,FFFA) received is stored with its instance and written to media with it,
where a signature that covers what compression or new UIDs change no longer verifies; de-identification
removes it (PS3.15 E.1-1).

Where and how long instances are kept: each in `node.data_dir`/spool, fsync'd and indexed before Success
is answered. Housekeeping deletes it once every job that needs it is delivered (a failed job keeps it
until retried or cancelled), no media creation request keeps it (one not yet done, or one that preserves
its instances, until forgotten `mcm.keep_hours` after it ends), and `burn.retention_hours` (default
{config.BurnConfig().retention_hours:g} h) have passed since the last instance of its study arrived; a
study that only a `store` route matched goes the same way. Each deletion is audited (DICOM Study Deleted).

No Query/Retrieve SCP (and no Storage Commitment) is offered: an instance received is reached only through
the media made of it.

###### SOP Specific Conformance for Verification

C-ECHO is answered with Success (0x0000).

{media_creation_section()}

#### Import SCU AE

##### Association Acceptance Policy

None: the Import SCU AE accepts no association.

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

#### Reconciliation C-FIND SCU AE

##### Association Acceptance Policy

None: the Reconciliation C-FIND SCU AE accepts no association.

##### Association Initiation Policy

With `import.reconcile`, before any instance is sent, one association per query: to
`import.reconcile.worklist` and `import.reconcile.patients` (`ae_title`, `host`, `port`, `tls` as the
destination's). One query per distinct patient on the medium (its results kept for the import); the archive
is also asked, one query per study, whether it holds the medium's Study Instance UIDs (Study Root only).
Each query is audited (ATNA Query, PS3.15 A.5.3.10).

###### Proposed Presentation Contexts

{table(("Abstract Syntax", "Transfer Syntaxes", "Role", "Extended Negotiation"), [
    (uid_name(u), syntaxes(query.SYNTAXES), "SCU", "None") for u in (
        "1.2.840.10008.5.1.4.31", "1.2.840.10008.5.1.4.1.2.2.1", "1.2.840.10008.5.1.4.1.2.1.1")], sort=False)}
The worklist model is used with `worklist`; Study Root (default) or Patient Root (`patients.model`) with
`patients`. Timeouts: connection {query.CONNECT_TIMEOUT:g} s, ACSE {query.ACSE_TIMEOUT:g} s, C-FIND response
{query.DIMSE_TIMEOUT:g} s; a query answered by more than {query.MAX_ANSWERS} matches is cancelled (C-CANCEL).

###### SOP Specific Conformance for the C-FIND SCU

Matching keys: Patient's Birth Date (single value) when the medium has one, else Patient's Name as a wildcard on
the family name's first letter; for the worklist also Scheduled Procedure Step Start Date (a range of
`worklist.days` before and after today) and, with `scheduled_only`, Scheduled Station AE Title (our AE title) or
Modality (`worklist.modality`). Return keys: Specific Character Set (asked as ISO_IR 192; the answer is decoded
by the set it names), Patient's Name, Patient ID, Issuer of Patient ID, Patient's Sex; from the worklist
Accession Number, Requested Procedure ID and Description, Study Instance UID, Referenced Study Sequence,
Scheduled Procedure Step ID and Description. Names are compared here, not by the SCP (which may match them
literally and with case): component by component, case folded, accents removed, trailing empty components
ignored, the alphabetic groups when both names have one, else the ideographic; the birth date must be equal,
the sex equal when both have one (`import.reconcile.match`). The medium's Patient ID is never a key.
Any status but Pending and Success, or no answer, holds the import with that reason.

One match: {", ".join(f"`{a}`" for a in coerce.RECONCILED)} take the local values (Study Description only
when empty; the sequences from a worklist item, Other Patient IDs Sequence gains the foreign Patient ID and
issuer), each change recorded in a new Original Attributes Sequence item (Modifying System
`{coerce.MODIFYING_SYSTEM}`, Source of Previous Values the medium's label, reason `{coerce.REASON}`); a local
value the instance's Specific Character Set cannot hold makes it `{coerce.UTF8}`. No UID is changed. None or
several matches, or a source that fails: the instances are copied to `data_dir/held/<import>/`, nothing is
sent, and `medianode import` exits 3 until a person resolves it (`medianode imports resolve`).

### Network Interfaces

#### Physical Network Interface

TCP/IP (PS3.8): IPv4, or IPv6 when `node.host` is an IPv6 address.
TCP_NODELAY is set on every connection, in both roles.

### Configuration

#### AE Title/Presentation Address Mapping

The Storage SCP listens on `node.host`:`node.port` (default `{node.host}:{node.port}`) as `node.ae_title`;
import destinations are `import.destination` (`ae_title`, `host`, `port`, and `tls`: see Security Profiles).

#### Parameters

{table(("Key", "Default", "Meaning"), [(f"`{k.path}`", k.default, k.meaning) for k in config_keys()], sort=False)}"""


def _identity() -> str:
    return table(
        ("Attribute", "Value"),
        [("Implementation Class UID", f"`{dicom.MEDIANODE_CLASS_UID}`"),
         ("Implementation Version Name", f"`{dicom.MEDIANODE_VERSION_NAME}`")],
    )
