"""PS3.2 section 7, Security: the TLS profile of the Storage SCP and SCU (PS3.15 B.9), the Basic Application
Level Confidentiality Profile of ``routes[].deidentify`` (PS3.15 Annex E), and the audit trail (PS3.15 A.5,
IHE ATNA)."""

from __future__ import annotations

import dataclasses
from collections import Counter

from node import audit, config, tls
from node.conformance.markdown import table, uid_name
from node.media import deidentify as de
from node.media.basic_profile import BASIC_PROFILE

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
    """PS3.15 Annex E's Basic Profile as :mod:`node.media.deidentify` applies it."""
    counts = Counter(BASIC_PROFILE.values())
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


def section() -> str:
    """PS3.2 section 7: TLS, the confidentiality profile, association and application level security."""
    scp = ", ".join(f"`{f.name}`" for f in dataclasses.fields(config.TLS))
    scu = ", ".join(f"`{f.name}`" for f in dataclasses.fields(config.ClientTLS))
    suites = ", ".join(f"`{c}`" for c in tls.BCP195_CIPHERS.split(":"))
    return (
        "## Security\n\n"
        "### Security Profiles\n\n"
        "The node supports the BCP 195 TLS Secure Transport Connection Profile (PS3.15 B.9) as SCP and as "
        "SCU, one profile for every connection: TLS 1.2 or later; under TLS 1.2 only the AEAD cipher suites "
        f"with forward secrecy that BCP 195 (RFC 9325 4.2) recommends ({suites}); under TLS 1.3 its own "
        "suites. Older versions, and suites without forward secrecy or authenticated encryption, are "
        "refused.\n\n"
        f"- Storage SCP: `node.tls` ({scp}). The node presents its certificate; with `ca`, every caller must "
        "present a certificate that CA signed.\n"
        f"- Storage SCU (import): `import.destination.tls` ({scu}; `import --tls-ca`, `--tls-certificate`, "
        "`--tls-key`). The destination's certificate must chain to `ca` (the system's trust store is not "
        "used); when the destination is configured by host name, its certificate must also name that host "
        "(subjectAltName); by address, the chain alone authenticates it. The node presents its certificate "
        "when `certificate` and `key` are set. A refused handshake fails the import with its reason; "
        "nothing is sent.\n\n"
        + _confidentiality() + "\n"
        "### Association Level Security\n\n"
        "An association is accepted by AE title and address: the called AE title must be the node's or a "
        "route's; `node.allowed_peers` pairs calling AE titles with the IPv4 and IPv6 addresses and networks "
        "each may call from, and `node.allowed_calling_aets` lists calling AE titles taken from any address. "
        "When either is set, any other calling AE title, or a listed one from another address, is refused "
        "(A-ASSOCIATE-RJ, rejected-permanent, calling AE title not recognised). User Identity Negotiation "
        "(PS3.7 D.3.3.7) is not supported: an identity a requestor sends is neither checked nor answered. Refused "
        "associations are logged and audited with their reason.\n\n"
        "### Application Level Security\n\n"
        "The audit log, `data_dir/audit.jsonl`, gets one JSON line per event (who, what, when). Media are read "
        "without mounting them; nothing on them is executed, and a Referenced File ID escaping the medium's "
        "root is refused.\n\n"
        + _audit_trail()
    )


def _audit_trail() -> str:
    """PS3.15 A.5 (Audit Trail Message Format Profile) and its transport, as :mod:`node.audit` sends it."""
    rows = sorted({(f"{e.id.meaning} ({e.id.code})", ", ".join(f"{t.meaning} ({t.code})" for t in e.types) or "-",
                    name) for name, make in audit.MESSAGES.items() for e in make(_SAMPLE, _FIELDS[name])})
    return f"""### Audit Trail

Audit Trail Message Format Profile (PS3.15 A.5): with `audit.syslog` (`host`, `port`, `protocol` udp or tls,
`tls` {{`ca`, `certificate`, `key`}}) every event below is also sent as a DICOM audit message (valid against the
schema of PS3.15 A.5.1) to an IHE ATNA audit record repository by syslog: RFC 5424 messages over UDP
(RFC 5426) or TLS (RFC 5425, the TLS profile of PS3.15 B.9). Codes are those of PS3.16 CID 400-405 (DCM).
Sending never delays the event it reports; a message the collector cannot take is logged and counted.

{table(("Event ID", "Event Type Code", "node event"), rows, sort=False)}"""


_SAMPLE = config.parse_config("audit: {syslog: {host: 127.0.0.1}}", source="(conformance)")
_STUDY: dict[str, object] = {"study_uid": "1.2", "patient_id": "P", "patient_name": "P", "sop_classes": {"1.2": 1}}
#: The fields each event site writes, enough to show which messages each event makes.
_FIELDS: dict[str, dict[str, object]] = {
    "node-started": {}, "node-stopped": {},
    "instances-received": {"calling_aet": "A", "called_aet": "B", "peer": "127.0.0.1:1", "studies": [_STUDY]},
    "import-started": {"medium": "/m", "destination": "A@h:1"},
    "import-done": {"medium": "/m", "destination": "A@h:1", "sent": 1, "studies": [_STUDY]},
    "import-failed": {"medium": "/m", "destination": "A@h:1", "sent": 1, "failed": 1, "studies": [_STUDY]},
    "volume-burned": {"label": "L", "patients": [["1.2", "P", "P"]]},
    "study-deleted": _STUDY,
    "query": {"ok": True, "where": "WL@h:1", "model": "MWL", "keys": {}},
    "association-refused": {"calling_aet": "A", "peer": "127.0.0.1:1", "reason": "r"},
    "config-reloaded": {"source": "/c", "ok": True},
    "audit-log-read": {"path": "/a"},
    "user-signed-in": {"user": "u"}, "user-sign-in-failed": {"user": "u", "reason": "r"}, "user-signed-out": {"user": "u"},
    "patient-search": {"user": "u", "patient_name": "P"},
}
