"""scripts/bench burn: medianode burn vs the DCMTK textbook pipeline vs a plain copy (and a copy read back from
the disk), in the same run;
with --dvd (or --only dvd), a full DVD of CT compressed to JPEG 2000 lossless against the drive's speed."""
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
from benchkit.compress import check_syntax, iso_files, run_tree, syntax_named
from benchkit.data import DataSpec, ct_slices, data_dir, dvd_spec, ensure_data, files_of, specs, warm


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


def burn_read_back(spec: DataSpec, src: Path, out: Path) -> Run:
    """What no burn that reads its image back from the disk can beat: the files into one file, sync, and
    that file read back from the disk (O_DIRECT), without a byte of DICOM work."""
    return run_process(["sh", "-c", 'find "$1" -type f -exec cat {} + > "$2" && sync && '
                        'dd if="$2" iflag=direct bs=8M of=/dev/null status=none', "sh", src, out / "one.img"])


BURN_PIPELINES: dict[str, tuple[str, Callable[[DataSpec, Path, Path], Run]]] = {
    "medianode": ("medianode burn -> ISO", burn_medianode),
    "dcmtk": ("DCMTK copy + dcmmkdir + xorriso", burn_dcmtk),
    "copy": ("cp -r + sync (floor)", burn_copy),
    "read_back": ("cat + sync + read back (floor)", burn_read_back),
}
TARGETS = {"faster_than_dcmtk": 2.0, "max_slower_than_copy": 1.2, "max_rss_mb": 250.0}


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
    line(f"  the read-back floor:         {fmt(r['read_back_over_copy'], '.2f')} x the copy's time; medianode "
         f"{fmt(r['medianode_over_read_back'], '.2f')} x the floor's")
    line(f"  medianode peak RSS:          {fmt(ds['pipelines']['medianode']['peak_rss_mb'], '.0f')} MB "
         f"(target < {t['max_rss_mb']:.0f} MB) {mark[ok['max_rss_mb']]}")


def burn_dataset(spec: DataSpec, src: Path, out: Path, runs: int, warmup: int) -> Json:
    files = files_of(src)
    nbytes = warm(files)
    log(f"\n{spec.label}: timing {runs} runs of each pipeline ({spec.profile}) ...")
    p = {k: r.summary(nbytes) for k, r in time_pipelines(spec, src, out, runs, warmup).items()}
    mn, dcmtk, copy, floor = (p[k]["median_s"] for k in ("medianode", "dcmtk", "copy", "read_back"))
    faster, slower = (dcmtk / mn if dcmtk and mn else None), (mn / copy if mn and copy else None)
    ratios = {"dcmtk_over_medianode": faster, "medianode_over_copy": slower,
              "read_back_over_copy": floor / copy if floor and copy else None,
              "medianode_over_read_back": mn / floor if mn and floor else None}
    rss = p["medianode"]["peak_rss_mb"]
    met = {"faster_than_dcmtk": None if faster is None else faster >= TARGETS["faster_than_dcmtk"],
           "max_slower_than_copy": None if slower is None else slower <= TARGETS["max_slower_than_copy"],
           "max_rss_mb": None if rss is None else rss < TARGETS["max_rss_mb"]}
    return {"name": spec.name, "label": spec.label, "profile": spec.profile, "files": len(files),
            "bytes": nbytes, "pipelines": p, "ratios": ratios, "targets": TARGETS, "targets_met": met}


# --------------------------------------------------------------------------- a full DVD, compressed

DVD_SYNTAX = "j2k-lossless"  # the expensive case: 27.5 ms a CT image on one core (BENCHMARKS.md)
DVD_1X_MB_S = 1.385          # ECMA-267: 1x DVD is 11.08 Mbit/s
DVD_TARGETS = {"max_s": 240.0, "max_rss_mb": 250.0}  # a 16x drive writes a full DVD in about 4 minutes


def disk_shortfall(data: Path, spec: DataSpec) -> str | None:
    """Why the DVD case cannot run here, or None: room for the set (unless cached) and for an ISO as large."""
    need = spec.studies * spec.images * (512 * 512 * 2 + 2000) * (1 if (data / f"{spec.name}.done").is_file() else 2)
    free = shutil.disk_usage(data).free
    if free < need + 1e9:
        return f"{free / 1e9:.1f} GB free under {data}, the {spec.label} needs {(need + 1e9) / 1e9:.1f} GB"
    return None


