"""scripts/bench compress: medianode burn --compress X vs the DCMTK/GDCM command lines vs the bare codec, same run.

Per syntax and data set (the CT study of `burn`, and 10 CR chest images of 2500x2048, 12 bits stored), run by
run interleaved after the warm-up, medians shown, outputs written under DIR/out/compress:

  medianode       `medianode burn SRC --out X.iso --profile P --compress X`: its pool has os.cpu_count() workers
                  (N); with MEDIANODE_WORKERS=1 too, when the build honours that variable
  uncompressed    `medianode burn SRC --out X.iso --profile P`, once per data set and profile
  tool            the DCMTK/GDCM command line, one process per file (`xargs -P 1` and `xargs -P N`)
  codec           the bare encoder call per image (imagecodecs, pylibjpeg-openjpeg), in a pool
                  of 1 and of N processes that read the pixels straight from the files: the floor

Every output is checked for the Transfer Syntax asked (every file of the tool and of the ISO). Targets:
medianode faster than the tool with N processes; medianode within 1.3x of (codec with N processes +
the uncompressed burn); a speedup of at least 1.7 from N = 2 processes (medianode's own with MEDIANODE_WORKERS=1,
else the bare codec's, and the table says which).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TextIO

from benchkit.common import (
    MARK,
    MB,
    MEDIANODE,
    Failed,
    Json,
    Result,
    Run,
    bench,
    env_with,
    fmt,
    load_average,
    log,
    run_process,
    tail,
)
from benchkit.data import DataSpec, cr_series, ct_study, files_of, warm
from benchkit.procs import CLK_TCK, PeakRss, process_tree
from benchkit.settings import print_settings, run_settings

if TYPE_CHECKING:
    import numpy as np

WORKERS = os.cpu_count() or 1  # medianode burn's pool, and so the tools' and the codec's
WORKERS_ENV = "MEDIANODE_WORKERS"
P14_PREDICTOR = 5  # jpeg-lossless-p14: the predictor medianode uses (node/pixels.py), given to dcmcjpeg +sv too
J2K_RATIO = 10     # j2k-lossy: 10:1 as medianode asks OpenJPEG (node/pixels.py), `gdcmconv -r 10` alike
QUALITY = 90       # jpeg-extended: medianode's libjpeg quality (node/pixels.py), dcmcjpeg's default too
TARGETS = {"faster_than_tool": 1.0, "max_over_floor": 1.3, "min_speedup": 1.7}


@dataclass(frozen=True)
class Syntax:
    name: str               # medianode burn --compress NAME
    uid: str                # what every output must carry (PS3.5 A.4)
    profile: str            # the medianode profile that allows it
    tool: tuple[str, ...]   # the command line before IN OUT
    data: tuple[str, ...]   # the data sets it applies to


SYNTAXES = [
    Syntax("jpeg-lossless", "1.2.840.10008.1.2.4.70", "STD-GEN-DVD-JPEG", ("dcmcjpeg", "+e1"), ("ct", "cr")),
    Syntax("jpeg-lossless-p14", "1.2.840.10008.1.2.4.57", "AUG-GEN-DVD",
           ("dcmcjpeg", "+el", "+sv", str(P14_PREDICTOR)), ("ct", "cr")),
    # 12-bit process 4 on the CR only: 16-bit CT would need the explicit opt-in to lose bits (medianode
    # keeps it lossless otherwise); +sr keeps the 12-bit values (+ee alone stretches them, BENCHMARKS.md).
    Syntax("jpeg-extended", "1.2.840.10008.1.2.4.51", "STD-GEN-DVD-JPEG",
           ("dcmcjpeg", "+ee", "+sr", "+q", str(QUALITY)), ("cr",)),
    Syntax("rle", "1.2.840.10008.1.2.5", "AUG-GEN-DVD", ("dcmcrle",), ("ct", "cr")),
    Syntax("j2k-lossless", "1.2.840.10008.1.2.4.90", "STD-GEN-DVD-J2K", ("gdcmconv", "--j2k"), ("ct", "cr")),
    Syntax("j2k-lossy", "1.2.840.10008.1.2.4.91", "STD-GEN-DVD-J2K",
           ("gdcmconv", "--j2k", "--lossy", "-r", str(J2K_RATIO)), ("ct", "cr")),
]


def syntax_named(name: str) -> Syntax:
    return next(s for s in SYNTAXES if s.name == name)


LEFT_OUT = {"jpeg-baseline": "no 8-bit images in the corpus (CT has 16 bits, CR 12: medianode keeps them "
                             "lossless unless the route opts in to losing bits)"}

# --------------------------------------------------------------------------- the bare codec (the floor)


@dataclass(frozen=True)
class Frame:
    """Where one image's native pixels lie in its file, so that a worker reads them without pydicom."""
    path: str
    offset: int
    rows: int
    columns: int
    dtype: str  # "<i2" or "<u2"
    bits_stored: int


