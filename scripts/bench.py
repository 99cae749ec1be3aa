"""medianode benchmarks: each subcommand times medianode beside the best tools, in the same run.

    scripts/bench burn [--data DIR] [--runs N] [--warmup N] [--quick] [--only ct|set] [--json]

Generated data is cached under --data (default: bench-data/ at the repository root, git-ignored);
outputs are written under DIR/out and removed between runs. Progress goes to stderr; the tables go
to stdout, or to stderr with --json so that stdout holds only the JSON document.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parent.parent
MEDIANODE = Path(os.environ.get("MEDIANODE", REPO / ".venv" / "bin" / "medianode"))  # env: another build
TIME = "/usr/bin/time"  # GNU time (Debian package "time"), for the peak RSS of a whole process
SEED = 20261126
GEN_VERSION = 2  # bump when the generated data changes, so that caches are rebuilt
MB = 1e6
Json = dict[str, Any]

# --------------------------------------------------------------------------- subcommand registry


RunFn = Callable[[argparse.Namespace], Json]
ArgsFn = Callable[[argparse.ArgumentParser], None]
BENCHES: dict[str, tuple[str, RunFn, ArgsFn]] = {}  # name -> (help, run, add extra arguments)


def bench(name: str, help: str, add_args: ArgsFn = lambda p: None) -> Callable[[RunFn], RunFn]:
    """Register a subcommand: `scripts/bench NAME` calls the function, which returns its results."""
    def register(fn: RunFn) -> RunFn:
        BENCHES[name] = (help, fn, add_args)
        return fn
    return register


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)

# --------------------------------------------------------------------------- data generation


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

# --------------------------------------------------------------------------- timing


class Failed(Exception):
    """A pipeline failed; the message says why (stderr of the failing command)."""


@dataclass
class Run:
    seconds: float
    peak_rss_kb: int | None = None


def run_process(cmd: list[str | Path], cwd: Path | None = None, rss: bool = False) -> Run:
    """Run cmd as a whole process; return its wall time and, with rss, its peak RSS.

    The child's own ru_maxrss (os.wait4) is no use: Linux carries the parent's high-water RSS
    over the exec, so it would report this bench's memory. /usr/bin/time forks from a small process.
    """
    argv = [str(c) for c in cmd]
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as peak:
        if rss and Path(TIME).is_file():
            argv = [TIME, "-f", "%M", "-o", peak.name, *argv]
        t0 = time.perf_counter()
        proc = subprocess.run(argv, check=False, cwd=cwd, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=err)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            err.seek(0)
            text = err.read().decode(errors="replace").strip()
            raise Failed(f"{Path(cmd[0]).name} exited {proc.returncode}: {text[-2000:] or '(no stderr)'}")
        lines = peak.read().split()
    return Run(seconds, int(lines[-1]) if lines and lines[-1].isdigit() else None)


@dataclass
class Result:
    runs: list[Run] = field(default_factory=list)
    error: str | None = None

    def summary(self, nbytes: int) -> Json:
        """Median seconds, MB/s, peak RSS (MB, max over runs) and each run; all None on failure."""
        ok = bool(self.runs) and not self.error
        med = statistics.median(r.seconds for r in self.runs) if ok else None
        rss = [r.peak_rss_kb for r in self.runs if r.peak_rss_kb is not None]
        return {"median_s": med, "mb_s": nbytes / MB / med if med else None,
                "peak_rss_mb": max(rss) * 1024 / MB if ok and rss else None,
                "runs_s": [round(r.seconds, 4) for r in self.runs], "error": self.error}

# --------------------------------------------------------------------------- burn


def burn_medianode(spec: DataSpec, src: Path, out: Path) -> Run:
    iso = out / "medianode.iso"
    run = run_process([MEDIANODE, "burn", src, "--out", iso, "--profile", spec.profile], rss=True)
    if not iso.is_file():
        raise Failed(f"medianode burn exited 0 but wrote no {iso}")
    return run


def burn_dcmtk(spec: DataSpec, src: Path, out: Path) -> Run:
    """The textbook pipeline: copy to ISO 9660 names, dcmmkdir (--general-purpose for a CD),
    xorriso as mkisofs with a 0.1 s pacifier (at its default 1 s tick it notices its own end late)."""
    t0 = time.perf_counter()
    tree = out / "dcmtk"
    by_folder: dict[Path, list[Path]] = {}
    for f in files_of(src):
        by_folder.setdefault(f.parent, []).append(f)
    for i, (_, files) in enumerate(sorted(by_folder.items()), 1):
        folder = tree / "DICOM" / f"ST{i:06d}"
        folder.mkdir(parents=True)
        for j, f in enumerate(files, 1):
            shutil.copyfile(f, folder / f"IM{j:06d}")
    run_process(["dcmmkdir", "--quiet", spec.dcmmkdir, "--recurse", "DICOM"], cwd=tree)
    run_process(["xorriso", "-pacifier", "interval=0.1", "-as", "mkisofs", "-iso-level", "1",
                 "-o", out / "dcmtk.iso", tree])
    return Run(time.perf_counter() - t0)


def burn_copy(spec: DataSpec, src: Path, out: Path) -> Run:
    return run_process(["sh", "-c", 'cp -r "$1" "$2" && sync', "sh", src, out / "copy"])


BURN_PIPELINES: dict[str, tuple[str, Callable[[DataSpec, Path, Path], Run]]] = {
    "medianode": ("medianode burn -> ISO", burn_medianode),
    "dcmtk": ("DCMTK copy + dcmmkdir + xorriso", burn_dcmtk),
    "copy": ("cp -r + sync (floor)", burn_copy),
}
TARGETS = {"faster_than_dcmtk": 1.5, "max_slower_than_copy": 2.5, "max_rss_mb": 250.0}


def clean(out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    subprocess.run(["sync"], check=True)  # no write-back of a previous run during the next one


def time_pipelines(spec: DataSpec, src: Path, out: Path, runs: int, warmup: int) -> dict[str, Result]:
    """Interleave the pipelines run by run, so that drift of the machine spreads over all of them.

    The warm-up rounds are not counted: on a VM, memory the guest writes for the first time is slow
    (xorriso's time doubled on a fresh machine), and the first rounds pay for it.
    """
    results = {key: Result() for key in BURN_PIPELINES}
    for n in range(warmup + runs):
        for key, (label, fn) in BURN_PIPELINES.items():
            res = results[key]
            if res.error:
                continue
            clean(out)
            try:
                run = fn(spec, src, out)
                if n >= warmup:
                    res.runs.append(run)
                what = f"run {n - warmup + 1}/{runs}" if n >= warmup else "warm-up"
                log(f"  {what} {label}: {run.seconds:.3f} s")
            except Failed as e:
                res.error = str(e)
                log(f"  {label} failed, reported as n/a:\n    " + str(e).replace("\n", "\n    "))
    shutil.rmtree(out, ignore_errors=True)
    return results


def print_table(ds: Json, runs: int, out: TextIO) -> None:
    def fmt(v: float | None, spec: str) -> str:
        return "n/a" if v is None else format(v, spec)

    def line(text: str) -> None:
        print(text, file=out)

    line(f"\n{ds['label']}: {ds['files']} files, {ds['bytes'] / MB:.1f} MB, {ds['profile']} "
         f"(median of {runs} runs, whole processes, files hot in the page cache)")
    line(f"  {'pipeline':34} {'median s':>9} {'MB/s':>7} {'min-max s':>14}")
    for key, (label, _) in BURN_PIPELINES.items():
        p = ds["pipelines"][key]
        spread = f"{min(p['runs_s']):.3f}-{max(p['runs_s']):.3f}" if p["median_s"] else "n/a"
        line(f"  {label:34} {fmt(p['median_s'], '.3f'):>9} {fmt(p['mb_s'], '.0f'):>7} {spread:>14}")
    r, ok, t = ds["ratios"], ds["targets_met"], TARGETS
    mark = {True: "ok", False: "MISSED", None: "n/a"}
    line(f"  medianode vs DCMTK pipeline: {fmt(r['dcmtk_over_medianode'], '.2f')} x faster "
         f"(target >= {t['faster_than_dcmtk']}x) {mark[ok['faster_than_dcmtk']]}")
    line(f"  medianode vs plain copy:     {fmt(r['medianode_over_copy'], '.2f')} x its time "
         f"(target <= {t['max_slower_than_copy']}x) {mark[ok['max_slower_than_copy']]}")
    line(f"  medianode peak RSS:          {fmt(ds['pipelines']['medianode']['peak_rss_mb'], '.0f')} MB "
         f"(target < {t['max_rss_mb']:.0f} MB) {mark[ok['max_rss_mb']]}")


def burn_dataset(spec: DataSpec, src: Path, out: Path, runs: int, warmup: int) -> Json:
    files = files_of(src)
    nbytes = warm(files)
    log(f"\n{spec.label}: timing {runs} runs of each pipeline ({spec.profile}) ...")
    p = {k: r.summary(nbytes) for k, r in time_pipelines(spec, src, out, runs, warmup).items()}
    mn, dcmtk, copy = (p[k]["median_s"] for k in ("medianode", "dcmtk", "copy"))
    faster, slower = (dcmtk / mn if dcmtk and mn else None), (mn / copy if mn and copy else None)
    ratios = {"dcmtk_over_medianode": faster, "medianode_over_copy": slower}
    rss = p["medianode"]["peak_rss_mb"]
    met = {"faster_than_dcmtk": None if faster is None else faster >= TARGETS["faster_than_dcmtk"],
           "max_slower_than_copy": None if slower is None else slower <= TARGETS["max_slower_than_copy"],
           "max_rss_mb": None if rss is None else rss < TARGETS["max_rss_mb"]}
    return {"name": spec.name, "label": spec.label, "profile": spec.profile, "files": len(files),
            "bytes": nbytes, "pipelines": p, "ratios": ratios, "targets": TARGETS, "targets_met": met}


def burn_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", choices=["ct", "set"], help="time one data set only")


@bench("burn", "medianode burn vs the DCMTK textbook pipeline vs a plain copy", burn_args)
def run_burn(args: argparse.Namespace) -> Json:
    data: Path = args.data / ("quick" if args.quick else "full")
    data.mkdir(parents=True, exist_ok=True)
    chosen = [s for s in specs(args.quick) if args.only in (None, s.name)]
    cache: list[bytes] = []  # pixel buffers, generated at most once and shared by the data sets

    def slices() -> list[bytes]:
        if not cache:
            cache.extend(ct_slices(max(s.images for s in chosen)))
        return cache

    sources = [(spec, ensure_data(data, spec, slices)) for spec in chosen]
    cache.clear()
    for path, why in ((MEDIANODE, "run scripts/install"), (Path(TIME), "no peak RSS: apt install time")):
        if not path.exists():
            log(f"note: {path} is missing ({why})")
    datasets = [burn_dataset(spec, src, args.data / "out", args.runs, args.warmup) for spec, src in sources]
    for ds in datasets:
        print_table(ds, args.runs, sys.stderr if args.json else sys.stdout)
    return {"datasets": datasets}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for name, (help, _, add_args) in BENCHES.items():
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--data", type=Path, default=REPO / "bench-data",
                       help="where generated data is cached and outputs are written (default: %(default)s)")
        p.add_argument("--runs", type=int, default=5, help="timed runs, median shown (default: 5)")
        p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default: 1)")
        p.add_argument("--quick", action="store_true", help="small data sets, for a smoke run")
        p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
        add_args(p)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be at least 1, --warmup at least 0")
    args.data = args.data.resolve()
    result = BENCHES[args.bench][1](args)
    if args.json:
        meta = {"bench": args.bench, "runs": args.runs, "warmup": args.warmup, "quick": args.quick,
                "cpus": os.cpu_count(), "machine": platform.platform(), "python": platform.python_version(),
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        json.dump(meta | result, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
