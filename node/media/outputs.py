"""Where a built medium goes, ``copies`` times: a folder of images, an optical drive (xorriso),
a disc-publishing robot's hot folder (:mod:`node.media.publisher`) or a mounted USB volume.

The medium is built once (:func:`build_target` says where, :func:`build_format` as what); then
:func:`publish` delivers it. A copy that fails is not skipped: the output waits (``Waiter``, which
``medianode status`` shows) and tries again, ``retries`` times, then raises a
:class:`~node.errors.BuildError` carrying the tool's own message. Nothing here deletes a study:
the job keeps its spool files until it succeeds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from node.config import Output, PublisherOutput, XorrisoOutput
from node.durable import fsync_dir, published
from node.errors import BuildError
from node.media import folder, publisher
from node.media.content import FileSlice, MediaFile, copy_pieces
from node.media.waiting import Interrupted, Waiter

logger = logging.getLogger(__name__)

_FAT_MAX = 2**32 - 1  # FAT32 (the file system of most USB sticks) holds files below 4 GiB
_BLOCK = 32 * 1024  # FAT32's usual cluster on a stick: what a file really occupies, rounded up
_CHUNK = 8 << 20
#: The lines of xorriso's report that say why it failed (libburn and xorriso events of these severities).
_SEVERE = (" : SORRY : ", " : FAILURE : ", " : FATAL : ", " : ABORT : ")


def build_format(output: Output) -> Literal["iso", "folder"] | None:
    """What the medium is built as: None lets the profile decide (an image, or a tree for USB profiles);
    an Epson robot is handed the file-set tree it masters itself (TD Bridge's ``DATA=``)."""
    if isinstance(output, PublisherOutput) and output.vendor == "epson":
        return "folder"
    return None


def build_target(output: Output, *, name: str, suffix: str, data_dir: Path) -> Path:
    """Where the medium is built: in the folder or hot folder it is published from, else under
    ``data_dir/burning`` until every copy is written."""
    if isinstance(output, Path):
        place = output
    elif isinstance(output, PublisherOutput):
        place, suffix = output.hot_folder, "" if output.vendor == "epson" else suffix
    else:
        place = data_dir / "burning"
    place.mkdir(parents=True, exist_ok=True)
    return place / f"{name}{suffix}"


def publish(output: Output, medium: Path, *, copies: int, volume_id: str, label: Mapping[str, str],
            waiter: Waiter) -> list[str]:
    """Deliver ``medium`` (built at :func:`build_target`) ``copies`` times; return where each copy went."""
    if isinstance(output, Path):
        suffix = medium.suffix
        return [str(medium), *(str(_publish_copy(medium, output / f"{medium.stem}_{n}{suffix}"))
                               for n in range(2, copies + 1))]
    if isinstance(output, PublisherOutput):
        job = publisher.RobotJob(medium.stem, medium, copies, volume_id, dict(label))
        return [_retrying(lambda: publisher.run(output, job, waiter), output.retries, output.retry_wait_seconds,
                          waiter, lambda why: f"{output.vendor} robot at {output.hot_folder} failed, "
                                              f"submitting again: {why}")]
    device = output
    if isinstance(device, XorrisoOutput):
        write: Callable[[], str] = lambda: _burn_copy(device, medium)
        what = f"a blank disc in {device.device}"
    else:
        write = lambda: write_usb(device.mount_point, medium)
        what = f"an empty USB volume at {device.mount_point}"
    done = []
    for n in range(1, copies + 1):
        waiting = f"waiting for {what} (copy {n} of {copies})"
        done.append(_retrying(write, device.retries, device.retry_wait_seconds, waiter,
                              lambda why, waiting=waiting: f"{waiting}: {why}"))  # type: ignore[misc]
        logger.info("copy %d of %d written to %s", n, copies, done[-1])
    return done


def _retrying(attempt: Callable[[], str], retries: int, wait_s: float, waiter: Waiter,
              waiting: Callable[[str], str]) -> str:
    """``attempt()``, tried again after each failure (waiting ``wait_s``) up to ``retries`` more times."""
    for n in range(retries + 1):
        try:
            result = attempt()
        except BuildError as exc:
            if n == retries:
                raise BuildError(f"{exc} (tried {retries + 1} time(s))") from None
            logger.warning("%s", waiting(str(exc)))
            if not waiter.wait(waiting(str(exc)), wait_s):
                raise Interrupted(str(exc)) from None
            continue
        waiter.clear()
        return result
    raise AssertionError("unreachable")


def _publish_copy(src: Path, dst: Path) -> Path:
    """Another copy of a published image (or folder), under a temporary name until complete."""
    with published(dst) as tmp:
        if src.is_dir():
            shutil.copytree(src, tmp)
        else:
            shutil.copyfile(src, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
    return dst


# -- xorriso ------------------------------------------------------------------------------


def _burn_copy(output: XorrisoOutput, image: Path) -> str:
    burn_disc(output, image)
    if output.verify:
        verify_disc(output, image)
    if output.eject:
        _xorriso(["-outdev", output.device, "-eject", "all"], output.device)
    return output.device


def burn_disc(output: XorrisoOutput, image: Path) -> None:
    """Write ``image`` as one closed session with xorriso's cdrecord emulation (xorriso(1), ``-as cdrecord``:
    ``dev=`` the drive or a ``stdio:`` pseudo-drive, ``speed=``). Never blanks a disc: a written one fails."""
    args = ["-as", "cdrecord", "-v", f"dev={output.device}"]
    if output.speed:
        args.append(f"speed={output.speed}")
    _xorriso([*args, str(image)], output.device)


def _xorriso(args: list[str], device: str) -> None:
    """Run xorriso (an argv list, no shell), aborting on the first FAILURE event (``-abort_on``)."""
    argv = ["xorriso", "-abort_on", "FAILURE", *args]
    try:
        done = subprocess.run(argv, check=False, capture_output=True, text=True, errors="replace", timeout=4 * 3600)
    except OSError as exc:
        raise BuildError(f"cannot run xorriso: {exc.strerror or exc}") from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"xorriso did not finish writing {device} in 4 hours") from None
    if done.returncode:
        lines = (done.stderr + done.stdout).splitlines()
        why = next((line.strip() for line in lines if any(s in line for s in _SEVERE)), f"exit status {done.returncode}")
        raise BuildError(f"xorriso could not write {device}: {why}")


def verify_disc(output: XorrisoOutput, image: Path) -> None:
    """Read the image's length back from the drive and compare SHA-256 digests (a closed session
    starts at block 0; a drive pads the track, so only the image's own bytes are compared)."""
    device = output.device.removeprefix("stdio:")
    size = image.stat().st_size
    want, got = hashlib.sha256(), hashlib.sha256()
    read = 0
    try:
        with open(image, "rb") as src, open(device, "rb") as disc:
            while chunk := src.read(_CHUNK):
                want.update(chunk)
                back = disc.read(len(chunk))
                got.update(back)
                read += len(back)
                if len(back) < len(chunk):
                    break
    except OSError as exc:
        raise BuildError(f"cannot read back {output.device}: {exc.strerror or exc}") from None
    if read < size:
        raise BuildError(f"verify failed: {output.device} holds {read:,} of the image's {size:,} bytes")
    if got.digest() != want.digest():
        raise BuildError(f"verify failed: the data read back from {output.device} differs from the image "
                         f"(SHA-256 {got.hexdigest()[:16]}..., expected {want.hexdigest()[:16]}...)")


# -- USB ----------------------------------------------------------------------------------


def write_usb(root: Path, tree: Path) -> str:
    """Copy the file-set ``tree`` onto the volume mounted at ``root``: refuse one that holds a medium
    already (a DICOMDIR) or lacks room; write and fsync every file, verify it byte for byte, then write
    the DICOMDIR last, under a temporary name renamed at the end: the commit point (PS3.10 8.6: the
    DICOMDIR is what makes a file-set), so a half-written stick never looks like a medium."""
    files = [MediaFile(p.relative_to(tree).parts, [FileSlice(str(p), 0, p.stat().st_size)])
             for p in sorted(tree.rglob("*")) if p.is_file()]
    dicomdir = next(f for f in files if f.components == ("DICOMDIR",))
    rest = [f for f in files if f is not dicomdir]
    _check_volume(root, files)
    created = sorted({f.components[0] for f in rest})
    tmp = root / ".DICOMDIR.part"
    try:
        folder.write_tree(rest, root, existing=True)
        folder.verify_files(root, rest)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            copy_pieces(dicomdir.pieces, fd, 0, lambda n: None)
            os.fsync(fd)
        finally:
            os.close(fd)
        folder.verify_files(root, [MediaFile((tmp.name,), dicomdir.pieces)])
        os.rename(tmp, root / "DICOMDIR")
        fsync_dir(root)
    except (OSError, BuildError) as exc:
        for name in created:  # what we wrote, never what was there (_check_volume refused any clash)
            shutil.rmtree(root / name, ignore_errors=True)
        tmp.unlink(missing_ok=True)
        why = exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
        raise BuildError(f"cannot write the USB volume {root}: {why}") from None
    return str(root)


def _check_volume(root: Path, files: list[MediaFile]) -> None:
    if not root.is_dir():
        raise BuildError(f"no USB volume is mounted at {root}")
    present = {p.name.upper() for p in root.iterdir()}
    if "DICOMDIR" in present:
        raise BuildError(f"{root} already holds a DICOMDIR: insert an empty USB stick")
    clash = sorted({f.components[0] for f in files} & present)
    if clash:
        raise BuildError(f"{root} already holds {clash[0]}: insert an empty USB stick")
    big = next((f for f in files if f.size > _FAT_MAX), None)
    if big is not None:
        raise BuildError(f"{big.relpath} is {big.size:,} bytes: a USB (FAT) volume holds files below 4 GiB")
    need = sum(-(-f.size // _BLOCK) * _BLOCK for f in files)
    st = os.statvfs(root)
    free = st.f_bavail * st.f_frsize
    if need > free:
        raise BuildError(f"{root} has {free / 1e6:,.1f} MB free; the file-set needs {need / 1e6:,.1f} MB")
