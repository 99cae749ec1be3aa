"""Disc-publishing robots driven through their hot folders: Epson Discproducer (TD Bridge JDF job
files) and Rimage (Network Publisher ``.NWP`` order files). Not yet verified on hardware.

Both take a text job file dropped into a monitored folder and report by renaming it:

* **Epson TD Bridge** (*TD Bridge Technical Reference Guide*, Seiko Epson M00009302 / M00009311,
  chapter 4 "Development Guide for a Cooperative Application": "JDF File", "Setting Item List",
  "JDF File Transition", "STF File"): ``KEY=value`` lines, keys case-sensitive; the file moves
  ``JDF -> RJD -> INP -> DON`` (done) or ``ERR`` (error, the code in the ``[JOB_ID]`` section's
  ``ERROR`` key of the status file ``TDBStatus.txt``); ``CDN`` / ``CER`` when cancelled. A data disc
  names its source with ``DATA=`` (a folder: its content becomes the disc root) and TD Bridge masters
  the image: we give it the file-set tree, whose File IDs are ISO 9660 level 1 names, and
  ``FORMAT=ISO9660L2`` (the documented example's value, plain ISO 9660 without Joliet), so the
  volume holds only level-1 names as PS3.12 asks.
* **Rimage Network Publisher** order files as the *Copytrax Disc Manager* appendix "NWP - Rimage
  Network Publisher" lists them: lowercase ``key=value`` lines (``order_id``, ``filetype=IMAGE``,
  ``file`` the ISO, ``volume``, ``label``, ``merge``, ``copies``); the file moves ``NWP -> INP ->
  DON`` or ``ERR`` with a ``.LOG`` file describing the error. The order names our own ISO image.

A job file is written under a temporary name and renamed (robots take whatever appears), with
Windows line ends. The label fields go to a merge file, one value per line in :data:`LABEL_FIELDS`
order, only when a label design is configured: the volume's label record, then what a media creation
request asked for (its Label Text, Label Style Selection, Barcode Value and Symbology; empty otherwise).
"""

from __future__ import annotations

import configparser
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from node.config import PublisherOutput
from node.durable import write_atomic
from node.errors import BuildError
from node.media.waiting import Interrupted, Waiter
from node.words import counted

logger = logging.getLogger(__name__)

#: The label record's fields.
RECORD_LABEL_FIELDS = ("patient_name", "patient_id", "birth_date", "study_dates", "study_descriptions", "modalities",
                       "institution", "created", "content", "volume")
#: A media creation request's label attributes (:mod:`node.receive.mcm`'s keys).
REQUEST_LABEL_FIELDS = ("label_text", "label_style", "barcode_value", "barcode_symbology")
#: The label fields, in the order of the merge file's lines.
LABEL_FIELDS = (*RECORD_LABEL_FIELDS, *REQUEST_LABEL_FIELDS)


def label_fields(record: Mapping[str, object], request: Mapping[str, object] | None = None) -> dict[str, str]:
    """The :data:`LABEL_FIELDS` of a volume's label record (:meth:`node.media.label.Label.to_dict`) and of the
    media request its job was cut for, as text.

    >>> fields = label_fields({"modalities": ["CT", "MR"]}, {"barcode_value": "12345", "modalities": "XA"})
    >>> fields["modalities"], fields["barcode_value"], fields["label_text"]
    ('CT, MR', '12345', '')
    """
    fields = {}
    for key in LABEL_FIELDS:
        source = (request or {}) if key in REQUEST_LABEL_FIELDS else record
        value = source.get("volume_text" if key == "volume" else key, "")
        fields[key] = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return fields


#: Job file extensions as the robot renames them: (job file, done, failed, in progress...).
_EPSON = {"job": "JDF", "done": ("DON",), "failed": ("ERR", "CDN", "CER")}
_RIMAGE = {"job": "NWP", "done": ("DON",), "failed": ("ERR",)}


@dataclass(frozen=True)
class RobotJob:
    """One robot job: ``medium`` (an ISO for Rimage, the file-set tree for Epson) made ``copies`` times."""

    name: str
    medium: Path
    copies: int
    volume_id: str
    label: Mapping[str, str]


