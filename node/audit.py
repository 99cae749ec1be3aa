"""The audit trail: each event the node records, as a JSON line and, when ``audit.syslog`` is set, as
IHE ATNA audit messages (PS3.15 A.5, :mod:`node.atna`) sent by syslog (:mod:`node.syslog`).

:func:`append` is the one call of every event site. The JSON line goes to ``data_dir/audit.jsonl``
(who, what, when) in one ``write`` on an ``O_APPEND`` descriptor, so the receiver processes and the
service never interleave; an unwritable log raises ``OSError`` as before. The ATNA messages never
raise and never wait: a message that cannot be built or sent is logged and counted, and the event
site goes on. :data:`MESSAGES` says which event becomes which message.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from node import atna, syslog
from node.atna import Event, Participant, Thing
from node.config import Config
from node.errors import ConfigError, UsageError

logger = logging.getLogger(__name__)

FILE = "audit.jsonl"


def append(config: Config, event: str, **fields: object) -> None:
    """Record one event: its ATNA messages queued for the collector, then its JSON line appended."""
    now = datetime.now(UTC).astimezone()
    if config.audit.syslog is not None:
        _send(config, event, fields, now)
    line = json.dumps({"time": now.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event, **fields}, sort_keys=True)
    fd = os.open(config.node.data_dir / FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read(config: Config, *, since: datetime | None = None) -> Iterator[str]:
    """The audit log's lines (``medianode audit``), those at or after ``since`` when given (a line that is
    not an event is never hidden); the reading is itself an event, ``audit-log-read`` (Audit Log Used).
    :class:`ConfigError` when the node has no audit log yet."""
    path = config.node.data_dir / FILE
    try:
        log = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: has medianode serve run with {config.source}?") from None
    with log:
        append(config, "audit-log-read", path=str(path), user=user(), since=since.isoformat() if since else None)
        for line in log:
            if since is None or (when := _time_of(line)) is None or when >= since:
                yield line


def _time_of(line: str) -> datetime | None:
    try:
        return datetime.strptime(json.loads(line)["time"], "%Y-%m-%dT%H:%M:%S%z")
    except (ValueError, KeyError, TypeError):
        return None


def parse_since(text: str) -> datetime:
    """``--since``: an ISO 8601 date or date and time, local time unless it names its offset.

    >>> parse_since("2026-01-31T08:00+01:00").isoformat()
    '2026-01-31T08:00:00+01:00'
    >>> parse_since("yesterday")
    Traceback (most recent call last):
    node.errors.UsageError: --since: 'yesterday' is not a date or time such as 2026-01-31 or 2026-01-31T08:00
    """
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since: {text!r} is not a date or time such as 2026-01-31 or 2026-01-31T08:00") from None
    return when if when.tzinfo else when.astimezone()


def user() -> str:
    """The account this process runs as (the person or service behind a command)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's bare UID)
        return str(os.getuid())


def _send(config: Config, event: str, fields: Mapping[str, Any], now: datetime) -> None:
    settings = config.audit.syslog
    assert settings is not None
    try:
        events = MESSAGES[event](config, fields) if event in MESSAGES else []
        out = syslog.sender(settings)
        for e in events:
            xml = atna.message(e, when=now.isoformat(timespec="milliseconds"), source_id=config.node.ae_title)
            out.send(syslog.frame(xml, when=now, warning=e.outcome != atna.SUCCESS))
    except Exception:  # a bug in a mapping must not reach the C-STORE, the burn or the import it audits
        logger.exception("audit: the ATNA message of %s could not be made", event)


# -- which event is which message (PS3.15 A.5.3) ---------------------------------------------------------

def _us(config: Config, *, requestor: bool, role: atna.Code | None = None) -> Participant:
    """This process: its ID, our AE title (A.5.2.1 AETITLES=), this machine."""
    return Participant(str(os.getpid()), requestor, role, ae_titles=(config.node.ae_title,),
                       address=socket.gethostname())


def _person(role: atna.Code | None = None) -> Participant:
    return Participant(user(), True, role)


def _peer(peer: object) -> str:
    """``host:port`` (or ``[v6]:port``) -> host."""
    host = str(peer).rsplit(":", 1)[0] if ":" in str(peer) else str(peer)
    return host.strip("[]")


def _activity(start: bool) -> Callable[[Config, Mapping[str, Any]], list[Event]]:
    def messages(config: Config, f: Mapping[str, Any]) -> list[Event]:
        return [Event(atna.APPLICATION_ACTIVITY, "E", atna.SUCCESS,
                      (_us(config, requestor=False, role=atna.APPLICATION), _person(atna.APPLICATION_LAUNCHER)),
                      types=(atna.APPLICATION_START if start else atna.APPLICATION_STOP,))]
    return messages


