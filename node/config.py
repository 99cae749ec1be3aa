"""The YAML configuration, parsed once into frozen, typed objects.

Every error names the file, the line and the key
(``config/medianode.yaml:14 routes[0].profile: 'STD-GEN-BR' is not one of ...``)
and is a :class:`~node.errors.ConfigError` (exit 2). Nothing here calls
``sys.exit`` or opens a socket. This module is the medianode schema: its
dataclasses and the table of checks each key is read with; the checks and the
``file:line key: reason`` machinery are :mod:`node.yamlcheck`'s.
"""

from __future__ import annotations

import grp
import ipaddress
import os
import re
import socket
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from node.errors import ConfigError
from node.profiles import PROFILES, compressions
from node.syntaxes import COMPRESS, SETTINGS, Compression
from node.tls import client_context, failure
from node.yamlcheck import (
    At,
    Check,
    absolute,
    boolean,
    build,
    choice,
    compose,
    describe,
    fields,
    file,
    folder,
    is_null,
    items,
    many,
    number,
    optional,
    path,
    read_text,
    section,
    short,
    string,
)

Action = Literal["burn", "store", "reject"]
Group = Literal["study", "patient"]
VolumeKind = Literal["archive", "backup"]
#: What an output kind can deliver: a disc image, a USB folder tree, or either (a folder).
Takes = Literal["image", "tree", "any"]


@dataclass(frozen=True)
class TLS:
    """TLS for the Storage SCP (PS3.15 B.9): our certificate and key, the CA that signs callers."""

    #: Our certificate (PEM), presented to every peer.
    certificate: Path
    #: Its private key (PEM, unencrypted: a service cannot be asked for a pass phrase).
    key: Path
    #: The CA (PEM) that must have signed every caller's certificate; None asks callers for none.
    ca: Path | None = None


#: A network calling AE titles may come from (``node.allowed_peers``); one address is a /32 or /128.
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ClientTLS:
    """TLS for a connection we open (PS3.15 B.9): the CA the peer's certificate must chain to, and
    our certificate and key for a peer that asks for one (both or neither). See :func:`node.tls.client_context`."""

    #: The CA (PEM) the peer's certificate must chain to; the system's trust store is not used.
    ca: Path
    #: Our certificate (PEM), for a peer that asks for one; with ``key``.
    certificate: Path | None = None
    #: Its private key (PEM, unencrypted: a service cannot be asked for a pass phrase).
    key: Path | None = None


#: The Maximum Length we advertise when ``node.max_pdu`` is 0: receive speed levels off above it
#: (README "Security"), and each receiver reads at most this much of one PDU into memory.
DEFAULT_MAX_PDU = 1 << 16
#: The largest ``node.max_pdu``: no peer is owed more memory per PDU.
MAX_PDU_LIMIT = 1 << 24
#: The most copies of a medium a route (or a re-burn) may ask for.
MAX_COPIES = 99


@dataclass(frozen=True)
class NodeIdentity:
    """``node.identity``: the node as the General Equipment module (PS3.3 C.7.5.1) of the instances it makes
    from files (:mod:`node.media.capture`). Empty is unknown: written empty where the IOD allows, never invented."""

    #: Station Name (0008,1010), SH.
    station_name: str = ""
    #: Manufacturer's Model Name (0008,1090), LO.
    manufacturer_model_name: str = ""
    #: Device Serial Number (0018,1000), LO.
    device_serial_number: str = ""
    #: Institutional Department Name (0008,1040), LO.
    department: str = ""
    #: Institution Address (0008,0081), ST.
    institution_address: str = ""


@dataclass(frozen=True)
class NodeConfig:
    #: Our AE title: the called AE title of the Storage SCP, and the calling one of our SCUs.
    ae_title: str = "MEDIANODE"
    #: The address the Storage SCP listens on: an IP address, or a host name that resolves when the file is read.
    host: str = "127.0.0.1"
    #: The TCP port the Storage SCP listens on.
    port: int = 11112
    #: Where the spool, the index, temporary files and the audit log are kept.
    data_dir: Path = Path("./var")
    #: Calling AE titles allowed to associate from any address; empty (and no allowed_peers) means any.
    allowed_calling_aets: tuple[str, ...] = ()
    #: Calling AE titles, each allowed to associate only from its addresses or networks (CIDR, IPv4 or IPv6).
    allowed_peers: tuple[tuple[str, tuple[Network, ...]], ...] = ()
    #: Private storage SOP classes accepted besides pynetdicom's storage classes.
    extra_sop_classes: tuple[str, ...] = ()
    #: Receiver processes; they share one listening socket, and the least busy accepts each new association.
    workers: int = 2
    #: Concurrent associations per receiver process.
    max_associations: int = 16
    #: C-STORE is refused with Out of Resources (0xA700) below this free space in data_dir.
    min_free_mb: int = 500
    #: Maximum PDU length we advertise and receive (PS3.8 D.1.1); 0 means our default, 64 KiB; never unlimited.
    max_pdu: int = 0
    #: Seconds an established association may stay silent before it is released.
    idle_seconds: float = 60.0
    #: Seconds a new connection has to send its whole A-ASSOCIATE-RQ (ARTIM, PS3.8 9.1.5).
    artim_seconds: float = 30.0
    #: Seconds each later PDU has to arrive whole, from its first byte.
    pdu_seconds: float = 30.0
    #: Connections one remote address may hold open, associated or not, across the receivers.
    max_connections_per_address: int = 16
    #: TLS for the Storage SCP (PS3.15 B.9): ``{certificate, key, ca}``; None is plain TCP.
    tls: TLS | None = None
    #: A group that may read the node's files (0640, folders 0750); none: only the node's user (0600, 0700).
    group: str | None = None
    #: The node as the General Equipment of what it captures (node.media.capture).
    identity: NodeIdentity = NodeIdentity()
    #: The catalogue several stations share, ``postgresql://user@host[:port]/database``, with no password
    #: in it (``catalogue_password_file``, or libpq's ``PGPASSWORD`` / ``PGPASSFILE``); none: the station
    #: stands alone.
    catalogue: str | None = None
    #: A file whose first line is the catalogue's password (keep it 0600); none: libpq's own ways.
    catalogue_password_file: Path | None = None
    #: This station's name in the catalogue; empty: the host name.
    station: str = ""
    #: The spool is on a file system every station reaches under the same paths: jobs are offered in the
    #: catalogue, and any station a route allows may build them (needs ``catalogue``).
    shared_spool: bool = False
    #: Seconds a station's claim on a job holds unrenewed (renewed every second, or every third of it).
    lease_seconds: float = 30.0

    @property
    def station_name(self) -> str:
        """The station's name in the catalogue: ``station``, else the host name."""
        return self.station or socket.gethostname()

    @property
    def pdu_limit(self) -> int:
        """The Maximum Length we advertise and hold P-DATA-TF PDUs to."""
        return self.max_pdu or DEFAULT_MAX_PDU


