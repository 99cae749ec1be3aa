"""scripts/bench burn: medianode burn vs the DCMTK textbook pipeline vs a plain copy, in the same run."""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from benchkit.common import MARK, MB, MEDIANODE, Failed, Json, Result, Run, bench, fmt, log, run_process
from benchkit.data import DataSpec, ct_slices, ensure_data, files_of, specs, warm


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
    def line(text: str) -> None:
        print(text, file=out)

    line(f"\n{ds['label']}: {ds['files']} files, {ds['bytes'] / MB:.1f} MB, {ds['profile']} "
         f"(median of {runs} runs, whole processes, files hot in the page cache)")
    line(f"  {'pipeline':34} {'median s':>9} {'MB/s':>7} {'min-max s':>14}")
    for key, (label, _) in BURN_PIPELINES.items():
        p = ds["pipelines"][key]
        spread = f"{min(p['runs_s']):.3f}-{max(p['runs_s']):.3f}" if p["median_s"] else "n/a"
        line(f"  {label:34} {fmt(p['median_s'], '.3f'):>9} {fmt(p['mb_s'], '.0f'):>7} {spread:>14}")
    r, ok, t, mark = ds["ratios"], ds["targets_met"], TARGETS, MARK
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
    datasets = [burn_dataset(spec, src, args.data / "out" / "burn", args.runs, args.warmup) for spec, src in sources]
    for ds in datasets:
        print_table(ds, args.runs, sys.stderr if args.json else sys.stdout)
    return {"datasets": datasets}
