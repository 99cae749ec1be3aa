"""Shared DICOM knowledge, as data with its citation.

Both the media builder (``node.media``) and the media reader (``node.read``)
use these tables, so they live at the bottom of the package.
"""

from __future__ import annotations

import re
import uuid
from typing import NamedTuple

from node.tags import (
    CONTENT_DATE,
    CONTENT_SEQUENCE,
    CONTENT_TIME,
    INSTANCE_NUMBER,
    MODALITY,
    PATIENT_BIRTH_DATE,
    PATIENT_ID,
    PATIENT_NAME,
    SERIES_DESCRIPTION,
    SERIES_INSTANCE_UID,
    SERIES_NUMBER,
    SOP_INSTANCE_UID,
    STUDY_DATE,
    STUDY_DESCRIPTION,
    STUDY_ID,
    STUDY_INSTANCE_UID,
    STUDY_TIME,
    VERIFICATION_DATETIME,
    VERIFICATION_FLAG,
)

# -- Identity of this implementation (PS3.10 7.1, File Meta Information) ---------

#: Our root for UIDs we create: the UUID-derived arc of ISO/IEC 9834-8 (PS3.5 B.2).
UID_ROOT = "2.25."
#: Implementation Class UID (0002,0012): a fixed 2.25 UID, never to change.
MEDIANODE_CLASS_UID = "2.25.97105863420866512018826353004958637519"
#: Implementation Version Name (0002,0013): SH, at most 16 characters.
MEDIANODE_VERSION_NAME = "MEDIANODE_010"


def new_uid() -> str:
    """Return a new globally unique UID under our root (PS3.5 B.2)."""
    return f"{UID_ROOT}{uuid.uuid4().int}"


# -- Transfer syntaxes (PS3.5 Section 10 and Annex A) ------------------------------

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"  # .50, process 1
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"  # .51, processes 2 & 4
JPEG_LOSSLESS_P14 = "1.2.840.10008.1.2.4.57"  # .57, process 14
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"  # .70, process 14 selection value 1
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS = "1.2.840.10008.1.2.4.81"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"  # .90
J2K = "1.2.840.10008.1.2.4.91"  # .91
HTJ2K = "1.2.840.10008.1.2.4.203"  # .203, High-Throughput JPEG 2000, lossless or lossy
RLE_LOSSLESS = "1.2.840.10008.1.2.5"  # .5
# What medianode knows of each syntax is a row of node.syntaxes.


def uid_name(uid: str) -> str:
    """A UID's name in pydicom's dictionary ("Explicit VR Little Endian"), or the UID itself."""
    from pydicom.uid import UID  # only for messages: the hot path never needs it

    return str(UID(uid).name)


def syntax_name(uid: str) -> str:
    """A UID as people read it: "JPEG Baseline (Process 1) (1.2.840.10008.1.2.4.50)", or the UID alone."""
    name = uid_name(uid)
    return uid if name == uid else f"{name} ({uid})"


# -- Directory record types (PS3.3 F.5 and Table F.4-1; PS3.4 Annex B) ---------

#: The DICOMDIR's SOP class: Media Storage Directory Storage, the Basic Directory IOD (PS3.4 Annex I).
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"

#: The Directory Record Types (0004,1430) a DICOMDIR may hold: the defined terms of PS3.3 F.3.2.2
#: and F.5, PRIVATE (a record of private content) and the retired ones older media still carry.
DIRECTORY_RECORD_TYPES = frozenset({
    "PATIENT", "STUDY", "SERIES", "IMAGE", "RT DOSE", "RT STRUCTURE SET", "RT PLAN", "RT TREAT RECORD",
    "PRESENTATION", "WAVEFORM", "SR DOCUMENT", "KEY OBJECT DOC", "SPECTROSCOPY", "RAW DATA", "REGISTRATION",
    "FIDUCIAL", "HANGING PROTOCOL", "ENCAP DOC", "HL7 STRUC DOC", "VALUE MAP", "STEREOMETRIC", "PALETTE",
    "IMPLANT", "IMPLANT ASSY", "IMPLANT GROUP", "PLAN", "MEASUREMENT", "SURFACE", "SURFACE SCAN", "TRACT",
    "ASSESSMENT", "RADIOTHERAPY", "ANNOTATION", "INVENTORY", "PRIVATE",
    # retired (PS3.3-2004 F.5 and earlier)
    "OVERLAY", "MODALITY LUT", "VOI LUT", "CURVE", "TOPIC", "VISIT", "RESULTS", "INTERPRETATION",
    "STUDY COMPONENT", "STORED PRINT", "MRDR",
})