@dataclass(frozen=True)
class Match:
    """What a route matches; an empty tuple matches anything. Values compare exactly (AE titles stripped)."""

    #: Called AE titles (one or a list); empty matches any.
    called_aet: tuple[str, ...] = ()
    #: Calling AE titles (one or a list); empty matches any.
    calling_aet: tuple[str, ...] = ()
    #: Modalities (0008,0060) (one or a list); empty matches any.
    modality: tuple[str, ...] = ()
    #: SOP Class UIDs (one or a list); empty matches any.
    sop_class: tuple[str, ...] = ()


@dataclass(frozen=True)
class XorrisoOutput:
    """``output: {kind: xorriso, ...}``: burn each copy on an optical drive with xorriso (node.media.outputs)."""

    kind: ClassVar[str] = "xorriso"
    takes: ClassVar[Takes] = "image"

    #: The drive (``/dev/sr0``) or a ``stdio:/path`` pseudo-drive (a file standing in for the disc).
    device: str
    #: cdrecord's ``speed=`` (``4``, ``8``...); None lets the drive choose.
    speed: str | None = None
    #: Read the written bytes back and compare their SHA-256 with the image's.
    verify: bool = True
    #: Eject the disc after each copy.
    eject: bool = False
    #: A failed copy is tried this many more times, each after ``retry_wait_seconds`` (a blank disc inserted).
    retries: int = 3
    #: Seconds between a failed copy and its next try.
    retry_wait_seconds: float = 300.0


@dataclass(frozen=True)
class PublisherOutput:
    """``output: {kind: publisher, ...}``: a disc-publishing robot's hot folder (node.media.publisher)."""

    kind: ClassVar[str] = "publisher"
    takes: ClassVar[Takes] = "image"

    #: The robot's software: epson (TD Bridge, ``.JDF`` jobs) or rimage (``.NWP`` orders).
    vendor: Literal["epson", "rimage"]
    #: The folder the robot takes its jobs from.
    hot_folder: Path
    #: The discs the robot burns: CD, DVD or BD.
    media: Literal["CD", "DVD", "BD"] = "CD"
    #: The hot folder as the robot's own computer names it (``D:\\Order``); None: as we name it.
    robot_path: str | None = None
    #: Epson: the PUBLISHER name registered in EPSON Total Disc Setup; None: TD Bridge's default.
    publisher: str | None = None
    #: The label design the label fields are merged into (Epson .tdd, Rimage .btw); None prints nothing.
    label_template: str | None = None
    #: A job the robot has not finished after this long fails.
    timeout_seconds: float = 3600.0
    #: How often the hot folder is read for the outcome of a job.
    poll_seconds: float = 5.0
    #: A job the robot fails is given to it again this many more times.
    retries: int = 1
    #: Seconds between a failed job and its next try.
    retry_wait_seconds: float = 300.0


@dataclass(frozen=True)
class UsbOutput:
    """``output: {kind: usb, ...}``: write the file-set onto the mounted USB volume (node.media.outputs)."""

    kind: ClassVar[str] = "usb"
    takes: ClassVar[Takes] = "tree"

    #: Where the USB volume is mounted; the file-set is written at its root.
    mount_point: Path
    #: A failed copy is tried this many more times (an empty stick inserted).
    retries: int = 3
    #: Seconds between a failed copy and its next try.
    retry_wait_seconds: float = 60.0


#: Where a built medium goes: a Path is a folder of images (or folder trees); the others name a device.
Output = Path | XorrisoOutput | PublisherOutput | UsbOutput
_KINDS: dict[str, type[Any]] = {c.kind: c for c in (XorrisoOutput, PublisherOutput, UsbOutput)}
_PATH_FIELDS = {"hot_folder", "mount_point"}


def output_kind(output: Output) -> str:
    """The ``kind`` of an output: ``folder`` for a path, else its class's."""
    return "folder" if isinstance(output, Path) else output.kind


def output_settings(output: Output) -> str | dict[str, Any]:
    """``output`` as recorded in a route's JSON settings (:func:`output_from_settings` reads it back)."""
    if isinstance(output, Path):
        return str(output)
    return {"kind": output.kind, **{k: str(v) if isinstance(v, Path) else v for k, v in asdict(output).items()}}


def output_from_settings(value: object) -> Output:
    """The :data:`Output` a route's JSON settings recorded (a path string, or a mapping with ``kind``)."""
    if isinstance(value, dict):
        fields_ = {k: Path(v) if k in _PATH_FIELDS else v for k, v in value.items() if k != "kind"}
        return _KINDS[str(value["kind"])](**fields_)  # type: ignore[no-any-return]
    return Path(str(value))


@dataclass(frozen=True)
class Route:
    #: What the route matches: ``called_aet``, ``calling_aet``, ``modality``, ``sop_class``.
    match: Match
    #: What becomes of the instances matched: burn, store or reject.
    action: Action
    #: Burn a study by this route too when its instances matched an earlier burn route (a backup disc
    #: beside the archive one); otherwise only the first burn route a study's instances matched burns it.
    also: bool = False
    #: The application profile of the medium (STD-GEN-CD, ...).
    profile: str = "STD-GEN-CD"
    #: A ``--compress`` value (none, jpeg-lossless, ...) with its lossy setting, or one per modality:
    #: ``{default: jpeg-lossless, MG: none}``.
    compress: Compression = Compression()
    #: The per-modality values of ``compress``: (modality, compression) pairs.
    compress_by_modality: tuple[tuple[str, Compression], ...] = ()
    #: Allow lossy compression of mammograms (``burn --allow-lossy-mammography``).
    lossy_mammography: bool = False
    #: Allow values beyond a lossy process's precision to be scaled into it (``burn --allow-bit-reduction``).
    bit_reduction: bool = False
    #: New Study / Series / SOP Instance UIDs on the medium (the originals kept in a private block).
    new_uids: bool = False
    #: PS3.15 Annex E Basic Profile de-identification (teaching and research discs).
    deidentify: bool = False
    #: Let images flagged with Burned In Annotation onto a de-identified disc.
    burned_in_annotation: bool = False
    #: Correct the values PS3.5 forbids (CS characters, ACR-NEMA dates, padded UIDs, missing Type 2), each change recorded.
    repair: bool = False
    #: Copies made of each medium.
    copies: int = 1
    #: study: one medium per study; patient: the quiet studies of a patient packed onto as few media as they need.
    group: Group = "study"
    #: The volume label, followed by the job's number; None: MEDIANODE.
    label: str | None = None
    #: archive volumes are recorded in the index (and superseded by later ones); backup volumes are not.
    kind: VolumeKind = "archive"
    #: Where the media go; None means burn.output.
    output: Output | None = None
    #: IHE PDI media; None means burn.pdi, where the profile allows it.
    pdi: bool | None = None
    #: PDI's Web Content Option (INDEX.HTM, IHE_PDI/) and a viewer folder copied onto the medium.
    web: bool = False
    #: A viewer folder copied onto PDI media; the medium never starts it.
    viewer: Path | None = None
    #: The stations that may build its jobs (with ``node.shared_spool``); empty: the station that holds the study.
    stations: tuple[str, ...] = ()
    #: Where in the file the route was written ("config/medianode.yaml:14"), for logs.
    where: str = ""


