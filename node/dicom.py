"""Shared DICOM knowledge, as data with its citation.

Both the media builder (``node.media``) and the media reader (``node.read``)
use these tables, so they live at the bottom of the package.
"""

from __future__ import annotations

import re
import uuid

from pydicom import uid as _uid

# -- Identity of this implementation (PS3.10 7.1, File Meta Information) ---------

#: Our root for UIDs we create: the UUID-derived arc of ISO/IEC 9834-8 (PS3.5 B.2).
UID_ROOT = "2.25."
#: Implementation Class UID (0002,0012): a fixed 2.25 UID, never to change.
IMPLEMENTATION_CLASS_UID = "2.25.97105863420866512018826353004958637519"
#: Implementation Version Name (0002,0013): SH, at most 16 characters.
IMPLEMENTATION_VERSION_NAME = "MEDIANODE_010"


def new_uid() -> str:
    """Return a new globally unique UID under our root (PS3.5 B.2)."""
    return f"{UID_ROOT}{uuid.uuid4().int}"


# -- Transfer syntaxes (PS3.5 Section 10 and Annex A) ------------------------------

EXPLICIT_VR_LE = str(_uid.ExplicitVRLittleEndian)
IMPLICIT_VR_LE = str(_uid.ImplicitVRLittleEndian)
EXPLICIT_VR_BE = str(_uid.ExplicitVRBigEndian)
DEFLATED_LE = str(_uid.DeflatedExplicitVRLittleEndian)
JPEG_BASELINE = str(_uid.JPEGBaseline8Bit)  # .50, process 1
JPEG_EXTENDED = str(_uid.JPEGExtended12Bit)  # .51, processes 2 & 4
JPEG_LOSSLESS_P14 = str(_uid.JPEGLossless)  # .57, process 14
JPEG_LOSSLESS_SV1 = str(_uid.JPEGLosslessSV1)  # .70, process 14 selection value 1
JPEG_LS_LOSSLESS = str(_uid.JPEGLSLossless)
JPEG_LS_NEAR_LOSSLESS = str(_uid.JPEGLSNearLossless)
J2K_LOSSLESS = str(_uid.JPEG2000Lossless)  # .90
J2K = str(_uid.JPEG2000)  # .91
RLE_LOSSLESS = str(_uid.RLELossless)  # .5

#: Transfer syntaxes whose pixel data we can decode (pydicom plus node.pixels).
DECODABLE_COMPRESSED = frozenset(
    {
        JPEG_BASELINE,
        JPEG_EXTENDED,
        JPEG_LOSSLESS_P14,
        JPEG_LOSSLESS_SV1,
        JPEG_LS_LOSSLESS,
        JPEG_LS_NEAR_LOSSLESS,
        J2K_LOSSLESS,
        J2K,
        RLE_LOSSLESS,
        str(_uid.JPEG2000MCLossless),
        str(_uid.JPEG2000MC),
        str(_uid.HTJ2KLossless),
        str(_uid.HTJ2KLosslessRPCL),
        str(_uid.HTJ2K),
    }
)

#: Table 6 of the seed: every syntax the augmented profiles allow for image SOP classes.
SEED_TABLE_6 = frozenset(
    {
        EXPLICIT_VR_LE,
        IMPLICIT_VR_LE,
        JPEG_BASELINE,
        JPEG_EXTENDED,
        JPEG_LOSSLESS_P14,
        JPEG_LOSSLESS_SV1,
        J2K_LOSSLESS,
        J2K,
        RLE_LOSSLESS,
    }
)

# -- Directory record types (PS3.3 F.5 and Table F.4-1; PS3.4 Annex B) ---------