#: SOP class -> Directory Record Type for every storage class whose leaf record
#: is not IMAGE (PS3.3 Table F.4-1). Any other storage class with pixel data is
#: an IMAGE; a class we do not know at all is a PRIVATE record (augmented
#: profiles only).
#: SOP Class UID -> leaf Directory Record Type, for every storage class whose leaf
#: record is not IMAGE (PS3.3 Table F.4-1, UIDs from PS3.6 Annex A). Any other
#: storage class with pixel data is an IMAGE; a class we do not know is PRIVATE.
SOP_CLASS_RECORD_TYPE: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.11.1": "PRESENTATION",  # GrayscaleSoftcopyPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.11.2": "PRESENTATION",  # ColorSoftcopyPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.11.3": "PRESENTATION",  # PseudoColorSoftcopyPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.11.4": "PRESENTATION",  # BlendingSoftcopyPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.11.5": "PRESENTATION",  # XAXRFGrayscaleSoftcopyPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.11.6": "PRESENTATION",  # GrayscalePlanarMPRVolumetricPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.11.7": "PRESENTATION",  # CompositingPlanarMPRVolumetricPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.11.8": "PRESENTATION",  # AdvancedBlendingPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.11.9": "PRESENTATION",  # VolumeRenderingVolumetricPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.11.10": "PRESENTATION",  # SegmentedVolumeRenderingVolumetricPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.11.11": "PRESENTATION",  # MultipleVolumeRenderingVolumetricPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.131": "PRESENTATION",  # BasicStructuredDisplayStorage
    "1.2.840.10008.5.1.4.1.1.9.1.1": "WAVEFORM",  # TwelveLeadECGWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.1.2": "WAVEFORM",  # GeneralECGWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.1.3": "WAVEFORM",  # AmbulatoryECGWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.1.4": "WAVEFORM",  # General32bitECGWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.2.1": "WAVEFORM",  # HemodynamicWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.3.1": "WAVEFORM",  # CardiacElectrophysiologyWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.4.1": "WAVEFORM",  # BasicVoiceAudioWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.4.2": "WAVEFORM",  # GeneralAudioWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.5.1": "WAVEFORM",  # ArterialPulseWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.6.1": "WAVEFORM",  # RespiratoryWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.6.2": "WAVEFORM",  # MultichannelRespiratoryWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.7.1": "WAVEFORM",  # RoutineScalpElectroencephalogramWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.7.2": "WAVEFORM",  # ElectromyogramWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.7.3": "WAVEFORM",  # ElectrooculogramWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.7.4": "WAVEFORM",  # SleepElectroencephalogramWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.8.1": "WAVEFORM",  # BodyPositionWaveformStorage
    "1.2.840.10008.5.1.4.1.1.88.11": "SR DOCUMENT",  # BasicTextSRStorage
    "1.2.840.10008.5.1.4.1.1.88.22": "SR DOCUMENT",  # EnhancedSRStorage
    "1.2.840.10008.5.1.4.1.1.88.33": "SR DOCUMENT",  # ComprehensiveSRStorage
    "1.2.840.10008.5.1.4.1.1.88.34": "SR DOCUMENT",  # Comprehensive3DSRStorage
    "1.2.840.10008.5.1.4.1.1.88.35": "SR DOCUMENT",  # ExtensibleSRStorage
    "1.2.840.10008.5.1.4.1.1.88.40": "SR DOCUMENT",  # ProcedureLogStorage
    "1.2.840.10008.5.1.4.1.1.88.50": "SR DOCUMENT",  # MammographyCADSRStorage
    "1.2.840.10008.5.1.4.1.1.88.65": "SR DOCUMENT",  # ChestCADSRStorage
    "1.2.840.10008.5.1.4.1.1.88.69": "SR DOCUMENT",  # ColonCADSRStorage
    "1.2.840.10008.5.1.4.1.1.88.67": "SR DOCUMENT",  # XRayRadiationDoseSRStorage
    "1.2.840.10008.5.1.4.1.1.88.68": "SR DOCUMENT",  # RadiopharmaceuticalRadiationDoseSRStorage
    "1.2.840.10008.5.1.4.1.1.88.73": "SR DOCUMENT",  # PatientRadiationDoseSRStorage
    "1.2.840.10008.5.1.4.1.1.88.71": "SR DOCUMENT",  # AcquisitionContextSRStorage
    "1.2.840.10008.5.1.4.1.1.88.72": "SR DOCUMENT",  # SimplifiedAdultEchoSRStorage
    "1.2.840.10008.5.1.4.1.1.78.6": "SR DOCUMENT",  # SpectaclePrescriptionReportStorage
    "1.2.840.10008.5.1.4.1.1.79.1": "SR DOCUMENT",  # MacularGridThicknessAndVolumeReportStorage
    "1.2.840.10008.5.1.4.1.1.88.70": "SR DOCUMENT",  # ImplantationPlanSRStorage
    "1.2.840.10008.5.1.4.1.1.88.74": "SR DOCUMENT",  # PlannedImagingAgentAdministrationSRStorage
    "1.2.840.10008.5.1.4.1.1.88.75": "SR DOCUMENT",  # PerformedImagingAgentAdministrationSRStorage
    "1.2.840.10008.5.1.4.1.1.88.76": "SR DOCUMENT",  # EnhancedXRayRadiationDoseSRStorage
    "1.2.840.10008.5.1.4.1.1.88.77": "SR DOCUMENT",  # WaveformAnnotationSRStorage
    "1.2.840.10008.5.1.4.1.1.88.59": "KEY OBJECT DOC",  # KeyObjectSelectionDocumentStorage
    "1.2.840.10008.5.1.4.1.1.66": "RAW DATA",  # RawDataStorage
    "1.2.840.10008.5.1.4.1.1.104.1": "ENCAP DOC",  # EncapsulatedPDFStorage
    "1.2.840.10008.5.1.4.1.1.104.2": "ENCAP DOC",  # EncapsulatedCDAStorage
    "1.2.840.10008.5.1.4.1.1.104.3": "ENCAP DOC",  # EncapsulatedSTLStorage
    "1.2.840.10008.5.1.4.1.1.104.4": "ENCAP DOC",  # EncapsulatedOBJStorage
    "1.2.840.10008.5.1.4.1.1.104.5": "ENCAP DOC",  # EncapsulatedMTLStorage
    "1.2.840.10008.5.1.4.1.1.4.2": "SPECTROSCOPY",  # MRSpectroscopyStorage
    "1.2.840.10008.5.1.4.1.1.66.1": "REGISTRATION",  # SpatialRegistrationStorage
    "1.2.840.10008.5.1.4.1.1.66.3": "REGISTRATION",  # DeformableSpatialRegistrationStorage
    "1.2.840.10008.5.1.4.1.1.66.2": "FIDUCIAL",  # SpatialFiducialsStorage
    "1.2.840.10008.5.1.4.1.1.67": "VALUE MAP",  # RealWorldValueMappingStorage
    "1.2.840.10008.5.1.4.1.1.77.1.5.3": "STEREOMETRIC",  # StereometricRelationshipStorage
    "1.2.840.10008.5.1.4.1.1.66.5": "SURFACE",  # SurfaceSegmentationStorage
    "1.2.840.10008.5.1.4.1.1.68.1": "SURFACE SCAN",  # SurfaceScanMeshStorage
    "1.2.840.10008.5.1.4.1.1.68.2": "SURFACE SCAN",  # SurfaceScanPointCloudStorage
    "1.2.840.10008.5.1.4.1.1.66.6": "TRACT",  # TractographyResultsStorage
    "1.2.840.10008.5.1.4.1.1.90.1": "ASSESSMENT",  # ContentAssessmentResultsStorage
    "1.2.840.10008.5.1.4.1.1.481.2": "RT DOSE",  # RTDoseStorage
    "1.2.840.10008.5.1.4.1.1.481.3": "RT STRUCTURE SET",  # RTStructureSetStorage
    "1.2.840.10008.5.1.4.1.1.481.5": "RT PLAN",  # RTPlanStorage
    "1.2.840.10008.5.1.4.1.1.481.8": "RT PLAN",  # RTIonPlanStorage
    "1.2.840.10008.5.1.4.34.10": "RT PLAN",  # RTBrachyApplicationSetupDeliveryInstructionStorage
    "1.2.840.10008.5.1.4.1.1.481.4": "RT TREAT RECORD",  # RTBeamsTreatmentRecordStorage
    "1.2.840.10008.5.1.4.1.1.481.6": "RT TREAT RECORD",  # RTBrachyTreatmentRecordStorage
    "1.2.840.10008.5.1.4.1.1.481.7": "RT TREAT RECORD",  # RTTreatmentSummaryRecordStorage
    "1.2.840.10008.5.1.4.1.1.481.9": "RT TREAT RECORD",  # RTIonBeamsTreatmentRecordStorage
    "1.2.840.10008.5.1.4.1.1.78.1": "MEASUREMENT",  # LensometryMeasurementsStorage
    "1.2.840.10008.5.1.4.1.1.78.2": "MEASUREMENT",  # AutorefractionMeasurementsStorage
    "1.2.840.10008.5.1.4.1.1.78.3": "MEASUREMENT",  # KeratometryMeasurementsStorage
    "1.2.840.10008.5.1.4.1.1.78.4": "MEASUREMENT",  # SubjectiveRefractionMeasurementsStorage
    "1.2.840.10008.5.1.4.1.1.78.5": "MEASUREMENT",  # VisualAcuityMeasurementsStorage
    "1.2.840.10008.5.1.4.1.1.78.7": "MEASUREMENT",  # OphthalmicAxialMeasurementsStorage
    "1.2.840.10008.5.1.4.1.1.78.8": "MEASUREMENT",  # IntraocularLensCalculationsStorage
    "1.2.840.10008.5.1.4.1.1.80.1": "MEASUREMENT",  # OphthalmicVisualFieldStaticPerimetryMeasurementsStorage
}