def burn_dvd(spec: DataSpec, data: Path, out: Path, runs: int) -> Json:
    """Time `medianode burn --compress j2k-lossless` of the DVD set; check every instance on the ISO once."""
    head: Json = {"name": spec.name, "label": spec.label, "profile": spec.profile, "compress": DVD_SYNTAX,
                  "targets": DVD_TARGETS}
    if short := disk_shortfall(data, spec):
        log(f"\n{spec.label}: not run: {short}")
        return head | {"error": short}
    src = ensure_data(data, spec, lambda: ct_slices(spec.images))
    files = files_of(src)
    nbytes = warm(files)
    log(f"\n{spec.label}: {len(files)} files, {nbytes / MB:.0f} MB: timing {runs} run(s) of medianode burn "
        f"--compress {DVD_SYNTAX} ...")
    result, iso_bytes = Result(), None
    iso = out / "dvd.iso"
    for n in range(runs):
        clean(out)
        try:
            run = run_tree([MEDIANODE, "burn", src, "--out", iso, "--profile", spec.profile, "--compress", DVD_SYNTAX])
            if n == 0 and (got := check_syntax(syntax_named(DVD_SYNTAX), iso_files(iso))) != len(files):
                raise Failed(f"the ISO holds {got} instances of {len(files)}")
        except Failed as e:
            result.error = str(e)
            log("  failed, reported as n/a:\n    " + str(e).replace("\n", "\n    "))
            break
        result.runs.append(run)
        iso_bytes = iso.stat().st_size
        log(f"  run {n + 1}/{runs}: {run.seconds:.1f} s, ISO {iso_bytes / MB:.0f} MB")
    shutil.rmtree(out, ignore_errors=True)
    p = result.summary(nbytes, len(files))
    x16 = 16 * DVD_1X_MB_S * MB
    drive = {"iso_s": iso_bytes and iso_bytes / x16, "uncompressed_s": nbytes / x16}
    med, rss = p["median_s"], p["peak_rss_mb"]
    met = {"max_s": None if med is None else med < DVD_TARGETS["max_s"],
           "max_rss_mb": None if rss is None else rss < DVD_TARGETS["max_rss_mb"]}
    return head | {"files": len(files), "bytes": nbytes, "iso_bytes": iso_bytes, "medianode": p,
                   "dvd_16x_s": drive, "targets_met": met}


def print_dvd(ds: Json, out: TextIO) -> None:
    def line(text: str) -> None:
        print(text, file=out)

    line(f"\n{ds['label']}: medianode burn --profile {ds['profile']} --compress {ds['compress']}")
    if "medianode" not in ds:
        line(f"  not run: {ds['error']}")
        return
    p, d, ok, t = ds["medianode"], ds["dvd_16x_s"], ds["targets_met"], DVD_TARGETS
    line(f"  {ds['files']} files, {ds['bytes'] / MB:.0f} MB, hot in the page cache; median of {len(p['runs_s'])} "
         f"run(s): {fmt(p['median_s'], '.1f')} s, {fmt(p['inst_s'], '.0f')} inst/s, CPU {fmt(p['cpu_s'], '.0f')} s, "
         f"ISO {fmt(ds['iso_bytes'] and ds['iso_bytes'] / MB, '.0f')} MB")
    line(f"  a 16x DVD drive ({16 * DVD_1X_MB_S:.1f} MB/s) writes this ISO in {fmt(d['iso_s'], '.0f')} s, "
         f"the uncompressed set in {d['uncompressed_s']:.0f} s")
    line(f"  medianode vs a full DVD at 16x (about 4 minutes): {fmt(p['median_s'], '.0f')} s "
         f"(target < {t['max_s']:.0f} s) {MARK[ok['max_s']]}")
    line(f"  medianode peak RSS: {fmt(p['peak_rss_mb'], '.0f')} MB (target < {t['max_rss_mb']:.0f} MB) "
         f"{MARK[ok['max_rss_mb']]}")
    if p["error"]:
        line(f"  failed: {p['error'].splitlines()[0][:200]}")


def burn_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", choices=["ct", "set", "dvd"], help="time one data set only")
    p.add_argument("--dvd", action="store_true", help="also the full DVD compressed to JPEG 2000 (4.3 GB of CT, "
                   "generated once: needs about 9 GB free the first time)")
    p.add_argument("--dvd-runs", type=int, default=1, help="timed runs of the DVD case (default: %(default)s)")


@bench("burn", "medianode burn vs the DCMTK textbook pipeline vs a plain copy; --dvd: a full DVD in JPEG 2000",
       burn_args)
def run_burn(args: argparse.Namespace) -> Json:
    data = data_dir(args)
    chosen = [s for s in specs(args.quick) if args.only in (None, s.name)]
    cache: list[bytes] = []  # pixel buffers, generated at most once and shared by the data sets

    def slices() -> list[bytes]:
        if not cache:
            cache.extend(ct_slices(max(s.images for s in chosen)))
        return cache

    sources = [(spec, ensure_data(data, spec, slices)) for spec in chosen]
    cache.clear()
    out = args.data / "out" / "burn"
    datasets = [burn_dataset(spec, src, out, args.runs, args.warmup) for spec, src in sources]
    dvd = burn_dvd(dvd_spec(args.quick), data, out, args.dvd_runs) if args.dvd or args.only == "dvd" else None
    for ds in datasets:
        print_table(ds, args.runs, sys.stderr if args.json else sys.stdout)
    if dvd:
        print_dvd(dvd, sys.stderr if args.json else sys.stdout)
    return {"datasets": datasets} | ({"dvd": dvd} if dvd else {})
