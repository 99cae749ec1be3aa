"""PS3.2 section 4, the Media Creation Management SCP (PS3.4 Annex S) of the node's AE: its SOP class,
the attributes it acts on, its statuses and its Execution Status Info values, read from
:mod:`node.receive.mcm`."""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword

from node import config, dicom
from node.conformance.markdown import syntaxes, table, tag
from node.receive import mcm, scp


def _tag(keyword: str) -> str:
    found = tag_for_keyword(keyword)
    return tag(int(found)) if found is not None else ""


def section() -> str:
    """The SCP's SOP class, presentation context, attributes, N-ACTION types, statuses and states."""
    settings = config.MediaRequests()
    attributes = [(keyword, _tag(keyword), what) for keyword, what in mcm.ATTRIBUTES.items()]
    actions = [("1", "Initiate Media Creation", f"Number of Copies {_tag('NumberOfCopies')} (1 to 99; default "
                f"`mcm.copies`), Request Priority {_tag('RequestPriority')} (HIGH, MED, LOW; default MED: the "
                f"order its jobs are built in, before those of a lower priority; a route's job counts as MED)"),
               ("2", "Cancel Media Creation", "none")]
    replies = [(k, _tag(k)) for k in ("ExecutionStatus", "ExecutionStatusInfo", "TotalNumberOfPiecesOfMediaCreated",
                                      "FailedSOPSequence", "ReferencedStorageMediaSequence", "StorageMediaFileSetID",
                                      "StorageMediaFileSetUID", "NumberOfCopies", "RequestPriority", "LabelText",
                                      "MediaDisposition")]
    statuses = [(f"0x{code:04X}", service, meaning, when) for code, (service, meaning, when) in mcm.STATUSES.items()]
    return f"""#### Media Creation Management SCP

With an `mcm:` section in the configuration, the node's AE (`node.ae_title`) is also an SCP of Media
Creation Management (PS3.4 Annex S): a PACS asks for media over DICOM and reads back how they went. A
request is recorded by the receiver that gets it and made durable in the index; the service turns an
initiated request whose instances are all in the spool into jobs, built and delivered by the outputs like
any other job (`medianode status`, `jobs`, `volumes`, the console's Now page).

##### SOP Class and Presentation Context

{table(("SOP Class Name", "SOP Class UID", "Transfer Syntaxes", "Role"),
       [("Media Creation Management", f"`{mcm.MEDIA_CREATION_MANAGEMENT}`", syntaxes(scp.VERIFICATION_SYNTAXES),
         "SCP")], sort=False)}
##### N-CREATE attributes

The SCP assigns the SOP Instance UID when the SCU leaves it out (PS3.7 10.1.5.1.4). Attributes acted on:

{table(("Attribute", "Tag", "What it does"), attributes, sort=False)}
The instances referenced are those the node received (on any called AE title); one not in the spool when
the request is initiated is waited for `mcm.wait_seconds` (default {settings.wait_seconds:g} s). A request
is split only between studies, and only with Allow Media Splitting YES; no study is ever split.

##### N-ACTION

{table(("Action Type ID", "Action", "Action Information"), actions, sort=False)}
##### N-GET

The attributes returned (only those listed, when the SCU gives an Attribute Identifier List):

{table(("Attribute", "Tag"), replies, sort=False)}
A finished request is answered for `mcm.keep_hours` (default {settings.keep_hours:g} h) after it ends, and
its instances are kept in the spool as long when it preserves them; then it is forgotten (0x0112).

Execution Status values:

{table(("Execution Status", "When"), mcm.EXECUTION_STATUS.items(), sort=False)}
Execution Status Info values:

{table(("Execution Status Info", "When"), mcm.EXECUTION_STATUS_INFO.items(), sort=False)}
A Failed SOP Sequence item carries Failure Reason 0x{dicom.NO_SUCH_OBJECT_INSTANCE:04X} (no such instance) or
0x{dicom.CLASS_INSTANCE_CONFLICT:04X} (not of the SOP class referenced).

##### Statuses

{table(("Status", "Service", "Meaning (PS3.7 Annex C, PS3.4 Annex S)", "When"), statuses, sort=False)}"""
