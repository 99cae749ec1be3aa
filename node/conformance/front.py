"""PS3.2 sections 1 to 3: the Conformance Statement Overview, the Table of Contents (filled in by
:func:`node.conformance.markdown.numbered`) and the Introduction."""

from __future__ import annotations

import re

from node import __version__
from node.conformance.markdown import CONTENTS, table
from node.conformance.probes import readable_profiles
from node.conformance.tables import default_storage_classes


def overview() -> str:
    """PS3.2 section 1: the network services and media profiles, in brief."""
    accepted = default_storage_classes()
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
        [(name, "FSC", "No" if why else "Yes") for name, why in readable_profiles().items()],
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
    """PS3.2 section 2: where the table of contents goes."""
    return "## Table of Contents\n\n" + CONTENTS + "\n"


def introduction() -> str:
    """PS3.2 section 3: revision history, audience, remarks, terms."""
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
        "This statement follows the layout of PS3.2 Annex A. It is generated from the tables the program "
        "itself runs on (`medianode conformance`), "
        "and a test regenerates it and compares, so it describes this version exactly. It does not replace "
        "testing against the peers of a site. Where a table says \"default configuration\", the "
        "configuration keys of [Configuration](#configuration) change it.\n\n"
        "### Terms and Definitions\n\n" + terms + "\n"
        "### References\n\n" + REFERENCES
    )


REFERENCES = "\x00references\x00"  # where the documents the statement cites go (:func:`references`)
#: Every document the statement may cite: a pattern that finds a citation -> (the document, its title).
#: A citation no entry names fails the render (:func:`references`): a new one needs its title here.
DOCUMENTS: dict[str, tuple[str, str]] = {
    r"PS3\.2\b": ("DICOM PS3.2", "Conformance"),
    r"PS3\.3\b": ("DICOM PS3.3", "Information Object Definitions"),
    r"PS3\.4\b": ("DICOM PS3.4", "Service Class Specifications"),
    r"PS3\.5\b": ("DICOM PS3.5", "Data Structures and Encoding"),
    r"PS3\.6\b": ("DICOM PS3.6", "Data Dictionary"),
    r"PS3\.7\b": ("DICOM PS3.7", "Message Exchange"),
    r"PS3\.8\b": ("DICOM PS3.8", "Network Communication Support for Message Exchange"),
    r"PS3\.10\b": ("DICOM PS3.10", "Media Storage and File Format for Media Interchange"),
    r"PS3\.11\b": ("DICOM PS3.11", "Media Storage Application Profiles"),
    r"PS3\.12\b": ("DICOM PS3.12", "Media Formats and Physical Media for Media Interchange"),
    r"PS3\.15\b": ("DICOM PS3.15", "Security and System Management Profiles"),
    r"PS3\.16\b": ("DICOM PS3.16", "Content Mapping Resource"),
    r"IHE RAD TF": ("IHE RAD TF", "IHE Radiology Technical Framework (Portable Data for Imaging, "
                                  "Import Reconciliation)"),
    r"\bIHE ATNA\b": ("IHE ITI TF", "IHE IT Infrastructure Technical Framework (Audit Trail and Node Authentication)"),
    r"ECMA-119": ("ECMA-119", "Volume and File Structure of CDROM for Information Interchange (ISO 9660)"),
    r"ECMA-167": ("ECMA-167", "Volume and File Structure for Write-Once and Rewritable Media (ISO/IEC 13346)"),
    r"\bUDF (?:1\.02|1\.50|2\.60)\b": ("OSTA UDF", "Universal Disk Format Specification, Revisions 1.02 to 2.60"),
    r"BCP 195|RFC 9325": ("RFC 9325 (BCP 195)", "Recommendations for Secure Use of TLS and DTLS"),
    r"RFC 5424": ("RFC 5424", "The Syslog Protocol"),
    r"RFC 5425": ("RFC 5425", "Transport Layer Security (TLS) Transport Mapping for Syslog"),
    r"RFC 5426": ("RFC 5426", "Transmission of Syslog Messages over UDP"),
    r"RFC 3881": ("RFC 3881", "Security Audit and Access Accountability Message XML Data Definitions"),
    r"\bseed\b": ("seed", "the DICOM Conformance Statement of the media products medianode replaces (Merge "
                           "Unity Media: Guardian, Media Ambassador, Universal Manager), whose tables and "
                           "appendices it keeps to"),
}
#: What a citation looks like, to find those :data:`DOCUMENTS` lacks.
_CITATION = re.compile(r"PS3\.\d+|RFC \d+|ECMA-\d+|IHE [A-Z]+ TF")


def references(text: str) -> str:
    """The documents ``text`` cites, as a table; raises ValueError for a citation of an unknown document."""
    unknown = sorted({c for c in _CITATION.findall(text) if not any(re.fullmatch(p, c) for p in DOCUMENTS)})
    if unknown:
        raise ValueError(f"cited but not in DOCUMENTS (node/conformance/front.py): {', '.join(unknown)}")
    cited = dict.fromkeys(document for pattern, document in DOCUMENTS.items() if re.search(pattern, text))
    return table(("Document", "Title"), cited, sort=False)