def _by_patient(studies: object) -> list[list[Mapping[str, Any]]]:
    """Studies grouped by patient: IHE's transfer messages each name one patient."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for s in studies if isinstance(studies, list) else []:
        groups.setdefault(str(s.get("patient_id") or ""), []).append(s)
    return list(groups.values())


def _received(config: Config, f: Mapping[str, Any]) -> list[Event]:
    """A.5.3.4 DICOM Instances Transferred, per association and patient: the caller sent, we created."""
    caller = Participant(str(f["calling_aet"]), True, atna.SOURCE, ae_titles=(str(f["calling_aet"]),),
                         address=_peer(f["peer"]))
    us = Participant(str(os.getpid()), False, atna.DESTINATION, ae_titles=(str(f["called_aet"]),),
                     address=socket.gethostname())
    return [Event(atna.INSTANCES_TRANSFERRED, "C", atna.SUCCESS, (caller, us), atna.studies_and_patients(group))
            for group in _by_patient(f.get("studies"))]


def _destination(f: Mapping[str, Any]) -> Participant:
    """``import.destination`` as ``AET@host:port``."""
    aet, _, where = str(f.get("destination") or "?@?").partition("@")
    return Participant(aet, False, atna.DESTINATION, ae_titles=(aet,), address=_peer(where) or None)


def _import_started(config: Config, f: Mapping[str, Any]) -> list[Event]:
    """A.5.3.2 Begin Transferring DICOM Instances: an import starts sending (its studies are not read yet)."""
    return [Event(atna.BEGIN_TRANSFERRING, "E", atna.SUCCESS,
                  (_us(config, requestor=True, role=atna.SOURCE), _destination(f)),
                  (_medium_thing(f),))]


def _medium_thing(f: Mapping[str, Any]) -> Thing:
    medium = Path(str(f["medium"]))
    return Thing(medium.absolute().as_uri(), atna.URI, medium.name or str(medium))


def _imported(config: Config, f: Mapping[str, Any]) -> list[Event]:
    """A.5.3.6 Data Import (the medium read), and A.5.3.4 DICOM Instances Transferred per patient (sent
    to ``import.destination``)."""
    outcome = atna.SUCCESS if not f.get("failed") and f.get("sent") else atna.MINOR_FAILURE
    if not f.get("sent"):
        outcome = atna.SERIOUS_FAILURE
    medium = str(f["medium"])
    source = Participant(medium, False, atna.SOURCE_MEDIA, media=_media_type(medium, str(f.get("kind"))))
    objects = atna.studies_and_patients(f.get("studies") or [])
    events = [Event(atna.DATA_IMPORT, "C", outcome, (source, _us(config, requestor=True, role=atna.DESTINATION)),
                    objects or (_medium_thing(f),), description=str(f.get("reason") or "") or None)]
    events += [Event(atna.INSTANCES_TRANSFERRED, "C", outcome,
                     (_us(config, requestor=True, role=atna.SOURCE), _destination(f)),
                     atna.studies_and_patients(group)) for group in _by_patient(f.get("studies"))]
    return events


def _media_type(what: str, kind: str) -> atna.Code:
    """CID 405 for a medium: a drive's disc is a CD or DVD, a mounted medium a USB disk, an image a URI."""
    if kind == "drive":
        return atna.DVD if "DVD" in what.upper() else atna.CD
    if kind == "mount":
        return atna.USB
    return atna.URI_MEDIUM


def _exported(config: Config, f: Mapping[str, Any]) -> list[Event]:
    """A.5.3.5 Data Export: each medium made (a volume burned, written or published)."""
    profile = str(f.get("profile") or "")
    media = atna.USB if "USB" in profile else atna.DVD if "DVD" in profile else atna.CD if "CD" in profile \
        else atna.URI_MEDIUM
    paths = f.get("paths") or []
    medium = Participant(str(f["label"]), False, atna.DESTINATION_MEDIA, media=media,
                         name=str(paths[0]) if paths else None)
    studies = [{"study_uid": s[0], "patient_id": s[1], "patient_name": s[2]} for s in f.get("patients") or []]
    return [Event(atna.DATA_EXPORT, "R", atna.SUCCESS, (_us(config, requestor=True, role=atna.SOURCE), medium),
                  atna.studies_and_patients(studies))]


def _deleted(config: Config, f: Mapping[str, Any]) -> list[Event]:
    """A.5.3.8 DICOM Study Deleted: the spool's retention removed a study's instances."""
    return [Event(atna.STUDY_DELETED, "D", atna.SUCCESS, (_us(config, requestor=True),),
                  atna.studies_and_patients([f]))]


def _refused(config: Config, f: Mapping[str, Any]) -> list[Event]:
    """A.5.3.11 Security Alert (Node Authentication) for an association refused, whatever the reason."""
    address = _peer(f.get("peer") or "")
    peer = Participant(str(f.get("calling_aet") or "?"), False, ae_titles=(str(f.get("calling_aet") or "?"),),
                       address=address or None)
    reason = str(f.get("reason") or "refused")
    subject = Thing(address or "?", atna.NODE_ID, str(f.get("peer") or "?"),
                    details=(("Alert Description", f"association to {f.get('called_aet')} refused: {reason}"),))
    return [Event(atna.SECURITY_ALERT, "E", atna.MINOR_FAILURE, (_us(config, requestor=True), peer), (subject,),
                  types=(atna.NODE_AUTHENTICATION,), description=reason)]


