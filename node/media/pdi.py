"""IHE PDI (Portable Data for Imaging) media: README.TXT, the web content and a viewer folder.

What IHE RAD TF-3 4.47 (RAD-47 "Distribute Imaging Information on Media", the Portable Media
Creator) asks of the medium, as summarised by IHE (https://wiki.ihe.net/index.php/Portable_Data_for_Imaging,
and its Connectathon slides "PDI CDROM Structure / Rules"):

- the root holds the DICOMDIR, the DICOM file tree, README.TXT and, with the Web Content Option,
  INDEX.HTM and the IHE_PDI directory; other content (a viewer) lives in folders of its own, never
  in DICOM/ or IHE_PDI/, and nothing may count on a program starting by itself (no autorun);
- every name is an ISO 9660 8.3 name (upper case, ``support_for_my_app.dll`` must become ``SUPPORT.DLL``);
- README.TXT tells who made the medium (institution, contact, the creating application and its
  version), what is on it and how to read it;
- web content is XHTML with JPEG images and corresponds exclusively to the DICOM content, though it
  need not show all of it; the XHTML and JPEG subsets are the ones IHE ITI-32 also references
  (XHTML 1.0, https://profiles.ihe.net/ITI/TF/Volume2/ITI-32.html).

The pages here are XHTML 1.0 Strict, UTF-8, with relative links only and no script, so any browser
opens them from the disc. Each series gets one page with at most :data:`MAX_RENDITIONS` JPEG
renditions, evenly spread over the series (a multi-frame image shows its first and middle frames):
the pages are a preview, the DICOM files stay the complete record, and rendering every image of a
2,000-slice CT would cost minutes of decoding and tens of MB of the medium's capacity for no reader.
Images are rendered one at a time into the build's staging folder, so memory stays bounded.
"""

from __future__ import annotations

import html
import logging
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from node import __version__
from node.errors import BuildError, UsageError
from node.media.content import FileSlice, MediaFile
from node.media.directory import Node, Tree
from node.media.label import Label, display_date, key_text, person_name
from node.profiles import PDI_ROOT_FILES, PDI_WEB_FOLDER, PROFILES, Profile
from node.tags import (
    INSTANCE_NUMBER,
    MODALITY,
    PATIENT_BIRTH_DATE,
    PATIENT_ID,
    SERIES_DESCRIPTION,
    SERIES_NUMBER,
    STUDY_DATE,
    STUDY_DESCRIPTION,
)
from node.words import counted

if TYPE_CHECKING:
    import numpy as np
    from pydicom.dataset import Dataset

    from node.config import BurnConfig

T = TypeVar("T")
logger = logging.getLogger(__name__)

README, INDEX = "README.TXT", "INDEX.HTM"
#: The most images rendered per series (see the module docstring for why there is a limit).
MAX_RENDITIONS = 12
#: Renditions are shrunk to at most this many pixels a side.
JPEG_MAX = 512
#: The series pages' fixed layout (CSS pixels): a header band, then a grid of equal cells, each
#: with its image at the top-left scaled to fit THUMB x THUMB. Fixed so that a test can find each
#: image in a screenshot.
HEAD_HEIGHT, CELL_WIDTH, CELL_HEIGHT, CELL_MARGIN, THUMB = 112, 200, 228, 4, 200
_NOT_D = re.compile(r"[^A-Z0-9_]")  # ISO 9660 d-characters (ECMA-119 7.4.1)
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")  # never valid in XML 1.0 (2.2)


@dataclass(frozen=True)
class Pdi:
    """How to make a PDI medium: web content or not, a viewer folder, who makes it."""

    web: bool = False
    viewer: Path | None = None
    institution: str = ""
    contact: str = ""
    renditions: int = MAX_RENDITIONS


def choose_pdi(profile: Profile, *, pdi: bool | None, web: bool = False, viewer: Path | None = None,
               institution: str = "", contact: str = "") -> Pdi | None:
    """The PDI settings of a burn, or None for plain DICOM media.

    ``pdi`` None means: on when the profile allows it (or when web content or a viewer is
    asked for). Raises UsageError for PDI on a profile that does not allow it (augmented, BD)
    and for web content or a viewer without PDI.
    """
    wanted = pdi if pdi is not None else (profile.pdi or web or viewer is not None)
    if not wanted:
        if web or viewer is not None:
            raise UsageError("web content and a viewer are part of IHE PDI media: they cannot go without PDI")
        return None
    if not profile.pdi:
        allowed = ", ".join(p.name for p in PROFILES.values() if p.pdi)
        raise UsageError(f"IHE PDI media cannot be made on {profile.name} (an augmented, DVD-RAM or BD profile); "
                         f"PDI allows {allowed}")
    return Pdi(web=web, viewer=viewer, institution=institution, contact=contact)