@dataclass(frozen=True)
class BurnConfig:
    #: Where media go: a folder of images, or a mapping naming an output kind (Outputs).
    output: Output = Path("./var/out")
    #: A study is burned once no instance of it has arrived for this long.
    study_stable_seconds: float = 30.0
    #: Spooled instances no job needs any more are removed this long after their study's last instance arrived.
    retention_hours: float = 24.0
    #: Make IHE PDI media wherever the route's profile allows it (a route's ``pdi`` decides for itself).
    pdi: bool = True
    #: Who makes the media, for PDI's README.TXT and the label.
    institution: str = ""
    #: How to reach the maker of the media (phone, address), for PDI's README.TXT and the label.
    contact: str = ""


@dataclass(frozen=True)
class Destination:
    #: The destination Storage SCP's AE title.
    ae_title: str
    #: Its host name or address.
    host: str
    #: Its TCP port.
    port: int
    #: TLS with the destination (PS3.15 B.9): ``{ca, certificate, key}``; None is plain TCP.
    tls: ClientTLS | None = None


@dataclass(frozen=True)
class Coercion:
    """``import.coerce``: what is changed in the instances of a medium before they are sent.

    A step toward IHE PDI import reconciliation: the outside
    Patient ID becomes one of our domain. ``patient_id_map`` (old -> new, compared
    without the leading and trailing spaces PS3.5 6.2 makes insignificant in LO)
    wins over ``patient_id_prefix``: a mapped ID is not also prefixed, and an empty
    ID is never prefixed (it would become one ID shared by every patient without
    one). ``issuer_of_patient_id`` sets Issuer of Patient ID (0010,0021). Each value
    is a Long String (LO) of the default repertoire. How a coerced instance is
    sent is :mod:`node.read.coerce`'s.
    """

    #: Issuer of Patient ID (0010,0021) set in every instance imported.
    issuer_of_patient_id: str | None = None
    #: Put before every non-empty Patient ID that ``patient_id_map`` does not map.
    patient_id_prefix: str | None = None
    #: (old, new) pairs, in the file's order; the old IDs are distinct.
    patient_id_map: tuple[tuple[str, str], ...] = ()

    def patient_id(self, old: str) -> str:
        """The coerced Patient ID for ``old`` (which may be unchanged)."""
        value = old.strip(" ")
        for before, after in self.patient_id_map:
            if before == value:
                return after
        return self.patient_id_prefix + value if self.patient_id_prefix and value else old


#: What ``import.reconcile.match`` may require to agree (:mod:`node.read.match`), and the default: all.
MATCH_ATTRIBUTES = ("name", "birth_date", "sex")


@dataclass(frozen=True)
class Worklist:
    """``import.reconcile.worklist``: a Modality Worklist SCP (C-FIND, PS3.4 K.6) that schedules imports."""

    #: The Modality Worklist SCP's AE title.
    ae_title: str
    #: Its host name or address.
    host: str
    #: Its TCP port.
    port: int
    #: TLS with it (PS3.15 B.9): ``{ca, certificate, key}``; None is plain TCP.
    tls: ClientTLS | None = None
    #: Scheduled Procedure Step Start Dates asked for: from this many days ago to as many ahead.
    days: int = 7
    #: With ``scheduled_only``: the Modality scheduled for imports (``OT``), else our AE title is asked for.
    modality: str | None = None


@dataclass(frozen=True)
class PatientQuery:
    """``import.reconcile.patients``: a C-FIND SCP of the local archive (PS3.4 C.6), Study Root by
    default (many archives refuse Patient Root)."""

    #: The archive's Query/Retrieve SCP's AE title.
    ae_title: str
    #: Its host name or address.
    host: str
    #: Its TCP port.
    port: int
    #: TLS with it (PS3.15 B.9): ``{ca, certificate, key}``; None is plain TCP.
    tls: ClientTLS | None = None
    #: The query model: Study Root (study) or Patient Root (patient); studies are looked up with Study Root only.
    model: Literal["study", "patient"] = "study"


@dataclass(frozen=True)
class Reconcile:
    """``import.reconcile``: the local identity of a medium's patients, from a worklist item or the archive
    (in the manner of IHE Import Reconciliation), and what happens when none or several match."""

    #: The Modality Worklist SCP asked first (a scheduled import gives the request's values too).
    worklist: Worklist | None = None
    #: The local archive's C-FIND SCP, asked when the worklist has no match.
    patients: PatientQuery | None = None
    #: What must agree besides the name: birth_date, sex (when both have it); the name always.
    match: tuple[str, ...] = MATCH_ATTRIBUTES
    #: No local patient matches: hold for a person, send as it is, or refuse.
    on_no_match: Literal["hold", "send", "refuse"] = "hold"
    #: Several local patients match: hold for a person, or refuse.
    on_several: Literal["hold", "refuse"] = "hold"
    #: A study the archive holds already: send it (again), or skip it.
    on_existing: Literal["send", "skip"] = "send"
    #: Match only worklist items scheduled for this import (our AE title, or ``worklist.modality``).
    scheduled_only: bool = False
    #: Days a held import's copy is kept before it is purged.
    held_days: float = 30.0


@dataclass(frozen=True)
class ImportConfig:
    """Where media are imported to, and what ``serve``'s watcher (:mod:`node.read.watcher`) looks at."""

    #: A folder watched for media: an ``.iso`` file or a media folder dropped into it is imported.
    inbox: Path = Path("./var/inbox")
    #: The Storage SCP media are imported into: ``{ae_title, host, port, tls}``; None imports nothing.
    destination: Destination | None = None
    #: Run the watcher in ``serve``. Absent (None) means: when a destination is set.
    watch: bool | None = None
    #: Where an automounter mounts media: a new folder directly under one, or one level deeper
    #: (``/run/media/USER/LABEL``), is imported.
    mount_roots: tuple[Path, ...] = (Path("/media"), Path("/run/media"))
    #: Optical drives polled for a loaded disc (``/dev/sr0``), read without mounting.
    drives: tuple[Path, ...] = ()
    #: A medium is imported once its size and times have not changed for this long.
    settle_seconds: float = 5.0
    #: How often the inbox, the mount roots and the drives are looked at.
    poll_seconds: float = 2.0
    #: argv run after a drive's import, ``{device}`` replaced; None never ejects. Never a shell string.
    eject: tuple[str, ...] | None = None
    #: Our AE title when importing; None means node.ae_title.
    calling_aet: str | None = None
    #: Associations a medium is sent over at once, each from its own process; None: one per core, 2 to 4.
    associations: int | None = None
    #: What to change in the instances imported; None (absent) changes nothing.
    coerce: Coercion | None = None
    #: Reconciliation with the local patients; None (absent) sends the medium's identities as they are.
    reconcile: Reconcile | None = None

    def __post_init__(self) -> None:
        if self.watch is None:  # frozen: resolved once, so equal configs compare equal
            object.__setattr__(self, "watch", self.destination is not None)