def record_type(sop_class_uid: str, *, has_pixels: bool) -> str:
    """Return the leaf Directory Record Type (PS3.3 Table F.4-1) for an instance.

    >>> record_type("1.2.840.10008.5.1.4.1.1.2", has_pixels=True)
    'IMAGE'
    >>> record_type("1.2.840.10008.5.1.4.1.1.88.11", has_pixels=False)
    'SR DOCUMENT'
    >>> record_type("1.3.12.2.1107.5.9.1", has_pixels=False)
    'PRIVATE'
    """
    found = SOP_CLASS_RECORD_TYPE.get(sop_class_uid)
    if found:
        return found
    if has_pixels or is_standard_storage_class(sop_class_uid):
        return "IMAGE"
    return "PRIVATE"


def is_standard_storage_class(sop_class_uid: str) -> bool:
    """True for a storage SOP class of the standard (PS3.4 Annex B), as pydicom lists them.

    pydicom is imported here, not at module level: the burn hot path never needs it.
    """
    if not sop_class_uid.startswith("1.2.840.10008.5.1.4."):
        return False
    from pydicom import uid

    return any(
        u == sop_class_uid and name.endswith("Storage")
        for name, u in vars(uid).items()
        if isinstance(u, uid.UID)
    )


# -- File IDs (PS3.10 8.2, PS3.12 F.3 / Annex Q) -----------------------------------

