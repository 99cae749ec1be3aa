"""scripts/bench import: medianode import (from a folder and from an ISO) vs DCMTK dcmsend, in the same run.

The CT study is burned once with `medianode burn` to an ISO, which xorriso extracts to a folder. Each
sender then stores the medium into one DCMTK `storescp --fork` (TCP_NODELAY=1; forked, since medianode
imports over several associations), emptied between runs: `medianode import FOLDER`, `medianode import
ISO`, and `dcmsend --read-from-dicomdir` (TCP_NODELAY=1) from the folder. Whole processes are timed
(start-up included); peak RSS and CPU time are /usr/bin/time's, over the sender and the workers it waited
for. A build whose CLI has no `import` command is timed through node.read.importer.import_medium (python -c).
`medianode check` of the folder and of the ISO is timed too (whole processes, medians of the runs).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from benchkit.common import (
    MARK,
    MB,
    MEDIANODE,
    NODELAY,
    Failed,
    Json,
    Result,
    Run,
    bench,
    fmt,
    load_average,
    log,
    run_process,
)
from benchkit.data import ct_study, files_of, warm
from benchkit.procs import HOST, Server, free_port

DEST_AET = "STORESCP"
PUBLISHED = {"dcmsend": 861.0, "pynetdicom_raw": 238.0}  # inst/s, ../shared/BENCHMARKS.md
TARGETS = {"folder_vs_dcmsend": 0.5, "iso_vs_dcmsend": 0.45, "max_rss_mb": 200.0}
IMPORT_SNIPPET = """\
import sys
from node.read.importer import import_medium
report = import_medium(sys.argv[1], destination=(sys.argv[2], sys.argv[3], int(sys.argv[4])))
print(f"{report.sent} sent, {report.failed} failed, {report.skipped} skipped", file=sys.stderr)
sys.exit(0 if report.sent and not report.failed else 1)
"""

Sender = Callable[[int], Run]  # destination port -> the run


def medianode_import(medium: Path) -> tuple[str, Sender]:
    """`medianode import MEDIUM --to ...` if the CLI has it, else import_medium from a `python -c`."""
    has_cli = subprocess.run([MEDIANODE, "import", "--help"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, check=False).returncode == 0
    python = MEDIANODE.with_name("python")
    if has_cli:
        how = "medianode import"
        def argv(port: int) -> list[str | Path]:
            return [MEDIANODE, "import", medium, "--to", f"{DEST_AET}@{HOST}:{port}"]
    else:
        how = "python -c import_medium(...) (this build's CLI has no `medianode import`)"
        def argv(port: int) -> list[str | Path]:
            return [python if python.exists() else sys.executable, "-c", IMPORT_SNIPPET, medium, DEST_AET, HOST, str(port)]
    return how, lambda port: run_process(argv(port), rss=True)


def dcmsend(dicomdir: Path) -> Sender:
    return lambda port: run_process(["dcmsend", "-aet", "BENCH", "-aec", DEST_AET, "--read-from-dicomdir",
                                     HOST, str(port), dicomdir], rss=True, env=NODELAY)


def make_medium(src: Path, profile: str, out: Path) -> tuple[Path, Path]:
    """Burn src to out/ct.iso with medianode, extract it to out/folder; return (iso, folder)."""
    iso, folder = out / "ct.iso", out / "folder"
    run_process([MEDIANODE, "burn", src, "--out", iso, "--profile", profile])
    run_process(["xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/", folder])
    subprocess.run(["chmod", "-R", "u+w", folder], check=True)  # xorriso restores the read-only modes
    return iso, folder


def empty_dir(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()


def time_senders(senders: dict[str, tuple[str, Sender]], store: Path, port: int, instances: int,
                 runs: int, warmup: int) -> dict[str, Result]:
    """Interleave the senders run by run into the same storescp, emptied (and synced) before each run."""
    results = {key: Result() for key in senders}
    for n in range(warmup + runs):
        what = f"run {n - warmup + 1}/{runs}" if n >= warmup else "warm-up"
        for key, (label, send) in senders.items():
            res = results[key]
            if res.error:
                continue
            empty_dir(store)
            subprocess.run(["sync"], check=True)
            try:
                run = send(port)
                if (got := sum(1 for p in store.iterdir() if p.is_file())) != instances:
                    raise Failed(f"{got} instances arrived of {instances}")
            except Failed as e:
                res.error = str(e)
                log(f"  {label} failed, reported as n/a:\n    " + str(e).replace("\n", "\n    "))
                continue
            if n >= warmup:
                res.runs.append(run)
            log(f"  {what} {label}: {run.seconds:.3f} s, {instances / run.seconds:.0f} inst/s, "
                f"RSS {fmt(run.peak_rss_kb and run.peak_rss_kb / 1024, '.0f')} MB")
    return results


def time_checks(media: dict[str, Path], runs: int) -> dict[str, float | None]:
    """Median seconds of `medianode check MEDIUM` (whole process) per medium; None when it failed."""
    medians: dict[str, float | None] = {}
    for key, medium in media.items():
        try:
            medians[key] = statistics.median(run_process([MEDIANODE, "check", medium]).seconds for _ in range(runs))
        except Failed as e:
            log(f"  medianode check {key} failed, reported as n/a: {e}")
            medians[key] = None
        log(f"  medianode check {key}: {fmt(medians[key], '.3f')} s")
    return medians


def print_table(res: Json, out: TextIO) -> None:
    def line(text: str = "") -> None:
        print(text, file=out)

    d = res["data"]
    line(f"\n{d['label']} burned by medianode: {d['files']} instances, {d['bytes'] / MB:.1f} MB, into DCMTK "
         f"storescp --fork (TCP_NODELAY=1) on {HOST}; median of {res['runs']} runs, whole processes")
    line(f"  load average (1/5/15 min) before: {res['load_before']}, after: {res['load_after']}")
    line(f"  medianode import runs as: {res['medianode_import']}")
    line(f"  {'sender':44} {'median s':>9} {'inst/s':>7} {'MB/s':>6} {'CPU s':>6} {'RSS MB':>7}")
    for s in res["senders"].values():
        line(f"  {s['label']:44} {fmt(s['median_s'], '.3f'):>9} {fmt(s['inst_s'], '.0f'):>7} "
             f"{fmt(s['mb_s'], '.0f'):>6} {fmt(s['cpu_s'], '.2f'):>6} {fmt(s['peak_rss_mb'], '.0f'):>7}")
        if s["error"]:
            line(f"    failed: {s['error'].splitlines()[0][:150]}")
    line("  CPU s: the sender and the workers it waited for; RSS MB: the largest of those processes' peaks")
    r, ok, t = res["ratios"], res["targets_met"], TARGETS
    line(f"  dcmsend here vs its published {PUBLISHED['dcmsend']:.0f} inst/s: {fmt(r['dcmsend_vs_published'], '.2f')}x"
         "  [how this machine compares today]")
    line(f"  medianode import from the folder vs dcmsend: {fmt(r['folder_vs_dcmsend'], '.2f')}x "
         f"(target >= {t['folder_vs_dcmsend']}x) {MARK[ok['folder_vs_dcmsend']]}")
    line(f"  medianode import from the ISO vs dcmsend:    {fmt(r['iso_vs_dcmsend'], '.2f')}x "
         f"(target >= {t['iso_vs_dcmsend']}x) {MARK[ok['iso_vs_dcmsend']]}")
    line(f"  medianode import peak RSS of a process:      {fmt(r['peak_rss_mb'], '.0f')} MB "
         f"(target < {t['max_rss_mb']:.0f} MB) {MARK[ok['max_rss_mb']]}")
    c = res["check_s"]
    line(f"  medianode check (whole process, median s):   folder {fmt(c['folder'], '.3f')}, ISO {fmt(c['iso'], '.3f')}")


@bench("import", "medianode import (folder, ISO) vs DCMTK dcmsend --read-from-dicomdir, into storescp", runs=3)
def run_import(args: argparse.Namespace) -> Json:
    spec, src = ct_study(args)
    root = args.data / "out" / "import"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    load_before = load_average()
    try:
        log(f"\n{spec.label}: burning it with medianode ({spec.profile}), extracting the ISO with xorriso ...")
        iso, folder = make_medium(src, spec.profile, root)
        instances = files_of(folder / "DICOM")  # the instances: not the DICOMDIR nor README.TXT
        nbytes = warm(instances)
        warm([iso])
        how, from_folder = medianode_import(folder)
        senders = {"folder": ("medianode import FOLDER", from_folder),
                   "iso": ("medianode import ISO", medianode_import(iso)[1]),
                   "dcmsend": ("dcmsend --read-from-dicomdir FOLDER", dcmsend(folder / "DICOMDIR"))}
        store, port = root / "received", free_port()
        store.mkdir()
        log(f"  timing {args.runs} runs (+{args.warmup} warm-up) of each sender; load average {load_before}")
        with Server("storescp", ["storescp", "--fork", "-aet", DEST_AET, "-od", store, port], aet=DEST_AET,
                    port=port, log=root / "storescp.log", env=NODELAY):
            results = time_senders(senders, store, port, len(instances), args.runs, args.warmup)
        check_s = time_checks({"folder": folder, "iso": iso}, args.runs)
    finally:
        subprocess.run(["chmod", "-R", "u+w", root], check=False)
        shutil.rmtree(root, ignore_errors=True)
    summaries: dict[str, Json] = {k: {"label": senders[k][0], **r.summary(nbytes, len(instances))}
                                  for k, r in results.items()}
    rate: dict[str, float | None] = {k: s["inst_s"] for k, s in summaries.items()}
    dcm = rate["dcmsend"]
    rss: float | None = max((s["peak_rss_mb"] for k, s in summaries.items() if k != "dcmsend" and s["peak_rss_mb"]), default=None)
    ratios = {"folder_vs_dcmsend": rate["folder"] / dcm if rate["folder"] and dcm else None,
              "iso_vs_dcmsend": rate["iso"] / dcm if rate["iso"] and dcm else None,
              "dcmsend_vs_published": dcm / PUBLISHED["dcmsend"] if dcm else None, "peak_rss_mb": rss}
    met = {k: None if ratios[k] is None else ratios[k] >= TARGETS[k] for k in ("folder_vs_dcmsend", "iso_vs_dcmsend")}
    met["max_rss_mb"] = None if rss is None else rss < TARGETS["max_rss_mb"]
    res: Json = {"data": {"label": spec.label, "files": len(instances), "bytes": nbytes}, "runs": args.runs,
                 "load_before": load_before, "load_after": load_average(), "medianode_import": how,
                 "senders": summaries, "check_s": check_s, "ratios": ratios, "targets": TARGETS, "targets_met": met}
    print_table(res, sys.stderr if args.json else sys.stdout)
    return res
