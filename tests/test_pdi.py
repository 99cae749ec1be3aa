"""IHE PDI media: what the root holds, README.TXT, the web content read by a real browser, the label,
``check`` on the result, and the refusals (configuration, flags, viewer names)."""

from __future__ import annotations

import json
import posixpath
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import pixel_array
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from node import __version__
from node.config import BurnConfig, parse_config
from node.index import Index
from node.jobs import Worker, schedule
from node.media.build import burn
from node.media.pdi import CELL_HEIGHT, CELL_MARGIN, CELL_WIDTH, HEAD_HEIGHT, MAX_RENDITIONS, Pdi, for_route
from node.profiles import PROFILES
from node.read.medium import open_medium
from tests.conftest import bundled, cli, ct_series, need
from tests.test_jobs import make_config, receive, settings

XHTML = "{http://www.w3.org/1999/xhtml}"
SOURCES = ["CT_small.dcm", "MR_small.dcm", "chrH31.dcm", "chrX1.dcm", "chrGreek.dcm", "SC_rgb_rle_2frame.dcm"]
#: An ISO 9660 level 1 name: 8 d-characters, and for a file at most a 3-character extension.
LEVEL_1 = re.compile(r"[A-Z0-9_]{1,8}(\.[A-Z0-9_]{1,3})?")
#: The window of the MONOCHROME1 image and its three bands of stored values: below, inside, above it.
WINDOW, BANDS = (1000, 200), (500, 1000, 3000)


@dataclass
class Burned:
    iso: Path
    root: Path  # the image's files, read back through node.read.medium
    report: dict[str, object]


