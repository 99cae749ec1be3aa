"""The generated corpus (../shared/BENCHMARKS.md): CT studies of 512x512 16-bit slices, cached under --data."""
from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchkit.common import log

SEED = 20261126
GEN_VERSION = 2  # bump when the generated data changes, so that caches are rebuilt


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


def write_study(folder: Path, slices: list[bytes], spec: DataSpec, study: int) -> None:
    """Write one CT study as PS3.10 Explicit VR Little Endian files folder/IM0001.dcm..."""
    from pydicom import dcmwrite
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

    def uid(*key: object) -> str:
        return generate_uid(entropy_srcs=["medianode-bench", spec.name, str(study), *map(str, key)])

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    date, tm = f"202611{study + 1:02d}", f"{8 + study % 10:02d}3015"
    pn = study // 2 + 1  # two studies a patient
    attributes = {  # the Patient, General Study/Series/Equipment/Image, Image Plane and CT Image modules
        "SpecificCharacterSet": "ISO_IR 100", "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
        "SOPClassUID": CTImageStorage, "StudyDate": date, "SeriesDate": date, "ContentDate": date,
        "StudyTime": tm, "SeriesTime": tm, "ContentTime": tm, "AccessionNumber": f"A{study:06d}",
        "Modality": "CT", "Manufacturer": "medianode bench", "ReferringPhysicianName": "REFERRER^BENCH",
        "StudyDescription": "CT CHEST ABDOMEN PELVIS", "SeriesDescription": "AXIAL 1.0",
        "PatientName": f"BENCH^{spec.name.upper()}{pn:02d}", "PatientID": f"MNB-{spec.name.upper()}-{pn:04d}",
        "PatientBirthDate": f"19{50 + pn:02d}0101", "PatientSex": "FO"[pn % 2], "BodyPartExamined": "CHEST",
        "SliceThickness": "1.0", "KVP": "120", "PatientPosition": "FFS", "StudyInstanceUID": uid("study"),
        "SeriesInstanceUID": uid("series"), "FrameOfReferenceUID": uid("frame"), "StudyID": f"{study + 1}",
        "SeriesNumber": 2, "AcquisitionNumber": 1, "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
        "PositionReferenceIndicator": "", "SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2",
        "Rows": 512, "Columns": 512, "PixelSpacing": ["0.75", "0.75"], "BitsAllocated": 16, "BitsStored": 16,
        "HighBit": 15, "PixelRepresentation": 1, "WindowCenter": "40", "WindowWidth": "400",
        "RescaleIntercept": "-1024", "RescaleSlope": "1", "RescaleType": "HU",
    }
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    folder.mkdir(parents=True)
    shift = study * 37  # studies of a set start at different slices
    for i in range(spec.images):
        z = float(-i)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID(uid("image", i))
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = ["-191.625", "-191.625", f"{z:.1f}"]
        ds.SliceLocation = f"{z:.1f}"
        ds.PixelData = slices[(i + shift) % len(slices)]
        dcmwrite(folder / f"IM{i + 1:04d}.dcm", ds, enforce_file_format=True)


def ensure_data(data: Path, spec: DataSpec, slices: Callable[[], list[bytes]]) -> Path:
    """The folder of `spec` under `data`, generated once; a stamp file records what it holds."""
    root, stamp = data / spec.name, data / f"{spec.name}.done"
    want = json.dumps({"version": GEN_VERSION, "seed": SEED, "studies": spec.studies, "images": spec.images})
    if root.is_dir() and stamp.is_file() and stamp.read_text() == want:
        return root
    log(f"generating {spec.label}: {spec.studies} x {spec.images} CT images under {root} ...")
    t0 = time.perf_counter()
    tmp = data / f"{spec.name}.tmp"
    for old in (root, tmp):
        shutil.rmtree(old, ignore_errors=True)
    buffers = slices()
    for s in range(spec.studies):
        write_study(tmp / f"ST{s + 1:02d}" if spec.studies > 1 else tmp, buffers, spec, s)
    tmp.rename(root)
    stamp.write_text(want)
    log(f"  done in {time.perf_counter() - t0:.1f} s")
    return root


def files_of(src: Path) -> list[Path]:
    return sorted(p for p in src.rglob("*") if p.is_file())


def warm(files: list[Path]) -> int:
    """Read every file once so that it is hot in the page cache; return the total size in bytes."""
    return sum(len(f.read_bytes()) for f in files)


def ct_study(args: argparse.Namespace) -> tuple[DataSpec, Path]:
    """The CT study of `burn` (400 images; 40 with --quick), generated once under --data."""
    data: Path = args.data / ("quick" if args.quick else "full")
    data.mkdir(parents=True, exist_ok=True)
    spec = next(s for s in specs(args.quick) if s.name == "ct")
    return spec, ensure_data(data, spec, lambda: ct_slices(spec.images))