def for_route(burn: BurnConfig, profile: Profile, *, pdi: bool | None, web: bool, viewer: Path | None) -> Pdi | None:
    """The PDI settings of a job, from its route's recorded ``pdi``, ``web``, ``viewer`` and the ``burn`` section."""
    if pdi is None and not burn.pdi and not (web or viewer):
        pdi = False
    return choose_pdi(profile, pdi=pdi, web=web, viewer=viewer, institution=burn.institution, contact=burn.contact)


def pdi_files(tree: Tree, settings: Pdi, label: Label, *, profile: Profile, staging: str) -> list[MediaFile]:
    """The files PDI adds to the DICOMDIR and DICOM/: README.TXT, the web content, the viewer.

    JPEG renditions are written under ``staging`` (a folder the caller removes) and referenced.
    """
    viewer = viewer_files(settings.viewer) if settings.viewer is not None else []
    viewer_folder = viewer[0].components[0] if viewer else None
    files = [MediaFile((README,), [readme(label, settings, profile=profile, viewer=viewer_folder)])]
    if settings.web:
        files += web_files(tree, label, limit=settings.renditions, staging=Path(staging, "pdi"))
    return files + viewer


# -- README.TXT -------------------------------------------------------------------


def readme(label: Label, settings: Pdi, *, profile: Profile, viewer: str | None) -> bytes:
    """README.TXT: what is on the medium, who made it and when, and how to read it.

    UTF-8 with a byte order mark (so that Windows' Notepad reads the names right) and CRLF lines.
    """
    lines = ["IHE PDI (Portable Data for Imaging) medium", "", "WHAT IS ON THIS MEDIUM", ""]
    lines.append(f"  Content: {label.content}, {label.volume_text}")
    for p in label.patients:
        born = f", born {p.birth_date}" if p.birth_date else ""
        lines.append(f"  Patient: {p.name or '(no name)'} (ID {p.id}{born})")
        for s in p.studies:
            what = ", ".join(filter(None, [s.description, "/".join(s.modalities)]))
            lines.append(f"    Study of {s.date or '(no date)'}: {what}")
    lines += [
        "", "  DICOM/      the images and documents, as DICOM files (PS3.10), with no extension",
        f"  DICOMDIR    the index of the DICOM files (PS3.3 Annex F); application profile {profile.name}",
        "  README.TXT  this file",
    ]
    if settings.web:
        lines += ["  INDEX.HTM   the list of patients, studies and series, to open in a web browser",
                  "  IHE_PDI/    the web pages of each series, with JPEG pictures of some of its images"]
    if viewer:
        lines.append(f"  {viewer + '/':<11} a DICOM viewer supplied by the institution below")
    lines += ["", "WHO MADE IT", ""]
    lines.append(f"  Institution: {settings.institution or '(not configured)'}")
    lines.append(f"  Contact:     {settings.contact or '(not configured)'}")
    lines.append(f"  Created on {label.created} by medianode {__version__}, a DICOM media creator")
    lines += [
        "", "HOW TO READ IT", "",
        "  - With a DICOM viewer, or to import into a PACS: open the DICOMDIR at the root of this medium.",
        "    Any program that reads DICOM media (PS3.10, PS3.11) can read it.",
    ]
    if settings.web:
        lines.append("  - In any web browser: open INDEX.HTM. The pictures are previews, not for diagnosis.")
    if viewer:
        lines.append(f"  - With the viewer in {viewer}/: start it yourself; see the documentation in that folder.")
    lines += ["  - Nothing on this medium starts by itself.", ""]
    return "\ufeff".encode() + "\r\n".join(lines).encode("utf-8")


# -- web content ------------------------------------------------------------------

