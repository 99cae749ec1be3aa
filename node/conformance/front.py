"""PS3.2 sections 1 to 3: the Conformance Statement Overview, the Table of Contents (filled in by
:func:`node.conformance.markdown.numbered`) and the Introduction."""

from __future__ import annotations

from node import __version__, profiles
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
        "This statement is generated from the tables the program itself runs on (`medianode conformance`), "
        "and a test regenerates it and compares, so it describes this version exactly. It does not replace "
        "testing against the peers of a site. Where a table says \"default configuration\", the "
        "configuration keys of [Configuration](#configuration) change it.\n\n"
        "### Terms and Definitions\n\n" + terms
    )