MAX_FILE_ID_COMPONENTS = 8
_FILE_ID_COMPONENT = re.compile(r"^[A-Z0-9_]{1,8}$")


def is_conformant_file_id(components: list[str] | tuple[str, ...]) -> bool:
    """True when a File ID meets PS3.10 8.2: at most 8 components of 1-8 ``[A-Z0-9_]``.

    >>> is_conformant_file_id(["DICOM", "PT000000", "IM000001"])
    True
    >>> is_conformant_file_id(["dicom", "IM1.DCM"])
    False
    """
    return 0 < len(components) <= MAX_FILE_ID_COMPONENTS and all(
        _FILE_ID_COMPONENT.match(c) for c in components
    )


# -- DIMSE statuses (PS3.4 Annex B.2.3, PS3.7 Annex C) ------------------------------

SUCCESS = 0x0000
REFUSED_NOT_AUTHORIZED = 0x0124  # PS3.7 C.5.3
OUT_OF_RESOURCES = 0xA700  # PS3.4 B.2.3
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # PS3.4 B.2.3
CANNOT_UNDERSTAND = 0xC000  # PS3.4 B.2.3
# The receiver's refusals, each a code of its own inside the PS3.4 B.2.3 / PS3.7 C.4 ranges:
SPOOL_WRITE_FAILED = 0xA701  # PS3.4 B.2.3 Refused: Out of Resources (A7xx): the spool cannot be written
MISSING_UID = 0xC001  # PS3.4 B.2.3 Cannot Understand (Cxxx): no valid SOP Instance / Study Instance UID
CANNOT_PARSE = 0xC002  # PS3.4 B.2.3 Cannot Understand (Cxxx): the data set cannot be parsed
INSTANCE_UID_MISMATCH = 0xC003  # PS3.4 B.2.3 Cannot Understand (Cxxx): (0008,0018) != Affected SOP Instance UID
PROCESSING_FAILURE = 0x0110  # PS3.7 C.4.2: the index cannot be written
#: Failure Reason (0008,1197) of a Failed SOP Sequence item (the values PS3.4 Annex J gives it for Storage Commitment).
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119