_XHTML_HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
<head>
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
<title>{title}</title>
<style type="text/css">
body {{ margin: 0; font-family: sans-serif; background: #ffffff; color: #000000 }}
div.page {{ padding: 0 8px }}
div.head {{ height: {head}px; overflow: hidden; padding: 0 8px }}
div.head h1 {{ font-size: 20px; margin: 8px 0 4px 0 }}
div.head p {{ margin: 2px 0; font-size: 14px }}
div.cell {{ float: left; width: {cw}px; height: {ch}px; margin: {m}px; overflow: hidden }}
div.cell img {{ display: block; border: 0 }}
div.cell p {{ margin: 2px 0; font-size: 12px }}
</style>
</head>
<body>
"""


def _esc(text: str) -> str:
    """Text for XHTML: escaped, and without the characters XML 1.0 forbids."""
    return html.escape(_NOT_XML.sub("\ufffd", text), quote=True)


def _page(title: str, body: list[str]) -> bytes:
    head = _XHTML_HEAD.format(title=_esc(title), head=HEAD_HEIGHT, cw=CELL_WIDTH, ch=CELL_HEIGHT, m=CELL_MARGIN)
    return (head + "\n".join(body) + "\n</body>\n</html>\n").encode("utf-8")


@dataclass
class _Series:
    """One series' page: its name (``S0000001``) and place in the tree."""

    name: str
    patient: Node
    study: Node
    series: Node

    @property
    def title(self) -> str:
        number, modality = key_text(self.series, SERIES_NUMBER), key_text(self.series, MODALITY)
        description = key_text(self.series, SERIES_DESCRIPTION)
        return f"Series {number} ({modality})" + (f": {description}" if description else "")


def web_files(tree: Tree, label: Label, *, limit: int, staging: Path) -> list[MediaFile]:
    """INDEX.HTM, and per series IHE_PDI/Snnnnnnn.HTM with its JPEGs in IHE_PDI/Snnnnnnn/."""
    staging.mkdir(parents=True, exist_ok=True)
    pages = [_Series(f"S{n:07d}", p, st, se) for n, (p, st, se) in enumerate(
        ((p, st, se) for p in tree.patients for st in p.children for se in st.children), 1)]
    files = [MediaFile((INDEX,), [_index_page(tree, label, pages)])]
    for page in pages:
        cells, pictures = _renditions(page, limit=limit, staging=staging)
        files.append(MediaFile((PDI_WEB_FOLDER, f"{page.name}.HTM"), [_series_page(page, cells)]))
        files += pictures
    return files


def _index_page(tree: Tree, label: Label, pages: list[_Series]) -> bytes:
    by_series = {id(p.series): p for p in pages}
    made = ", ".join(filter(None, [f"made by {label.institution}" if label.institution else "",
                                   f"on {label.created}", label.content, label.volume_text]))
    body = ['<div class="page">', "<h1>Images on this medium</h1>",
            f'<p>This medium was {_esc(made)}. <a href="{README}">About this medium ({README})</a></p>']
    for patient in tree.patients:
        pid = key_text(patient, PATIENT_ID)
        born = display_date(key_text(patient, PATIENT_BIRTH_DATE))
        body.append(f"<h2>{_esc(person_name(patient) or '(no name)')}</h2>")
        body.append(f"<p>Patient ID {_esc(pid)}" + (f", born {_esc(born)}" if born else "") + "</p>")
        for study in patient.children:
            date = display_date(key_text(study, STUDY_DATE))
            description = key_text(study, STUDY_DESCRIPTION)
            body.append(f"<h3>Study of {_esc(date)}" + (f": {_esc(description)}" if description else "") + "</h3>")
            body.append("<ul>")
            for series in study.children:
                page = by_series[id(series)]
                body.append(f'<li><a href="{PDI_WEB_FOLDER}/{page.name}.HTM">{_esc(page.title)}</a>, '
                            f"{counted(len(series.children), 'object')}</li>")
            body.append("</ul>")
    body.append("</div>")
    return _page("Images on this medium", body)


def _series_page(page: _Series, cells: list[str]) -> bytes:
    study_date = display_date(key_text(page.study, STUDY_DATE))
    study_description = key_text(page.study, STUDY_DESCRIPTION)
    body = ['<div class="head">', f'<p><a href="../{INDEX}">All studies</a></p>', f"<h1>{_esc(page.title)}</h1>",
            f"<p>{_esc(person_name(page.patient) or '(no name)')}, patient ID {_esc(key_text(page.patient, PATIENT_ID))}"
            f"; study of {_esc(study_date)}" + (f": {_esc(study_description)}" if study_description else "") + "</p>",
            "</div>"]
    body += cells or ['<div class="page"><p>No pictures: open the DICOM files of this series with a DICOM viewer.</p></div>']
    return _page(page.title, body)


def _renditions(page: _Series, *, limit: int, staging: Path) -> tuple[list[str], list[MediaFile]]:
    """The grid cells of a series page and the JPEG files they show."""
    cells: list[str] = []
    files: list[MediaFile] = []
    images = [(leaf, inst) for leaf in page.series.children if (inst := leaf.instance) and inst.header.has_pixels]
    for leaf, inst in _spread(images, limit):
        if len(files) >= limit:  # multi-frame images took two places each
            break
        number = key_text(leaf, INSTANCE_NUMBER)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a value pydicom frowns at either renders or fails below
                frames = list(_frames(inst.header.path))
        except Exception as exc:  # pydicom and the codecs fail in many ways on odd data: the page says so
            why = " ".join(str(exc).split())[:200] or type(exc).__name__  # pydicom's reasons span lines
            logger.warning("no picture of %s for the web content: %s", inst.source, why)
            cells.append(f'<div class="cell"><p>Image {_esc(number)}: no picture ({_esc(why)})</p></div>')
            continue
        for caption, jpeg, (height, width) in frames[:limit - len(files)]:
            name = f"I{len(files) + 1:07d}"
            path = staging / f"{page.name}{name}.JPG"
            try:
                path.write_bytes(jpeg)
            except OSError as exc:
                raise BuildError(f"cannot write the web content's pictures in {staging}: {exc.strerror or exc}") from None
            files.append(MediaFile((PDI_WEB_FOLDER, page.name, f"{name}.JPG"), [FileSlice(str(path), 0, len(jpeg))]))
            scale = THUMB / max(height, width)
            w, h = max(1, round(width * scale)), max(1, round(height * scale))
            cells.append(f'<div class="cell"><img src="{page.name}/{name}.JPG" width="{w}" height="{h}" '
                         f'alt="Image {_esc(number)}{_esc(caption)}" /><p>Image {_esc(number)}{_esc(caption)}</p></div>')
    return cells, files


def _spread(items: list[T], n: int) -> list[T]:
    """At most ``n`` of ``items``, evenly spread from the first to the last."""
    if len(items) <= n:
        return items
    if n <= 1:
        return items[:n]
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def _frames(path: str) -> Iterator[tuple[str, bytes, tuple[int, int]]]:
    """(caption, JPEG, (rows, columns) before shrinking) for the first and the middle frame of ``path``."""
    import imagecodecs
    from pydicom import dcmread
    from pydicom.pixels.utils import pixel_array

    from node import pixels, syntaxes

    pixels.register()
    ds = dcmread(path, stop_before_pixels=True)
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    plugin = pixels.PLUGIN if syntax in pixels.DECODER_DEPENDENCIES else ""
    count = int(ds.get("NumberOfFrames") or 1)
    for index in sorted({0, count // 2}):
        arr = pixel_array(path, index=index, decoding_plugin=plugin)  # one frame decoded at a time
        picture = _shrink(_display(arr, ds))
        caption = f", frame {index + 1} of {count}" if count > 1 else ""
        yield caption, bytes(imagecodecs.jpeg8_encode(picture, level=syntaxes.JPEG_QUALITY)), (arr.shape[0], arr.shape[1])


def _display(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """Stored values as display values from 0 to 1 (PS3.3 C.11: Modality LUT, VOI, Presentation).

    Grey: the Modality LUT or rescale (C.11.1), then the VOI LUT Sequence or the first Window
    Center / Width (C.11.2.1.2.1, the linear function), else the image's own minimum to maximum;
    MONOCHROME1 is inverted (C.7.6.3.1.2). Colour: pydicom gives RGB (YBR converted), palette
    colour goes through its LUT (C.7.6.3.1.5), and the samples are scaled to their bit depth.
    """
    import numpy as np
    from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi

    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        colour: np.ndarray = np.asarray(rgb, dtype=np.float64) / (255 if rgb.dtype.itemsize == 1 else 65535)
        return colour
    if arr.ndim == 3:
        samples: np.ndarray = np.asarray(arr, dtype=np.float64) / (2 ** int(ds.get("BitsStored") or 8) - 1)
        return samples
    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    if "VOILUTSequence" in ds:  # its input is the Modality LUT's output (C.11.2.1.1)
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        shown: np.ndarray = np.asarray(apply_voi(np.rint(values).astype(np.int64), ds, index=0),
                                       dtype=np.float64) / (2**bits - 1)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = (float(ds[k].value[0] if ds[k].VM > 1 else ds[k].value) for k in ("WindowCenter", "WindowWidth"))
        if width > 1:
            shown = (values - (center - 0.5)) / (width - 1) + 0.5
        else:  # a width of 1 is a threshold (C.11.2.1.2.1)
            shown = (values >= center - 0.5).astype(np.float64)
    else:
        low, high = float(values.min()), float(values.max())
        shown = (values - low) / (high - low) if high > low else np.zeros_like(values)
    shown = np.clip(shown, 0.0, 1.0)
    if photometric == "MONOCHROME1":
        shown = 1.0 - shown
    return shown


def _shrink(shown: np.ndarray) -> np.ndarray:
    """Display values as 8-bit samples, at most JPEG_MAX pixels a side (a box filter)."""
    import numpy as np

    factor = -(-max(shown.shape[:2]) // JPEG_MAX)
    if factor > 1:
        h, w = shown.shape[0] // factor * factor, shown.shape[1] // factor * factor
        shown = shown[:h, :w].reshape(h // factor, factor, w // factor, factor, *shown.shape[2:]).mean(axis=(1, 3))
    return np.ascontiguousarray(np.clip(shown * 255 + 0.5, 0, 255).astype(np.uint8))


# -- the viewer folder ------------------------------------------------------------------


def short_name(name: str, *, directory: bool = False) -> str:
    """``name`` as an ISO 9660 level 1 name: upper case, d-characters, 8.3 (ECMA-119 7.5, 7.6).

    Characters outside ``A-Z 0-9 _`` become ``_``. Raises ValueError when the name does not fit.

    >>> short_name("Viewer-1.exe"), short_name("lib", directory=True)
    ('VIEWER_1.EXE', 'LIB')
    """
    upper = name.upper()
    stem, dot, extension = ("", "", "") if directory else upper.rpartition(".")
    if not dot:
        stem, extension = upper, ""
    stem, extension = _NOT_D.sub("_", stem), _NOT_D.sub("_", extension)
    if not stem or len(stem) > 8 or len(extension) > 3:
        kind = "8 characters" if directory else "an 8.3 name"
        raise ValueError(f"{name!r} cannot be made {kind} (rename it, e.g. to {(stem or 'NAME')[:8]}"
                         f"{'.' + extension[:3] if extension else ''})")
    return f"{stem}.{extension}" if extension else stem


def viewer_files(folder: Path) -> list[MediaFile]:
    """The viewer folder's files, copied as they are under 8.3 upper-case names in a root folder.

    Hidden entries (``.DS_Store``) are left out. Refused, with UsageError: a name that cannot be
    made 8.3, two names that would become one, deeper than ISO 9660's eight levels (ECMA-119
    6.8.2.1), a name the PDI root reserves, and any AUTORUN.INF: PDI media never start a program.
    """
    if not folder.is_dir():
        raise UsageError(f"viewer {folder}: no such folder")
    try:
        top = short_name(folder.name, directory=True)
    except ValueError as exc:
        raise UsageError(f"viewer folder {folder}: {exc}") from None
    if top in PDI_ROOT_FILES | {"DICOM", PDI_WEB_FOLDER}:
        raise UsageError(f"viewer folder {folder}: {top} is reserved on PDI media; rename the folder")
    files: list[MediaFile] = []
    origin: dict[tuple[str, ...], str] = {(top,): str(folder)}  # each name on the medium -> its source
    placed: dict[str, tuple[str, ...]] = {str(folder): (top,)}  # each source folder -> its name on the medium
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in [*dirnames, *sorted(f for f in filenames if not f.startswith("."))]:
            source = os.path.join(dirpath, name)
            is_dir = name in dirnames
            try:
                path = (*placed[dirpath], short_name(name, directory=is_dir))
            except ValueError as exc:
                raise UsageError(f"viewer file {source}: {exc}") from None
            if path[-1] == "AUTORUN.INF":
                raise UsageError(f"viewer file {source}: PDI media never start a program by themselves "
                                 "(IHE RAD TF-3 4.47); remove AUTORUN.INF")
            if path in origin:
                raise UsageError(f"viewer files {origin[path]} and {source} would both be {'/'.join(path)} (8.3 names)")
            if len(path) > 8:
                raise UsageError(f"viewer file {source} is more than 8 levels deep (ISO 9660)")
            origin[path] = source
            if is_dir:
                placed[source] = path
            elif not os.path.isfile(source):
                raise UsageError(f"viewer file {source}: not a regular file")
            else:
                files.append(MediaFile(path, [FileSlice(source, 0, os.path.getsize(source))]))
    return files