#: RFC 5426 (UDP) and RFC 5425 (TLS): the syslog ports.
SYSLOG_PORTS = {"udp": 514, "tls": 6514}


@dataclass(frozen=True)
class Syslog:
    """``audit.syslog``: the audit record repository (IHE ATNA) the audit messages are sent to."""

    #: The audit record repository's host name or address.
    host: str
    #: 0 means the protocol's own port: 514 for udp, 6514 for tls (:data:`SYSLOG_PORTS`).
    port: int = 0
    #: udp (RFC 5426) or tls (RFC 5425).
    protocol: Literal["udp", "tls"] = "udp"
    #: With protocol tls: ``{ca, certificate, key}``, the repository's certificate checked against ``ca``.
    tls: ClientTLS | None = None

    def __post_init__(self) -> None:
        if not self.port:  # frozen: resolved once, so equal configs compare equal
            object.__setattr__(self, "port", SYSLOG_PORTS[self.protocol])


@dataclass(frozen=True)
class AuditConfig:
    #: None: the JSON lines of ``data_dir/audit.jsonl`` only.
    syslog: Syslog | None = None


@dataclass(frozen=True)
class ConsoleConfig:
    """``console:``: the web console ``serve`` runs beside the Storage SCP (:mod:`node.console`)."""

    #: Where the console listens; a host other than loopback needs ``tls``.
    host: str = "127.0.0.1"
    #: The console's TCP port.
    port: int = 8080
    #: HTTPS with our certificate and key (required for any host but loopback); None: plain HTTP.
    tls: TLS | None = None
    #: Run the web console in ``serve``.
    enabled: bool = True


@dataclass(frozen=True)
class MediaRequests:
    """``mcm:``: the Media Creation Management SCP (PS3.4 Annex S) on the node's AE title.

    What a request gets unless it asks otherwise: the medium (``profile``), where it goes (``output``;
    None: ``burn.output``), how many copies, the viewer copied when it asks for a display application;
    whether its Allow Lossy Compression may take effect; whether it may ask for teaching or research media,
    made de-identified; how long it waits for the instances it references
    that are not in the spool yet; how long a finished request stays answerable (N-GET) and keeps its
    instances in the spool.
    """

    #: The medium of a request whose items ask for no application profile.
    profile: str = "STD-GEN-CD"
    #: Where requests' media go; None means burn.output.
    output: Output | None = None
    #: Copies when the Initiate gives no Number of Copies.
    copies: int = 1
    #: A viewer folder copied onto PDI media when a request asks for a display application.
    viewer: Path | None = None
    #: Whether a request's Allow Lossy Compression YES may take effect.
    allow_lossy: bool = False
    #: Whether FOR_TEACHING / FOR_RESEARCH requests are accepted, their media de-identified (else refused).
    deidentify: bool = False
    #: How long an initiated request waits for referenced instances not in the spool yet.
    wait_seconds: float = 600.0
    #: How long a finished request stays answerable (N-GET) and keeps its instances in the spool.
    keep_hours: float = 24.0
    #: The stations that may build its media (with ``node.shared_spool``); empty: this one.
    stations: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    #: The node's AE, where its Storage SCP listens and what it accepts.
    node: NodeConfig = field(default_factory=NodeConfig)
    #: What every medium gets unless its route says otherwise.
    burn: BurnConfig = field(default_factory=BurnConfig)
    #: What received studies become, tried in order: burn, store or reject.
    routes: tuple[Route, ...] = ()
    #: Where media are imported to, and what ``serve``'s watcher looks at.
    imports: ImportConfig = field(default_factory=ImportConfig)
    #: Where the audit trail goes besides ``data_dir/audit.jsonl``.
    audit: AuditConfig = field(default_factory=AuditConfig)
    #: The web console ``serve`` runs beside the Storage SCP.
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    #: Media creation requests over DICOM; None: the SCP does not offer the service.
    mcm: MediaRequests | None = None
    #: The file this came from (for messages and reloads).
    source: Path | None = None

    @property
    def called_aets(self) -> frozenset[str]:
        """Every called AE title an association may use: the node's and each route's."""
        return frozenset({self.node.ae_title, *(t for r in self.routes for t in r.match.called_aet)})


# -- Loading -------------------------------------------------------------------