def banded(path: Path, bands: tuple[int, ...], *, photometric: str = "MONOCHROME1", **attrs: object) -> Dataset:
    """A greyscale image of vertical bands of stored values, 32 columns each (Patient ID M1)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "INVERSE^IRIS", "M1", "19800202"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "20250505", "1200", "1", "", ""
    ds.StudyDescription, ds.SeriesDescription = "Chest PA", "Frontal"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.ConversionType = "CR", "1", "1", "WSD"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 48, 32 * len(bands), 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.repeat(np.array(bands, dtype=np.uint16), 32)[None, :].repeat(48, axis=0).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds


def band_means(picture: np.ndarray, n: int) -> list[float]:
    """The mean of each of ``n`` vertical bands of a rendition, away from their edges (JPEG ringing)."""
    width = picture.shape[1] // n
    return [float(picture[:, i * width + 4:(i + 1) * width - 4].mean()) for i in range(n)]


def chromium(*args: str, profile: Path) -> str:
    """Headless Debian chromium, as root: no sandbox, no network of its own, a throw-away profile."""
    need("chromium")
    p = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--no-first-run", f"--user-data-dir={profile}", *args],
                       capture_output=True, text=True, timeout=120, check=True)
    return p.stdout


@pytest.fixture(scope="module")
def burned(tmp_path_factory: pytest.TempPathFactory) -> Burned:
    tmp = tmp_path_factory.mktemp("pdi")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        shutil.copy(bundled(name), src / name)
    banded(src / "m1.dcm", BANDS, WindowCenter=WINDOW[0], WindowWidth=WINDOW[1])
    ct_series(src / "ct", MAX_RENDITIONS + 2, patient_id="LONG14", name="SERIES^LONG", size=32)
    viewer = tmp / "viewer"
    (viewer / "lib").mkdir(parents=True)
    (viewer / "Viewer.exe").write_bytes(b"MZ not really")
    (viewer / "lib" / "core-1.dll").write_bytes(b"MZ")
    (viewer / ".DS_Store").write_bytes(b"junk")
    iso = tmp / "pdi.iso"
    result = cli("burn", src, "--out", iso, "--web", "--viewer", viewer, "--institution", "St. Elsewhere Hospital",
                 "--contact", "Radiology, +1 555 0100", "--json")
    assert result.code == 0, result.err
    root = tmp / "root"
    with open_medium(iso) as medium:
        for path in medium.files():
            target = root / path.replace(";1", "").rstrip(".")
            target.parent.mkdir(parents=True, exist_ok=True)
            with medium.open(path) as fp:
                target.write_bytes(fp.read())
    return Burned(iso, root, json.loads(result.out))


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def page(root: Path, relpath: str) -> ET.Element:
    """An .HTM parsed as XML (it must be well-formed XHTML to parse)."""
    return ET.parse(root / relpath).getroot()


def test_the_root_holds_only_what_pdi_allows_in_level_1_names(burned: Burned) -> None:
    assert {p.name for p in burned.root.iterdir()} == {"DICOMDIR", "DICOM", "README.TXT", "INDEX.HTM", "IHE_PDI", "VIEWER"}
    for path in files(burned.root):
        assert all(LEVEL_1.fullmatch(part) for part in path.split("/")), path
    viewer = [p for p in files(burned.root) if p.startswith("VIEWER/")]
    assert viewer == ["VIEWER/LIB/CORE_1.DLL", "VIEWER/VIEWER.EXE"]  # hidden .DS_Store left out, no AUTORUN.INF
    assert (burned.root / "VIEWER/VIEWER.EXE").read_bytes() == b"MZ not really"  # copied as it is


def test_readme_says_what_who_when_and_how(burned: Burned) -> None:
    raw = (burned.root / "README.TXT").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw
    text = raw.decode("utf-8-sig")
    for expected in ("DICOM PLUS WEB", "volume 1 of 1", "St. Elsewhere Hospital", "Radiology, +1 555 0100",
                     f"medianode {__version__}", date.today().isoformat(), "DICOMDIR", "INDEX.HTM", "VIEWER/",
                     "山田", "Διονυσιος", "王", "INVERSE IRIS (ID M1", "born 1980-02-02", "Chest PA, CR",
                     "Nothing on this medium starts by itself"):
        assert expected in text, expected


def test_the_label_record(burned: Burned) -> None:
    label = burned.report["label"]
    assert isinstance(label, dict)
    assert label["content"] == "DICOM PLUS WEB" and label["volume_text"] == "volume 1 of 1"
    assert label["institution"] == "St. Elsewhere Hospital" and label["created"] == date.today().isoformat()
    assert set(label["modalities"]) == {"CT", "MR", "OT", "CR"}
    names = {p["name"]: p for p in label["patients"]}
    assert "Yamada Tarou (山田 太郎, やまだ たろう)" in names and "Διονυσιος" in names
    assert names["INVERSE IRIS"]["studies"] == [{"date": "2025-05-05", "description": "Chest PA", "modalities": ["CR"]}]


def test_every_page_is_xhtml_with_relative_links_that_resolve_inside(burned: Burned) -> None:
    pages = [p for p in files(burned.root) if p.endswith(".HTM")]
    assert "INDEX.HTM" in pages and len(pages) == 1 + 8  # INDEX.HTM and one page per series
    on_medium = set(files(burned.root))
    for relpath in pages:
        root = page(burned.root, relpath)
        assert root.tag == f"{XHTML}html"
        assert not list(root.iter(f"{XHTML}script"))
        for element in root.iter():
            assert not any(name.startswith("on") for name in element.attrib), (relpath, element.attrib)
            for attribute in ("href", "src"):
                link = element.get(attribute)
                if link is None:
                    continue
                assert "://" not in link and not link.startswith("/"), link
                target = posixpath.normpath(posixpath.join(posixpath.dirname(relpath), link))
                assert target in on_medium, (relpath, link)
                if attribute == "src":
                    picture = imagecodecs.jpeg8_decode((burned.root / target).read_bytes())
                    assert max(picture.shape[:2]) <= 512 and picture.std() > 1, target


def series_page(burned: Burned, title: str) -> tuple[str, ET.Element]:
    """The series page whose <h1> is ``title``."""
    for relpath in files(burned.root):
        if relpath.startswith("IHE_PDI/") and relpath.endswith(".HTM"):
            root = page(burned.root, relpath)
            if "".join(next(root.iter(f"{XHTML}h1")).itertext()) == title:
                return relpath, root
    raise AssertionError(f"no page {title!r}")


def test_renditions_are_bounded_spread_windowed_and_inverted(burned: Burned) -> None:
    _, long = series_page(burned, "Series 3 (CT)")
    captions = ["".join(p.itertext()) for p in long.iter(f"{XHTML}p") if "".join(p.itertext()).startswith("Image")]
    assert len(list(long.iter(f"{XHTML}img"))) == MAX_RENDITIONS
    assert captions[0] == "Image 1" and captions[-1] == f"Image {MAX_RENDITIONS + 2}"  # first to last

    relpath, colour = _colour_page(burned)
    shown = [img.get("alt") for img in colour.iter(f"{XHTML}img")]
    assert shown == ["Image 1, frame 1 of 2", "Image 1, frame 2 of 2"]  # a multi-frame: first and middle frame
    [first, _] = [img.get("src") for img in colour.iter(f"{XHTML}img")]
    rgb = imagecodecs.jpeg8_decode((burned.root / posixpath.dirname(relpath) / str(first)).read_bytes())
    source = pixel_array(bundled("SC_rgb_rle_2frame.dcm"), index=0)  # RGB, 8 bits: shown as it is
    assert rgb.shape == source.shape and np.abs(rgb.astype(int) - source).mean() < 3

    relpath, inverse = series_page(burned, "Series 1 (CR): Frontal")
    [img] = inverse.iter(f"{XHTML}img")
    grey = imagecodecs.jpeg8_decode((burned.root / posixpath.dirname(relpath) / str(img.get("src"))).read_bytes())
    below, inside, above = band_means(grey, 3)
    # Window 1000/200: 500 is below it (black), 3000 above (white), 1000 mid-grey; MONOCHROME1 inverts.
    assert below > 240 and above < 15 and 100 < inside < 155


def _colour_page(burned: Burned) -> tuple[str, ET.Element]:
    for relpath in files(burned.root):
        if relpath.startswith("IHE_PDI/") and relpath.endswith(".HTM"):
            root = page(burned.root, relpath)
            if "Lestrade" in "".join(root.itertext()):
                return relpath, root
    raise AssertionError("no page of SC_rgb_rle_2frame.dcm")


def test_chromium_shows_the_index_and_a_series_page(burned: Burned, tmp_path: Path) -> None:
    dom = chromium("--dump-dom", (burned.root / "INDEX.HTM").as_uri(), profile=tmp_path / "profile")
    for expected in ("Yamada Tarou (山田 太郎, やまだ たろう)", "Διονυσιος", "Wang XiaoDong (王 小東)", "INVERSE IRIS",
                     "Study of 2025-05-05: Chest PA", "Series 1 (CR): Frontal", "Series 3 (CT)", "SERIES LONG"):
        assert expected in dom, expected

    relpath, root = series_page(burned, "Series 3 (CT)")
    url = (burned.root / relpath).as_uri()
    dom = chromium("--dump-dom", url, profile=tmp_path / "profile")
    assert "SERIES LONG, patient ID LONG14" in dom and "Series 3 (CT)" in dom and 'src="S' in dom
    shot = tmp_path / "shot.png"
    width = 1024
    chromium("--hide-scrollbars", "--force-device-scale-factor=1", f"--window-size={width},1024",
             f"--screenshot={shot}", url, profile=tmp_path / "profile")
    screen = imagecodecs.png_decode(shot.read_bytes())[..., :3].mean(axis=2)
    columns = width // (CELL_WIDTH + 2 * CELL_MARGIN)
    images = list(root.iter(f"{XHTML}img"))
    for n, img in enumerate(images):
        x = CELL_MARGIN + (n % columns) * (CELL_WIDTH + 2 * CELL_MARGIN)
        y = HEAD_HEIGHT + CELL_MARGIN + (n // columns) * (CELL_HEIGHT + 2 * CELL_MARGIN)
        if y + CELL_HEIGHT > screen.shape[0]:
            break
        w, h = int(str(img.get("width"))), int(str(img.get("height")))
        region = screen[y:y + h, x:x + w]
        jpeg = imagecodecs.jpeg8_decode((burned.root / posixpath.dirname(relpath) / str(img.get("src"))).read_bytes())
        assert region.std() > 10, f"image {n + 1} is a uniform block"
        assert region.mean() == pytest.approx(jpeg.mean(), abs=12), f"image {n + 1} is not its picture"
        assert (screen[y:y + h, x - CELL_MARGIN:x] > 250).all()  # the white margin left of it: the grid is where we say
    assert n >= 8


def test_check_notes_the_pdi_files_and_an_unexpected_root_file(burned: Burned, tmp_path: Path) -> None:
    result = cli("check", burned.iso, "--json")
    report = json.loads(result.out)
    assert result.code == 0 and report["ok"] and report["problems"] == [] and report["instances"] == len(SOURCES) + 1 + MAX_RENDITIONS + 2
    noted = {n["path"]: n["problem"] for n in report["notes"]}
    assert {"README.TXT", "INDEX.HTM", "IHE_PDI/", "VIEWER/"} <= set(noted)
    assert not any("unexpected" in text for text in noted.values())

    copy = tmp_path / "medium"
    shutil.copytree(burned.root, copy)
    (copy / "SETUP.EXE").write_bytes(b"MZ")
    result = cli("check", copy, "--json")
    report = json.loads(result.out)
    assert result.code == 0 and report["ok"]  # nothing stops the DICOM content from being read or imported
    [note] = [n["problem"] for n in report["notes"] if n["path"] == "SETUP.EXE"]
    assert "unexpected in the root of an IHE PDI medium" in note


def test_pdi_is_on_by_default_where_allowed_and_the_label_counts_volumes(tmp_path: Path) -> None:
    shutil.copy(bundled("CT_small.dcm"), tmp_path / "ct.dcm")
    cd = burn([str(tmp_path / "ct.dcm")], out=tmp_path / "cd", fmt="folder", profile=PROFILES["STD-GEN-CD"],
              pdi=Pdi(), volume=(2, 3))
    assert sorted(p.name for p in (tmp_path / "cd").iterdir()) == ["DICOM", "DICOMDIR", "README.TXT"]
    assert cd.label["content"] == "DICOM ONLY" and cd.label["volume_text"] == "volume 2 of 3"
    assert "volume 2 of 3" in (tmp_path / "cd" / "README.TXT").read_text("utf-8-sig")

    assert cli("burn", tmp_path / "ct.dcm", "--out", tmp_path / "std.iso").code == 0
    with open_medium(tmp_path / "std.iso") as medium:
        assert any(p.startswith("README.TXT") for p in medium.files())
    assert cli("burn", tmp_path / "ct.dcm", "--out", tmp_path / "aug.iso", "--profile", "AUG-GEN-CD").code == 0
    assert cli("burn", tmp_path / "ct.dcm", "--out", tmp_path / "off.iso", "--no-pdi").code == 0
    for plain in ("aug.iso", "off.iso"):
        with open_medium(tmp_path / plain) as medium:
            assert not any(p.startswith("README") for p in medium.files()), plain


@pytest.mark.parametrize("flags, message", [
    (["--pdi", "--profile", "AUG-GEN-CD"], "IHE PDI media cannot be made on AUG-GEN-CD"),
    (["--web", "--profile", "STD-GEN-BD"], "IHE PDI media cannot be made on STD-GEN-BD"),
    (["--no-pdi", "--web"], "web content and a viewer are part of IHE PDI media"),
])
def test_pdi_where_it_cannot_be_is_a_usage_error(flags: list[str], message: str, tmp_path: Path) -> None:
    shutil.copy(bundled("CT_small.dcm"), tmp_path / "ct.dcm")
    result = cli("burn", tmp_path / "ct.dcm", "--out", tmp_path / "x.iso", *flags)
    assert result.code == 2 and message in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.dcm"]  # nothing written


@pytest.mark.parametrize("names, message", [
    (["AutoRun.inf"], "never start a program by themselves"),
    (["a-b.txt", "A_B.TXT"], "would both be VIEWER/A_B.TXT"),
    (["support_for_my_app.dll"], "cannot be made an 8.3 name"),
])
def test_a_viewer_that_cannot_go_onto_pdi_media_is_refused(names: list[str], message: str, tmp_path: Path) -> None:
    shutil.copy(bundled("CT_small.dcm"), tmp_path / "ct.dcm")
    (tmp_path / "viewer").mkdir()
    for name in names:
        (tmp_path / "viewer" / name).write_bytes(b"x")
    result = cli("burn", tmp_path / "ct.dcm", "--out", tmp_path / "x.iso", "--viewer", tmp_path / "viewer")
    assert result.code == 2 and message in result.err
    assert not (tmp_path / "x.iso").exists() and not list(tmp_path.glob(".x.iso*"))


@pytest.mark.parametrize("route, message", [
    ("{match: {called_aet: A}, action: burn, profile: AUG-GEN-CD, pdi: true}",
     "routes[0].pdi: IHE PDI media cannot be made on profile AUG-GEN-CD (an augmented, DVD-RAM or BD profile)"),
    ("{match: {called_aet: A}, action: burn, profile: STD-GEN-BD, web: true}",
     "routes[0].web: IHE PDI media cannot be made on profile STD-GEN-BD (an augmented, DVD-RAM or BD profile)"),
    ("{match: {called_aet: A}, action: burn, pdi: false, web: true}",
     "routes[0].web: is part of IHE PDI media, which this route turns off (pdi: false)"),
])
def test_pdi_where_it_cannot_be_is_a_configuration_error(route: str, message: str, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"burn: {{institution: St. Elsewhere}}\nroutes:\n  - {route}\n")
    result = cli("config", "check", config)
    assert result.code == 2 and f"c.yaml:3 {message}" in result.err


def test_a_pdi_route_is_read_with_its_viewer(tmp_path: Path) -> None:
    (tmp_path / "viewer").mkdir()
    config = parse_config(f"burn: {{pdi: false, contact: '+1 555 0100'}}\nroutes:\n  - {{action: burn, "
                          f"profile: STD-GEN-DVD-JPEG, web: true, viewer: {tmp_path / 'viewer'}}}\n", source="c.yaml")
    [route] = config.routes
    assert (route.pdi, route.web, route.viewer) == (None, True, tmp_path / "viewer")
    assert for_route(config.burn, PROFILES[route.profile], pdi=route.pdi, web=route.web, viewer=route.viewer) == Pdi(
        web=True, viewer=tmp_path / "viewer", contact="+1 555 0100")


def test_a_route_with_web_content_burns_pdi_media(tmp_path: Path) -> None:
    config = make_config(tmp_path, web=True)
    config = type(config)(node=config.node, burn=BurnConfig(output=tmp_path / "out", institution="St. Elsewhere"),
                          routes=config.routes)
    (tmp_path / "var").mkdir()
    index = Index(tmp_path / "var" / "index.sqlite")
    receive(index, ct_series(tmp_path / "spool", 2), route=settings(config.routes[0]), at=1000.0)
    schedule(index, config, now=1031.0)
    assert Worker(index, lambda: config).run_pending() == 1
    [volume] = index.volumes()
    with open_medium(volume.paths[0]) as medium:
        names = {p.split(";")[0].rstrip(".") for p in medium.files()}
        assert {"README.TXT", "INDEX.HTM"} <= names and any(n.startswith("IHE_PDI/") for n in names)
        with medium.open(next(p for p in medium.files() if p.startswith("README"))) as fp:
            assert "St. Elsewhere" in fp.read().decode("utf-8-sig")


def test_the_route_settings_choose_pdi() -> None:
    cd, aug = PROFILES["STD-GEN-CD"], PROFILES["AUG-GEN-CD"]
    assert for_route(BurnConfig(institution="X"), cd, pdi=None, web=False, viewer=None) == Pdi(institution="X")
    assert for_route(BurnConfig(pdi=False), cd, pdi=None, web=False, viewer=None) is None
    assert for_route(BurnConfig(pdi=False), cd, pdi=None, web=True, viewer=None) == Pdi(web=True)
    assert for_route(BurnConfig(), aug, pdi=None, web=False, viewer=None) is None


def test_an_image_that_cannot_be_rendered_is_named_on_its_page_and_still_burned(tmp_path: Path) -> None:
    ds = dcmread(bundled("JPEG-lossy.dcm"))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) // 2]])  # the JPEG codestream cut in half
    (tmp_path / "src").mkdir()
    ds.save_as(tmp_path / "src" / "cut.dcm")
    out = tmp_path / "out"
    result = cli("burn", tmp_path / "src", "--out", out, "--profile", "STD-GEN-USB-JPEG", "--web", "--json")
    assert result.code == 0 and json.loads(result.out)["instances"] == 1
    [relpath] = [p for p in files(out) if p.startswith("IHE_PDI/")]  # a page, no picture
    text = "".join(page(out, relpath).itertext())
    assert f"Image {ds.InstanceNumber}: no picture (" in text and "the codestream is truncated" in text
    [stored] = [p for p in files(out) if p.startswith("DICOM/")]
    assert dcmread(out / stored).PixelData == ds.PixelData  # the DICOM file itself is all there


def test_a_voi_lut_sequence_is_used_before_min_max(tmp_path: Path) -> None:
    lut = Dataset()
    lut.add_new(0x00283002, "US", [3, 0, 8])  # LUT Descriptor: 3 entries from stored value 0, 8 bits
    lut.add_new(0x00283006, "US", [255, 0, 128])  # LUT Data: not monotonic, so no window would give it
    (tmp_path / "src").mkdir()
    banded(tmp_path / "src" / "voi.dcm", (0, 1, 2), photometric="MONOCHROME2", VOILUTSequence=[lut])
    out = tmp_path / "out"
    assert cli("burn", tmp_path / "src", "--out", out, "--format", "folder", "--web").code == 0
    [jpeg] = [p for p in files(out) if p.endswith(".JPG")]
    shown = band_means(imagecodecs.jpeg8_decode((out / jpeg).read_bytes()), 3)
    assert shown == [pytest.approx(v, abs=8) for v in (255, 0, 128)]