# -- Directory record keys (PS3.3 F.5, and the seed's Appendix D) -------------------


class Key(NamedTuple):
    """A key of a directory record: its tag, VR and Type in the record (PS3.3 F.5)."""

    tag: int
    vr: str
    type: str  # "1" required, "2" present (maybe empty), "3" copied when present


def _keys(*keys: tuple[int, str, str]) -> tuple[Key, ...]:
    return tuple(Key(*k) for k in keys)


_CONTENT = _keys((CONTENT_DATE, "DA", "1"), (CONTENT_TIME, "TM", "1"), (INSTANCE_NUMBER, "IS", "1"))
_CONTENT_ID = _keys(
    (0x00700080, "CS", "1"),  # Content Label
    (0x00700081, "LO", "2"),  # Content Description
    (0x00700084, "PN", "2"),  # Content Creator's Name
)

#: What every leaf record holds besides its type's keys, in this order: Referenced File ID, Referenced
#: SOP Class / Instance / Transfer Syntax UID in File (PS3.3 F.3.2.2), SOP Instance UID (the seed's
#: Appendix D "Additional, Common Keys").
LEAF_KEYS = _keys(
    (0x00041500, "CS", "1"),
    (0x00041510, "UI", "1"),
    (0x00041511, "UI", "1"),
    (0x00041512, "UI", "1"),
    (SOP_INSTANCE_UID, "UI", "3"),
)
#: Private Record UID (0004,1432): the SOP class of a PRIVATE record (PS3.3 Table F.3-3, Type 1C).
PRIVATE_RECORD_UID = Key(0x00041432, "UI", "1")  # 1C: required in a PRIVATE record