def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and check the YAML file at ``path`` (see :func:`parse_config`).

    A missing, unreadable or non-UTF-8 file is ``ConfigError("{path}: cannot read: ...")``.
    """
    name = os.fspath(path)
    return parse_config(read_text(name), source=name)


def parse_config(text: str, *, source: str) -> Config:
    """Check YAML ``text`` into a :class:`Config`; ``source`` names the file in messages.

    Each problem is one :class:`ConfigError` line, ``{source}:{line} {key path}: {what is
    wrong}``, and unknown keys are errors at every level. Text values are taken as written,
    so YAML 1.1's ``NO``, ``on`` or ``0123`` stay text where text is expected, while a
    number must be a plain YAML number (not ``yes``, not ``"30"``). Relative paths are
    resolved against the working directory at load time (``scripts/serve`` runs from the
    repository root, so ``./var`` is its ``var/``); ``Config.source`` is ``source`` made
    absolute the same way.

    >>> parse_config("node: {port: 104}", source="x.yaml").node.port
    104
    >>> parse_config("node: {port: yes}", source="x.yaml")
    Traceback (most recent call last):
    node.errors.ConfigError: x.yaml:1 node.port: expected an integer from 1 to 65535, got 'yes' (a boolean)
    """
    root = compose(text, source)
    values, _ = fields(root, At(source, ""), _TOP, what="sections")
    output = values["burn"].output if "burn" in values else BurnConfig.output
    for i, route in enumerate(values.get("routes", ())):
        if route.action == "burn" and route.output is None and (problem := _output_fits(output, route.profile)):
            raise ConfigError(f"{route.where} routes[{i}]: burn.output: {problem}; give this route its own output")
    node = values.get("node") or build(NodeConfig, {})
    for i, route in enumerate(values.get("routes", ())):
        if route.stations and not node.shared_spool:
            raise ConfigError(f"{route.where} routes[{i}].stations: needs node.shared_spool: true (without a shared "
                              "spool only the station that holds a study can build it)")
    mcm = values.get("mcm")
    if mcm is not None and mcm.stations and not node.shared_spool:
        raise ConfigError(f"{source} mcm.stations: needs node.shared_spool: true")
    if mcm is not None and mcm.output is None and (problem := _output_fits(output, mcm.profile)):
        raise ConfigError(f"{source} mcm: burn.output: {problem}; give mcm its own output")
    return Config(
        node=node,
        burn=values.get("burn") or build(BurnConfig, {}),
        routes=values.get("routes", ()),
        imports=values.get("import") or build(ImportConfig, {}),
        audit=values.get("audit") or build(AuditConfig, {}),
        console=values.get("console") or ConsoleConfig(),
        mcm=values.get("mcm"),
        source=absolute(source, At(source, "source"), root),
    )


def _ae_title(text: str) -> str:
    """An AE title (PS3.5 Table 6.2-1, AE): 1-16 characters of the default repertoire but backslash.
    Leading and trailing spaces are not significant: they are stripped, as routing strips them."""
    title = text.strip(" ")
    if not title or len(title) > 16 or any(c == "\\" or not " " <= c <= "~" for c in title):
        raise ValueError("is not an AE title (PS3.5 6.2: 1 to 16 ASCII characters, no backslash, not all spaces)")
    return title


#: A UID (PS3.5 9.1): numeric components separated by dots, no leading zero in a component.
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def _uid(text: str) -> str:
    if len(text) > 64 or not _UID.fullmatch(text):
        raise ValueError("is not a UID (PS3.5 9.1: digits and dots, at most 64 characters, no leading zeros)")
    return text


_COMPRESS = choice(*COMPRESS)
#: ``{syntax: j2k-lossy, ratio: 15}``: a ``--compress`` value and its lossy setting (node.syntaxes.SETTINGS).
_SETTING: dict[str, Check] = {"syntax": _COMPRESS, "quality": number(*SETTINGS["quality"]),
                              **{k: number(*SETTINGS[k], integer=False) for k in ("ratio", "psnr")}}


def _compression(node: Node, at: At) -> Compression:
    """``jpeg-baseline``, or ``{syntax: jpeg-baseline, quality: 85}`` (a setting that fits the syntax)."""
    if not isinstance(node, MappingNode):
        return Compression(_COMPRESS(node, at))
    values, nodes = fields(node, at, _SETTING, required=("syntax",))
    compression = Compression(values.pop("syntax"), **values)
    key, problem = compression.problem()
    if problem:
        raise at.key(key).error(nodes[key], problem)
    return compression


def _compress(node: Node, at: At) -> tuple[Compression, tuple[tuple[str, Compression], ...]]:
    """``compress: X``, or per modality ``compress: {default: X, MG: none, US: {syntax: jpeg-baseline, quality: 80}}``,
    each X a name or a name with its setting."""
    if not isinstance(node, MappingNode) or any(isinstance(k, ScalarNode) and k.value == "syntax" for k, _ in node.value):
        return _compression(node, at), ()
    default, by_modality = Compression(), []
    for key, value in node.value:
        name = string("a modality or default")(key, at)
        if name == "default":
            default = _compression(value, at.key(name))
        else:
            by_modality.append((name.upper(), _compression(value, at.key(name))))
    return default, tuple(by_modality)


_AE = string("an AE title", _ae_title)
_HOST = string("a host name or address")
#: A host name's labels (RFC 1123 2.1): letters, digits and inner hyphens, at most 63 each.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _listen_host(text: str) -> str:
    """``node.host``: an IP address, or a host name that resolves now (``serve`` binds it)."""
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    if len(text) > 253 or not all(_LABEL.fullmatch(label) for label in text.removesuffix(".").split(".")):
        raise ValueError("is not an IP address or a host name (RFC 1123: letters, digits, hyphens and dots)")
    try:
        socket.getaddrinfo(text, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ValueError(f"does not resolve to an address: {getattr(exc, 'strerror', None) or exc}") from None
    return text


def _network(text: str) -> Network:
    """An IPv4 or IPv6 address or network in CIDR notation; never a host name: a name resolved at load
    goes stale, and one resolved per association trusts whoever answers the DNS."""
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError("is not an IP address or network (10.0.0.7, 10.0.0.0/24, 2001:db8::/32; "
                         "host names are not taken)") from None
    raise ValueError(f"has bits set past its prefix length: the network is {loose}")


_NETWORKS = many(string("an IP address or network", _network))


def _peers(node: Node, at: At) -> tuple[tuple[str, tuple[Network, ...]], ...]:
    """``{AE: address or network, or a list of them}``, each title once."""
    if not isinstance(node, MappingNode):
        raise at.error(node, f"expected a mapping of calling AE titles to the addresses and networks each may "
                             f"come from (CT1: [10.0.0.0/24, 192.168.1.7]), got {describe(node)}")
    peers: dict[str, tuple[Network, ...]] = {}
    lines: dict[str, int] = {}
    for key, value in node.value:
        title = _AE(key, at)
        where = at.key(title)
        if title in peers:
            raise where.error(key, f"duplicate AE title (first on line {lines[title]})")
        networks = _NETWORKS(value, where)
        if not networks:
            raise where.error(value, "lists no address: leave the title out to refuse it")
        peers[title], lines[title] = networks, key.start_mark.line + 1
    return tuple(peers.items())


def _group(text: str) -> str:
    """A group that exists on this machine (the node's files are given to it)."""
    try:
        grp.getgrnam(text)
    except KeyError:
        raise ValueError("is not a group on this machine") from None
    return text


_UIDS = many(string("a UID", _uid))

def _device(text: str) -> str:
    """An optical drive (an absolute device path) or xorriso's ``stdio:PATH`` pseudo-drive, made absolute."""
    if text.startswith("stdio:") and len(text) > len("stdio:"):
        return "stdio:" + os.path.abspath(text[len("stdio:"):])
    if not text.startswith("/"):
        raise ValueError("is not a drive: expected an absolute device path (/dev/sr0) or stdio:FILE")
    return text


_RETRIES: dict[str, Check] = {"retries": number(0, 99), "retry_wait_seconds": number(0, integer=False)}
#: ``output`` mappings by ``kind``: the class, its keys, the required ones. A folder is a plain Path.
OUTPUTS: dict[str, tuple[type[Any] | None, dict[str, Check], tuple[str, ...]]] = {
    "folder": (None, {"path": lambda n, a: path(n, a)}, ("path",)),
    "xorriso": (XorrisoOutput, {"device": string("a drive", _device), "speed": string("a speed"),
                                "verify": lambda n, a: boolean(n, a), "eject": lambda n, a: boolean(n, a), **_RETRIES},
                ("device",)),
    "publisher": (PublisherOutput, {
        "vendor": choice("epson", "rimage"), "hot_folder": lambda n, a: path(n, a),
        "media": choice("CD", "DVD", "BD", upper=True), "robot_path": string("a path"),
        "publisher": string("a publisher name", max_len=64), "label_template": string("a path"),
        "timeout_seconds": number(0, integer=False, above=True), "poll_seconds": number(0, integer=False, above=True),
        **_RETRIES}, ("vendor", "hot_folder")),
    "usb": (UsbOutput, {"mount_point": lambda n, a: path(n, a), **_RETRIES}, ("mount_point",)),
}


def _output(node: Node, at: At) -> Output:
    """A path (a folder of images, as before) or a mapping whose ``kind`` names the output."""
    if not isinstance(node, MappingNode):
        return path(node, at)
    kinds = ", ".join(OUTPUTS)
    kind_node = next((v for k, v in node.value if isinstance(k, ScalarNode) and k.value == "kind"), None)
    if kind_node is None:
        raise at.key("kind").error(node, f"required key is missing (one of {kinds})")
    kind = choice(*OUTPUTS)(kind_node, at.key("kind"))
    cls, table, required = OUTPUTS[kind]
    values, _ = fields(node, at, {"kind": lambda n, a: kind, **table}, required=required)
    values.pop("kind")
    return values["path"] if cls is None else cls(**values)  # type: ignore[no-any-return]


def _output_fits(output: Output, profile: str) -> str:
    """Why ``output`` cannot take media of ``profile`` (USB profiles write a folder tree, discs an image), or ''."""
    tree = PROFILES[profile].file_system == "folder"
    takes = "any" if isinstance(output, Path) else output.takes
    if takes == "tree" and not tree:
        return f"a {output_kind(output)} output needs a USB profile (STD-GEN-USB-*), not {profile}"
    if takes == "image" and tree:
        return f"{profile} writes a folder tree, which a disc output cannot burn"
    if isinstance(output, PublisherOutput) and PROFILES[profile].file_system == "udf-1.50":
        return f"{profile} is a DVD-RAM profile: a publisher robot burns CD, DVD and BD, not DVD-RAM"
    return ""


_ROUTE: dict[str, Check] = {
    "match": section(Match, {"called_aet": many(_AE), "calling_aet": many(_AE), "modality": many(string()),
                              "sop_class": _UIDS}),
    "action": choice("burn", "store", "reject"),
    "also": boolean,
    "profile": choice(*PROFILES, upper=True),
    "compress": _compress,
    "lossy_mammography": boolean,
    "bit_reduction": boolean,
    "new_uids": boolean,
    "deidentify": boolean,
    "burned_in_annotation": boolean,
    "repair": boolean,
    "copies": number(1, MAX_COPIES),
    "group": choice("study", "patient"),
    "label": optional(string("a label", max_len=32)),
    "kind": choice("archive", "backup"),
    "output": optional(_output),
    "pdi": boolean,
    "web": boolean,
    "viewer": folder,
    "stations": many(string("a station name", lambda t: _station(t))),
}


def _route(node: Node, at: At) -> Route:
    """One route; burn settings on another action, or a compression its profile forbids, are errors."""
    values, nodes = fields(node, at, _ROUTE, required=("action",))
    action = values["action"]
    for name in [k for k in nodes if k not in ("match", "action")] if action != "burn" else ():
        raise at.key(name).error(nodes[name], f"only for action: burn (this route's action is {action})")
    profile = values.get("profile", Route.profile)
    compress, by_modality = values.pop("compress", (Route.compress, ()))
    for modality, value in (("", compress), *by_modality):
        if value.name not in compressions(profile):
            allowed = ", ".join(compressions(profile))
            where = at.key("compress") if not modality else at.key("compress").key(modality)
            raise where.error(nodes["compress"], f"{value.name!r} is not allowed by profile {profile} (it allows {allowed})")
    values |= {"compress": compress, "compress_by_modality": by_modality}
    if values.get("output") is not None and (problem := _output_fits(values["output"], profile)):
        raise at.key("output").error(nodes["output"], problem)
    pdi, extras = values.get("pdi"), [k for k in ("web", "viewer") if values.get(k)]
    if pdi is False and extras:
        raise at.key(extras[0]).error(nodes[extras[0]], "is part of IHE PDI media, which this route turns off (pdi: false)")
    if (pdi or extras) and not PROFILES[profile].pdi:
        key = "pdi" if pdi else extras[0]
        allowed = ", ".join(name for name, p in PROFILES.items() if p.pdi)
        raise at.key(key).error(nodes[key], f"IHE PDI media cannot be made on profile {profile} "
                                            f"(an augmented, DVD-RAM or BD profile); PDI allows {allowed}")
    return Route(**{"match": Match(), **values}, where=f"{at.file}:{node.start_mark.line + 1}")


def _routes(node: Node, at: At) -> tuple[Route, ...]:
    if not isinstance(node, SequenceNode) and not is_null(node):
        raise at.error(node, f"expected a list of routes, got {describe(node)}")
    return items(node, at, _route) if isinstance(node, SequenceNode) else ()


def _argv(node: Node, at: At) -> tuple[str, ...]:
    """A command as a non-empty list of arguments: run without a shell, so nothing in it is interpreted."""
    if not isinstance(node, SequenceNode) or not node.value:
        raise at.error(node, "expected a command as a list of arguments, e.g. [eject, '{device}'] "
                             f"(never a shell string), got {describe(node)}")
    return items(node, at, string("an argument"))


def _long_string(text: str, *, inner: bool = False, vr: str = "LO", max_len: int = 64) -> str:
    """A Long String (PS3.5 Table 6.2-1, LO), or text of ``vr`` up to ``max_len``, of the default repertoire
    (PS3.5 6.1.2.1, ASCII), no backslash but in ST. ASCII, because it is written into instances of any Specific
    Character Set. Leading and trailing spaces are not significant in LO, so they are refused (but a
    prefix, ``inner``, may end with a space: it stands before the ID)."""
    if len(text) > max_len:
        raise ValueError(f"is longer than {max_len} characters (PS3.5 6.2: {vr})")
    if "\\" in text and vr != "ST":  # ST is one value: its backslash is a character (PS3.5 6.2)
        raise ValueError(f"holds a backslash, which separates values in {vr} (PS3.5 6.2)")
    if any(not " " <= c <= "~" for c in text):
        raise ValueError("holds a character outside the default repertoire (PS3.5 6.1.2.1: printable ASCII)")
    if text.startswith(" ") or (text.endswith(" ") and not inner):
        raise ValueError(f"has a leading or trailing space, which is not significant in {vr} (PS3.5 6.2)")
    return text


_LO = string("a Long String (LO)", _long_string)
_PREFIX = string("a Long String (LO)", lambda text: _long_string(text, inner=True))
_IDENTITY: dict[str, Check] = {
    "station_name": string("a Short String (SH)", lambda text: _long_string(text, vr="SH", max_len=16)),
    "manufacturer_model_name": _LO,
    "device_serial_number": _LO,
    "department": _LO,
    "institution_address": string("a Short Text (ST)", lambda text: _long_string(text, vr="ST", max_len=1024)),
}


def _id_map(node: Node, at: At) -> tuple[tuple[str, str], ...]:
    """``{OLD: NEW, ...}``: each ID as written (``0123`` stays text), no old ID twice."""
    if not isinstance(node, MappingNode):
        raise at.error(node, f"expected a mapping of old to new Patient IDs (OLD: NEW), got {describe(node)}")
    pairs: list[tuple[str, str]] = []
    first: dict[str, Node] = {}
    for key, value in node.value:
        old = _LO(key, at)
        label = old if re.fullmatch(r"[\w.-]{1,40}", old, re.ASCII) else short(old)
        if old in first:
            raise at.key(label).error(key, f"duplicate Patient ID (first on line {first[old].start_mark.line + 1})")
        first[old] = key
        pairs.append((old, _LO(value, at.key(label))))
    return tuple(pairs)


_COERCE: dict[str, Check] = {
    "issuer_of_patient_id": _LO,
    "patient_id_prefix": _PREFIX,
    "patient_id_map": _id_map,
}


def _coerce(node: Node, at: At) -> Coercion | None:
    """The coercions of ``import.coerce``; an empty section, like an absent one, coerces nothing."""
    values, _ = fields(node, at, _COERCE)
    return Coercion(**values) if values else None


def unusable_tls(tls: ClientTLS) -> tuple[str, str] | None:
    """(key, why) when our TLS profile (:func:`node.tls.client_context`) cannot be built from ``tls``'s
    files, else None: checked when the configuration (or a command's flags) is read, not at the first connection."""
    if (tls.certificate is None) != (tls.key is None):
        have = "key" if tls.certificate is None else "certificate"
        return have, f"needs {'certificate' if have == 'key' else 'key'} too (our certificate and its key, or neither)"
    for key, attempt in (("ca", (tls.ca,)), ("certificate", (tls.ca, tls.certificate, tls.key))):
        if key == "ca" or tls.certificate is not None:
            try:
                client_context(*attempt)
            except OSError as exc:  # ssl.SSLError too
                what = "a PEM CA certificate" if key == "ca" else "a PEM certificate with its unencrypted PEM key"
                return key, f"is not {what} ({failure(exc)})"
    return None


def _client_tls(node: Node, at: At) -> ClientTLS:
    """A connection's ``tls``: the files exist and can be used (:func:`unusable_tls`)."""
    values, nodes = fields(node, at, {"ca": file, "certificate": file, "key": file}, required=("ca",))
    tls = build(ClientTLS, values)
    problem = unusable_tls(tls)
    if problem is not None:
        raise at.key(problem[0]).error(nodes[problem[0]], problem[1])
    return tls


def _match(node: Node, at: At) -> tuple[str, ...]:
    """``match``: which of name, birth_date and sex must agree; the name always (a birth date alone is shared)."""
    rules = many(choice(*MATCH_ATTRIBUTES))(node, at)
    if "name" not in rules:
        raise at.error(node, "must include name: a birth date and sex alone are shared by many patients")
    return tuple(dict.fromkeys(rules))


_SCP = {"ae_title": _AE, "host": _HOST, "port": number(1, 65535), "tls": optional(_client_tls)}
_RECONCILE: dict[str, Check] = {
    "worklist": optional(section(Worklist, {**_SCP, "days": number(0, 366), "modality": string("a modality", max_len=16)},
                                 required=("ae_title", "host", "port"))),
    "patients": optional(section(PatientQuery, {**_SCP, "model": choice("study", "patient")},
                                 required=("ae_title", "host", "port"))),
    "match": _match,
    "on_no_match": choice("hold", "send", "refuse"),
    "on_several": choice("hold", "refuse"),
    "on_existing": choice("send", "skip"),
    "scheduled_only": boolean,
    "held_days": number(0, integer=False, above=True),
}


def _reconcile(node: Node, at: At) -> Reconcile:
    """``import.reconcile``: a worklist, the archive, or both, to ask."""
    values, _ = fields(node, at, _RECONCILE)
    if values.get("worklist") is None and values.get("patients") is None:
        raise at.error(node, "needs worklist or patients (or both): the sources of the local identities")
    return Reconcile(**values)


_IMPORT: dict[str, Check] = {
    "inbox": path,
    "destination": optional(section(Destination, {"ae_title": _AE, "host": _HOST, "port": number(1, 65535),
                                                  "tls": optional(_client_tls)},
                                      required=("ae_title", "host", "port"))),
    "watch": boolean,
    "mount_roots": many(path),
    "drives": many(path),
    "settle_seconds": number(0, integer=False, above=True),
    "poll_seconds": number(0, integer=False, above=True),
    "eject": optional(_argv),
    "calling_aet": _AE,
    "associations": number(1, 16),
    "coerce": _coerce,
    "reconcile": optional(_reconcile),
}


def _import(node: Node, at: At) -> ImportConfig:
    """The import section; watching without a destination is an error (the media would go nowhere)."""
    values, nodes = fields(node, at, _IMPORT)
    if values.get("watch") and values.get("destination") is None:
        raise at.key("watch").error(nodes["watch"], "needs import.destination: the media found would go nowhere")
    if values.get("reconcile") is not None and values.get("coerce") is not None:
        raise at.key("reconcile").error(nodes["reconcile"], "cannot be used with import.coerce: reconciliation "
                                                            "replaces the static coercion (remove one of them)")
    return build(ImportConfig, values)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``).

    >>> [is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "10.0.0.5")]
    [True, True, True, False, False]
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_CONSOLE: dict[str, Check] = {
    "host": _HOST,
    "port": number(1, 65535),
    "tls": optional(section(TLS, {"certificate": file, "key": file}, required=("certificate", "key"))),
    "enabled": boolean,
}