def job_text(output: PublisherOutput, job: RobotJob) -> str:
    """The job file's content (Windows line ends, ASCII as TD Bridge's "ANSI text" asks)."""
    merge = _robot_path(output, job.medium.with_name(f"{job.name}_LABEL.TXT")) if output.label_template else None
    if output.vendor == "epson":
        lines = [f"JOB_ID={job.name[:40]}",
                 *([f"PUBLISHER={output.publisher}"] if output.publisher else []),
                 f"COPIES={job.copies}",
                 f"DISC_TYPE={output.media}",
                 "FORMAT=ISO9660L2",
                 f"DATA={_robot_path(output, job.medium)}",
                 f"VOLUME_LABEL={job.volume_id}",
                 *([f"LABEL={output.label_template}", f"REPLACE_FIELD={merge}"] if merge else [])]
    else:
        lines = [f"order_id={job.name}",
                 "filetype=IMAGE",
                 f"file={_robot_path(output, job.medium)}",
                 f"volume={job.volume_id}",
                 *([f"label={output.label_template}", f"merge={merge}"] if merge else []),
                 f"copies={job.copies}"]
    return "".join(f"{line}\r\n" for line in lines)


def merge_text(label: Mapping[str, str]) -> str:
    """The label fields, one per line in :data:`LABEL_FIELDS` order (a missing one is an empty line)."""
    return "".join(f"{_one_line(label.get(k, ''))}\r\n" for k in LABEL_FIELDS)


def run(output: PublisherOutput, job: RobotJob, waiter: Waiter) -> str:
    """Submit ``job`` and watch the robot until it is done; return the job file; raise BuildError when
    the robot reports an error or does not finish within ``timeout_seconds``."""
    kind = _EPSON if output.vendor == "epson" else _RIMAGE
    base = output.hot_folder / job.name
    for old in _existing(base):  # a resubmission after an error
        old.unlink()
    if output.label_template:
        write_atomic(base.with_name(f"{job.name}_LABEL.TXT"), merge_text(job.label).encode("ascii", "replace"))
    job_file = base.with_name(f"{job.name}.{kind['job']}")  # written as .NAME.JDF.*.part, then renamed
    write_atomic(job_file, job_text(output, job).encode("ascii", "replace"))
    logger.info("%s robot: job %s submitted in %s, %s", output.vendor, job.name, output.hot_folder,
                counted(job.copies, "copy"))
    deadline = time.monotonic() + output.timeout_seconds
    while True:
        state = _state(base)
        if state in kind["done"]:
            return str(job_file)
        if state in kind["failed"]:
            raise BuildError(f"the {output.vendor} robot failed job {job.name} ({state}): {_why(output, base, state)}")
        if time.monotonic() > deadline:
            raise BuildError(f"the {output.vendor} robot has not finished job {job.name} in "
                             f"{output.timeout_seconds:g} s (its job file is {state or 'gone'})")
        message = f"waiting for the {output.vendor} robot at {output.hot_folder}: job {job.name} is {state or 'gone'}"
        if not waiter.wait(message, output.poll_seconds):
            raise Interrupted(message)


def _existing(base: Path) -> list[Path]:
    return [p for p in base.parent.glob(f"{base.name}.*") if p.suffix[1:].upper() in _ALL]


_ALL = {"JDF", "RJD", "INP", "STP", "DON", "ERR", "CDN", "CER", "NWP", "LOG"}


def _state(base: Path) -> str:
    """The extension the robot has given the job file now ('' while it is being renamed)."""
    found = {p.suffix[1:].upper() for p in _existing(base)} - {"LOG"}
    return min(found) if found else ""


def _why(output: PublisherOutput, base: Path, state: str) -> str:
    """The robot's reason: Epson's ERROR code in TDBStatus.txt, Rimage's .LOG file."""
    if output.vendor == "rimage":
        log = next((p for p in _existing(base) if p.suffix.upper() == ".LOG"), None)
        text = log.read_text(errors="replace").strip() if log else ""
        return _one_line(text) or "no .LOG file"
    status = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        status.read(output.hot_folder / "TDBStatus.txt", encoding="latin-1")
    except configparser.Error as exc:
        return f"TDBStatus.txt unreadable: {_one_line(str(exc))}"
    section = base.name[:40]
    if not status.has_section(section):
        return "cancelled" if state in ("CDN", "CER") else "no entry in TDBStatus.txt"
    return f"error code {status.get(section, 'ERROR', fallback='?')} (TDBStatus.txt)"


def _robot_path(output: PublisherOutput, path: Path) -> str:
    """``path`` (in the hot folder) as the robot's computer names it."""
    if not output.robot_path:
        return str(path)
    return str(PureWindowsPath(output.robot_path, *path.relative_to(output.hot_folder).parts))


def _one_line(text: str) -> str:
    return " ".join(text.split())