def frames_of(files: list[Path]) -> list[Frame]:
    """The Pixel Data of each generated file: its last element, 16-bit, one sample, one frame."""
    from pydicom import dcmread

    frames = []
    for f in files:
        ds = dcmread(f, stop_before_pixels=True)
        nbytes = ds.Rows * ds.Columns * 2
        offset = f.stat().st_size - nbytes
        with f.open("rb") as fh:
            fh.seek(offset - 4)
            length = int.from_bytes(fh.read(4), "little")
        if length != nbytes or ds.BitsAllocated != 16 or ds.SamplesPerPixel != 1:
            raise Failed(f"{f}: not a single 16-bit frame ending the file")
        frames.append(Frame(str(f), offset, ds.Rows, ds.Columns, "<i2" if ds.PixelRepresentation else "<u2",
                            ds.BitsStored))
    return frames


def encode(syntax: str, arr: np.ndarray, bits_stored: int) -> bytes:
    """One codestream, the way the fastest in-process codecs make it (BENCHMARKS.md): libjpeg-turbo takes the
    uint16 view of signed data, OpenJPEG the signed array itself."""
    import imagecodecs
    import numpy as np

    if syntax in ("jpeg-lossless", "jpeg-lossless-p14"):
        predictor = 1 if syntax == "jpeg-lossless" else P14_PREDICTOR
        return bytes(imagecodecs.jpeg8_encode(arr.view(np.uint16), lossless=True, predictor=predictor,
                                              bitspersample=bits_stored))
    if syntax == "jpeg-extended":
        return bytes(imagecodecs.jpeg8_encode(arr.view(np.uint16), level=QUALITY, bitspersample=12))
    if syntax == "rle":  # PackBits per byte plane, row by row: the encoder medianode itself uses
        from node import dicom, pixels

        return pixels.encode_frame(arr, dicom.RLE_LOSSLESS, bits_stored=bits_stored, photometric="MONOCHROME2")
    from openjpeg.utils import encode_array

    ratios: list[float] | None = [J2K_RATIO] if syntax == "j2k-lossy" else None
    return bytes(encode_array(arr, bits_stored=bits_stored, compression_ratios=ratios))


def load_codecs() -> None:
    """A pool worker's initializer: the codecs load before the timing, not in the first timed call."""
    import imagecodecs  # noqa: F401
    import openjpeg.utils  # noqa: F401

    import node.pixels  # noqa: F401


def encode_frame(job: tuple[str, Frame]) -> int:
    """A pool worker: read one frame from its file, encode it, return the codestream's size."""
    import numpy as np

    syntax, fr = job
    arr = np.fromfile(fr.path, fr.dtype, fr.rows * fr.columns, offset=fr.offset).reshape(fr.rows, fr.columns)
    return len(encode(syntax, arr, fr.bits_stored))


Step = Callable[[Path], tuple[Run, int]]  # an empty output folder -> the run, the bytes it wrote


def codec_pipeline(pool: ProcessPoolExecutor, syntax: Syntax, frames: list[Frame]) -> Step:
    def step(out: Path) -> tuple[Run, int]:
        t0 = time.perf_counter()
        size = sum(pool.map(encode_frame, [(syntax.name, f) for f in frames]))
        return Run(time.perf_counter() - t0), size
    return step

# --------------------------------------------------------------------------- whole processes