def _console(node: Node, at: At) -> ConsoleConfig:
    """The console section; a host other than loopback needs ``tls``: passwords and session cookies
    never cross a network in clear.

    >>> parse_config("console: {host: 0.0.0.0}", source="x.yaml")
    Traceback (most recent call last):
    node.errors.ConfigError: x.yaml:1 console.host: '0.0.0.0' is not loopback: serving the console to the network needs console.tls ({certificate, key})
    """
    values, nodes = fields(node, at, _CONSOLE)
    host = values.get("host", ConsoleConfig.host)
    if values.get("tls") is None and not is_loopback(host):
        raise at.key("host").error(nodes["host"], f"{host!r} is not loopback: serving the console to the network "
                                                  "needs console.tls ({certificate, key})")
    return ConsoleConfig(**values)


def _syslog(node: Node, at: At) -> Syslog:
    """``audit.syslog``; ``tls`` is required by protocol tls, and refused by udp (it would not be used)."""
    values, nodes = fields(node, at, {
        "host": _HOST,
        "port": number(1, 65535),
        "protocol": choice("udp", "tls"),
        "tls": _client_tls,
    }, required=("host",))
    tls = values.get("tls")
    if values.get("protocol") == "tls" and tls is None:
        raise at.key("protocol").error(nodes["protocol"], "tls needs audit.syslog.tls with at least its ca")
    if tls is not None and values.get("protocol") != "tls":
        raise at.key("tls").error(nodes["tls"], "is used only with protocol: tls")
    return build(Syslog, values)