#: SOP class -> Directory Record Type for every storage class whose leaf record
#: is not IMAGE (PS3.3 Table F.4-1). Any other storage class with pixel data is
#: an IMAGE; a class we do not know at all is a PRIVATE record (augmented
#: profiles only).
_RECORD_TYPES: dict[str, tuple[str, ...]] = {
    "PRESENTATION": (
        "GrayscaleSoftcopyPresentationStateStorage",
        "ColorSoftcopyPresentationStateStorage",
        "PseudoColorSoftcopyPresentationStateStorage",
        "BlendingSoftcopyPresentationStateStorage",
        "XAXRFGrayscaleSoftcopyPresentationStateStorage",
        "GrayscalePlanarMPRVolumetricPresentationStateStorage",
        "CompositingPlanarMPRVolumetricPresentationStateStorage",
        "AdvancedBlendingPresentationStateStorage",
        "VolumeRenderingVolumetricPresentationStateStorage",
        "SegmentedVolumeRenderingVolumetricPresentationStateStorage",
        "MultipleVolumeRenderingVolumetricPresentationStateStorage",
        "BasicStructuredDisplayStorage",
    ),
    "WAVEFORM": (
        "TwelveLeadECGWaveformStorage",
        "GeneralECGWaveformStorage",
        "AmbulatoryECGWaveformStorage",
        "General32bitECGWaveformStorage",
        "HemodynamicWaveformStorage",
        "CardiacElectrophysiologyWaveformStorage",
        "BasicVoiceAudioWaveformStorage",
        "GeneralAudioWaveformStorage",
        "ArterialPulseWaveformStorage",
        "RespiratoryWaveformStorage",
        "MultichannelRespiratoryWaveformStorage",
        "RoutineScalpElectroencephalogramWaveformStorage",
        "ElectromyogramWaveformStorage",
        "ElectrooculogramWaveformStorage",
        "SleepElectroencephalogramWaveformStorage",
        "BodyPositionWaveformStorage",
    ),
    "SR DOCUMENT": (
        "BasicTextSRStorage",
        "EnhancedSRStorage",
        "ComprehensiveSRStorage",
        "Comprehensive3DSRStorage",
        "ExtensibleSRStorage",
        "ProcedureLogStorage",
        "MammographyCADSRStorage",
        "ChestCADSRStorage",
        "ColonCADSRStorage",
        "XRayRadiationDoseSRStorage",
        "RadiopharmaceuticalRadiationDoseSRStorage",
        "PatientRadiationDoseSRStorage",
        "AcquisitionContextSRStorage",
        "SimplifiedAdultEchoSRStorage",
        "SpectaclePrescriptionReportStorage",
        "MacularGridThicknessAndVolumeReportStorage",
        "ImplantationPlanSRStorage",
        "PlannedImagingAgentAdministrationSRStorage",
        "PerformedImagingAgentAdministrationSRStorage",
        "EnhancedXRayRadiationDoseSRStorage",
        "WaveformAnnotationSRStorage",
    ),
    "KEY OBJECT DOC": ("KeyObjectSelectionDocumentStorage",),
    "RAW DATA": ("RawDataStorage",),
    "ENCAP DOC": (
        "EncapsulatedPDFStorage",
        "EncapsulatedCDAStorage",
        "EncapsulatedSTLStorage",
        "EncapsulatedOBJStorage",
        "EncapsulatedMTLStorage",
    ),
    "SPECTROSCOPY": ("MRSpectroscopyStorage",),
    "REGISTRATION": ("SpatialRegistrationStorage", "DeformableSpatialRegistrationStorage"),
    "FIDUCIAL": ("SpatialFiducialsStorage",),
    "VALUE MAP": ("RealWorldValueMappingStorage",),
    "STEREOMETRIC": ("StereometricRelationshipStorage",),
    "SURFACE": ("SurfaceSegmentationStorage",),
    "SURFACE SCAN": ("SurfaceScanMeshStorage", "SurfaceScanPointCloudStorage"),
    "TRACT": ("TractographyResultsStorage",),
    "ASSESSMENT": ("ContentAssessmentResultsStorage",),
    "RT DOSE": ("RTDoseStorage",),
    "RT STRUCTURE SET": ("RTStructureSetStorage",),
    "RT PLAN": ("RTPlanStorage", "RTIonPlanStorage", "RTBrachyApplicationSetupDeliveryInstructionStorage"),
    "RT TREAT RECORD": (
        "RTBeamsTreatmentRecordStorage",
        "RTBrachyTreatmentRecordStorage",
        "RTTreatmentSummaryRecordStorage",
        "RTIonBeamsTreatmentRecordStorage",
    ),
    "MEASUREMENT": (
        "LensometryMeasurementsStorage",
        "AutorefractionMeasurementsStorage",
        "KeratometryMeasurementsStorage",
        "SubjectiveRefractionMeasurementsStorage",
        "VisualAcuityMeasurementsStorage",
        "OphthalmicAxialMeasurementsStorage",
        "IntraocularLensCalculationsStorage",
        "OphthalmicVisualFieldStaticPerimetryMeasurementsStorage",
    ),
}

SOP_CLASS_RECORD_TYPE: dict[str, str] = {
    str(getattr(_uid, name)): record
    for record, names in _RECORD_TYPES.items()
    for name in names
    if hasattr(_uid, name)
}

#: Every standard storage SOP class pydicom knows (PS3.4 Annex B, PS3.6 Annex A).
STANDARD_STORAGE_CLASSES = frozenset(
    str(u)
    for name, u in vars(_uid).items()
    if isinstance(u, _uid.UID) and name.endswith("Storage") and u.startswith("1.2.840.10008.5.1.4.1.1.")
)


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
    if sop_class_uid in STANDARD_STORAGE_CLASSES or has_pixels:
        return "IMAGE"
    return "PRIVATE"


# -- File IDs (PS3.10 8.2, PS3.12 F.3 / Annex Q) -----------------------------------

MAX_FILE_ID_COMPONENTS = 8
MAX_FILE_ID_COMPONENT_LENGTH = 8
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
