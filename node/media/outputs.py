"""Where a built medium goes, ``copies`` times: a folder of images, an optical drive (xorriso),
a disc-publishing robot's hot folder (:mod:`node.media.publisher`) or a mounted USB volume.

Each kind is a class of :data:`KINDS` (:func:`output_for`): the medium is built once where its
:meth:`~OutputKind.stage` says, as its :meth:`~OutputKind.staging_format` says; then
:meth:`~OutputKind.deliver` delivers it, from one worker per :attr:`~OutputKind.queue`. A copy that fails is not skipped: the output waits (``Waiter``, which
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
from functools import partial
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

from node import filemodes
from node.config import Output, PublisherOutput, UsbOutput, XorrisoOutput, output_kind
from node.durable import fsync_dir, published
from node.errors import BuildError
from node.media import folder, publisher
from node.media.content import FileSlice, MediaFile, copy_pieces
from node.media.waiting import Interrupted, Waiter
from node.words import counted

logger = logging.getLogger(__name__)

_FAT_MAX = 2**32 - 1  # FAT32 (the file system of most USB sticks) holds files below 4 GiB
_BLOCK = 32 * 1024  # FAT32's usual cluster on a stick: what a file really occupies, rounded up
_CHUNK = 8 << 20
#: The lines of xorriso's report that say why it failed (libburn and xorriso events of these severities).
_SEVERE = (" : SORRY : ", " : FAILURE : ", " : FATAL : ", " : ABORT : ")

O = TypeVar("O", Path, XorrisoOutput, PublisherOutput, UsbOutput)


class OutputKind(Generic[O]):
    """One kind of output: where a medium is staged (built), as what, and how it is delivered.

    Each configured output is an instance of its kind's class (:func:`output_for`); ``queue`` names
    the device or folder it delivers to, one delivery worker per queue, so that an output waiting for
    a blank disc holds only its own jobs.
    """

    #: The ``kind`` of :data:`node.config.OUTPUTS` this class delivers.
    name: ClassVar[str]
    #: True when the staged medium is itself the first deliverable (a folder of images); else it is
    #: removed once every copy is written.
    keeps_staged: ClassVar[bool] = False
    #: True when the output waits only for a blank medium (an operator's), never for a device at work.
    waits_for_media: ClassVar[bool] = False

    def __init__(self, output: O) -> None:
        self.output: O = output

    @property
    def queue(self) -> str:
        """The device or folder deliveries wait for, one at a time: ``xorriso /dev/sr0``."""
        raise NotImplementedError

    def staging_format(self) -> Literal["iso", "folder"] | None:
        """What the medium is built as: None lets the profile decide (an image, or a tree for USB profiles)."""
        return None

    def staging(self, data_dir: Path) -> Path:
        """The folder media are built in: ``data_dir/burning`` until every copy is written."""
        return data_dir / "burning"

    def stage(self, *, name: str, suffix: str, data_dir: Path) -> Path:
        """Where the medium is built, in :meth:`staging`."""
        return _place(self.staging(data_dir), f"{name}{suffix}")

    def deliver(self, medium: Path, *, copies: int, volume_id: str, label: Mapping[str, str],
                waiter: Waiter) -> list[str]:
        """Deliver ``medium`` (built at :meth:`stage`) ``copies`` times; return where each copy went."""
        raise NotImplementedError


class FolderOutput(OutputKind[Path]):
    """A folder of images (or USB folder trees): the medium is built in it, copies beside it."""

    name = "folder"
    keeps_staged = True

    @property
    def queue(self) -> str:
        return f"folder {self.output}"

    def staging(self, data_dir: Path) -> Path:
        return self.output

    def deliver(self, medium: Path, *, copies: int, volume_id: str, label: Mapping[str, str],
                waiter: Waiter) -> list[str]:
        suffix = medium.suffix
        return [str(medium), *(str(_publish_copy(medium, self.output / f"{medium.stem}_{n}{suffix}"))
                               for n in range(2, copies + 1))]


class RobotOutput(OutputKind[PublisherOutput]):
    """A disc-publishing robot's hot folder (:mod:`node.media.publisher`): the medium is built in it;
    an Epson robot is handed the file-set tree it masters itself (TD Bridge's ``DATA=``)."""

    name = "publisher"

    @property
    def queue(self) -> str:
        return f"{self.output.vendor} robot {self.output.hot_folder}"

    def staging_format(self) -> Literal["iso", "folder"] | None:
        return "folder" if self.output.vendor == "epson" else None

    def staging(self, data_dir: Path) -> Path:
        return self.output.hot_folder

    def stage(self, *, name: str, suffix: str, data_dir: Path) -> Path:
        return _place(self.output.hot_folder, name if self.output.vendor == "epson" else f"{name}{suffix}")

    def deliver(self, medium: Path, *, copies: int, volume_id: str, label: Mapping[str, str],
                waiter: Waiter) -> list[str]:
        robot = self.output
        job = publisher.RobotJob(medium.stem, medium, copies, volume_id, dict(label))
        return [_retrying(lambda: publisher.run(robot, job, waiter), robot.retries, robot.retry_wait_seconds,
                          waiter, lambda why: f"{robot.vendor} robot at {robot.hot_folder} failed, "
                                              f"submitting again: {why}")]


class _OneCopyAtATime(OutputKind[O]):
    """A device that takes one copy at a time, each waiting for its blank medium."""

    waits_for_media = True
    retries: int
    retry_wait_seconds: float

    def what(self) -> str:
        raise NotImplementedError

    def write(self, medium: Path) -> str:
        raise NotImplementedError

    def deliver(self, medium: Path, *, copies: int, volume_id: str, label: Mapping[str, str],
                waiter: Waiter) -> list[str]:
        done = []
        for n in range(1, copies + 1):
            waiting = f"waiting for {self.what()} (copy {n} of {copies})"
            done.append(_retrying(lambda: self.write(medium), self.retries, self.retry_wait_seconds, waiter,
                                  partial(_because, waiting)))
            logger.info("copy %d of %d written to %s", n, copies, done[-1])
        return done


class DriveOutput(_OneCopyAtATime[XorrisoOutput]):
    """An optical drive, written with xorriso."""

    name = "xorriso"

    def __init__(self, output: XorrisoOutput) -> None:
        super().__init__(output)
        self.retries, self.retry_wait_seconds = output.retries, output.retry_wait_seconds

    @property
    def queue(self) -> str:
        return f"xorriso {self.output.device}"

    def what(self) -> str:
        return f"a blank disc in {self.output.device}"

    def write(self, medium: Path) -> str:
        return _burn_copy(self.output, medium)


class UsbVolumeOutput(_OneCopyAtATime[UsbOutput]):
    """A mounted USB volume, written file by file (:func:`write_usb`)."""

    name = "usb"

    def __init__(self, output: UsbOutput) -> None:
        super().__init__(output)
        self.retries, self.retry_wait_seconds = output.retries, output.retry_wait_seconds

    @property
    def queue(self) -> str:
        return f"usb {self.output.mount_point}"

    def what(self) -> str:
        return f"an empty USB volume at {self.output.mount_point}"

    def write(self, medium: Path) -> str:
        return write_usb(self.output.mount_point, medium)


#: Output kinds by their ``kind`` name (:func:`node.config.output_kind`).
KINDS: dict[str, type[OutputKind[Any]]] = {k.name: k for k in (FolderOutput, DriveOutput, RobotOutput, UsbVolumeOutput)}


def output_for(output: Output) -> OutputKind[Any]:
    """The configured ``output`` as an instance of its kind's class."""
    return KINDS[output_kind(output)](output)


def _because(waiting: str, why: str) -> str:
    return f"{waiting}: {why}"


def _place(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def _retrying(attempt: Callable[[], str], retries: int, wait_s: float, waiter: Waiter,
              waiting: Callable[[str], str]) -> str:
    """``attempt()``, tried again after each failure (waiting ``wait_s``) up to ``retries`` more times."""
    for n in range(retries + 1):
        try:
            result = attempt()
        except BuildError as exc:
            if n == retries:
                raise BuildError(f"{exc} (tried {counted(retries + 1, 'time')})") from None
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
    ``dev=`` the drive or a ``stdio:`` pseudo-drive, ``speed=``). Never blanks a disc: a written write-once
    one fails. Overwriteable media (DVD-RAM, BD-RE, DVD+RW, and ``stdio:`` files) count as blank to
    cdrecord: the image is written from their first block, over whatever they held."""
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
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            filemodes.readable(fd)
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
