"""The generated corpus (../shared/BENCHMARKS.md), cached under --data: CT studies of 512x512 16-bit slices,
CR chest images of 2500x2048 12-bit pixels, and (only when asked) a 4.3 GB CT set that fills a DVD."""
from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchkit.common import log

if TYPE_CHECKING:
    from pydicom import Dataset

SEED = 20261126
GEN_VERSION = 2  # bump when the generated data changes, so that caches are rebuilt
CR_SIZE = (2500, 2048)  # rows, columns of the CR images


@dataclass(frozen=True)
class DataSpec:
    name: str      # folder under the data dir, e.g. "ct"
    label: str     # for the tables
    studies: int
    images: int    # per study
    profile: str   # medianode burn --profile; the set does not fit on a CD
    dcmmkdir: str  # the same profile for dcmmkdir


def specs(quick: bool) -> list[DataSpec]:
    cd, dvd = ("STD-GEN-CD", "--general-purpose"), ("STD-GEN-DVD-JPEG", "--general-dvd-jpeg")
    if quick:
        return [DataSpec("ct", "CT study (quick)", 1, 40, *cd),
                DataSpec("set", "200 MB set (quick)", 4, 100, *dvd)]
    return [DataSpec("ct", "CT study", 1, 400, *cd), DataSpec("set", "2 GB set", 10, 400, *dvd)]


def cr_spec(quick: bool) -> DataSpec:
    """The CR images of `compress`: 10 (2 with --quick) of 2500x2048, 12 bits stored, 102 MB."""
    return DataSpec("cr", f"{2 if quick else 10} CR images", 1, 2 if quick else 10, "STD-GEN-DVD-JPEG",
                    "--general-dvd-jpeg")


def dvd_spec(quick: bool) -> DataSpec:
    """A full DVD of CT, 20 studies of 410 slices, 4.3 GB (2 x 100 slices, 105 MB, with --quick)."""
    if quick:
        return DataSpec("dvd", "DVD set (quick)", 2, 100, "STD-GEN-DVD-J2K", "--general-dvd-j2k")
    return DataSpec("dvd", "4.3 GB DVD set", 20, 410, "STD-GEN-DVD-J2K", "--general-dvd-j2k")


def ct_slices(n: int) -> list[bytes]:
    """n slices 512x512 of stored values (HU + 1024, int16 little endian): body, fat, lungs, bones, noise."""
    import numpy as np

    yy, xx = (g.astype(np.float32) - 255.5 for g in np.mgrid[0:512, 0:512])
    angle = np.arctan2(yy, xx)
    out = []
    for z in range(n):
        t = z / max(n - 1, 1)  # 0 at the top of the chest, 1 at the pelvis
        rng = np.random.default_rng([SEED, z])
        a, b = 200 + 25 * np.sin(np.pi * t), 140 + 20 * np.sin(1.3 * np.pi * t)
        r = np.sqrt((xx / a) ** 2 + (yy / b) ** 2)
        hu = np.full((512, 512), -1000.0, np.float32)
        body = r <= 1
        hu[body] = (40 + 25 * np.sin(xx / 17 + z / 9) * np.cos(yy / 23))[body]  # soft tissue, 15..65 HU
        hu[body & (r > 0.93)] = -100  # subcutaneous fat
        lung = 75 * np.sin(np.pi * min(t / 0.55, 1.0))  # lungs from the apex down to t = 0.55
        if lung > 5:
            for cx in (-0.45 * a, 0.45 * a):
                hu[((xx - cx) / lung) ** 2 + ((yy + 10) / (1.4 * lung)) ** 2 <= 1] = -800
            hu[(np.abs(r - 0.85) < 0.025) & (np.sin(9 * angle + z / 5) > 0.2)] = 700  # ribs
        elif t < 0.75:  # abdomen: liver
            hu[((xx + 0.35 * a) / (0.4 * a)) ** 2 + ((yy + 0.1 * b) / (0.5 * b)) ** 2 <= 1] = 60
        else:  # pelvis
            for cx in (-0.5 * a, 0.5 * a):
                hu[((xx - cx) / 45) ** 2 + ((yy - 0.2 * b) / 60) ** 2 <= 1] = 700
        hu[xx ** 2 + (yy - (b - 45)) ** 2 <= 22 ** 2] = 700  # spine
        hu += rng.standard_normal((512, 512), dtype=np.float32) * 12
        out.append(np.clip(np.rint(hu + 1024), -2048, 32767).astype("<i2").tobytes())
    return out


