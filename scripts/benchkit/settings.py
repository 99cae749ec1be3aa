"""scripts/bench compress: what each lossy setting (quality, ratio, psnr) makes of the generated images.

Per setting and data set: the bytes of the codestreams, the ratio achieved (native Pixel Data over them),
the PSNR of the decoded images against their sources, and medianode's time per image. Each image goes
through node.media.compress.compress in this process, as a burn's worker runs it (which decodes every lossy
frame once more to measure it: that is in the time). The PSNR is computed here, not taken from medianode:
decoded by pydicom (our imagecodecs plugin for JPEG, pylibjpeg-openjpeg for JPEG 2000), mapped back through
the rescale to the source's stored values, over the source's range of values (10 log10((max - min)^2 / MSE)),
as medianode's psnr setting counts it.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from benchkit.common import Json, fmt, log

if TYPE_CHECKING:
    from pydicom import Dataset

#: (--compress value, its setting, the data sets it applies to). JPEG extended on CT needs bit reduction
#: (16 bits stored), which here is lossless: the CT values span less than 4096.
SETTINGS: list[tuple[str, dict[str, float], tuple[str, ...]]] = [
    *(("jpeg-extended", {"quality": q}, ("ct", "cr")) for q in (50, 75, 90, 95)),
    *(("j2k-lossy", {"ratio": r}, ("ct", "cr")) for r in (5, 10, 15, 30)),
    *(("j2k-lossy", {"psnr": p}, ("ct", "cr")) for p in (45, 55, 65)),
]
#: Images of each data set measured (the first ones): enough for stable sizes, few enough to be quick.
IMAGES = {"ct": 10, "cr": 2}


def run_settings(sources: list[tuple[str, str, list[Path]]]) -> list[Json]:
    """sources: (name, label, files) per data set; one row per setting and data set."""
    from pydicom import dcmread

    from node import pixels

    pixels.register()
    rows = []
    for name, label, files in sources:
        images = [dcmread(f) for f in files[:IMAGES[name]]]
        for syntax, setting, data in SETTINGS:
            if name in data:
                rows.append(measure(name, label, images, syntax, setting))
                log(f"  {name} {syntax} {setting}: {fmt(rows[-1]['ratio'], '.1f')}:1, "
                    f"{fmt(rows[-1]['psnr_db'], '.1f')} dB")
    return rows


def measure(name: str, label: str, images: list[Dataset], syntax: str, setting: dict[str, float]) -> Json:
    from node.media import compress
    from node.syntaxes import Compression, by_name

    ts = by_name(syntax).uid
    asked = Compression(syntax, quality=int(setting["quality"]) if "quality" in setting else None,
                        ratio=setting.get("ratio"), psnr=setting.get("psnr"))
    native = coded = 0
    seconds, squared, count, worst = 0.0, 0.0, 0, math.inf
    peaks: list[int] = []
    for source in images:
        info = compress.ImageInfo.from_dataset(source)
        choice = compress.choose_syntax(ts, info, frozenset({ts}), compress.Policy(bit_reduction=True), asked)
        if choice.transfer_syntax != ts:
            return {"data": name, "label": label, "syntax": syntax, "asked": setting, "error": choice.reason}
        ds = copy.deepcopy(source)
        t0 = time.perf_counter()
        compress.compress(ds, choice, new_sop_uid="2.25.1")
        seconds += time.perf_counter() - t0
        native += len(source.PixelData)
        coded += _stored(ds)
        error = _squared_error(source, ds)
        squared, count = squared + error, count + source.pixel_array.size
        peak = max(1, int(source.pixel_array.max()) - int(source.pixel_array.min()))
        peaks.append(peak)
        worst = min(worst, _psnr(error / source.pixel_array.size, peak))
    return {"data": name, "label": label, "syntax": syntax, "asked": setting, "images": len(images),
            "bytes": coded, "ratio": native / coded, "psnr_db": _psnr(squared / count, max(peaks)),
            "worst_psnr_db": worst, "ms_per_image": 1000 * seconds / len(images), "error": None}


def _stored(ds: Dataset) -> int:
    from pydicom.encaps import generate_frames

    return sum(len(f) for f in generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames") or 1)))


def _squared_error(source: Dataset, compressed: Dataset) -> float:
    """The decoded image mapped back through its rescale to the source's stored values, against them."""
    import numpy as np

    def rescale(ds: Dataset) -> tuple[float, float]:
        return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)

    (s0, i0), (s1, i1) = rescale(source), rescale(compressed)
    decoded = (compressed.pixel_array.astype(np.float64) * s1 + i1 - i0) / s0
    return float(np.sum((source.pixel_array.astype(np.float64) - decoded) ** 2))


def _psnr(mse: float, peak: float) -> float:
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def print_settings(rows: list[Json], out: TextIO) -> None:
    print("\nlossy settings: the first images of each data set through node.media.compress; PSNR over each source's "
          "range of values (all: the widest), decoded by pydicom; ms/image includes medianode's own decode to measure", file=out)
    print(f"  {'data':5} {'syntax':14} {'asked':12} {'images':>6} {'bytes':>11} {'ratio':>7} {'PSNR dB':>8} "
          f"{'worst dB':>8} {'ms/image':>9}", file=out)
    for r in rows:
        asked = " ".join(f"{k} {v:g}" for k, v in r["asked"].items())
        if r["error"]:
            print(f"  {r['data']:5} {r['syntax']:14} {asked:12} n/a: {r['error']}", file=out)
            continue
        print(f"  {r['data']:5} {r['syntax']:14} {asked:12} {r['images']:>6} {r['bytes']:>11,} "
              f"{fmt(r['ratio'], '.1f'):>7} {fmt(r['psnr_db'], '.1f'):>8} {fmt(r['worst_psnr_db'], '.1f'):>8} "
              f"{fmt(r['ms_per_image'], '.1f'):>9}", file=out)