def tool_pipeline(syntax: Syntax, files: list[Path], procs: int) -> Step:
    """The tool once per file, `procs` at a time (xargs -P), each output checked for the syntax."""
    def step(out: Path) -> tuple[Run, int]:
        listing = out / "args"
        pairs = [str(p) for i, f in enumerate(files) for p in (f, out / f"{i:05d}.dcm")]
        listing.write_text("\0".join(pairs))
        run = run_process(["xargs", "-0", "-a", listing, "-P", str(procs), "-n", "2", *syntax.tool], rss=True)
        listing.unlink()
        outputs = files_of(out)
        if len(outputs) != len(files):
            raise Failed(f"{syntax.tool[0]} wrote {len(outputs)} files of {len(files)}")
        check_syntax(syntax, opened(outputs))
        return run, sum(p.stat().st_size for p in outputs)
    return step


def own_ticks(pid: int) -> int | None:
    """utime + stime of pid alone: its cutime would count again the reaped children we sampled ourselves."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


class TreeUsage(PeakRss):
    """PeakRss that also keeps the last CPU ticks seen of each process in the tree."""

    interval = 0.25  # two walks of /proc a sample, 2 ms each: under 2 % of a core taken from the burn

    def __init__(self, root: int) -> None:
        super().__init__(root)
        self.ticks: dict[int, int] = {}

    def sample(self) -> tuple[int, int]:
        for p in process_tree(self.root):
            if (t := own_ticks(p.pid)) is not None:
                self.ticks[p.pid] = t
        return super().sample()


def run_tree(cmd: Sequence[str | Path], env: Mapping[str, str] | None = None) -> Run:
    """Run cmd; its wall time, the peak RSS of its largest process and the CPU time of its process tree,
    sampled from /proc every 0.25 s. Not /usr/bin/time: medianode's pool lives under a multiprocessing
    forkserver that the burn never waits for, so neither the workers' memory nor their CPU would count."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, env=env_with(env or {}))
        with TreeUsage(proc.pid) as usage:
            code = proc.wait()
            seconds = time.perf_counter() - t0
        if code != 0:
            err.seek(0)
            raise Failed(f"{Path(cmd[0]).name} exited {code}: {tail(err.read())}")
    others = [kb for pid, kb in usage.peaks.items() if pid != proc.pid]
    log(f"    peak RSS: {Path(cmd[0]).name} {fmt(usage.peaks.get(proc.pid, 0) * 1024 / MB, '.0f')} MB, the largest "
        f"of its {len(others)} descendants {fmt(max(others, default=0) * 1024 / MB, '.0f')} MB")
    return Run(seconds, max(usage.peaks.values(), default=None), sum(usage.ticks.values()) / CLK_TCK)


def medianode_pipeline(syntax: Syntax | None, profile: str, src: Path, instances: int,
                       workers: int | None = None) -> Step:
    """medianode burn to an ISO (compressed unless syntax is None); every instance on it checked for the syntax."""
    def step(out: Path) -> tuple[Run, int]:
        iso = out / "medianode.iso"
        argv: list[str | Path] = [MEDIANODE, "burn", src, "--out", iso, "--profile", profile]
        run = run_tree(argv + (["--compress", syntax.name] if syntax else []),
                       env={WORKERS_ENV: str(workers)} if workers else None)
        if not iso.is_file():
            raise Failed(f"medianode burn exited 0 but wrote no {iso}")
        if syntax and (got := check_syntax(syntax, iso_files(iso))) != instances:
            raise Failed(f"the ISO holds {got} instances of {instances}")
        return run, iso.stat().st_size
    return step


def opened(files: list[Path]) -> Iterator[tuple[str, BinaryIO]]:
    for f in files:
        with f.open("rb") as fh:
            yield str(f), fh


def iso_files(iso: Path) -> Iterator[tuple[str, BinaryIO]]:
    """The instances on an ISO 9660 image, opened through pycdlib: every file under /DICOM (medianode's
    layout; the root also holds DICOMDIR and the IHE PDI README.TXT)."""
    import pycdlib

    cd = pycdlib.PyCdlib()
    cd.open(str(iso))
    try:
        for folder, _, names in cd.walk(iso_path="/DICOM"):
            for name in names:
                path = f"{folder}/{name}"
                with cd.open_file_from_iso(iso_path=path) as fh:
                    yield path, fh
    finally:
        cd.close()