def _mcm(node: Node, at: At) -> MediaRequests:
    """``mcm:`` (an empty section turns the service on with its defaults); the output must take the profile.

    >>> parse_config("mcm: {profile: STD-GEN-USB-JPEG, output: {kind: xorriso, device: /dev/sr0}}", source="x.yaml")
    Traceback (most recent call last):
    node.errors.ConfigError: x.yaml:1 mcm.output: STD-GEN-USB-JPEG writes a folder tree, which a disc output cannot burn
    """
    values, nodes = fields(node, at, {
        "profile": choice(*PROFILES, upper=True),
        "output": optional(_output),
        "copies": number(1, MAX_COPIES),
        "viewer": folder,
        "allow_lossy": boolean,
        "deidentify": boolean,
        "wait_seconds": number(0, 86400 * 7, integer=False),
        "keep_hours": number(0, 24 * 365, integer=False),
        "stations": many(string("a station name", lambda t: _station(t))),
    }) if not is_null(node) else ({}, {})
    profile = values.get("profile", MediaRequests.profile)
    if values.get("output") is not None and (problem := _output_fits(values["output"], profile)):
        raise at.key("output").error(nodes["output"], problem)
    return build(MediaRequests, values)


_NODE: dict[str, Check] = {
    "ae_title": _AE,
    "host": string("a host name or address", _listen_host),
    "port": number(1, 65535),
    "data_dir": path,
    "allowed_calling_aets": many(_AE),
    "allowed_peers": _peers,
    "extra_sop_classes": _UIDS,
    "workers": number(1, 64),
    "max_associations": number(1, 1000),
    "min_free_mb": number(0),
    # PS3.8 D.1: a 32-bit Maximum Length; at least 4096 as DCMTK's ASC_MINIMUMPDUSIZE. 0 is our default,
    # never "no maximum": that would let a peer make us read any length it declares.
    "max_pdu": number(4096, MAX_PDU_LIMIT, zero=f"our default, {DEFAULT_MAX_PDU}"),
    "idle_seconds": number(0, 86400, integer=False, above=True),
    "artim_seconds": number(0, 3600, integer=False, above=True),
    "pdu_seconds": number(0, 3600, integer=False, above=True),
    "max_connections_per_address": number(1, 10000),
    "tls": optional(section(TLS, {"certificate": file, "key": file, "ca": optional(file)},
                              required=("certificate", "key"))),
    "group": string("a group name", _group),
    "identity": section(NodeIdentity, _IDENTITY),
    "catalogue": optional(lambda n, a: _catalogue_url(n, a)),
    "catalogue_password_file": file,
    "station": string("a station name", lambda t: _station(t)),
    "shared_spool": boolean,
    "lease_seconds": number(2, 3600, integer=False),
}