def _reloaded(config: Config, f: Mapping[str, Any]) -> list[Event]:
    """A.5.3.11 Security Alert (Software Configuration): the configuration reloaded, or a reload refused."""
    source = Path(str(f["source"]))
    ok = bool(f.get("ok"))
    subject = Thing(source.absolute().as_uri(), atna.URI, str(source),
                    details=(("Alert Description", "reloaded" if ok else f"refused: {f.get('reason')}"),))
    return [Event(atna.SECURITY_ALERT, "E", atna.SUCCESS if ok else atna.MINOR_FAILURE,
                  (_us(config, requestor=True),), (subject,), types=(atna.SOFTWARE_CONFIGURATION,),
                  description=None if ok else str(f.get("reason")))]


def _log_used(config: Config, f: Mapping[str, Any]) -> list[Event]:
    """A.5.3.3 Audit Log Used: someone read the audit log through ``medianode audit``."""
    log = Thing(Path(str(f["path"])).absolute().as_uri(), atna.URI, "Security Audit Log", role="13")
    return [Event(atna.AUDIT_LOG_USED, "R", atna.SUCCESS, (_us(config, requestor=False), _person()), (log,))]


def _person_at(f: Mapping[str, Any]) -> Participant:
    """The console's user of an event (``user``), from the address their browser came from (``address``)."""
    return Participant(str(f.get("user") or "?"), True, address=str(f["address"]) if f.get("address") else None)


def _authentication(login: bool) -> Callable[[Config, Mapping[str, Any]], list[Event]]:
    """A.5.3.12 User Authentication: a console sign-in (failed ones a minor failure, with their reason), a
    sign-out; the node is the authenticator."""
    def messages(config: Config, f: Mapping[str, Any]) -> list[Event]:
        failed = str(f.get("reason") or "") if login else ""
        return [Event(atna.USER_AUTHENTICATION, "E", atna.MINOR_FAILURE if failed else atna.SUCCESS,
                      (_person_at(f), _us(config, requestor=False)), types=(atna.LOGIN if login else atna.LOGOUT,),
                      description=failed or None)]
    return messages


def _searched(config: Config, f: Mapping[str, Any]) -> list[Event]:
    """A.5.3.10 Query: a patient search on the console's Volumes page. It is no DICOM query, so the object
    is the search as a URI of the console's own page, its terms as the name."""
    terms = {k: str(f[k]) for k in ("patient_name", "patient_id", "accession_number") if f.get(k)}
    query = "/volumes?" + "&".join(f"{k}={v}" for k, v in terms.items())
    thing = Thing(query, atna.URI, " ".join(f"{k}={v}" for k, v in terms.items()) or "all", role="3")
    return [Event(atna.QUERY, "E", atna.SUCCESS, (_person_at(f), _us(config, requestor=False)), (thing,))]


#: The query models reconciliation uses (``query`` events' ``model``) -> their C-FIND SOP Class UID (PS3.4).
QUERY_MODELS = {"MWL": "1.2.840.10008.5.1.4.31", "Study Root": "1.2.840.10008.5.1.4.1.2.2.1",
                "Patient Root": "1.2.840.10008.5.1.4.1.2.1.1"}


def _query(config: Config, f: Mapping[str, Any]) -> list[Event]:
    """A.5.3.10 Query: a C-FIND of reconciliation (we ask, the worklist or the archive answers); the keys
    asked are the ParticipantObjectQuery, the SOP Class UID of the model its ID."""
    aet, _, where = str(f.get("where") or "?@?").partition("@")
    peer = Participant(aet, False, atna.DESTINATION, ae_titles=(aet,), address=_peer(where) or None)
    model = str(f.get("model") or "")
    keys = json.dumps(f.get("keys") or {}, sort_keys=True, ensure_ascii=False)
    query = Thing(QUERY_MODELS.get(model, model or "?"), atna.SOP_CLASS_UID, model or "?", role="3", query=keys,
                  details=(("TransferSyntax", "1.2.840.10008.1.2"),))
    ok = bool(f.get("ok"))
    return [Event(atna.QUERY, "E", atna.SUCCESS if ok else atna.MINOR_FAILURE,
                  (_us(config, requestor=True, role=atna.SOURCE), peer), (query,),
                  description=None if ok else str(f.get("reason") or "failed"))]


#: JSON event -> its ATNA messages. ``study-received`` (a job cut for a quiet study) and
#: ``import-skipped`` (a medium imported before, not sent again) are JSON lines only.
MESSAGES: dict[str, Callable[[Config, Mapping[str, Any]], list[Event]]] = {
    "node-started": _activity(True),
    "node-stopped": _activity(False),
    "instances-received": _received,
    "import-started": _import_started,
    "import-done": _imported,
    "import-failed": _imported,
    "volume-burned": _exported,
    "study-deleted": _deleted,
    "association-refused": _refused,
    "config-reloaded": _reloaded,
    "audit-log-read": _log_used,
    "user-signed-in": _authentication(True),
    "user-sign-in-failed": _authentication(True),
    "user-signed-out": _authentication(False),
    "patient-search": _searched,


    "query": _query,
}