def cr_images(n: int, rows: int = 2500, columns: int = 2048) -> list[bytes]:
    """n chest radiographs (PA) of 12-bit stored values, uint16 little endian, MONOCHROME2.

    Direct exposure dark, lungs with ribs, mediastinum, heart and spine bright, collimator edges white,
    quantum noise growing with the signal: content that compresses like a real CR, not a flat field.
    """
    import numpy as np

    yy, xx = np.mgrid[0:rows, 0:columns].astype(np.float32)
    yy, xx = yy / (rows / 2) - 1, xx / (columns / 2) - 1  # -1..1
    out = []
    for i in range(n):
        rng = np.random.default_rng([SEED, 1000 + i])
        dx, dy, s = 0.04 * np.sin(i), 0.03 * np.cos(1.7 * i), 1 + 0.05 * np.sin(2.3 * i)  # patient and size
        x, y = (xx - dx) / s, (yy - dy) / s
        v = np.full((rows, columns), 250.0, np.float32)  # direct exposure
        v[(x / 0.82) ** 2 + ((y - 0.1) / 1.05) ** 2 <= 1] = 2300  # soft tissue of the trunk and shoulders
        for side in (-1, 1):
            lung = ((x - side * 0.36) / 0.27) ** 2 + ((y + 0.05) / 0.62) ** 2 <= 1
            v[lung] = (1150 + 400 * (y + 0.6))[lung]  # darker at the apex
            ribs = lung & (np.sin(26 * (y - 0.25 * (x - side * 0.36) ** 2)) > 0.55)
            v[ribs] += 450
        v[((x - 0.1) / 0.24) ** 2 + ((y - 0.3) / 0.3) ** 2 <= 1] = 2600  # heart
        v[np.abs(x - 0.02 * np.sin(6 * y)) < 0.07] = 3100  # spine and mediastinum
        v[(np.abs(xx) > 0.94) | (np.abs(yy) > 0.95)] = 4000  # collimator blades: unexposed
        v += rng.standard_normal((rows, columns), dtype=np.float32) * (6 + np.sqrt(v))  # quantum noise
        out.append(np.clip(np.rint(v), 0, 4095).astype("<u2").tobytes())
    return out