def _catalogue(text: str) -> str:
    """A PostgreSQL URL (``postgresql://user@host[:port]/database[?options]``) that carries no password: a
    password in the YAML would be in clear wherever the file is copied.

    >>> _catalogue("postgresql://medianode@db.example/catalogue")
    'postgresql://medianode@db.example/catalogue'
    >>> _catalogue("postgresql://medianode:secret@db.example/catalogue")
    Traceback (most recent call last):
    ValueError: holds a password: give it in node.catalogue_password_file (or PGPASSWORD, PGPASSFILE), not here
    """
    try:
        url = urllib.parse.urlsplit(text)
        url.port  # noqa: B018 - an invalid port raises here
    except ValueError:
        raise ValueError("is not a postgresql:// URL") from None
    if url.scheme not in ("postgresql", "postgres") or not url.hostname or url.path.strip("/") == "":
        raise ValueError("is not postgresql://user@host[:port]/database")
    if url.password is not None:
        raise ValueError("holds a password: give it in node.catalogue_password_file (or PGPASSWORD, PGPASSFILE), "
                         "not here")
    return text


def _catalogue_url(node: Node, at: At) -> str:
    """``node.catalogue``, checked by :func:`_catalogue`; its message never repeats the URL (a password)."""
    text = string("a postgresql:// URL")(node, at)
    try:
        return _catalogue(text)
    except ValueError as exc:
        raise at.error(node, f"the URL {exc}") from None


_STATION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _station(text: str) -> str:
    if not _STATION.fullmatch(text):
        raise ValueError("is not a station name (letters, digits, '.', '_', '-', at most 64)")
    return text


def _node(node: Node, at: At) -> NodeConfig:
    """The node section; a title in both lists of callers is an error: which list holds would be a guess."""
    values, nodes = fields(node, at, _NODE)
    if values.get("shared_spool") and values.get("catalogue") is None:
        raise at.key("shared_spool").error(nodes["shared_spool"], "needs node.catalogue: the stations share "
                                                                 "their jobs through it")
    if "catalogue_password_file" in values and values.get("catalogue") is None:
        raise at.key("catalogue_password_file").error(nodes["catalogue_password_file"],
                                                      "is for node.catalogue, which is not set")
    both = set(values.get("allowed_calling_aets", ())) & {title for title, _ in values.get("allowed_peers", ())}
    if both:
        raise at.key("allowed_peers").error(nodes["allowed_peers"], f"{', '.join(sorted(both))}: in "
                                            "node.allowed_calling_aets too, which takes a title from any address; "
                                            "list each title in one of them")
    return build(NodeConfig, values)


_TOP: dict[str, Check] = {
    "node": _node,
    "burn": section(BurnConfig, {
        "output": _output,
        "study_stable_seconds": number(0, integer=False, above=True),
        "retention_hours": number(0, integer=False),
        "pdi": boolean,
        "institution": string("an institution name", max_len=200),
        "contact": string("a contact (phone, address)", max_len=200),
    }),
    "routes": _routes,
    "import": _import,
    "audit": section(AuditConfig, {"syslog": optional(_syslog)}),
    "console": _console,
    "mcm": lambda n, a: _mcm(n, a),
}
