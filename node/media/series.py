"""Smallest / Largest Pixel Value in Series (0028,0108 / 0109) of lossy images, from their whole series.

Lossy compression changes the values, so seed Appendix B.2 has the series bounds "coerced to the
correct value if it can be computed, or dropped if it cannot". :func:`node.media.compress.compress`
drops them and writes each image's own Smallest / Largest Image Pixel Value, measured on the decoded
image. Once every image of a burn is written, :func:`coerce` takes each series that holds a lossy
image, reads the bounds of every image of it on the medium (a lossy image's from the values just
measured, any other's from its pixels), and writes the series' bounds into its lossy images. They
can be computed only when every image stores its values the same way (one sample, the same Pixel
Representation, Bits Stored and rescale): otherwise they stay dropped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from node import syntaxes
from node.media.sources import SourceInstance, instance, read
from node.media.transcode import write
from node.tags import SERIES_INSTANCE_UID

if TYPE_CHECKING:
    import numpy as np
    from pydicom import Dataset

#: Smallest / Largest Pixel Value in Series (PS3.3 C.7.3.1): US or SS as Pixel Representation says.
SERIES_RANGE = (0x00280108, 0x00280109)


@dataclass(frozen=True)
class Bounds:
    """The smallest and largest stored value of one image, and how its values are stored."""

    low: int
    high: int
    #: (Pixel Representation, Bits Stored, Rescale Slope, Rescale Intercept): the series' images
    #: must agree on it for their bounds to be one series' bounds.
    domain: tuple[int, int, float, float]


def coerce(instances: list[SourceInstance], lossy: set[int], staging: str) -> None:
    """Write the bounds of its series into each lossy image (``lossy``: indexes into ``instances``),
    in place: a rewritten image replaces its entry."""
    series: dict[str, list[int]] = {}
    for n, inst in enumerate(instances):
        if inst.record_type == "IMAGE" and inst.header.has_pixels:
            series.setdefault(inst.text(SERIES_INSTANCE_UID), []).append(n)
    for members in series.values():
        mine = [n for n in members if n in lossy]
        if not mine:
            continue
        bounds = [bounds_of(instances[n].header.path, measured=n in lossy) for n in members]
        if any(b is None for b in bounds) or len({b.domain for b in bounds if b}) != 1:
            continue  # not one way of storing values: the series bounds cannot be computed, they stay dropped
        low, high = min(b.low for b in bounds if b), max(b.high for b in bounds if b)
        for n in mine:
            instances[n] = _write_bounds(instances[n], low, high, os.path.join(staging, f"S{n:07d}"))


def bounds_of(path: str, *, measured: bool) -> Bounds | None:
    """The bounds of the image in ``path``: from its Smallest / Largest Image Pixel Value when they were
    ``measured`` on its decoded pixels by this burn, else from its pixels; None for colour."""
    from pydicom import dcmread

    ds = dcmread(path, force=True, stop_before_pixels=measured)
    if int(ds.get("SamplesPerPixel", 1)) != 1 or "ModalityLUTSequence" in ds:
        return None
    domain = (int(ds.get("PixelRepresentation", 0)), int(ds.BitsStored), float(ds.get("RescaleSlope", 1) or 1),
              float(ds.get("RescaleIntercept", 0) or 0))
    if measured:
        if "SmallestImagePixelValue" not in ds or "LargestImagePixelValue" not in ds:
            return None
        return Bounds(int(ds.SmallestImagePixelValue), int(ds.LargestImagePixelValue), domain)
    arr = _pixels(ds)
    return Bounds(int(arr.min()), int(arr.max()), domain)


def _pixels(ds: Dataset) -> np.ndarray:
    from node import pixels

    if str(ds.file_meta.TransferSyntaxUID) not in syntaxes.NATIVE:
        pixels.decompress(ds)
    return pixels.native_frames(ds)


def set_bounds(ds: Dataset, low: int, high: int) -> None:
    """Smallest / Largest Pixel Value in Series, US or SS as ``ds``'s Pixel Representation says."""
    vr = "SS" if ds.get("PixelRepresentation", 0) == 1 else "US"
    for tag, value in zip(SERIES_RANGE, (low, high)):
        ds.add_new(tag, vr, value)


def _write_bounds(inst: SourceInstance, low: int, high: int, dest: str) -> SourceInstance:
    from pydicom import dcmread

    ds = dcmread(inst.header.path, force=True)
    set_bounds(ds, low, high)
    write(ds, dest, inst.header.transfer_syntax)
    written = instance(read(dest), source=inst.source)
    if written is None:  # pragma: no cover - we just wrote its identity
        raise ValueError(f"{dest} lost its SOP identity")
    written.conversion = inst.conversion
    return written