#: Keys per record type (leaf records also get :data:`LEAF_KEYS`).
RECORD_KEYS: dict[str, tuple[Key, ...]] = {
    "PATIENT": _keys(
        (PATIENT_NAME, "PN", "2"),
        (PATIENT_ID, "LO", "1"),
        (PATIENT_BIRTH_DATE, "DA", "3"),  # Appendix D
        (0x00100040, "CS", "3"),  # Patient's Sex (Appendix D)
    ),
    "STUDY": _keys(
        (STUDY_DATE, "DA", "1"),
        (STUDY_TIME, "TM", "1"),
        (0x00080050, "SH", "2"),  # Accession Number
        (0x00080090, "PN", "3"),  # Referring Physician's Name (Appendix D)
        (STUDY_DESCRIPTION, "LO", "2"),
        (0x00081060, "PN", "3"),  # Name of Physician(s) Reading Study (Appendix D)
        (STUDY_INSTANCE_UID, "UI", "1"),  # 1C; we always know it
        (STUDY_ID, "SH", "1"),
    ),
    "SERIES": _keys(
        (MODALITY, "CS", "1"),
        (SERIES_DESCRIPTION, "LO", "3"),  # Appendix D
        (SERIES_INSTANCE_UID, "UI", "1"),
        (SERIES_NUMBER, "IS", "1"),
    ),
    "IMAGE": _keys(
        (0x00080008, "CS", "3"),  # Image Type (Appendix D)
        (0x00081140, "SQ", "3"),  # Referenced Image Sequence (Appendix D)
        (INSTANCE_NUMBER, "IS", "1"),
    ),
    "PRESENTATION": _CONTENT_ID
    + _keys(
        (0x00081115, "SQ", "3"),  # Referenced Series Sequence (1C)
        (INSTANCE_NUMBER, "IS", "1"),
        (0x00700082, "DA", "1"),  # Presentation Creation Date
        (0x00700083, "TM", "1"),  # Presentation Creation Time
        (0x00700402, "SQ", "3"),  # Blending Sequence (1C)
    ),
    "WAVEFORM": _CONTENT,
    "RAW DATA": _CONTENT,
    "KEY OBJECT DOC": _CONTENT
    + _keys(
        (0x0040A043, "SQ", "1"),  # Concept Name Code Sequence
        (CONTENT_SEQUENCE, "SQ", "3"),  # 1C: HAS CONCEPT MOD items only
    ),
    "SR DOCUMENT": _CONTENT
    + _keys(
        (VERIFICATION_DATETIME, "DT", "3"),  # 1C
        (0x0040A043, "SQ", "1"),  # Concept Name Code Sequence
        (0x0040A491, "CS", "1"),  # Completion Flag
        (VERIFICATION_FLAG, "CS", "1"),
        (CONTENT_SEQUENCE, "SQ", "3"),  # 1C: HAS CONCEPT MOD items only
    ),
    "ENCAP DOC": _keys(
        (CONTENT_DATE, "DA", "2"),
        (CONTENT_TIME, "TM", "2"),
        (INSTANCE_NUMBER, "IS", "1"),
        (0x0040A043, "SQ", "2"),  # Concept Name Code Sequence
        (0x0040E001, "ST", "3"),  # HL7 Instance Identifier (1C)
        (0x00420010, "ST", "2"),  # Document Title
        (0x00420012, "LO", "1"),  # MIME Type of Encapsulated Document
    ),
    "RT DOSE": _keys((INSTANCE_NUMBER, "IS", "1"), (0x3004000A, "CS", "1")),  # Dose Summation Type
    "RT STRUCTURE SET": _keys(
        (INSTANCE_NUMBER, "IS", "1"),
        (0x30060002, "SH", "1"),  # Structure Set Label
        (0x30060008, "DA", "2"),  # Structure Set Date
        (0x30060009, "TM", "2"),  # Structure Set Time
    ),
    "RT PLAN": _keys(
        (INSTANCE_NUMBER, "IS", "1"),
        (0x300A0002, "SH", "1"),  # RT Plan Label
        (0x300A0006, "DA", "2"),  # RT Plan Date
        (0x300A0007, "TM", "2"),  # RT Plan Time
    ),
    "RT TREAT RECORD": _keys(
        (INSTANCE_NUMBER, "IS", "1"),
        (0x30080250, "DA", "2"),  # Treatment Date
        (0x30080251, "TM", "2"),  # Treatment Time
    ),
    # REGISTRATION, FIDUCIAL, VALUE MAP, ... : the Content Identification keys.
    "GENERIC": _CONTENT + _CONTENT_ID,
    "PRIVATE": _keys((INSTANCE_NUMBER, "IS", "3")),
}

def record_keys(record: str) -> tuple[Key, ...]:
    """The keys of ``record`` (the GENERIC set for the rarer leaf types)."""
    return RECORD_KEYS.get(record, RECORD_KEYS["GENERIC"])
