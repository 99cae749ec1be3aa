"""The subsections of PS3.2 section 5 on what a route (or ``medianode burn``) asks of a medium:
compression, new UIDs, captures of non-DICOM files, IHE PDI content and outputs."""

from __future__ import annotations

from node import config, dicom, pixels, profiles
from node.conformance.markdown import syntaxes, table, tag, tag_name, uid_name
from node.conformance.probes import fallback_examples, uid_coercions
from node.media import capture, compress, label, pdi, publisher, uids
from node.syntaxes import J2K_RATIO, JPEG_QUALITY, NO_COMPRESSION, SYNTAXES, by_uid


def _encoder(ts: str) -> str:
    """How :func:`node.pixels.encode_frame` writes a syntax, with the settings it uses."""
    settings = {
        dicom.JPEG_BASELINE: f"libjpeg-turbo, quality {JPEG_QUALITY}; colour as YBR_FULL_422",
        dicom.JPEG_EXTENDED: f"libjpeg-turbo, quality {JPEG_QUALITY}; grey only",
        dicom.JPEG_LOSSLESS_SV1: "libjpeg-turbo, predictor 1",
        dicom.JPEG_LOSSLESS_P14: f"libjpeg-turbo, predictor {pixels.P14_PREDICTOR}",
        dicom.J2K_LOSSLESS: "OpenJPEG, reversible; RGB as YBR_RCT",
        dicom.J2K: f"OpenJPEG, irreversible, ratio {J2K_RATIO:g}:1; RGB as YBR_ICT",
        dicom.RLE_LOSSLESS: "imagecodecs PackBits, row by row (PS3.5 G.3.1)",
    }
    return settings[ts]  # a syntax pixels.py learns to encode fails the render here until it is described


def compression() -> str:
    """``routes[].compress``: the values, the fallbacks and examples decided by :func:`node.media.compress.choose_syntax`."""
    def allowed_by(name: str) -> str:
        return ", ".join(p for p in profiles.PROFILES if name in profiles.compressions(p))

    values = [(f"`{NO_COMPRESSION}`", "(none)", "", "", allowed_by(NO_COMPRESSION))] + [
        (f"`{s.compress}`", syntaxes([s.uid]), "lossy" if s.writes_lossy else "lossless", _encoder(s.uid),
         allowed_by(s.compress))
        for s in SYNTAXES if s.compress
    ]
    order = [(family, " then ".join(by_uid(ts).label for ts in chain))
             for family, chain in compress.FALLBACK.items()]
    mammography = ", ".join(f"{uid_name(u)} `{u}`" for u in sorted(compress.MAMMOGRAPHY))
    return f"""##### Compression

`routes[].compress` and `burn --compress` name a compression, per modality if need be
(`compress: {{default: jpeg-lossless, MG: none}}`); a value the profile does not allow is a configuration
or usage error (exit 2). The values, what each writes, and the profiles that allow it:

{table(("Value", "Transfer syntax", "Kind", "Encoder and settings", "Profiles"), values, sort=False)}
Which images: instances of IMAGE records that hold Pixel Data. An image already compressed in a syntax
its profile allows is never recompressed (it is written as it is); any other image is decoded, then
compressed as asked. Other instances are written as
[SOP Classes and Transfer Syntaxes](#sop-classes-and-transfer-syntaxes) says. A lossy image becomes a new
instance, with the attributes of [Attribute Coercion for Compression](#attribute-coercion-for-compression).

An image the asked syntax cannot carry is written in the first lossless syntax of its family's list that
the profile allows and that can carry it, else uncompressed (Explicit VR Little Endian); the burn report
names each such image with the reason. The lists:

{table(("Asked family", "Lossless syntaxes tried, in order"), order, sort=False)}
Lossy compression of mammography (Modality MG, or one of {mammography}) needs the route's
`lossy_mammography: true`; values beyond the process's precision (8 bits for JPEG baseline, 12 for JPEG
extended) need `bit_reduction: true`, which scales them into it with Rescale Slope and Intercept to match.
Examples, each decided by the code that decides a burn:

{table(("Image", "Profile", "Asked", "Route consents", "Written as", "Reason in the burn report"),
       fallback_examples(), sort=False)}"""


def new_uids() -> str:
    """``routes[].new_uids`` and lossy compression: which UIDs :func:`node.media.uids.remap` renames."""
    rows = uid_coercions()
    return f"""##### New UIDs and De-identification

Lossy compression gives each image it compresses a new SOP Instance UID; `routes[].new_uids` (and
`burn --new-uids`) gives every instance, series, study and other data a new UID, and keeps the originals
in the private block of [Data Dictionary of Private Attributes](#data-dictionary-of-private-attributes);
`routes[].deidentify` (`burn --deidentify`) applies the
[Basic Application Level Confidentiality Profile](#basic-application-level-confidentiality-profile), with
new UIDs and no private block. A new UID is `{dicom.UID_ROOT}` followed by the integer of a version-8 UUID
made from a SHA-256 of a secret salt of the burn and the old UID (PS3.5 B.2): every file of the medium agrees
on it, and nobody can compute it from the old UID. Which UIDs change:

{table(("UID", "Lossy compression", "`new_uids` or `deidentify`"), rows, sort=False)}
###### Attributes Never Renamed

They name a kind of thing, not data:

{table(("Tag", "Attribute"), [(tag(t), tag_name(t)) for t in sorted(uids.KIND_TAGS)])}"""