def check_syntax(syntax: Syntax, files: Iterable[tuple[str, BinaryIO]]) -> int:
    """Raise Failed unless every file's File Meta says syntax.uid (a fallback would time another codec);
    return how many files there were."""
    from pydicom import dcmread

    count = 0
    for name, fh in files:
        try:
            ts = dcmread(fh, stop_before_pixels=True).file_meta.TransferSyntaxUID
        except Exception as e:  # noqa: BLE001 - pydicom raises many kinds on a broken file
            raise Failed(f"{name} is not a DICOM file: {e}") from None
        if ts != syntax.uid:
            raise Failed(f"{name} is in {ts.name}, not {syntax.name} ({syntax.uid})")
        count += 1
    return count


def workers_env() -> bool:
    """Whether the build's burn honours MEDIANODE_WORKERS (looked for in its node package's source)."""
    python = MEDIANODE.with_name("python")
    found = subprocess.run([python if python.exists() else sys.executable, "-c",
                            "import node, pathlib; print(pathlib.Path(node.__file__).parent)"],
                           capture_output=True, text=True, check=False, cwd="/").stdout.strip()  # not ./node
    return bool(found) and any(WORKERS_ENV in p.read_text() for p in Path(found).rglob("*.py"))

# --------------------------------------------------------------------------- timing


@dataclass
class Pipeline:
    label: str
    step: Step
    result: Result
    bytes_out: int | None = None


def time_interleaved(pipelines: dict[str, Pipeline], out: Path, runs: int, warmup: int) -> None:
    """Run every pipeline once a round, warm-up rounds first; a failing pipeline is n/a from then on."""
    for n in range(warmup + runs):
        what = f"run {n - warmup + 1}/{runs}" if n >= warmup else "warm-up"
        for p in pipelines.values():
            if p.result.error:
                continue
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            subprocess.run(["sync"], check=True)  # no write-back of a previous run during this one
            try:
                run, p.bytes_out = p.step(out)
            except Failed as e:
                p.result.error = str(e)
                log(f"  {p.label} failed, reported as n/a:\n    " + str(e).replace("\n", "\n    "))
                continue
            if n >= warmup:
                p.result.runs.append(run)
            log(f"  {what} {p.label}: {run.seconds:.3f} s")
    shutil.rmtree(out, ignore_errors=True)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def syntax_result(syntax: Syntax, ds: str, n: int, nbytes: int, pipes: dict[str, Pipeline], own_speedup: bool) -> Json:
    """Medians, per-image times, ratios and targets of one syntax on one data set."""
    def med(key: str) -> float | None:
        return pipes[f"{ds}/{syntax.name}/{key}"].result.summary(nbytes)["median_s"]

    base = pipes[f"{ds}/uncompressed/{syntax.profile}"].result.summary(nbytes)["median_s"]
    tool1, tooln, codec1, codecn, mn = (med(k) for k in ("tool-1", f"tool-{WORKERS}", "codec-1",
                                                         f"codec-{WORKERS}", "medianode"))
    mn1 = med("medianode-1") if own_speedup else None
    floor = codecn + base if codecn and base else None
    faster, over = ratio(tooln, mn), ratio(mn, floor)
    speedup = ratio(mn1, mn) if own_speedup else ratio(codec1, codecn)
    ratios = {"tool_over_medianode": faster, "medianode_over_floor": over, "speedup": speedup,
              "speedup_of": "medianode" if own_speedup else "bare codec", "tool_speedup": ratio(tool1, tooln)}
    t = TARGETS
    met = {"faster_than_tool": None if faster is None else faster > t["faster_than_tool"],
           "max_over_floor": None if over is None else over <= t["max_over_floor"],
           "min_speedup": None if speedup is None else speedup >= t["min_speedup"]}
    per_image = {"tool": tool1 and 1000 * tool1 / n, "codec": codec1 and 1000 * codec1 / n,
                 "medianode": mn1 and 1000 * mn1 / n}
    mine = {k.split("/", 2)[2]: {"label": p.label, "bytes_out": p.bytes_out, **p.result.summary(nbytes, n)}
            for k, p in pipes.items() if k.startswith(f"{ds}/{syntax.name}/")}
    return {"syntax": syntax.name, "uid": syntax.uid, "profile": syntax.profile, "tool": " ".join(syntax.tool),
            "uncompressed_s": base, "floor_s": floor, "per_image_ms_1_process": per_image, "pipelines": mine,
            "ratios": ratios, "targets_met": met}