def header(spec: DataSpec, study: int, sop_class: str, attributes: dict[str, Any]) -> Dataset:
    """The Patient, General Study/Series/Equipment and General Image modules of image `study` of `spec`,
    with `attributes` of the modality's own modules on top."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    date, tm = f"202611{study + 1:02d}", f"{8 + study % 10:02d}3015"
    pn = study // 2 + 1  # two studies a patient
    common = {
        "SpecificCharacterSet": "ISO_IR 100", "SOPClassUID": sop_class,
        "StudyDate": date, "SeriesDate": date, "ContentDate": date,
        "StudyTime": tm, "SeriesTime": tm, "ContentTime": tm, "AccessionNumber": f"A{study:06d}",
        "Manufacturer": "medianode bench", "ReferringPhysicianName": "REFERRER^BENCH",
        "PatientName": f"BENCH^{spec.name.upper()}{pn:02d}", "PatientID": f"MNB-{spec.name.upper()}-{pn:04d}",
        "PatientBirthDate": f"19{50 + pn:02d}0101", "PatientSex": "FO"[pn % 2], "BodyPartExamined": "CHEST",
        "StudyInstanceUID": uid(spec, study, "study"), "SeriesInstanceUID": uid(spec, study, "series"),
        "StudyID": f"{study + 1}", "SeriesNumber": 2, "AcquisitionNumber": 1, "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2", "BitsAllocated": 16,
    }
    for keyword, value in (common | attributes).items():
        setattr(ds, keyword, value)
    return ds


def uid(spec: DataSpec, study: int, *key: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["medianode-bench", spec.name, str(study), *map(str, key)])


def write_images(folder: Path, ds: Dataset, spec: DataSpec, study: int, pixels: list[bytes], shift: int,
                 per_image: Callable[[Dataset, int], None] = lambda ds, i: None) -> None:
    """Write spec.images PS3.10 files folder/IM0001.dcm... of `ds`, image i with pixels[(i + shift) % len]."""
    from pydicom import dcmwrite
    from pydicom.uid import UID

    folder.mkdir(parents=True)
    for i in range(spec.images):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID(uid(spec, study, "image", i))
        ds.InstanceNumber = i + 1
        per_image(ds, i)
        ds.PixelData = pixels[(i + shift) % len(pixels)]
        dcmwrite(folder / f"IM{i + 1:04d}.dcm", ds, enforce_file_format=True)


def write_study(folder: Path, slices: list[bytes], spec: DataSpec, study: int) -> None:
    """Write one CT study as PS3.10 Explicit VR Little Endian files folder/IM0001.dcm..."""
    from pydicom.uid import CTImageStorage

    ds = header(spec, study, CTImageStorage, {  # the Image Plane and CT Image modules
        "Modality": "CT", "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
        "StudyDescription": "CT CHEST ABDOMEN PELVIS", "SeriesDescription": "AXIAL 1.0",
        "SliceThickness": "1.0", "KVP": "120", "PatientPosition": "FFS",
        "FrameOfReferenceUID": uid(spec, study, "frame"), "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
        "PositionReferenceIndicator": "", "Rows": 512, "Columns": 512, "PixelSpacing": ["0.75", "0.75"],
        "BitsStored": 16, "HighBit": 15, "PixelRepresentation": 1, "WindowCenter": "40", "WindowWidth": "400",
        "RescaleIntercept": "-1024", "RescaleSlope": "1", "RescaleType": "HU",
    })

    def position(ds: Dataset, i: int) -> None:
        z = float(-i)
        ds.ImagePositionPatient = ["-191.625", "-191.625", f"{z:.1f}"]
        ds.SliceLocation = f"{z:.1f}"

    write_images(folder, ds, spec, study, slices, shift=study * 37, per_image=position)  # studies start apart


def write_cr(folder: Path, images: list[bytes], spec: DataSpec, study: int) -> None:
    """Write CR chest images (12 of 16 bits, PS3.3 A.2 CR Image IOD) as PS3.10 files folder/IM0001.dcm..."""
    from pydicom.uid import ComputedRadiographyImageStorage

    ds = header(spec, study, ComputedRadiographyImageStorage, {  # the CR Series and CR Image modules
        "Modality": "CR", "ImageType": ["ORIGINAL", "PRIMARY"], "StudyDescription": "XR CHEST PA",
        "SeriesDescription": "PA", "ViewPosition": "PA",
        "PatientOrientation": ["L", "F"], "Rows": CR_SIZE[0], "Columns": CR_SIZE[1],
        "ImagerPixelSpacing": ["0.168", "0.168"], "BitsStored": 12, "HighBit": 11, "PixelRepresentation": 0,
        "WindowCenter": "2048", "WindowWidth": "4096",
    })
    write_images(folder, ds, spec, study, images, shift=0)


Writer = Callable[[Path, list[bytes], DataSpec, int], None]  # folder, pixel buffers, spec, study number


def ensure_data(data: Path, spec: DataSpec, slices: Callable[[], list[bytes]], write: Writer = write_study) -> Path:
    """The folder of `spec` under `data`, generated once by `write`; a stamp file records what it holds."""
    root, stamp = data / spec.name, data / f"{spec.name}.done"
    want = json.dumps({"version": GEN_VERSION, "seed": SEED, "studies": spec.studies, "images": spec.images})
    if root.is_dir() and stamp.is_file() and stamp.read_text() == want:
        return root
    log(f"generating {spec.label}: {spec.studies} x {spec.images} images under {root} ...")
    t0 = time.perf_counter()
    tmp = data / f"{spec.name}.tmp"
    for old in (root, tmp):
        shutil.rmtree(old, ignore_errors=True)
    buffers = slices()
    for s in range(spec.studies):
        write(tmp / f"ST{s + 1:02d}" if spec.studies > 1 else tmp, buffers, spec, s)
    tmp.rename(root)
    stamp.write_text(want)
    log(f"  done in {time.perf_counter() - t0:.1f} s")
    return root


def files_of(src: Path) -> list[Path]:
    return sorted(p for p in src.rglob("*") if p.is_file())


def warm(files: list[Path]) -> int:
    """Read every file once so that it is hot in the page cache; return the total size in bytes."""
    return sum(len(f.read_bytes()) for f in files)


def data_dir(args: argparse.Namespace) -> Path:
    data: Path = args.data / ("quick" if args.quick else "full")
    data.mkdir(parents=True, exist_ok=True)
    return data


def ct_study(args: argparse.Namespace) -> tuple[DataSpec, Path]:
    """The CT study of `burn` (400 images; 40 with --quick), generated once under --data."""
    spec = next(s for s in specs(args.quick) if s.name == "ct")
    return spec, ensure_data(data_dir(args), spec, lambda: ct_slices(spec.images))


def cr_series(args: argparse.Namespace) -> tuple[DataSpec, Path]:
    """The CR images of `compress` (10; 2 with --quick), generated once under --data."""
    spec = cr_spec(args.quick)
    return spec, ensure_data(data_dir(args), spec, lambda: cr_images(spec.images), write=write_cr)