def captures() -> str:
    """Files that :func:`node.media.capture.capture` turns into Secondary Capture and Encapsulated PDF."""
    keys = ", ".join(f"`{k}`" for k in capture.IDENTITY_RULES)
    extras = ", ".join(f"`{k}`" for k in capture.SIDECAR_RULES if k not in capture.IDENTITY_RULES)
    return f"""##### Secondary Capture and Encapsulated PDF

`medianode burn` turns the JPEG, PNG and TIFF files among its sources into
{uid_name(capture.SECONDARY_CAPTURE)} `{capture.SECONDARY_CAPTURE}` instances (Conversion Type WSD, PS3.3
A.8.1) and PDF files into {uid_name(capture.ENCAPSULATED_PDF)} `{capture.ENCAPSULATED_PDF}` instances (PS3.3
A.45.1), recognised by their first bytes, not their names. Whose file it is comes, in this order, from a
sidecar `NAME.yaml` (or `.yml`, `.json`) beside the file, a `capture.yaml` in its folder, the burn's flags
(`--patient-id`, ...), or the one DICOM study of the same burn; a file no source names a patient for is a
usage error (exit 2), never an invented patient. Identity keys: {keys}; a sidecar may also say {extras}.
Captures join their study in a new series per modality. The attributes written are those of
[Created SOP Instances](#created-sop-instances).
"""


def ihe_pdi() -> str:
    """``routes[].pdi``: what an IHE PDI medium holds at its root (:mod:`node.media.pdi`)."""
    root = [
        ("`DICOMDIR`", "always", "the File-set's index (PS3.10)"),
        ("`DICOM/`", "always", "the DICOM files, File IDs of [File-set](#file-set)"),
        (f"`{pdi.README}`", "always", ("what is on the medium (patients, studies), who made it (`burn.institution`, "
         "`burn.contact`), the creating application and version, how to read it; UTF-8, CRLF")),
        (f"`{pdi.INDEX}`", "`web: true`", "XHTML 1.0 Strict: the patients, their studies and series"),
        (f"`{profiles.PDI_WEB_FOLDER}/`", "`web: true`", (f"one XHTML page per series, with at most "
         f"{pdi.MAX_RENDITIONS} JPEG renditions (quality {JPEG_QUALITY}, at most {pdi.JPEG_MAX} pixels a "
         "side), evenly spread over the series")),
        ("a viewer folder", "`viewer: DIR`", ("copied as it is under ISO 9660 8.3 upper-case names; never "
         "started by the medium (no autorun)")),
    ]
    allowed = ", ".join(p.name for p in profiles.PROFILES.values() if p.pdi)
    fields = ", ".join(f"`{f}`" for f in publisher.RECORD_LABEL_FIELDS)
    return f"""##### IHE PDI

Media of {allowed} are IHE PDI media (IHE RAD TF-3 4.47, Portable Media
Creator) unless `routes[].pdi: false` (default `burn.pdi`); PDI on another profile is a configuration
error. The root holds nothing but:

{table(("Entry", "When", "What"), root, sort=False)}
Web content shows the DICOM content and nothing else, with relative links and no script. The label record
(for a publisher's label fields: {fields}) says `{label.DICOM_ONLY}` or `{label.DICOM_PLUS_WEB}`.
"""


#: How each output kind checks what it wrote (node.media.outputs, node.media.publisher, node.media.folder).
OUTPUT_VERIFICATION = {
    "folder": "the image (or tree) is written under a temporary name, fsync'd and renamed: never visible half-written",
    "xorriso": "with `verify` (default on) the image's length is read back from the drive and its SHA-256 compared; "
               "a written disc is never blanked",
    "publisher": "the robot's renaming of the job file (done, or failed with its reason); not verified on hardware",
    "usb": "every file written, fsync'd and compared byte for byte, then the DICOMDIR written last and renamed "
           "into place; a volume that holds a DICOMDIR already, or lacks room, is refused",
}


def outputs() -> str:
    """``burn.output`` and ``routes[].output``: the kinds of :data:`node.config.OUTPUTS` and how each verifies."""
    rows = []
    for kind, (cls, keys, required) in config.OUTPUTS.items():
        what = (cls.__doc__ or "").split("``: ", 1)[-1].split(" (")[0] if cls else "a folder of images (or trees)"
        shown = ", ".join(f"`{k}`" + (" (required)" if k in required else "") for k in keys)
        rows.append((f"`{kind}`", what, shown, OUTPUT_VERIFICATION[kind]))
    return f"""##### Outputs

`burn.output` and `routes[].output` say where a medium goes, `routes[].copies` times: a path (a folder),
or a mapping whose `kind` names the output. A copy that fails is tried again `retries` times, each after
`retry_wait_seconds`, and the job keeps its studies until it succeeds.

{table(("Kind", "What", "Keys", "Verification"), rows, sort=False)}
A USB profile needs a `folder` or `usb` output; a disc profile any other. The keys, their defaults and
meaning are `output[KIND].KEY` in [Parameters](#parameters).
"""