def print_tables(res: Json, out: TextIO) -> None:
    def line(text: str = "") -> None:
        print(text, file=out)

    def mb(p: Json) -> str:
        return fmt(p["bytes_out"] and p["bytes_out"] / MB, ".1f")

    n = WORKERS
    for d in res["datasets"]:
        line(f"\n{d['label']}: {d['files']} files, {d['bytes'] / MB:.1f} MB; median of {res['runs']} runs; "
             f"N = {n} processes (os.cpu_count(), medianode's pool)")
        line(f"  load average (1/5/15 min) before: {res['load_before']}, after: {res['load_after']}")
        for profile, u in d["uncompressed"].items():
            line(f"  uncompressed medianode burn, {profile}: {fmt(u['median_s'], '.3f')} s, "
                 f"RSS {fmt(u['peak_rss_mb'], '.0f')} MB" + (f"  failed: {u['error'][:150]}" if u["error"] else ""))
        line(f"  {'':18} {'ms/image, 1 process':^22} {f'series s, {n} processes':^36} {'MB written':^20}")
        line(f"  {'syntax':18} {'tool':>7} {'codec':>7} {'mn':>6} {'tool':>8} {'codec':>8} {'floor':>8} "
             f"{'medianode':>10} {'tool':>6} {'codec':>6} {'ISO':>6}")
        for s in d["syntaxes"]:
            p, pi = s["pipelines"], s["per_image_ms_1_process"]
            line(f"  {s['syntax']:18} {fmt(pi['tool'], '.1f'):>7} {fmt(pi['codec'], '.1f'):>7} "
                 f"{fmt(pi['medianode'], '.1f'):>6} {fmt(p[f'tool-{n}']['median_s'], '.3f'):>8} "
                 f"{fmt(p[f'codec-{n}']['median_s'], '.3f'):>8} {fmt(s['floor_s'], '.3f'):>8} "
                 f"{fmt(p['medianode']['median_s'], '.3f'):>10} {mb(p[f'tool-{n}']):>6} {mb(p[f'codec-{n}']):>6} "
                 f"{mb(p['medianode']):>6}")
        t = TARGETS
        line(f"  {'syntax':18} {'medianode vs tool':>22} {'vs codec + uncompressed':>28} {'speedup from 2 cores':>28}"
             f" {'RSS MB':>7}")
        for s in d["syntaxes"]:
            r, ok = s["ratios"], s["targets_met"]
            line(f"  {s['syntax']:18} {fmt(r['tool_over_medianode'], '.2f'):>5}x faster "
                 f"(>{t['faster_than_tool']:.0f}) {MARK[ok['faster_than_tool']]:>6} "
                 f"{fmt(r['medianode_over_floor'], '.2f'):>7}x (<={t['max_over_floor']}) "
                 f"{MARK[ok['max_over_floor']]:>6}    {fmt(r['speedup'], '.2f'):>5}x {r['speedup_of']:10} "
                 f"{MARK[ok['min_speedup']]:>6} {fmt(s['pipelines']['medianode']['peak_rss_mb'], '.0f'):>7}")
        line("  floor = bare codec with N processes + the uncompressed medianode burn; tools: "
             + "; ".join(f"{s['syntax']}: {s['tool']}" for s in d["syntaxes"]))
        for s in d["syntaxes"]:
            for key, p in s["pipelines"].items():
                if p["error"]:
                    line(f"  {s['syntax']} {key} failed: {p['error'].splitlines()[0][:200]}")
    line("  medianode per-image ms with 1 process: "
         + ("MEDIANODE_WORKERS=1 (whole burn / images)" if res["own_speedup"] else
            f"n/a: this build's burn has no {WORKERS_ENV}; the speedup shown is the bare codec's"))
    for name, why in LEFT_OUT.items():
        line(f"  {name} not timed: {why}")


def compress_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", choices=["ct", "cr"], help="time one data set only")
    p.add_argument("--syntax", action="append", choices=[s.name for s in SYNTAXES],
                   help="time this syntax only (repeatable; default: all)")
    p.add_argument("--settings", action="store_true",
                   help="only the table of lossy settings (bytes, ratio, PSNR, time per image), no timing against the tools")


@bench("compress", "medianode burn --compress X vs dcmcjpeg/dcmcrle/gdcmconv vs the bare codec", compress_args,
       runs=3)
def run_compress(args: argparse.Namespace) -> Json:
    chosen = [s for s in SYNTAXES if not args.syntax or s.name in args.syntax]
    sources = [loader(args) for name, loader in (("ct", ct_study), ("cr", cr_series)) if args.only in (None, name)]
    log("\nmeasuring the lossy settings")
    settings = run_settings([(spec.name, spec.label, files_of(src)) for spec, src in sources])
    if args.settings:
        print_settings(settings, sys.stderr if args.json else sys.stdout)
        return {"settings": settings}
    own_speedup = workers_env()
    pipes: dict[str, Pipeline] = {}
    data: list[tuple[DataSpec, list[Path], int, list[Syntax]]] = []
    ctx = get_context("fork")
    with (ProcessPoolExecutor(1, ctx, load_codecs) as pool1, ProcessPoolExecutor(WORKERS, ctx, load_codecs) as pooln):
        for pool in (pool1, pooln):
            list(pool.map(abs, range(WORKERS)))  # the workers start and load the codecs now, untimed
        for spec, src in sources:
            files = files_of(src)
            nbytes, frames = warm(files), frames_of(files)
            mine = [s for s in chosen if spec.name in s.data]
            data.append((spec, files, nbytes, mine))
            for profile in dict.fromkeys(s.profile for s in mine):
                pipes[f"{spec.name}/uncompressed/{profile}"] = Pipeline(
                    f"{spec.name} uncompressed medianode burn {profile}",
                    medianode_pipeline(None, profile, src, len(files)), Result())
            for s in mine:
                steps = {"medianode": ("medianode burn", medianode_pipeline(s, s.profile, src, len(files))),
                         "tool-1": (f"{s.tool[0]} -P 1", tool_pipeline(s, files, 1)),
                         f"tool-{WORKERS}": (f"{s.tool[0]} -P {WORKERS}", tool_pipeline(s, files, WORKERS)),
                         "codec-1": ("codec, 1 process", codec_pipeline(pool1, s, frames)),
                         f"codec-{WORKERS}": (f"codec, {WORKERS} processes", codec_pipeline(pooln, s, frames))}
                if own_speedup:
                    steps["medianode-1"] = (f"medianode burn {WORKERS_ENV}=1",
                                            medianode_pipeline(s, s.profile, src, len(files), workers=1))
                for key, (label, step) in steps.items():
                    pipes[f"{spec.name}/{s.name}/{key}"] = Pipeline(f"{spec.name} {s.name}: {label}", step, Result())
        load_before = load_average()
        log(f"\ntiming {len(pipes)} pipelines, {args.runs} runs (+{args.warmup} warm-up) each, interleaved; "
            f"load average {load_before}")
        time_interleaved(pipes, args.data / "out" / "compress", args.runs, args.warmup)
    datasets = []
    for spec, files, nbytes, mine in data:
        uncompressed = {k.rsplit("/", 1)[1]: p.result.summary(nbytes, len(files)) for k, p in pipes.items()
                        if k.startswith(f"{spec.name}/uncompressed/")}
        datasets.append({"name": spec.name, "label": spec.label, "files": len(files), "bytes": nbytes,
                         "uncompressed": uncompressed,
                         "syntaxes": [syntax_result(s, spec.name, len(files), nbytes, pipes, own_speedup)
                                      for s in mine]})
    res: Json = {"runs": args.runs, "workers": WORKERS, "own_speedup": own_speedup, "load_before": load_before,
                 "load_after": load_average(), "targets": TARGETS, "left_out": LEFT_OUT, "datasets": datasets,
                 "settings": settings}
    print_tables(res, sys.stderr if args.json else sys.stdout)
    print_settings(settings, sys.stderr if args.json else sys.stdout)
    return res
